"""`pgkura check`: is archiving set up, and does it work."""

from __future__ import annotations

import click

from pgkura.cli.context import config
from pgkura.errors import PgkuraError


@click.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the server's archiving settings, the repository, and a WAL switch."""
    from pgkura.commands.check import run_check

    report = run_check(config(ctx))
    for line in report.passed:
        click.echo(f"ok: {line}")
    for line in report.problems:
        click.echo(f"problem: {line}")
    if report.problems:
        raise PgkuraError(
            f"check found {len(report.problems)} problem(s)",
            hint="change what each 'problem:' line says, then run pgkura check again",
        )


COMMANDS: list[click.Command] = [check]
