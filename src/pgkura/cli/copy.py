"""`pgkura copy`: backups, dumps and their WAL into another repository (the off-site copy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config, progress
from pgkura.cli.options import jobs_option, output_option, workers
from pgkura.cli.output import emit, human_bytes
from pgkura.errors import CorruptionError, UsageError

if TYPE_CHECKING:
    from pgkura.commands.copy import CopyReport


@click.command()
@click.argument("backup_id", required=False)
@click.option(
    "--to",
    "to",
    default=None,
    metavar="DIR|URL",
    help="the repository to copy into: a directory or s3://BUCKET/PREFIX (created when empty; "
    "default: the repo of --to-config)",
)
@click.option(
    "--to-config",
    default=None,
    metavar="FILE",
    help="a pgkura config file for the destination: its repo and s3-* settings (another "
    "endpoint, region or credentials file); without it, --repo's settings",
)
@click.option("--all", "all_backups", is_flag=True, help="copy every backup and dump of the stanza")
@click.option(
    "--wal",
    is_flag=True,
    help="also copy all WAL after the copied online backups (point-in-time recovery from the "
    "copy); without, only the WAL that makes each backup consistent",
)
@jobs_option(help="parallel block and WAL workers, at most 4 (default: cores)")
@output_option
@click.pass_context
def copy(
    ctx: click.Context,
    backup_id: str | None,
    to: str | None,
    to_config: str | None,
    all_backups: bool,
    wal: bool,
    jobs: int | None,
    output: str,
) -> None:
    """Copy a backup or dump (ID, or latest), or --all, of the stanza with the WAL it needs
    into the repository --to, sending only the blocks it lacks, and verify the copy there."""
    from pgkura.commands.copy import run_copy

    if all_backups == (backup_id is not None):
        raise UsageError(
            "give a backup id (or latest) or --all", hint="for example: pgkura copy --to DIR --all"
        )
    report = run_copy(
        config(ctx), to, backup_id, wal=wal, jobs=workers(jobs), progress=progress(),
        to_config=to_config,
    )  # fmt: skip
    emit(output, report, lambda: copy_text(report))
    if report.problems:
        raise CorruptionError(
            f"the copy in {report.destination} does not verify: {report.problems[0]}",
            hint=f"run: pgkura --repo {report.destination} verify",
        )


def copy_text(report: CopyReport) -> str:
    lines = []
    if report.created:
        lines.append(f"created a new repository at {report.destination} (a key of its own)")
    for b in report.backups:
        if b.status == "copied":
            lines.append(
                f"{b.kind} {b.id} ({b.method}): copied, {b.blocks_stored} new block(s), "
                f"{human_bytes(b.bytes_stored)}"
            )
        else:
            lines.append(f"{b.kind} {b.id} ({b.method}): already in {report.destination}")
    lines.append(f"WAL: {report.wal_files} file(s) copied, {human_bytes(report.wal_bytes)}")
    verdict = "ok" if not report.problems else f"{len(report.problems)} problem(s)"
    lines.append(
        f"{human_bytes(report.bytes_written)} written to {report.destination}; "
        f"{len(report.verified)} copied backup(s) verified there: {verdict}"
    )
    lines += (f"problem: {p}" for p in report.problems)
    return "\n".join(lines)


COMMANDS: list[click.Command] = [copy]
