"""`pgkura restore --table S.T [--schema S] --to-... --dbname DB`: one table (or schema) as it
was at a point in time, brought into the live database without restoring the cluster over it.

The backup is restored into a sandbox with the target; there the requested tables are renamed
or moved so that they cannot clash with anything live, foreign keys that point outside the
restored set are reported and left out, the result is dumped with the server version's pg_dump
and loaded into the live database with psql in one transaction:

- default: into a new schema ``restored_<timestamp>`` (a restored schema S becomes
  ``restored_<timestamp>_S``; ``_2``, ``_3``... follow the timestamp when it is taken);
- ``--as NEW``: one table, under a new name in its own schema;
- ``--replace``: the live table is dropped and replaced, in the same transaction.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.errors import PgkuraError, UsageError
from pgkura.physical.recovery import RecoveryTarget
from pgkura.scratch import scratch_dir


@dataclass
class TableRestoreRequest:
    dbname: str
    tables: list[str] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    target: RecoveryTarget = field(default_factory=RecoveryTarget)
    backup_id: str | None = None
    as_name: str | None = None
    replace: bool = False
    confirm: Callable[[str], bool] = lambda _question: False


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def split_name(text: str) -> tuple[str, str]:
    schema, dot, table = text.partition(".")
    if not dot:
        return "public", text
    if not schema or not table or "." in table:
        raise UsageError(f"--table {text!r} is not SCHEMA.TABLE", hint="for example public.orders")
    return schema, table


def _check_request(req: TableRestoreRequest) -> None:
    if not req.tables and not req.schemas:
        raise UsageError("nothing to restore", hint="give --table SCHEMA.TABLE or --schema S")
    if req.as_name and (len(req.tables) != 1 or req.schemas):
        raise UsageError("--as renames one table", hint="give exactly one --table with --as")
    if req.replace and (req.schemas or req.as_name):
        raise UsageError("--replace swaps tables in place", hint="use it with --table only")


def _live(cfg: Config, dbname: str) -> Any:
    from pgkura.pg.connection import connect

    return connect(cfg, dbname=dbname)


def _libpq_conninfo(cfg: Config, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(cfg.dbconn or "", dbname=dbname)


def _exists(conn: Any, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{ident(schema)}.{ident(table)}",)
    ).fetchone()
    return bool(row[0])


def _free_schema_name(live: Any) -> str:
    """``restored_<UTC timestamp>``, or with ``_2``, ``_3``... when a schema of this name, or
    one it would be the prefix of (``restored_<timestamp>_S`` for a schema S), exists: two
    restores in one second each get their own."""
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    for n in range(1, 1000):
        name = f"restored_{stamp}" if n == 1 else f"restored_{stamp}_{n}"
        pattern = name.replace("_", r"\_") + "%"
        query = "SELECT 1 FROM pg_namespace WHERE nspname LIKE %s LIMIT 1"
        if live.execute(query, (pattern,)).fetchone() is None:
            return name
    raise UsageError(f"schemas restored_{stamp} to restored_{stamp}_999 all exist", hint="use --as")


def run_table_restore(
    cfg: Config, req: TableRestoreRequest, say: Callable[[str], None]
) -> dict[str, Any]:
    from pgkura.physical.sandbox import DatabaseMissing, Sandbox, SparseFallback
    from pgkura.physical.sparse import SparseRequest

    _check_request(req)
    tables = [split_name(t) for t in req.tables]
    new_schema = ""
    # The live side first: fail before the (long) sandbox restore when it cannot work.
    with _live(cfg, req.dbname) as live:
        if req.as_name:
            schema = tables[0][0]
            if _exists(live, schema, req.as_name):
                raise UsageError(
                    f"{schema}.{req.as_name} already exists in database {req.dbname}",
                    hint="choose another --as name, or --replace to swap the live table",
                )
        elif not req.replace:
            new_schema = _free_schema_name(live)
        if req.replace:
            names = ", ".join(f"{s}.{t}" for s, t in tables)
            if not req.confirm(f"drop and replace {names} in database {req.dbname}?"):
                raise UsageError(
                    "not confirmed: nothing was changed",
                    hint="answer yes, or pass --yes to replace without asking",
                )
    # First a sandbox with only the catalogs and the tables asked for; when that cannot serve
    # (physical/sparse.py says when), the whole backup.
    sparse = SparseRequest(req.dbname, tuple(tables), tuple(req.schemas))
    try:
        with Sandbox(cfg, req.target, backup_id=req.backup_id, say=say, sparse=sparse) as box:
            say(f"sandbox restored backup {box.backup.id} to {req.target.describe()}")
            return _restore_from(cfg, req, box, tables, new_schema)
    except SparseFallback as exc:
        say(f"{exc.message}: restoring the whole backup into a new sandbox")
    except DatabaseMissing:
        raise _no_database(req) from None
    try:
        with Sandbox(cfg, req.target, backup_id=req.backup_id, say=say) as box:
            say(f"sandbox restored backup {box.backup.id} to {req.target.describe()}")
            return _restore_from(cfg, req, box, tables, new_schema)
    except DatabaseMissing:
        raise _no_database(req) from None


def _no_database(req: TableRestoreRequest) -> PgkuraError:
    return PgkuraError(
        f"database {req.dbname} did not exist at {req.target.describe()}",
        hint="check the name, or choose another target",
    )


def _restore_from(
    cfg: Config,
    req: TableRestoreRequest,
    sandbox: Any,
    tables: list[tuple[str, str]],
    new_schema: str,
) -> dict[str, Any]:
    db = req.dbname
    import psycopg

    from pgkura.physical.sandbox import DatabaseMissing, SparseFallback

    try:
        box = psycopg.connect(sandbox.conninfo(db), autocommit=True)
    except psycopg.OperationalError as exc:
        if f'database "{db}" does not exist' in str(exc):
            raise DatabaseMissing(db) from None
        raise
    with box:
        for schema, table in tables:
            if not _exists(box, schema, table):
                raise PgkuraError(
                    f"table {schema}.{table} did not exist in database {db} at "
                    f"{req.target.describe()} (backup {sandbox.backup.id})",
                    hint="check the name, or choose another target",
                )
        for schema in req.schemas:
            if not box.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone():
                raise PgkuraError(
                    f"schema {schema} did not exist in database {db} at {req.target.describe()}"
                )
        # The restored set, as regclass oids, and foreign keys leaving it.
        table_oids = tables_oids(box, tables)
        if sandbox.selection is not None:
            paths = [
                r[0]
                for r in box.execute(STORAGE_SQL, (table_oids, req.schemas))
                if r[0] is not None
            ]
            missing = sandbox.selection.missing(paths)
            if missing:
                raise SparseFallback(
                    f"the sandbox lacks {missing[0]}, which the tables asked for need"
                )
        rel_oids = list(table_oids)
        rel_oids += [
            r[0]
            for r in box.execute(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
                (req.schemas,),
            ).fetchall()
        ]
        outside = box.execute(
            "SELECT conrelid::regclass::text, conname, confrelid::regclass::text "
            "FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%s) "
            "AND NOT confrelid = ANY(%s)",
            (rel_oids, rel_oids),
        ).fetchall()
        for table_text, conname, _ref in outside:
            box.execute(f"ALTER TABLE {table_text} DROP CONSTRAINT {ident(conname)}")
        dump_args: list[str] = []
        results: list[tuple[str, str]] = []  # (schema, table) as they will be in the live db
        if req.as_name:
            (schema, table) = tables[0]
            # Indexes (with the constraints they back) and owned sequences share the schema's
            # namespace with the live originals: they get the new name as a prefix.
            qualified = f"{ident(schema)}.{ident(table)}"
            for (index,) in box.execute(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                (qualified,),
            ).fetchall():
                short = index.rsplit(".", 1)[-1].strip('"')
                new = ident((req.as_name + "_" + short)[:63])
                box.execute(f"ALTER INDEX {index} RENAME TO {new}")
            for (seq,) in box.execute(
                "SELECT d.objid::regclass::text FROM pg_depend d JOIN pg_class c "
                "ON c.oid = d.objid WHERE c.relkind = 'S' AND d.refobjid = %s::regclass "
                "AND d.deptype IN ('a', 'i')",
                (qualified,),
            ).fetchall():
                short = seq.rsplit(".", 1)[-1].strip('"')
                new = ident((req.as_name + "_" + short)[:63])
                box.execute(f"ALTER SEQUENCE {seq} RENAME TO {new}")
            box.execute(f"ALTER TABLE {qualified} RENAME TO {ident(req.as_name)}")
            dump_args += ["-t", f"{ident(schema)}.{ident(req.as_name)}"]
            results.append((schema, req.as_name))
        elif req.replace:
            for schema, table in tables:
                dump_args += ["-t", f"{ident(schema)}.{ident(table)}"]
                results.append((schema, table))
        else:
            if tables:
                box.execute(f"CREATE SCHEMA {ident(new_schema)}")
                for schema, table in tables:
                    box.execute(
                        f"ALTER TABLE {ident(schema)}.{ident(table)} SET SCHEMA {ident(new_schema)}"
                    )
                    results.append((new_schema, table))
                dump_args += ["-n", ident(new_schema)]
            for schema in req.schemas:
                renamed = f"{new_schema}_{schema}"
                box.execute(f"ALTER SCHEMA {ident(schema)} RENAME TO {ident(renamed)}")
                dump_args += ["-n", ident(renamed)]
                results += [
                    (renamed, r[0])
                    for r in box.execute(
                        "SELECT relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND relkind IN ('r','p') "
                        "ORDER BY 1",
                        (renamed,),
                    ).fetchall()
                ]
    with scratch_dir("table") as tmp:
        os.chmod(tmp, 0o700)
        dump = Path(tmp) / "tables.sql"
        bin_dir = sandbox.server.bin_dir
        _tool(
            [str(bin_dir / "pg_dump"), "-h", str(sandbox.server.socket_dir),
             "-p", str(sandbox.server.port), "-U", sandbox.superuser(), "-d", db,
             "--format=plain", "--no-subscriptions", "--no-publications", "-f", str(dump),
             *dump_args],
            "pg_dump in the sandbox",
        )  # fmt: skip
        script = dump.read_text()
        if req.replace:
            drops = "".join(f"DROP TABLE IF EXISTS {ident(s)}.{ident(t)};\n" for s, t in results)
            script = drops + script
            dump.write_text(script)
        _tool(
            [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
             "-d", _libpq_conninfo(cfg, db), "-f", str(dump)],
            f"loading into database {db}",
        )  # fmt: skip
    with _live(cfg, db) as live:
        counts = {
            f"{s}.{t}": int(
                live.execute(f"SELECT count(*) FROM {ident(s)}.{ident(t)}").fetchone()[0]
            )
            for s, t in results
        }
    return {
        "backup": sandbox.backup.id,
        "target": req.target.describe(),
        "database": db,
        "restored": counts,
        "foreign_keys_left_out": [f"{t}.{c} -> {ref}" for t, c, ref in outside],
        "timings": {k: round(v, 2) for k, v in sandbox.timings.items()},
    }


# Every relation file the requested tables and schemas are dumped from: the tables (and the
# schemas' relations other than indexes), their toast tables and toast indexes, and sequences
# they own. Indexes are dumped as definitions: their files are never read.
STORAGE_SQL = """
WITH wanted AS (
    SELECT oid FROM pg_class WHERE oid = ANY(%s::oid[])
    UNION
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%s::text[]) AND c.relkind NOT IN ('i', 'I')
), toast AS (
    SELECT reltoastrelid AS oid FROM pg_class
    WHERE oid IN (SELECT oid FROM wanted) AND reltoastrelid <> 0
), needed AS (
    SELECT oid FROM wanted
    UNION SELECT oid FROM toast
    UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM toast)
    UNION SELECT d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid IN (SELECT oid FROM wanted) AND d.deptype IN ('a', 'i')
)
SELECT pg_relation_filepath(oid) FROM needed
"""


def tables_oids(conn: Any, tables: list[tuple[str, str]]) -> list[int]:
    wanted = [f"{ident(s)}.{ident(t)}" for s, t in tables]
    rows = conn.execute("SELECT w::regclass::oid FROM unnest(%s::text[]) AS w", (wanted,))
    return [int(r[0]) for r in rows.fetchall()]


def _tool(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        detail = "; ".join(lines[-3:]) if lines else f"exit status {proc.returncode}"
        raise PgkuraError(
            f"{what} failed: {detail}",
            hint="nothing was changed in the live database (the load runs in one transaction)",
        )
