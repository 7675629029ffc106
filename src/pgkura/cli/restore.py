"""`pgkura restore`: a physical backup into a directory, a logical dump into a database, or
tables of a physical backup into a live database (a table restore)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pgkura.cli.context import config, progress
from pgkura.cli.options import jobs_option, output_option, target_options, workers
from pgkura.cli.output import print_json, say
from pgkura.cli.table_restore import TableRestoreAsk, table_restore
from pgkura.errors import UsageError

if TYPE_CHECKING:
    from pgkura.commands.logical_restore import LogicalRestoreResult
    from pgkura.commands.restore import RestoreResult, Standby
    from pgkura.physical.targets import TargetArgs


def standby_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--type recovery|standby`` and ``--primary-conninfo``, passed to the command as
    ``standby``: None for a recovery, else what the standby streams from."""

    @functools.wraps(func)
    def command(*args: Any, restore_type: str, primary_conninfo: str | None, **kw: Any) -> Any:
        from pgkura.commands.restore import standby_of

        if restore_type != "standby":
            if primary_conninfo is not None:
                raise UsageError(
                    "--primary-conninfo is for a restore that becomes a standby",
                    hint="add --type standby, or leave --primary-conninfo out",
                )
            return func(*args, standby=None, **kw)
        return func(*args, standby=standby_of(primary_conninfo), **kw)

    type_option = click.option(
        "--type",
        "restore_type",
        type=click.Choice(["recovery", "standby"]),
        default="recovery",
        show_default=True,
        help="physical: recover and promote, or become a standby (standby.signal)",
    )
    conninfo_option = click.option(
        "--primary-conninfo",
        default=None,
        metavar="CONNINFO",
        help="--type standby: stream from this primary (no password: use ~/.pgpass); "
        "without it, the standby fetches WAL from the repository",
    )
    return type_option(conninfo_option(command))


@click.command()
@click.argument("backup_arg", metavar="[ID]", required=False)
@click.option(
    "--target-dir",
    default=None,
    metavar="DIR",
    help="physical backup: directory to restore the data into",
)
@click.option(
    "--backup", "backup_id", default=None, metavar="ID", help="backup id or 'latest' (default)"
)
@click.option(
    "--dbname", "-d", default=None, metavar="NAME", help="logical dump: database to restore into"
)
@click.option("--create", is_flag=True, help="logical: create the database first")
@click.option("--clean", is_flag=True, help="logical: replace what the target database holds")
@click.option(
    "--table", "-t", multiple=True, metavar="NAME", help="restore only this table (repeatable)"
)
@click.option(
    "--schema", "-n", multiple=True, metavar="NAME", help="restore only this schema (repeatable)"
)
@click.option("--no-owner", is_flag=True, help="logical: do not set the objects' owners")
@click.option("--list", "list_toc", is_flag=True, help="logical: show the dump's contents")
@click.option(
    "--as",
    "as_name",
    default=None,
    metavar="NAME",
    help="table restore: load the one table as NAME",
)
@click.option("--replace", is_flag=True, help="table restore: drop and replace the live table")
@click.option("--yes", is_flag=True, help="table restore: --replace without asking")
@click.option(
    "--only", is_flag=True, help="table restore: an inheritance parent without its children"
)
@click.option(
    "--tablespace-map",
    multiple=True,
    metavar="OID_OR_NAME=DIR",
    help="restore a tablespace to another directory (repeatable)",
)
@click.option("--delta", is_flag=True, help="rewrite only what differs in an existing target")
@target_options(restore=True)
@click.option(
    "--archive-mode",
    type=click.Choice(["keep", "off"]),
    default="keep",
    show_default=True,
    help="off: the restored cluster does not archive WAL",
)
@standby_options
@jobs_option()
@output_option
@click.pass_context
def restore(
    ctx: click.Context,
    backup_arg: str | None,
    target_dir: str | None,
    backup_id: str | None,
    dbname: str | None,
    create: bool,
    clean: bool,
    table: tuple[str, ...],
    schema: tuple[str, ...],
    no_owner: bool,
    list_toc: bool,
    as_name: str | None,
    replace: bool,
    yes: bool,
    only: bool,
    tablespace_map: tuple[str, ...],
    delta: bool,
    target: TargetArgs,
    archive_mode: str,
    jobs: int | None,
    standby: Standby | None,
    output: str,
) -> None:
    """Restore a physical backup into --target-dir, or a logical dump into --dbname."""
    if backup_arg is not None and backup_id not in (None, backup_arg):
        raise UsageError(f"two backup ids given: {backup_arg} and --backup {backup_id}")
    backup_id = backup_id or backup_arg
    if dbname and (table or schema) and (target.point_in_time or _is_physical(ctx, backup_id)):
        request = TableRestoreAsk(dbname, table, schema, as_name, replace, yes, only)
        table_restore(ctx, backup_id, request, target, output)
        return
    if as_name or replace or yes or only:
        raise UsageError(
            "--as, --replace, --yes and --only belong to a table restore from a physical backup",
            hint="give --table SCHEMA.TABLE, --dbname DB and a --to-* target",
        )
    if standby is not None and target_dir is None:
        raise UsageError(
            "--type standby restores a physical backup into --target-dir",
            hint="give --target-dir DIR",
        )
    if dbname is not None or list_toc:
        if target_dir is not None:
            raise UsageError(
                "--target-dir restores a physical backup; --dbname and --list a logical dump",
                hint="give one of them",
            )
        from pgkura.commands.logical_restore import restore_logical

        done = restore_logical(
            config(ctx), backup_id, dbname, create=create, clean=clean, jobs=jobs or 1,
            tables=table, schemas=schema, no_owner=no_owner, list_only=list_toc,
            progress=progress(),
        )  # fmt: skip
        _show_logical(done, output)
        return
    if create or clean or table or schema or no_owner:
        raise UsageError(
            "--create, --clean, --table, --schema and --no-owner apply to a logical restore",
            hint="add --dbname DB to restore a logical dump",
        )
    if target_dir is None:
        raise UsageError(
            "no --target-dir given",
            hint="restore a physical backup with --target-dir DIR, a logical dump with --dbname DB",
        )
    from pgkura.commands.restore import RestoreRequest, run_restore

    physical = RestoreRequest(
        target_dir=target_dir,
        backup_id=backup_id,
        tablespace_map=list(tablespace_map),
        delta=delta,
        jobs=workers(jobs),
        target=target.parse(),
        archive_mode_off=archive_mode == "off",
        standby=standby,
    )
    _show_physical(run_restore(config(ctx), physical, progress()), output)


