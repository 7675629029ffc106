"""`pgkura init`."""

from __future__ import annotations

import click

from pgkura.cli.context import config
from pgkura.cli.output import say


@click.command()
@click.option(
    "--compress",
    default="zstd:3",
    show_default=True,
    metavar="CODEC",
    help="zstd[:level], lz4, none",
)
@click.option(
    "--block-size",
    type=int,
    default=65536,
    show_default=True,
    metavar="BYTES",
    help="bytes per block",
)
@click.pass_context
def init(ctx: click.Context, compress: str, block_size: int) -> None:
    """Create an empty repository at --repo."""
    from pgkura.commands.init import run_init

    done = run_init(config(ctx), compression=compress, block_size=block_size)
    say(f"initialised repository {done.location} ({done.compression})")


COMMANDS: list[click.Command] = [init]
