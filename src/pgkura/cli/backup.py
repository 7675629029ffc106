"""`pgkura backup`: a physical backup."""

from __future__ import annotations

import click

from pgkura.cli.context import config, progress
from pgkura.cli.options import jobs_option, output_option, workers
from pgkura.cli.output import emit


@click.command()
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(["offline", "online", "basebackup"]),
    default=None,
    help="offline (server stopped), online, or basebackup (through pg_basebackup, for servers "
    "whose files pgkura cannot read); default: online if the server runs, else offline",
)
@click.option("--force", is_flag=True, help="offline: copy even if the server seems to be running")
@click.option(
    "--checkpoint",
    type=click.Choice(["fast", "spread"]),
    default="fast",
    show_default=True,
    help="online: how the server's starting checkpoint is taken",
)
@jobs_option()
@output_option
@click.pass_context
def backup(
    ctx: click.Context,
    backup_type: str | None,
    force: bool,
    checkpoint: str,
    jobs: int | None,
    output: str,
) -> None:
    """Take a physical backup of the cluster at --pgdata."""
    from pgkura.commands.backup import run_backup

    cfg = config(ctx)
    taken = run_backup(
        cfg,
        backup_type=backup_type,
        force=force,
        fast_checkpoint=checkpoint == "fast",
        jobs=workers(jobs),
        progress=progress(),
    )
    emit(output, taken, lambda: taken.id)
    from pgkura.cli.retention import expire_auto

    expire_auto(cfg, f"backup {taken.id}")
    error = taken.checksum_error()
    if error is not None:
        raise error


COMMANDS: list[click.Command] = [backup]
