"""`pgkura key add|list|remove|rotate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import emit

if TYPE_CHECKING:
    from pgkura.commands.key import KeySlots


raw_key_option = click.option(
    "--raw-key",
    is_flag=True,
    help="the key file holds a random key of 32 bytes or more (head -c 32 /dev/urandom | "
    "base64), not a passphrase: opened without Argon2id, in microseconds (for archive-push)",
)


@click.group()
def key() -> None:
    """Manage who can open an encrypted repository (its key slots; no data is rewritten) and
    the data key new objects are sealed under (rotate)."""


@key.command("list")
@output_option
@click.pass_context
def key_list(ctx: click.Context, output: str) -> None:
    """List the key slots (ids and when they were added; nothing secret)."""
    from pgkura.commands.key import run_key_list

    done = run_key_list(config(ctx))
    emit(output, done, lambda: describe(done, ""))


@key.command("add")
@click.option(
    "--new-key-file",
    required=True,
    metavar="FILE",
    help="file (mode 0600) holding the new slot's passphrase",
)
@raw_key_option
@output_option
@click.pass_context
def key_add(ctx: click.Context, new_key_file: str, raw_key: bool, output: str) -> None:
    """Add a key slot opened by the passphrase in --new-key-file (the repository is opened
    with --key-file)."""
    from pgkura.commands.key import run_key_add

    done = run_key_add(config(ctx), new_key_file, raw_key)
    emit(output, done, lambda: describe(done, f"added key slot {done.changed}"))


@key.command("remove")
@click.argument("slot_id", metavar="ID")
@output_option
@click.pass_context
def key_remove(ctx: click.Context, slot_id: str, output: str) -> None:
    """Remove the key slot ID (never the last one): its passphrase no longer opens the
    repository."""
    from pgkura.commands.key import run_key_remove

    done = run_key_remove(config(ctx), slot_id)
    emit(output, done, lambda: describe(done, f"removed key slot {done.changed}"))


@key.command("rotate")
@output_option
@click.pass_context
def key_rotate(ctx: click.Context, output: str) -> None:
    """Start a new data key for new objects. Objects sealed under the older ones stay
    readable; pgkura gc --rewrite-keys reseals them and then drops the retired keys."""
    from pgkura.commands.key import run_key_rotate

    done = run_key_rotate(config(ctx))
    head = f"new objects are sealed under data key {done.changed}"
    emit(output, done, lambda: describe(done, head))


def describe(done: KeySlots, head: str) -> str:
    lines = [head] if head else []
    lines += [f"{s.slot_id}  added {s.added}  {s.kdf}" for s in done.slots]
    for k in done.data_keys or ():
        state = "current" if k.current else "retired (gc --rewrite-keys drops it)"
        lines.append(f"data key {k.generation}  added {k.added or 'with the repository'}  {state}")
    return "\n".join(lines)


COMMANDS: list[click.Command] = [key]
