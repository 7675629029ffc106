"""`pgkura info`: the catalog, as a table for people or as JSON."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import human_bytes, print_json

if TYPE_CHECKING:
    from pgkura.commands.info import CatalogLine, InfoReport

COLUMNS = ("id", "method", "started (UTC)", "took", "size", "stored", "new", "LSN", "notes")


@click.command()
@click.argument("backup_id", required=False)
@output_option
@click.pass_context
def info(ctx: click.Context, backup_id: str | None, output: str) -> None:
    """List the backups of the stanza (or show one)."""
    from pgkura.commands.info import run_info

    report = run_info(config(ctx), backup_id)
    if output == "json":
        print_json(report)
    else:
        render_info(report, detail=backup_id is not None)


def _duration(started: str, finished: str) -> str:
    from datetime import datetime

    try:
        seconds = (
            datetime.fromisoformat(finished) - datetime.fromisoformat(started)
        ).total_seconds()
    except ValueError:
        return "?"
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def render_info(report: InfoReport, detail: bool) -> None:
    """The catalog for people, on stdout (rich, without colour under NO_COLOR)."""
    from rich.console import Console

    # Piped output (logs, the demo) must not wrap at a guessed 80 columns.
    width = None if os.isatty(1) else 200
    console = Console(no_color="NO_COLOR" in os.environ, highlight=False, width=width)
    generations = report.generations or ()
    upgraded = len(generations) > 1
    current = (
        f"system identifier {report.system_identifier or '-'}, "
        f"PostgreSQL {report.pg_version or '-'}"
    )
    console.print(
        f"stanza [bold]{report.stanza}[/bold] in {report.repository} "
        + (f"({len(generations)} generations; current: {current})" if upgraded else f"({current})")
    )
    if not report.backups and not report.damaged:
        console.print("no backups yet")
    elif report.backups:
        console.print(_backups_table(report.backups, upgraded))
    for d in report.damaged:
        console.print(f"[bold]DAMAGED[/bold] backup {d['id']}: {d['damaged']}")
    if upgraded:
        for gen in generations:
            console.print(
                f"generation {gen['generation']}: PostgreSQL {gen['pg_version']}, system "
                f"identifier {gen['system_identifier']}, since {gen['created'][:16]}, "
                f"{gen['backups']} backup(s); its own WAL archive:"
            )
            _render_wal(console, gen, indent="  ")
    else:
        _render_wal(console, report.wal, indent="")
    if detail:
        for b in report.backups:
            _render_detail(console, b)


def _backups_table(backups: tuple[CatalogLine, ...], upgraded: bool) -> Any:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    columns: tuple[str, ...] = ("gen", *COLUMNS) if upgraded else COLUMNS
    for col in columns:
        right = col in ("took", "size", "stored", "new")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for b in backups:
        lsn = f"{b.start_lsn}-{b.stop_lsn}" if b.start_lsn else ""
        table.add_row(
            *([str(b.generation or "?")] if upgraded else []),
            b.id,
            b.method if b.kind == "physical" else b.kind,
            b.started.replace("T", " ")[:19],
            _duration(b.started, b.finished),
            human_bytes(b.size_bytes),
            human_bytes(b.stored_bytes),
            human_bytes(b.new_bytes),
            lsn,
            ", ".join(_notes(b)),
        )
    return table


def _notes(b: CatalogLine) -> list[str]:
    notes = []
    if b.forced:
        notes.append("forced")
    if b.checksum_failures:
        notes.append(f"{sum(int(f['count']) for f in b.checksum_failures)} checksum failures")
    if b.pinned:
        notes.append("pinned with PITR" if b.pinned.get("pitr") else "pinned")
    drill = b.last_drill
    if drill:
        verdict = "restore proven" if drill["passed"] else "DRILL FAILED"
        notes.append(f"{verdict} {str(drill['when'])[:16].replace('T', ' ')}")
    if b.summaries and b.summaries["guided"]:
        read = f", read {b.read_bytes / max(1, b.size_bytes):.1%}" if b.read_bytes else ""
        notes.append(f"summary-guided{read}")
    return notes


def _render_detail(console: Any, b: CatalogLine) -> None:
    """One backup's checksum failures and WAL positions (``info ID``)."""
    for f in b.checksum_failures:
        blocks = ", ".join(str(x) for x in f["blocks"])
        more = f" and {f['count'] - len(f['blocks'])} more" if f["count"] > len(f["blocks"]) else ""
        console.print(f"checksum failure: {f['path']} block(s) {blocks}{more}")
    for key in ("timeline", "start_lsn", "stop_lsn"):
        if getattr(b, key) is not None:
            console.print(f"{key}: {getattr(b, key)}")
    if b.read_bytes is not None:
        console.print(f"read: {b.read_bytes} of {b.size_bytes} bytes")
    s = b.summaries
    if s and s["guided"]:
        whole = f"; {s['read_whole']} file(s) read whole, pages changed unlisted" * bool(
            s["read_whole"]
        )
        console.print(f"summary-guided from backup {s['base']}{whole}")
    elif s:
        console.print(f"not summary-guided: {s['fallback']}", markup=False)


def _render_wal(console: Any, data: Any, indent: str) -> None:
    """The archived WAL per timeline and the recoverable window (of one generation)."""
    for tl in data.get("timelines") or []:
        ranges = ", ".join(f"{r['first']}..{r['last']}" for r in tl["ranges"]) or "no segments"
        console.print(f"{indent}WAL timeline {tl['timeline']}: {ranges}")
        if not tl["history_file"]:
            console.print(
                f"{indent}  [bold]missing[/bold] the history file of timeline {tl['timeline']}"
            )
        for gap in tl["gaps"]:
            console.print(
                f"{indent}  [bold]gap[/bold]: {gap['first']}..{gap['last']} are not archived"
            )
    window = data.get("window")
    if window:
        until = window["to_lsn"] + (f" ({window['to_time']})" if window["to_time"] else "")
        console.print(
            f"{indent}recoverable window (timeline {window['timeline']}): from "
            f"{window['from_lsn']} ({window['from_time']}, backup {window['from_backup']}) "
            f"to {until}"
        )
    elif data.get("window_problem"):
        console.print(f"{indent}[bold]no recoverable window[/bold]: {data['window_problem']}")
    if data.get("window_warning"):
        console.print(f"{indent}[bold]warning[/bold]: {data['window_warning']}")


COMMANDS: list[click.Command] = [info]
