"""`pgkura check`: is archiving set up, and does it work."""

from __future__ import annotations

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import print_json
from pgkura.errors import PgkuraError


@click.command()
@output_option
@click.pass_context
def check(ctx: click.Context, output: str) -> None:
    """Check the server's archiving settings, the repository, and a WAL switch."""
    from pgkura.commands.check import run_check

    report = run_check(config(ctx))
    if output == "json":
        print_json(report)
    else:
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
