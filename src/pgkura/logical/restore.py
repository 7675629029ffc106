"""Restoring logical dumps: pg_restore for archive formats, psql for plain SQL.

Everything that can be refused is refused before anything changes on the target server: a
missing or non-empty database, a table the dump does not hold, options a plain dump cannot honour.
A database pgkura creates gets the dump's encoding, locale and owner. A whole-cluster dump
restores its globals (roles, memberships, tablespaces) first, so every owner exists by the time
the databases are restored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pgkura.config import Config
from pgkura.errors import PostgresError, UsageError
from pgkura.logical.records import DatabaseDump, DumpFacts, globals_file
from pgkura.logical.toc import dump_entry, feed, parse_toc, read_toc, staged_dump
from pgkura.logical.tools import PgTools, ToolProcess, connect_maintenance, conninfo, tool_message
from pgkura.pg.process import DEVNULL, PIPE
from pgkura.pg.versions import capabilities, major_of_version_num
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockReader
from pgkura.repository.manifest import FileEntry, Manifest

log = logging.getLogger("pgkura")

_ERROR_LINE = re.compile(r"\bERROR:\s+(.*)")


@dataclass(frozen=True)
class RestoreOptions:
    create: bool = False
    clean: bool = False
    jobs: int = 1
    tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    no_owner: bool = False


@dataclass(frozen=True)
class Target:
    """One database of the dump and the database it goes into."""

    dump: DatabaseDump
    name: str
    exists: bool
    empty: bool


# Objects a fresh database does not have: anything in a schema other than the system ones,
# schemas other than public, and extensions other than plpgsql.
_USER_OBJECTS = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_namespace
        WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
          AND nspname !~ '^pg_(toast|temp_|toast_temp_)')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


def plan_targets(
    cfg: Config, facts: DumpFacts, dbname: str, cluster: bool, opts: RestoreOptions
) -> list[Target]:
    """Which database goes where, each checked against the target server; refuses before any
    change."""
    if cluster:
        pairs = [(d, d.name) for d in facts.databases]
    elif len(facts.databases) == 1:
        pairs = [(facts.databases[0], dbname)]
    else:
        match = [d for d in facts.databases if d.name == dbname]
        if not match:
            names = ", ".join(d.name for d in facts.databases)
            raise UsageError(
                f"the dump holds several databases ({names}) and none is named {dbname!r}",
                hint="name one of them with --dbname, or restore them all with --dbname postgres",
            )
        pairs = [(match[0], dbname)]
    conn = connect_maintenance(cfg)
    try:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    finally:
        conn.close()
    targets = []
    for dump, name in pairs:
        empty = True
        if name in existing:
            empty = _is_empty(cfg, name)
        targets.append(Target(dump, name, name in existing, empty))
    for t in targets:
        if not t.exists and not (cluster or opts.create):
            raise UsageError(
                f"database {t.name!r} does not exist on the target server",
                hint="add --create to create it, or create it first",
            )
        if t.exists and not t.empty and not opts.clean:
            raise UsageError(
                f"database {t.name!r} on the target server is not empty; nothing was restored",
                hint="add --clean to replace the objects the dump holds, or restore into a "
                "new database with --create",
            )
    return targets


def _is_empty(cfg: Config, dbname: str) -> bool:
    from pgkura.pg.connection import connect

    conn = connect(cfg.dbconn, dbname)
    try:
        row = conn.execute(_USER_OBJECTS).fetchone()
        return row is not None and int(str(row[0])) == 0
    finally:
        conn.close()


def check_tables(
    tools: PgTools,
    reader: BlockReader,
    manifest: Manifest,
    facts: DumpFacts,
    targets: list[Target],
    opts: RestoreOptions,
) -> None:
    """Refuse a --table or --schema the dump does not hold (pg_restore would restore nothing
    and succeed)."""
    if not (opts.tables or opts.schemas):
        return
    if facts.format == "plain":
        raise UsageError(
            "--table and --schema need a custom, directory or tar dump; this one is plain SQL",
            hint="restore the whole dump, or dump with --format custom",
        )
    for t in targets:
        entries = parse_toc(read_toc(tools, reader, manifest, t.dump, facts.format))
        schemas = {e.schema for e in entries}
        for s in opts.schemas:
            if s not in schemas:
                raise UsageError(
                    f"schema {s!r} is not in the dump of database {t.dump.name!r}",
                    hint=f"see what it holds with: pgkura restore {manifest.id} --list",
                )
        names = {e.name for e in entries if not opts.schemas or e.schema in opts.schemas}
        for name in opts.tables:
            if name not in names:
                raise UsageError(
                    f"table {name!r} is not in the dump of database {t.dump.name!r}",
                    hint=f"see what it holds with: pgkura restore {manifest.id} --list "
                    "(--table takes an unqualified name; add --schema for the schema)",
                )


def restore_globals(
    tools: PgTools, cfg: Config, reader: BlockReader, manifest: Manifest
) -> list[str]:
    """Run the dump's globals script; return the statements that were skipped because the
    object already exists (the roles of a fresh cluster, say). Any other error fails."""
    entry = globals_file(manifest)
    if entry is None:
        return []
    args = [
        tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0",
        f"--dbname={conninfo(cfg, 'postgres')}", "-f", "-",
    ]  # fmt: skip
    with ToolProcess(args, stdin=PIPE, stdout=DEVNULL) as proc:
        feed(reader, entry, proc)
        rc, err = proc.wait()
    errors = [m.group(1) for m in map(_ERROR_LINE.search, err.splitlines()) if m]
    fatal = [e for e in errors if "already exists" not in e]
    if rc != 0 or fatal:
        raise PostgresError(
            f"restoring the roles and tablespaces failed: {tool_message(err)}",
            hint="fix what the message says (a tablespace directory may be in use) and "
            "restore again with --clean",
        )
    return errors


def prepare_database(cfg: Config, t: Target, facts: DumpFacts, opts: RestoreOptions) -> bool:
    """Create the target database when needed (or drop and create it for a plain dump with
    --clean, which holds no DROP statements); True when it was created."""
    if t.exists and not t.empty and opts.clean and facts.format == "plain":
        _run_maintenance(cfg, t.name, _drop_sql(t.name))
    elif t.exists:
        return False
    _run_maintenance(cfg, t.name, _create_sql(cfg, t, opts))
    return True


def _run_maintenance(cfg: Config, dbname: str, statement: Any) -> None:
    from pgkura.pg.connection import connect

    # A database cannot be dropped from a session connected to it.
    conn = connect(cfg.dbconn, "template1") if dbname == "postgres" else connect_maintenance(cfg)
    try:
        conn.execute(statement)
    except Exception as exc:  # psycopg's errors carry the server's message
        raise PostgresError(
            f"cannot prepare database {dbname!r}: {str(exc).strip()}",
            hint="close the sessions connected to it and restore again",
        ) from None
    finally:
        conn.close()


def _drop_sql(name: str) -> Any:
    from psycopg import sql

    return sql.SQL("DROP DATABASE {}").format(sql.Identifier(name))


def _create_sql(cfg: Config, t: Target, opts: RestoreOptions) -> Any:
    from psycopg import sql

    conn = connect_maintenance(cfg)
    try:
        row = conn.execute("SHOW server_version_num").fetchone()
        version_num = int(row[0]) if row else 0
        owner_known = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (t.dump.owner,)
        ).fetchone()
    finally:
        conn.close()
    db = t.dump
    parts = [
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
            sql.Identifier(t.name), sql.Literal(db.encoding)
        ),
        sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(db.collate), sql.Literal(db.ctype)),
    ]
    caps = capabilities(major_of_version_num(version_num), "the server restored into")
    if db.locale_provider == "i" and db.icu_locale and caps.has_icu_locale_clause:
        parts.append(
            sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(db.icu_locale))
        )
    if owner_known and not opts.no_owner:
        parts.append(sql.SQL("OWNER {}").format(sql.Identifier(db.owner)))
    elif not opts.no_owner:
        log.warning("role %s, owner of %s in the dump, does not exist here", db.owner, db.name)
    return sql.SQL(" ").join(parts)


def restore_database(
    tools: PgTools,
    cfg: Config,
    reader: BlockReader,
    manifest: Manifest,
    facts: DumpFacts,
    t: Target,
    opts: RestoreOptions,
    *,
    created: bool,
    progress: Progress | None = None,
) -> None:
    """Restore one database's dump into ``t.name``, which exists by now."""
    progress = progress or NoProgress()
    what = f"restoring database {t.dump.name!r} into {t.name!r}"
    if facts.format == "plain":
        args = [
            tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
            "--single-transaction", f"--dbname={conninfo(cfg, t.name)}", "-f", "-",
        ]  # fmt: skip
        _run_streamed(args, reader, dump_entry(manifest, t.dump), what, progress)
        return
    args = [
        tools.path("pg_restore"),
        f"--dbname={conninfo(cfg, t.name)}",
        "--no-password",
        "--exit-on-error",
    ]
    if opts.clean and not created:
        args += ["--clean", "--if-exists"]
    if opts.no_owner:
        args.append("--no-owner")
    args += [f"--schema={s}" for s in opts.schemas]
    args += [f"--table={name}" for name in opts.tables]
    parallel = opts.jobs > 1 and facts.format in ("custom", "directory")
    # One transaction when it can be: a failed restore then leaves the database as it was.
    args.append(f"--jobs={opts.jobs}" if parallel else "--single-transaction")
    if facts.format == "directory" or parallel:
        with staged_dump(reader, manifest, t.dump) as root:
            with ToolProcess([*args, str(root)], stdout=DEVNULL) as proc:
                rc, err = proc.wait()
            _check(rc, err, what)
        return
    if opts.jobs > 1:
        log.warning("pg_restore cannot restore a tar dump in parallel; using one job")
    _run_streamed(args, reader, dump_entry(manifest, t.dump), what, progress)


def _run_streamed(
    args: list[str], reader: BlockReader, entry: FileEntry, what: str, progress: Progress
) -> None:
    with ToolProcess(args, stdin=PIPE, stdout=DEVNULL) as proc:
        feed(reader, entry, proc, progress)
        rc, err = proc.wait()
    _check(rc, err, what)


def _check(rc: int, err: str, what: str) -> None:
    if rc != 0:
        raise PostgresError(
            f"{what} failed: {tool_message(err)}",
            hint="fix what the message says and restore again (with --clean if the database "
            "now holds part of the dump)",
        )
