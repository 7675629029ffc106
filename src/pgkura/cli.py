"""The ``pgkura`` command: argument parsing, settings, output, progress and exit codes.

Only this module prints and exits. Data (ids, JSON) goes to stdout; messages, progress and
errors go to stderr, an error line followed by a ``hint:`` line. Heavy modules are imported
inside the commands, because archive-push and archive-get start once per WAL segment.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from pgkura.config import DEFAULT_CONFIG, SETTINGS, Config, load_config
from pgkura.errors import ExitCode, PgkuraError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("pgkura")


def _settings_options(func: F) -> F:
    for s in reversed([s for s in SETTINGS if s.on_command_line]):
        func = click.option(s.flag, s.name, default=None, help=s.help_line(), metavar=s.metavar)(
            func
        )
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help=f"TOML config file (default: {DEFAULT_CONFIG} when it exists) [env PGKURA_CONFIG]",
)
@_settings_options
@click.version_option(package_name="pgkura")
@click.pass_context
def cli(ctx: click.Context, /, config_file: str | None, **flags: Any) -> None:
    """Backup and point-in-time recovery for PostgreSQL."""
    from pgkura.repository.locks import set_command

    ctx.obj = {"flags": flags, "config_file": config_file}
    set_command(ctx.invoked_subcommand or "")


def _config(ctx: click.Context) -> Config:
    obj = ctx.find_root().obj
    cfg: Config | None = obj.get("config")
    if cfg is None:
        cfg = obj["config"] = load_config(obj["flags"], obj["config_file"])
        level = getattr(logging, cfg.log_level.upper(), None)
        if not isinstance(level, int):
            raise PgkuraError(
                f"unknown log level {cfg.log_level!r}", hint="use debug, info, warning or error"
            )
        logging.basicConfig(level=level, format="pgkura: %(message)s", stream=sys.stderr)
        from pgkura.scratch import sweep_scratch

        for path in sweep_scratch():
            log.info("removed %s, left by a pgkura run that is gone", path)
    return cfg


def _jobs(jobs: int | None) -> int:
    from pgkura.errors import UsageError

    if jobs is not None and jobs < 1:
        raise UsageError(
            f"--jobs must be at least 1, not {jobs}",
            hint="give a number of parallel workers, such as --jobs 2, or leave it out "
            "(one per core)",
        )
    return jobs or len(os.sched_getaffinity(0))


def _emit(output: str, data: dict[str, Any], text: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(text)


def _progress() -> Any:
    from pgkura.cli_progress import make_progress

    return make_progress()


OUTPUT = click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", help="output format"
)
JOBS = click.option(
    "--jobs", "-j", type=int, default=None, metavar="N", help="parallel workers (default: cores)"
)


@cli.command()
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

    repo = run_init(_config(ctx), compression=compress, block_size=block_size)
    click.echo(
        f"initialised repository {repo.storage.location} ({repo.config.compression})", err=True
    )


@cli.command()
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(["offline", "online", "basebackup"]),
    default=None,
    help="offline (server stopped), online, or basebackup (through pg_basebackup, for servers "
    "whose files pgkura cannot read); default: online if the server runs, else offline",
)
@click.option("--force", is_flag=True, help="offline: copy even if the server seems to be running")
@click.option(
    "--checkpoint",
    type=click.Choice(["fast", "spread"]),
    default="fast",
    show_default=True,
    help="online: how the server's starting checkpoint is taken",
)
@JOBS
@OUTPUT
@click.pass_context
def backup(
    ctx: click.Context,
    backup_type: str | None,
    force: bool,
    checkpoint: str,
    jobs: int | None,
    output: str,
) -> None:
    """Take a physical backup of the cluster at --pgdata."""
    from pgkura.commands.backup import run_backup
    from pgkura.errors import ChecksumFailuresError

    cfg = _config(ctx)
    manifest = run_backup(
        cfg,
        backup_type=backup_type,
        force=force,
        fast_checkpoint=checkpoint == "fast",
        jobs=_jobs(jobs),
        progress=_progress(),
    )
    _emit(output, {"id": manifest.id}, manifest.id)
    _expire_auto(cfg, f"backup {manifest.id}")
    if manifest.checksum_failures:
        first = manifest.checksum_failures[0]
        total = sum(int(f["count"]) for f in manifest.checksum_failures)
        raise ChecksumFailuresError(
            f"backup {manifest.id} was stored, but {total} page(s) failed their checksum "
            f"(first: {first['path']} block {first['blocks'][0]})",
            hint=f"see pgkura info {manifest.id}; the cluster has corrupt pages",
        )


@cli.command()
@click.option("--dbname", "-d", "dbname", default=None, metavar="NAME", help="database to dump")
@click.option("--all", "all_databases", is_flag=True, help="dump every database (and the globals)")
@click.option(
    "--format",
    "-F",
    "dump_format",
    type=click.Choice(["custom", "directory", "tar", "plain"]),
    default="custom",
    show_default=True,
    help="pg_dump's output format",
)
@click.option(
    "--schema", "-n", multiple=True, metavar="NAME", help="dump only this schema (repeatable)"
)
@click.option(
    "--table", "-t", multiple=True, metavar="NAME", help="dump only this table (repeatable)"
)
@click.option(
    "--exclude-table", "-T", multiple=True, metavar="NAME", help="leave this table out (repeatable)"
)
@click.option(
    "--jobs",
    "-j",
    type=int,
    default=None,
    metavar="N",
    help="parallel pg_dump workers (directory format)",
)
@OUTPUT
@click.pass_context
def dump(
    ctx: click.Context,
    dbname: str | None,
    all_databases: bool,
    dump_format: str,
    schema: tuple[str, ...],
    table: tuple[str, ...],
    exclude_table: tuple[str, ...],
    jobs: int | None,
    output: str,
) -> None:
    """Take a logical dump (pg_dump, plus pg_dumpall --globals-only) into the repository."""
    from pgkura.commands.dump import run_dump

    if jobs is not None:
        _jobs(jobs)
    if dump_format == "directory" and jobs is None:
        jobs = _jobs(None)
    manifest = run_dump(
        _config(ctx),
        dbname=dbname,
        all_databases=all_databases,
        format=dump_format,
        jobs=jobs,
        schemas=schema,
        tables=table,
        exclude_tables=exclude_table,
        progress=_progress(),
    )
    _emit(output, {"id": manifest.id}, manifest.id)
    _expire_auto(_config(ctx), f"dump {manifest.id}")


@cli.command()
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
@click.option(
    "--to-time", default=None, metavar="TIME", help="recover to this time (no zone: local time)"
)
@click.option("--to-lsn", default=None, metavar="LSN", help="recover to this WAL location (X/X)")
@click.option("--to-xid", default=None, metavar="XID", help="recover to this transaction id")
@click.option("--to-name", default=None, metavar="NAME", help="recover to this restore point")
@click.option("--to-immediate", is_flag=True, help="stop as soon as the backup is consistent")
@click.option("--exclusive", is_flag=True, help="stop just before the target, not after it")
@click.option(
    "--target-action",
    type=click.Choice(["promote", "pause", "shutdown"]),
    default="promote",
    show_default=True,
)
@click.option(
    "--target-timeline",
    default="latest",
    show_default=True,
    metavar="latest|current|N",
    help="timeline to recover along",
)
@click.option(
    "--archive-mode",
    type=click.Choice(["keep", "off"]),
    default="keep",
    show_default=True,
    help="off: the restored cluster does not archive WAL",
)
@JOBS
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
    to_time: str | None,
    to_lsn: str | None,
    to_xid: str | None,
    to_name: str | None,
    to_immediate: bool,
    exclusive: bool,
    target_action: str,
    target_timeline: str,
    archive_mode: str,
    jobs: int | None,
) -> None:
    """Restore a physical backup into --target-dir, or a logical dump into --dbname."""
    from pgkura.commands.restore import RestoreRequest, run_restore
    from pgkura.errors import UsageError
    from pgkura.physical.targets import parse_target

    if backup_arg is not None and backup_id not in (None, backup_arg):
        raise UsageError(f"two backup ids given: {backup_arg} and --backup {backup_id}")
    if jobs is not None:
        _jobs(jobs)  # refused before anything else when it is not a number of workers
    backup_id = backup_id or backup_arg
    point_in_time = any((to_time, to_lsn, to_xid, to_name, to_immediate))
    if dbname and (table or schema) and (point_in_time or _is_physical(ctx, backup_id)):
        _table_restore(
            ctx, backup_id, dbname, table, schema, as_name, replace, yes, only,
            dict(to_time=to_time, to_lsn=to_lsn, to_xid=to_xid, to_name=to_name),
            to_immediate, exclusive,
        )  # fmt: skip
        return
    if as_name or replace or yes or only:
        raise UsageError(
            "--as, --replace, --yes and --only belong to a table restore from a physical backup",
            hint="give --table SCHEMA.TABLE, --dbname DB and a --to-* target",
        )
    if dbname is not None or list_toc:
        if target_dir is not None:
            raise UsageError(
                "--target-dir restores a physical backup; --dbname and --list a logical dump",
                hint="give one of them",
            )
        from pgkura.commands.logical_restore import describe, restore_logical

        done = restore_logical(
            _config(ctx), backup_id, dbname, create=create, clean=clean, jobs=jobs or 1,
            tables=table, schemas=schema, no_owner=no_owner, list_only=list_toc,
            progress=_progress(),
        )  # fmt: skip
        if done.listing is not None:
            click.echo(done.listing, nl=False)
        for line in describe(done):
            click.echo(line, err=True)
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
    target = parse_target(
        to_time=to_time,
        to_lsn=to_lsn,
        to_xid=to_xid,
        to_name=to_name,
        to_immediate=to_immediate,
        exclusive=exclusive,
        action=target_action,
        timeline=target_timeline,
    )
    request = RestoreRequest(
        target_dir=target_dir,
        backup_id=backup_id,
        tablespace_map=list(tablespace_map),
        delta=delta,
        jobs=_jobs(jobs),
        target=target,
        archive_mode_off=archive_mode == "off",
    )
    result = run_restore(_config(ctx), request, _progress())
    s = result.stats
    if result.note:
        click.echo(result.note, err=True)
    click.echo(
        f"restored backup {result.manifest.id} ({result.manifest.method}) into "
        f"{result.target}: {s.files} files, {s.bytes_written} bytes written, "
        f"{s.files_unchanged} unchanged, {s.files_removed} removed",
        err=True,
    )
    if result.recovery_files:
        click.echo(
            f"recovery settings written ({', '.join(result.recovery_files)}); "
            f"start the server with PostgreSQL {result.manifest.pg_version}'s pg_ctl to replay "
            f"WAL: pg_ctl start -D {result.target}",
            err=True,
        )


@cli.command()
@click.argument("backup_id", required=False)
@OUTPUT
@click.pass_context
def info(ctx: click.Context, backup_id: str | None, output: str) -> None:
    """List the backups of the stanza (or show one)."""
    from pgkura.cli_render import render_info
    from pgkura.commands.info import run_info

    data = run_info(_config(ctx), backup_id)
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        render_info(data, detail=backup_id is not None)


@cli.command("archive-push")
@click.argument("wal_path")
@click.pass_context
def archive_push(ctx: click.Context, wal_path: str) -> None:
    """Archive one WAL file (archive_command = 'pgkura ... archive-push %p')."""
    from pgkura.commands.archive import run_archive_push

    result = run_archive_push(_config(ctx), wal_path)
    if result is None:
        return
    log.info(
        "archived %s (%d -> %d bytes)%s",
        result.name,
        result.raw_size,
        result.stored_size,
        "" if result.written else ", already archived with the same content",
    )


@cli.command("archive-get")
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

    Exits 1 only when the archive does not have the file; any other failure exits 126, so
    that PostgreSQL stops recovery instead of ending it early."""
    from pgkura.commands.archive import run_archive_get

    try:
        run_archive_get(_config(ctx), wal_name, dest, stop_after)
    except PgkuraError as exc:
        if exc.exit_code != ExitCode.NOT_FOUND:
            exc.exit_code = ExitCode.ABORT_RECOVERY
        raise


