"""`pgkura check`: is archiving set up, does it work, and (--max-age, --max-wal-age,
--require-drill-age) are backups, WAL and drills recent enough."""

from __future__ import annotations

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import print_json
from pgkura.errors import PgkuraError, UsageError


@click.command()
@click.option(
    "--max-age",
    metavar="DURATION",
    default=None,
    help="fail when the newest backup (or dump) finished longer ago than this: 30s, 12min, 27h, 8d",
)
@click.option(
    "--max-wal-age",
    metavar="DURATION",
    default=None,
    help="fail when no WAL segment was archived for longer than this",
)
@click.option(
    "--require-drill-age",
    metavar="DURATION",
    default=None,
    help="fail when no restore drill (verify --restore) passed within this",
)
@click.option(
    "--freshness-only",
    is_flag=True,
    help="only the freshness limits: no connection to the server, no WAL switch (for cron)",
)
@output_option
@click.pass_context
def check(
    ctx: click.Context,
    max_age: str | None,
    max_wal_age: str | None,
    require_drill_age: str | None,
    freshness_only: bool,
    output: str,
) -> None:
    """Check the server's archiving settings, the repository, and a WAL switch; with the
    limits, also how recent the newest backup, archived WAL and passed drill are."""
    from pgkura.commands.check import Freshness, run_check

    limits = Freshness.parse(max_age, max_wal_age, require_drill_age)
    if freshness_only and not limits.any():
        raise UsageError(
            "--freshness-only needs a limit to check",
            hint="add --max-age, --max-wal-age or --require-drill-age, such as --max-age 27h",
        )
    report = run_check(config(ctx), limits, server=not freshness_only)
    if output == "json":
        print_json(report)
    else:
        for line in report.passed:
            click.echo(f"ok: {line}")
        for line in report.problems:
            click.echo(f"problem: {line}")
    if report.problems:
        raise PgkuraError(
            f"check found {len(report.problems)} problem(s): " + "; ".join(report.problems),
            hint="change what each 'problem:' line says, then run pgkura check again",
        )


COMMANDS: list[click.Command] = [check]