def _is_physical(ctx: click.Context, backup_id: str | None) -> bool:
    if backup_id is None:
        return False
    from pgkura.commands.info import backup_kind

    return backup_kind(config(ctx), backup_id) == "physical"


def _show_physical(result: RestoreResult, output: str) -> None:
    """What was restored on stderr; with --output json, also its JSON on stdout."""
    if output == "json":
        print_json(result)
    s = result.stats
    if result.note:
        say(result.note)
    say(
        f"restored backup {result.manifest.id} ({result.manifest.method}) into "
        f"{result.target}: {s.files} files, {s.bytes_written} bytes written, "
        f"{s.files_unchanged} unchanged, {s.files_removed} removed"
    )
    as_user = f"runuser -u {result.owner} -- " if result.owner else ""
    if result.owner:
        say(f"the restored files belong to {result.owner}, the cluster's OS user")
    elif os.geteuid() == 0:
        say(
            f"the restored files belong to root, which PostgreSQL does not run as: give them to "
            f"the server's OS user before starting it (chown -R postgres: {result.target}, and "
            "each tablespace location)"
        )
    if result.recovery_files:
        say(
            f"recovery settings written ({', '.join(result.recovery_files)}); "
            f"start the server with PostgreSQL {result.manifest.pg_version}'s pg_ctl to replay "
            f"WAL: {as_user}pg_ctl start -D {result.target}"
        )


def _show_logical(result: LogicalRestoreResult, output: str) -> None:
    """The dump's contents on stdout (--list), or what was restored on stderr; with
    --output json, the result's JSON on stdout (the contents in its ``listing``)."""
    if output == "json":
        print_json(result)
    elif result.listing is not None:
        click.echo(result.listing, nl=False)
        return
    if result.globals_restored:
        skipped = f" ({len(result.skipped_globals)} already present)"
        say("restored roles and tablespaces" + (skipped if result.skipped_globals else ""))
    for dumped, into in result.databases:
        how = "created and restored" if into in result.created else "restored"
        source = f"database {dumped}" + ("" if dumped == into else f" into {into}")
        say(f"{how} {source} from dump {result.manifest.id} ({result.format})")


COMMANDS: list[click.Command] = [restore]