def _target(targets: dict[str, str | None], *, to_immediate: bool, exclusive: bool = False) -> Any:
    """The recovery target of the --to-* options a command collected."""
    from pgkura.physical.targets import parse_target

    return parse_target(
        to_time=targets["to_time"],
        to_lsn=targets["to_lsn"],
        to_xid=targets["to_xid"],
        to_name=targets["to_name"],
        to_immediate=to_immediate,
        exclusive=exclusive,
    )


def _is_physical(ctx: click.Context, backup_id: str | None) -> bool:
    if backup_id is None:
        return False
    from pgkura.commands import open_repository
    from pgkura.repository.manifest import read_manifest, resolve_backup_id

    cfg = _config(ctx)
    repo = open_repository(cfg)
    return read_manifest(repo, cfg.stanza, resolve_backup_id(repo, cfg.stanza, backup_id)).kind == (
        "physical"
    )


def _table_restore(
    ctx: click.Context,
    backup_id: str | None,
    dbname: str,
    tables: tuple[str, ...],
    schemas: tuple[str, ...],
    as_name: str | None,
    replace: bool,
    yes: bool,
    only: bool,
    targets: dict[str, str | None],
    to_immediate: bool,
    exclusive: bool,
) -> None:
    from pgkura.commands.table_restore import TableRestoreRequest, run_table_restore

    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm(question, default=False, err=True)

    target = _target(targets, to_immediate=to_immediate, exclusive=exclusive)
    request = TableRestoreRequest(
        dbname=dbname,
        tables=list(tables),
        schemas=list(schemas),
        target=target,
        backup_id=backup_id,
        as_name=as_name,
        replace=replace,
        only=only,
        confirm=confirm,
    )
    result = run_table_restore(_config(ctx), request, lambda m: click.echo(m, err=True))
    from pgkura.cli_render import table_restore_lines

    for line in table_restore_lines(result):
        click.echo(line)


