"""`pgkura stanza upgrade`: a stanza goes on with its cluster after pg_upgrade; `pgkura stanza
create`: a stanza bound to its cluster before its first backup."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.options import output_option
from pgkura.cli.output import emit

if TYPE_CHECKING:
    from pgkura.commands.stanza import StanzaUpgrade


@click.group()
def stanza() -> None:
    """Manage the stanza record (which cluster a stanza backs up)."""


@stanza.command("upgrade")
@output_option
@click.pass_context
def stanza_upgrade(ctx: click.Context, output: str) -> None:
    """After pg_upgrade: make the cluster at --pgdata the stanza's next generation. Older
    generations' backups stay listed and restorable; new WAL and backups go to the new one."""
    from pgkura.commands.stanza import run_stanza_upgrade

    done = run_stanza_upgrade(config(ctx))
    emit(output, done, lambda: describe(done))


@stanza.command("create")
@output_option
@click.pass_context
def stanza_create(ctx: click.Context, output: str) -> None:
    """Bind --stanza to the cluster at --pgdata before its first backup or archived segment.
    Needed only for a second stanza of a cluster another stanza already backs up (backup and
    archive-push refuse to start one, a mistyped --stanza being the likelier cause)."""
    from pgkura.commands.stanza import run_stanza_create

    done = run_stanza_create(config(ctx))
    emit(output, done, lambda: describe_created(done))


def describe_created(done: StanzaUpgrade) -> str:
    info, cur = done.info, done.info.current
    what = "is bound to" if done.added else "already was bound to"
    return (
        f"stanza {info.name} {what} the cluster with system identifier "
        f"{cur.system_identifier} (PostgreSQL {cur.pg_version})"
    )


def describe(done: StanzaUpgrade) -> str:
    """What `stanza upgrade` did, for people."""
    info, cur = done.info, done.info.current
    if not done.added:
        return (
            f"stanza {info.name}: the cluster (system identifier {cur.system_identifier}) "
            f"already is its current generation {cur.number}; nothing changed"
        )
    old = info.generations[-2]
    return (
        f"stanza {info.name}: generation {cur.number} (PostgreSQL {cur.pg_version}, system "
        f"identifier {cur.system_identifier}) takes new WAL and backups from now on; "
        f"generation {old.number} (PostgreSQL {old.pg_version}) and older keep their backups "
        "and WAL, restorable with their own major's programs"
    )


COMMANDS: list[click.Command] = [stanza]
