"""Text rendering of catalog data for people (JSON output bypasses this)."""

from __future__ import annotations

import os
from typing import Any

COLUMNS = ("id", "method", "started (UTC)", "took", "size", "stored", "new", "LSN", "notes")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _duration(started: str, finished: str) -> str:
    from datetime import datetime

    try:
        seconds = (
            datetime.fromisoformat(finished) - datetime.fromisoformat(started)
        ).total_seconds()
    except ValueError:
        return "?"
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def render_info(data: dict[str, Any], detail: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (logs, the demo) must not wrap at a guessed 80 columns.
    width = None if os.isatty(1) else 200
    console = Console(no_color="NO_COLOR" in os.environ, highlight=False, width=width)
    sysid = data.get("system_identifier") or "-"
    generations = data.get("generations") or []
    upgraded = len(generations) > 1
    current = f"system identifier {sysid}, PostgreSQL {data.get('pg_version') or '-'}"
    console.print(
        f"stanza [bold]{data['stanza']}[/bold] in {data['repository']} "
        + (f"({len(generations)} generations; current: {current})" if upgraded else f"({current})")
    )
    table = Table(show_edge=False, pad_edge=False)
    columns: tuple[str, ...] = COLUMNS
    if upgraded:
        columns = ("gen", *COLUMNS)
    for col in columns:
        right = col in ("took", "size", "stored", "new")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for b in data["backups"]:
        notes = []
        if b.get("forced"):
            notes.append("forced")
        failures = b.get("checksum_failures") or []
        if failures:
            notes.append(f"{sum(int(f['count']) for f in failures)} checksum failures")
        pin = b.get("pinned")
        if pin:
            notes.append("pinned with PITR" if pin.get("pitr") else "pinned")
        drill = b.get("last_drill")
        if drill:
            verdict = "restore proven" if drill["passed"] else "DRILL FAILED"
            notes.append(f"{verdict} {str(drill['when'])[:16].replace('T', ' ')}")
        lsn = f"{b['start_lsn']}-{b['stop_lsn']}" if b.get("start_lsn") else ""
        table.add_row(
            *([str(b.get("generation") or "?")] if upgraded else []),
            b["id"],
            b["method"] if b["kind"] == "physical" else b["kind"],
            b["started"].replace("T", " ")[:19],
            _duration(b["started"], b["finished"]),
            human_bytes(b["size_bytes"]),
            human_bytes(b["stored_bytes"]),
            human_bytes(b["new_bytes"]),
            lsn,
            ", ".join(notes),
        )
    if not data["backups"] and not data.get("damaged"):
        console.print("no backups yet")
    elif data["backups"]:
        console.print(table)
    for d in data.get("damaged") or []:
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
        _render_wal(console, data, indent="")
    if detail:
        for b in data["backups"]:
            for f in b.get("checksum_failures") or []:
                blocks = ", ".join(str(x) for x in f["blocks"])
                more = (
                    f" and {f['count'] - len(f['blocks'])} more"
                    if f["count"] > len(f["blocks"])
                    else ""
                )
                console.print(f"checksum failure: {f['path']} block(s) {blocks}{more}")
            for key in ("timeline", "start_lsn", "stop_lsn"):
                if b.get(key) is not None:
                    console.print(f"{key}: {b[key]}")


def table_restore_lines(result: dict[str, Any]) -> list[str]:
    """What a table restore brought back: each table with the rows counted in it (the same
    count at the target and after the load), partitions and children indented under theirs."""
    lines = [
        f"restored from backup {result['backup']} at {result['target']} into database "
        f"{result['database']}:"
    ]
    by_name = {t["table"]: t for t in result["tables"]}
    for t in result["tables"]:
        under = [u for u in result["tables"] if u["parent"] == t["table"]]
        notes = _table_notes(t, under, by_name.get(t["parent"] or ""))
        text = f"{'  ' * (t['depth'] + 1)}{t['table']}: {t['rows']} rows"
        lines.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    if result["replaced"]:
        dropped = ", ".join(result["replaced"])
        lines.append(f"  replaced (dropped in the same transaction): {dropped}")
    for fk in result["foreign_keys_left_out"]:
        lines.append(f"  foreign key left out (it points outside the restored tables): {fk}")
    return lines


def _table_notes(
    t: dict[str, Any], under: list[dict[str, Any]], parent: dict[str, Any] | None
) -> list[str]:
    notes = []
    if under:
        partitions = all(u["kind"] == "partition" for u in under)
        what = ("partition" if partitions else "inheritance child") if len(under) == 1 else (
            "partitions" if partitions else "inheritance children")  # fmt: skip
        notes.append(f"with {len(under)} {what}")
    if parent is not None:
        relation = "partition of" if t["kind"] == "partition" else "inherits"
        notes.append(f"{relation} {t['parent']}")
    # Where a table came from, unless it is where its parent came from, under its own name.
    schema, name = t["was"].split(".", 1)
    if t["was"] != t["table"] and (
        parent is None
        or name != t["table"].split(".", 1)[1]
        or schema != parent["was"].split(".")[0]
    ):
        notes.append(f"was {t['was']}")
    if t["alone_from"] and t["attached_again"]:
        notes.append(f"attached to {t['alone_from']} again")
    elif t["alone_from"]:
        notes.append(f"restored without its parent {t['alone_from']}")
    if t["children_left_out"]:
        notes.append(f"its own rows only, children left out: {', '.join(t['children_left_out'])}")
    return notes


def _render_wal(console: Any, data: dict[str, Any], indent: str) -> None:
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


def gc_text(report: Any) -> str:
    """The summary line of a gc run (repository.prune.PruneReport)."""
    verb = "would delete" if report.dry_run else "deleted"
    text = f"{verb} {report.packs_deleted} pack(s), {human_bytes(report.bytes_deleted)}"
    if report.packs_repacked:
        text += (
            f" ({report.packs_repacked} repacked: {human_bytes(report.bytes_repacked)} of live "
            "blocks copied into new packs)"
        )
    text += (
        f"; kept {report.packs_kept} pack(s), {human_bytes(report.repository_bytes)}, of which "
        f"{human_bytes(report.unreferenced_bytes_kept)} unreferenced"
    )
    if report.packs_waiting:
        text += (
            f"; {report.packs_waiting} pack(s) wait for {report.commands_waited_for or 'the'} "
            "running command(s) that may use them, and go at the next gc after those end"
        )
    if report.indexes_rebuilt:
        text += (
            f"; wrote back the missing index object of {len(report.indexes_rebuilt)} pack(s) "
            "from their own copies"
        )
    if report.unreadable_kept:
        text += (
            f"; kept {len(report.unreadable_kept)} pack(s) whose content cannot be read "
            "(pgkura verify names them)"
        )
    return text


def expire_lines(report: Any) -> list[str]:
    """What expire or delete did (commands.expire.ExpireReport): one line per backup."""
    lines = [f"policy: {report.policy}"] if report.policy else []
    lines += [f"{d.id} {d.kind:<8} {d.describe()}" for d in report.decisions]
    lines += [f"note: {n}" for n in report.notes]
    verb = "would delete" if report.dry_run else "deleted"
    gone = sum(not d.keep for d in report.decisions)
    lines.append(
        f"{verb} {gone} backup(s) and {report.wal_deleted} WAL file(s) "
        f"({human_bytes(report.wal_bytes_deleted)})"
    )
    if report.gc is not None:
        lines.append("gc: " + gc_text(report.gc))
    return lines
