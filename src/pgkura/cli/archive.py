"""`pgkura archive-push` and `pgkura archive-get`, when :mod:`pgkura.entry`'s fast path does
not take them (an option it does not know, ``--help``...)."""

from __future__ import annotations

import logging

import click

from pgkura.cli.context import config
from pgkura.errors import ExitCode, PgkuraError

log = logging.getLogger("pgkura")


@click.command("archive-push")
@click.argument("wal_path")
@click.pass_context
def archive_push(ctx: click.Context, wal_path: str) -> None:
    """Archive one WAL file (archive_command = 'pgkura ... archive-push %p')."""
    from pgkura.commands.archive import run_archive_push

    result = run_archive_push(config(ctx), wal_path)
    if result is None:
        return
    log.info(
        "archived %s (%d -> %d bytes)%s",
        result.name,
        result.raw_size,
        result.stored_size,
        "" if result.written else ", already archived with the same content",
    )


@click.command("archive-get")
@click.argument("wal_name")
@click.argument("dest")
@click.option(
    "--stop-after",
    metavar="SEGMENT",
    default=None,
    help="answer 'not in the archive' for segments past SEGMENT (written by restore when the "
    "target lies before them)",
)
@click.pass_context
def archive_get(ctx: click.Context, wal_name: str, dest: str, stop_after: str | None) -> None:
    """Fetch one WAL file (restore_command = 'pgkura ... archive-get %f %p').

    Exits 1 only when the archive does not have the file; any other failure exits 255, so
    that PostgreSQL stops recovery instead of ending it early."""
    from pgkura.commands.archive import run_archive_get

    try:
        run_archive_get(config(ctx), wal_name, dest, stop_after)
    except PgkuraError as exc:
        if exc.exit_code != ExitCode.NOT_FOUND:
            exc.exit_code = ExitCode.ABORT_RECOVERY
        raise


COMMANDS: list[click.Command] = [archive_push, archive_get]