@cli.command()
@click.argument("backup_id", required=False)
@click.option("--restore", "drill", is_flag=True, help="drill: restore into a sandbox and check it")
@click.option(
    "--pages/--no-pages",
    default=True,
    help="recompute every data page checksum from the stored blocks (default); --no-pages "
    "reports only the failures the backup found as it read the pages",
)
@click.option("--all", "all_backups", is_flag=True, help="with --restore: drill every backup")
@click.option("--keep", is_flag=True, help="with --restore: leave the sandbox running")
@click.option(
    "--to-time", default=None, metavar="TIME", help="with --restore: recover to this time"
)
@click.option("--to-lsn", default=None, metavar="LSN", help="with --restore: recover to this LSN")
@click.option("--to-xid", default=None, metavar="XID", help="with --restore: recover to this xid")
@click.option(
    "--to-name", default=None, metavar="NAME", help="with --restore: recover to this restore point"
)
@JOBS
@OUTPUT
@click.pass_context
def verify(
    ctx: click.Context,
    backup_id: str | None,
    drill: bool,
    pages: bool,
    all_backups: bool,
    keep: bool,
    to_time: str | None,
    to_lsn: str | None,
    to_xid: str | None,
    to_name: str | None,
    jobs: int | None,
    output: str,
) -> None:
    """Read back every block, file, page and WAL file a backup needs (all backups if no ID);
    with --restore, prove it restores: sandbox, recovery, checks."""
    from pgkura.commands.verify import run_verify
    from pgkura.errors import CorruptionError

    if drill:
        _drill(ctx, backup_id, all_backups, keep, output,
               dict(to_time=to_time, to_lsn=to_lsn, to_xid=to_xid, to_name=to_name))  # fmt: skip
        return
    if all_backups or keep or any((to_time, to_lsn, to_xid, to_name)):
        raise PgkuraError(
            "--all, --keep and --to-* belong to a drill", hint="add --restore, or drop them"
        )
    report = run_verify(_config(ctx), backup_id, _jobs(jobs), pages)
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for b in report.backups:
            click.echo(f"backup {b['id']}: {'ok' if b['ok'] else 'PROBLEMS'}")
        if backup_id is None:
            click.echo(f"WAL archive: {report.wal_checked} files checked")
        if pages:
            click.echo("data page checksums: recomputed from the stored blocks")
        else:
            click.echo("data page checksums: as each backup found them when it read the pages")
        for problem in report.problems:
            click.echo(f"problem: {problem}")
    if report.problems:
        raise CorruptionError(
            f"verify found {len(report.problems)} problem(s)",
            hint="restore from a backup verify reports ok; take a new backup",
        )


