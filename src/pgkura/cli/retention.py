"""`pgkura expire`, `pin`, `unpin` and `delete`: retention by policy or by hand (README,
"Retention"); and expire-auto, which backup and dump call after they succeed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.maintenance import gc_text
from pgkura.cli.options import output_option
from pgkura.cli.output import emit, human_bytes, say

if TYPE_CHECKING:
    from pgkura.commands.expire import ExpireReport
    from pgkura.config import Config


@click.command()
@click.option("--dry-run", is_flag=True, help="say what would be expired, change nothing")
@output_option
@click.pass_context
def expire(ctx: click.Context, dry_run: bool, output: str) -> None:
    """Apply the retention policy (--keep-*, --pitr-window): delete the backups and dumps it
    does not keep, the WAL no kept backup needs, then run gc. Says why each backup stays or
    goes."""
    from pgkura.commands.expire import run_expire

    report = run_expire(config(ctx), dry_run=dry_run)
    emit(output, report, lambda: "\n".join(expire_lines(report)))


@click.command()
@click.argument("backup_id", metavar="ID")
@click.option("--pitr", is_flag=True, help="also keep every WAL segment after the backup")
@output_option
@click.pass_context
def pin(ctx: click.Context, backup_id: str, pitr: bool, output: str) -> None:
    """Keep backup ID whatever the retention policy says (with the WAL to make it
    consistent)."""
    from pgkura.commands.expire import run_pin

    done = run_pin(config(ctx), backup_id, pitr=pitr)
    what = " and every WAL segment after it" if done.pitr else ""
    emit(output, done, lambda: f"pinned backup {done.backup_id}{what}")


@click.command()
@click.argument("backup_id", metavar="ID")
@output_option
@click.pass_context
def unpin(ctx: click.Context, backup_id: str, output: str) -> None:
    """Let the retention policy decide about backup ID again."""
    from pgkura.commands.expire import run_unpin

    done = run_unpin(config(ctx), backup_id)
    emit(output, done, lambda: f"unpinned backup {done.backup_id}")


@click.command()
@click.argument("backup_id", metavar="ID")
@click.option(
    "--force", is_flag=True, help="also delete the newest backup of its kind or a pinned one"
)
@click.option("--dry-run", is_flag=True, help="say what would be deleted, change nothing")
@output_option
@click.pass_context
def delete(ctx: click.Context, backup_id: str, force: bool, dry_run: bool, output: str) -> None:
    """Delete backup (or dump) ID by hand, its WAL no kept backup needs, then run gc."""
    from pgkura.commands.expire import run_delete

    report = run_delete(config(ctx), backup_id, force=force, dry_run=dry_run)
    emit(output, report, lambda: "\n".join(expire_lines(report)))


def expire_lines(report: ExpireReport) -> list[str]:
    """What expire or delete did: one line per backup, then the WAL and gc."""
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


def expire_auto(cfg: Config, what: str) -> None:
    """expire-auto: expire after a successful backup or dump ``what``; what it did goes to
    stderr (stdout holds the backup's id)."""
    if not cfg.expire_auto:
        return
    from pgkura.commands.expire import expire_after

    report = expire_after(cfg, what)
    if report is not None:
        for line in expire_lines(report):
            say(f"expire-auto: {line}")


COMMANDS: list[click.Command] = [expire, pin, unpin, delete]
