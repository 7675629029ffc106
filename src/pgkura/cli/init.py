"""`pgkura init`."""

from __future__ import annotations

import click

from pgkura.cli.context import config
from pgkura.cli.key import raw_key_option
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
@click.option(
    "--encrypt",
    is_flag=True,
    help="encrypt and authenticate every object; the passphrase comes from --key-file",
)
@raw_key_option
@click.pass_context
def init(ctx: click.Context, compress: str, block_size: int, encrypt: bool, raw_key: bool) -> None:
    """Create an empty repository at --repo."""
    from pgkura.commands.init import run_init

    done = run_init(
        config(ctx), compression=compress, block_size=block_size, encrypt=encrypt, raw=raw_key
    )
    what = ", encrypted" if done.encrypted else ""
    say(f"initialised repository {done.location} ({done.compression}{what})")


COMMANDS: list[click.Command] = [init]
