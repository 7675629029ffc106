"""`pgkura gc` and `pgkura repair index`: keeping the repository's packs in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import emit, human_bytes
from pgkura.errors import PgkuraError

if TYPE_CHECKING:
    from pgkura.commands.gc import PruneReport, RekeyReport


@click.command()
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@click.option(
    "--rewrite-keys",
    is_flag=True,
    help="reseal what retired data keys (key rotate) sealed under the current one; a run "
    "that finds nothing left under a retired key drops it",
)
@output_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, rewrite_keys: bool, output: str) -> None:
    """Delete packs no backup or dump references and repack partly used ones (--max-unused);
    backups, restores and the WAL archive go on meanwhile."""
    from pgkura.commands.gc import run_gc

    report = run_gc(config(ctx), dry_run=dry_run, rewrite=rewrite_keys)
    emit(output, report, lambda: gc_text(report))


def gc_text(report: PruneReport) -> str:
    """The summary line of a gc run."""
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
    return text + rekey_text(getattr(report, "rekey", None))


def rekey_text(rk: RekeyReport | None) -> str:
    """What --rewrite-keys did, as lines after gc's summary."""
    if rk is None:
        return ""
    if not rk.retired:
        return f"\nno retired data key: every object is sealed under data key {rk.current}"
    lines = [
        f"resealed {rk.objects_rewritten} object(s) and {rk.packs_rewritten} pack(s) "
        f"({human_bytes(rk.bytes_rewritten)} of blocks) under data key {rk.current}"
    ]
    lines += [f"dropped data key {g}" for g in rk.dropped]
    lines += [f"kept {why}" for why in rk.kept]
    lines += [f"could not reseal {what}" for what in rk.unreadable]
    return "\n" + "\n".join(lines)


@click.group()
def repair() -> None:
    """Repair what can be rebuilt from what the repository still holds."""


@repair.command("index")
@output_option
@click.pass_context
def repair_index(ctx: click.Context, output: str) -> None:
    """Write back missing index objects from the copies at the end of their packs."""
    from pgkura.commands.repair import run_repair_index

    report = run_repair_index(config(ctx))
    lines = [f"rebuilt the index of pack {p} from its own copy" for p in report.rebuilt]
    lines += [f"cannot rebuild: {problem}" for problem in report.unrepairable]
    emit(output, report, lambda: "\n".join(lines) or "every pack has its index object")
    if report.unrepairable:
        raise PgkuraError(
            f"{len(report.unrepairable)} pack index(es) cannot be rebuilt",
            hint="run pgkura verify to see which backups need them",
        )


COMMANDS: list[click.Command] = [gc, repair]