def _drill(
    ctx: click.Context,
    backup_id: str | None,
    all_backups: bool,
    keep: bool,
    output: str,
    targets: dict[str, str | None],
) -> None:
    from pgkura.commands import open_repository
    from pgkura.commands.drill import drill
    from pgkura.physical.choose import physical_backups

    cfg = _config(ctx)
    target = _target(targets, to_immediate=not any(targets.values()))
    if all_backups:
        if backup_id:
            raise PgkuraError("give a backup id or --all, not both")
        ids: list[str | None] = [m.id for m in physical_backups(open_repository(cfg), cfg.stanza)]
    else:
        ids = [backup_id]
    results = []
    for one in ids:
        if output != "json":
            click.echo(f"drill: restoring backup {one or '(chosen for the target)'} into a sandbox",
                       err=True)  # fmt: skip
        result = drill(cfg, one, target, keep=keep, say=lambda m: click.echo(m, err=True))
        results.append(result)
        if output != "json":
            t = result["timings"]
            times = ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
            verdict = "PASSED" if result["passed"] else "FAILED"
            click.echo(f"backup {result['backup']}: {verdict} ({times})")
            for problem in result["problems"]:
                click.echo(f"problem: {problem}")
            if result["passed"]:
                tables = sum(len(v) for v in result.get("row_counts", {}).values())
                click.echo(
                    f"  {len(result.get('row_counts', {}))} databases, {tables} tables counted, "
                    f"pg_amcheck {result.get('amcheck')}, "
                    f"{result.get('pages_checked', 0)} pages checked"
                )
    if output == "json":
        click.echo(json.dumps({"drills": results}, indent=2))
    failed = [r for r in results if not r["passed"]]
    if failed:
        raise PgkuraError(
            f"{len(failed)} of {len(results)} drill(s) failed",
            hint="the problem lines say why; that backup cannot be relied on",
        )


