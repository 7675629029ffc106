"""`pgkura gc` and `pgkura repair index`: keeping the repository's packs in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import emit, human_bytes
from pgkura.errors import PgkuraError

if TYPE_CHECKING:
    from pgkura.commands.gc import GcReport


@click.command()
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@output_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, output: str) -> None:
    """Delete packs no backup or dump references (left by failed or killed runs)."""
    from pgkura.commands.gc import run_gc

    report = run_gc(config(ctx), dry_run=dry_run)
    emit(output, report, lambda: _gc_text(report))


def _gc_text(report: GcReport) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    text = (
        f"{verb} {report.packs_deleted} unreferenced pack(s), "
        f"{human_bytes(report.bytes_deleted)}; kept {report.packs_kept} pack(s) in use "
        f"({human_bytes(report.unreferenced_bytes_kept)} of them unreferenced, kept until "
        "repacking exists)"
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
