"""`pgkura demo`: pgkura end to end on a throwaway cluster."""

from __future__ import annotations

import click

from pgkura.cli.context import config
from pgkura.cli.output import say


@click.command()
@click.option("--keep", is_flag=True, help="keep the demo's directory for inspection")
@click.option(
    "--workdir",
    default=None,
    metavar="DIR",
    help="directory for the demo (default: a new temp dir)",
)
@click.pass_context
def demo(ctx: click.Context, keep: bool, workdir: str | None) -> None:
    """Run pgkura end to end on a throwaway cluster and repository (with --pg-bin's
    PostgreSQL, or the newest installed)."""
    from pgkura.commands.demo import run_demo

    cfg = config(ctx)
    run_demo(say, keep=keep, workdir=workdir, pg_bin=cfg.pg_bin, search_path=cfg.pg_search_path)


COMMANDS: list[click.Command] = [demo]