# -- retention: gc, expire, pin, unpin, delete (issue 15) ----------------------------------


@cli.command()
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@OUTPUT
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, output: str) -> None:
    """Delete packs no backup or dump references and repack partly used ones (--max-unused);
    backups, restores and the WAL archive go on meanwhile."""
    from dataclasses import asdict

    from pgkura.cli_render import gc_text
    from pgkura.commands.gc import run_gc

    report = run_gc(_config(ctx), dry_run=dry_run)
    _emit(output, asdict(report), gc_text(report))


@cli.command()
@click.option("--dry-run", is_flag=True, help="say what would be expired, change nothing")
@OUTPUT
@click.pass_context
def expire(ctx: click.Context, dry_run: bool, output: str) -> None:
    """Apply the retention policy (--keep-*, --pitr-window): delete the backups and dumps it
    does not keep, the WAL no kept backup needs, then run gc. Says why each backup stays or
    goes."""
    from pgkura.cli_render import expire_lines
    from pgkura.commands.expire import run_expire

    report = run_expire(_config(ctx), dry_run=dry_run)
    _emit(output, report.to_json(), "\n".join(expire_lines(report)))


@cli.command()
@click.argument("backup_id", metavar="ID")
@click.option("--pitr", is_flag=True, help="also keep every WAL segment after the backup")
@OUTPUT
@click.pass_context
def pin(ctx: click.Context, backup_id: str, pitr: bool, output: str) -> None:
    """Keep backup ID whatever the retention policy says (with the WAL to make it
    consistent)."""
    from pgkura.commands.expire import run_pin

    done = run_pin(_config(ctx), backup_id, pitr=pitr)
    what = " and every WAL segment after it" if pitr else ""
    _emit(output, {"id": done.backup_id, "pinned": True, "pitr": done.pitr},
          f"pinned backup {done.backup_id}{what}")  # fmt: skip


@cli.command()
@click.argument("backup_id", metavar="ID")
@OUTPUT
@click.pass_context
def unpin(ctx: click.Context, backup_id: str, output: str) -> None:
    """Let the retention policy decide about backup ID again."""
    from pgkura.commands.expire import run_unpin

    backup = run_unpin(_config(ctx), backup_id)
    _emit(output, {"id": backup, "pinned": False}, f"unpinned backup {backup}")


@cli.command()
@click.argument("backup_id", metavar="ID")
@click.option(
    "--force", is_flag=True, help="also delete the newest backup of its kind or a pinned one"
)
@click.option("--dry-run", is_flag=True, help="say what would be deleted, change nothing")
@OUTPUT
@click.pass_context
def delete(ctx: click.Context, backup_id: str, force: bool, dry_run: bool, output: str) -> None:
    """Delete backup (or dump) ID by hand, its WAL no kept backup needs, then run gc."""
    from pgkura.cli_render import expire_lines
    from pgkura.commands.expire import run_delete

    report = run_delete(_config(ctx), backup_id, force=force, dry_run=dry_run)
    _emit(output, report.to_json(), "\n".join(expire_lines(report)))


def _expire_auto(cfg: Config, what: str) -> None:
    """expire-auto: expire after a successful backup or dump; what it did goes to stderr."""
    if not cfg.expire_auto:
        return
    from pgkura.cli_render import expire_lines
    from pgkura.commands.expire import expire_after

    report = expire_after(cfg, what)
    if report is not None:
        for line in expire_lines(report):
            click.echo(f"expire-auto: {line}", err=True)


# -- end of retention ------------------------------------------------------------------------


@cli.group()
def repair() -> None:
    """Repair what can be rebuilt from what the repository still holds."""


@repair.command("index")
@OUTPUT
@click.pass_context
def repair_index(ctx: click.Context, output: str) -> None:
    """Write back missing index objects from the copies at the end of their packs."""
    from dataclasses import asdict

    from pgkura.commands.repair import run_repair_index

    report = run_repair_index(_config(ctx))
    lines = [f"rebuilt the index of pack {p} from its own copy" for p in report.rebuilt]
    lines += [f"cannot rebuild: {problem}" for problem in report.unrepairable]
    _emit(output, asdict(report), "\n".join(lines) or "every pack has its index object")
    if report.unrepairable:
        raise PgkuraError(
            f"{len(report.unrepairable)} pack index(es) cannot be rebuilt",
            hint="run pgkura verify to see which backups need them",
        )


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the server's archiving settings, the repository, and a WAL switch."""
    from pgkura.commands.check import run_check

    report = run_check(_config(ctx))
    for line in report.passed:
        click.echo(f"ok: {line}")
    for line in report.problems:
        click.echo(f"problem: {line}")
    if report.problems:
        raise PgkuraError(
            f"check found {len(report.problems)} problem(s)",
            hint="change what each 'problem:' line says, then run pgkura check again",
        )


@cli.group()
def stanza() -> None:
    """Manage the stanza record (which cluster a stanza backs up)."""


@stanza.command("upgrade")
@OUTPUT
@click.pass_context
def stanza_upgrade(ctx: click.Context, output: str) -> None:
    """After pg_upgrade: make the cluster at --pgdata the stanza's next generation. Older
    generations' backups stay listed and restorable; new WAL and backups go to the new one."""
    from pgkura.commands.stanza import describe, run_stanza_upgrade

    done = run_stanza_upgrade(_config(ctx))
    _emit(output, done.to_json(), describe(done))


@cli.command()
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

    cfg = _config(ctx)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    run_demo(say, keep=keep, workdir=workdir, pg_bin=cfg.pg_bin, search_path=cfg.pg_search_path)


def _fail(exc: PgkuraError) -> NoReturn:
    click.echo(f"pgkura: error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(int(exc.exit_code))


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="pgkura", standalone_mode=False)
    except PgkuraError as exc:
        _fail(exc)
    except click.exceptions.Abort:
        click.echo("pgkura: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        click.echo(f"pgkura: error: {exc.format_message()}", err=True)
        click.echo("hint: see pgkura --help", err=True)
        sys.exit(int(ExitCode.USAGE))
    except KeyboardInterrupt:
        click.echo("pgkura: interrupted; nothing was committed", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except BrokenPipeError:
        os._exit(int(ExitCode.ERROR))
    except OSError as exc:
        # An I/O failure nothing below turned into a PgkuraError: still one clear line.
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"pgkura: error: {exc.strerror or exc}{where}", err=True)
        click.echo("hint: check the path's permissions and free space", err=True)
        sys.exit(int(ExitCode.ERROR))
    sys.exit(0)
