"""Table restore (`pgkura restore --table S.T [--schema S] --to-... --dbname DB`): one table
(or schema) as it was at a point in time, brought into the live database without restoring the
cluster over it.

The backup is restored into a sandbox with the target. There each table asked for is taken
with its partitions and inheritance children (logical/table_trees.py), renamed or moved so
that it cannot clash with anything live (logical/table_names.py), foreign keys that point
outside the restored set are reported and left out, every restored table is counted, and the
result is dumped with the server version's pg_dump and loaded into the live database with psql
in one transaction, which counts again and rolls back on any difference:

- default: into a new schema ``restored_<timestamp>`` (a restored schema S becomes
  ``restored_<timestamp>_S``; ``_2``, ``_3``... follow the timestamp when it is taken);
- ``--as NEW``: one table (and its tree), under a new name in its own schema;
- ``--replace``: the live tables (and their trees) are dropped and replaced, in the same
  transaction (logical/table_replace.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.errors import PgkuraError, UsageError
from pgkura.logical.table_replace import Swap, replace_plan
from pgkura.logical.table_trees import exists, ident, live_tree, only_partitioned, relkind
from pgkura.pg.process import run
from pgkura.physical.recovery import RecoveryTarget
from pgkura.scratch import scratch_dir


@dataclass(frozen=True)
class RestoredTable:
    """One restored table as the report shows it (in tree order)."""

    table: str
    was: str
    rows: int
    #: table, partitioned table, partition or inheritance child
    kind: str
    parent: str | None
    depth: int
    #: the parent it was restored without, if any
    alone_from: str | None
    attached_again: bool
    children_left_out: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "children_left_out": list(self.children_left_out)}


@dataclass(frozen=True)
class TableRestoreResult:
    """What a table restore brought back into the live database."""

    backup: str
    target: str
    #: the point the sandbox recovered to (``target`` describes it)
    recovery_target: RecoveryTarget
    database: str
    #: rows counted in each restored table, by its new name
    restored: dict[str, int]
    tables: tuple[RestoredTable, ...]
    #: live tables dropped and replaced (--replace)
    replaced: tuple[str, ...]
    foreign_keys_left_out: tuple[str, ...]
    timings: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        # Every field is plain data or a dataclass of plain data (tuples print as arrays); the
        # target as a physical restore prints it.
        return {"kind": "table", **asdict(self), "recovery_target": self.recovery_target.to_json()}


@dataclass
class TableRestoreRequest:
    dbname: str
    tables: list[str] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    target: RecoveryTarget = field(default_factory=RecoveryTarget)
    backup_id: str | None = None
    as_name: str | None = None
    replace: bool = False
    #: an inheritance parent's own rows, without its children
    only: bool = False
    confirm: Callable[[str], bool] = lambda _question: False


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

    return connect(cfg.dbconn, dbname=dbname)


def _libpq_conninfo(cfg: Config, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(cfg.dbconn or "", dbname=dbname)


def free_schema_name(live: Any) -> str:
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


def restore_tables(
    cfg: Config, req: TableRestoreRequest, say: Callable[[str], None]
) -> TableRestoreResult:
    from pgkura.physical.sandbox import DatabaseMissing, Sandbox, SparseFallback
    from pgkura.physical.sparse import SparseRequest

    _check_request(req)
    tables = [split_name(t) for t in req.tables]
    # The live side first: fail before the (long) sandbox restore when it cannot work.
    with _live(cfg, req.dbname) as live:
        new_schema = _check_live(live, req, tables)
    # First a sandbox with only the catalogs and the tables asked for; when that cannot serve
    # (physical/sparse.py says when), the whole backup.
    sparse = SparseRequest(req.dbname, tuple(tables), tuple(req.schemas), req.only)
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


def _check_live(live: Any, req: TableRestoreRequest, tables: list[tuple[str, str]]) -> str:
    """Refuses what cannot work, asks to confirm a replace, and returns the new schema's
    name (empty with --as and --replace)."""
    if req.only:
        for schema, table in tables:
            if relkind(live, schema, table) == "p":
                raise only_partitioned(f"{schema}.{table}")
    if req.as_name:
        schema = tables[0][0]
        if exists(live, schema, req.as_name):
            raise UsageError(
                f"{schema}.{req.as_name} already exists in database {req.dbname}",
                hint="choose another --as name, or --replace to swap the live table",
            )
    if not req.replace:
        return "" if req.as_name else free_schema_name(live)
    parts = []
    for schema, table in tables:
        tree = [f"{s}.{t}" for s, t, _part in live_tree(live, schema, table)]
        if req.only and tree:
            raise UsageError(
                f"--replace --only would drop the children of {schema}.{table} with it: "
                f"{_some(tree)}",
                hint="restore its own rows beside it with --only --as NAME, or replace the "
                "whole tree without --only",
            )
        parts.append(f"{schema}.{table}" + (f" with {_some(tree)}" if tree else ""))
    if not req.confirm(f"drop and replace {'; '.join(parts)} in database {req.dbname}?"):
        raise UsageError(
            "not confirmed: nothing was changed",
            hint="answer yes, or pass --yes to replace without asking",
        )
    return ""


def _some(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


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
) -> TableRestoreResult:
    from pgkura.logical import table_trees as trees

    db = req.dbname
    with _connect_sandbox(sandbox, db) as box:
        asked = _check_present(box, req, sandbox, tables)
        in_schemas = [int(r[0]) for r in box.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s) ORDER BY n.nspname, c.relname",
            (req.schemas,))]  # fmt: skip
        tset = trees.find_set(box, asked + in_schemas, req.only)
        if req.only:
            trees.refuse_only_on_partitioned(tset, asked)
        if sandbox.selection is not None:
            _check_sparse(box, sandbox, tset, req.schemas)
        outside = trees.drop_leaving_foreign_keys(box, tset)
        trees.cut_borders(box, tset)
        outside += trees.drop_leaving_foreign_keys(box, tset)
        trees.count_rows(box, tset)
        with _live(cfg, db) as live:
            dump_args = _place(box, live, req, tset, new_schema)
        placed = trees.describe(box, list(tset.relations))
    with scratch_dir("table") as tmp:
        os.chmod(tmp, 0o700)
        dump = Path(tmp) / "tables.sql"
        _dump(sandbox, db, dump_args, dump)
        swap = Swap()
        if req.replace:
            with _live(cfg, db) as live:
                swap = replace_plan(live, db, req.only, tset, placed)
        checks = [
            (placed[oid].qualified, _label(rel.text, placed[oid].text), tset.counts[oid])
            for oid, rel in tset.relations.items()
        ]
        # psql -1 runs its -f files in one transaction: the swap's drops, the dump, then the
        # re-attachments and the counts, before the COMMIT.
        (first := Path(tmp) / "first.sql").write_text(swap.before)
        (last := Path(tmp) / "last.sql").write_text(swap.after + trees.count_check(checks))
        _tool(
            [str(sandbox.server.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "--single-transaction", "-d", _libpq_conninfo(cfg, db),
             "-f", str(first), "-f", str(dump), "-f", str(last)],
            f"loading into database {db}",
            lambda err: trees.count_mismatch(err, db, req.target.describe()),
        )  # fmt: skip
    return TableRestoreResult(
        backup=sandbox.backup.id,
        target=req.target.describe(),
        recovery_target=req.target,
        database=db,
        restored={placed[oid].text: n for oid, n in tset.counts.items()},
        tables=_report(tset, placed, swap.attached),
        replaced=tuple(swap.dropped),
        foreign_keys_left_out=tuple(f"{t}.{c} -> {ref}" for t, c, ref in outside),
        timings={k: round(v, 2) for k, v in sandbox.timings.items()},
    )


def _label(was: str, now: str) -> str:
    return was if was == now else f"{was} (restored as {now})"


def _connect_sandbox(sandbox: Any, db: str) -> Any:
    import psycopg

    from pgkura.physical.sandbox import DatabaseMissing

    try:
        return psycopg.connect(sandbox.conninfo(db), autocommit=True)
    except psycopg.OperationalError as exc:
        if f'database "{db}" does not exist' in str(exc):
            raise DatabaseMissing(db) from None
        raise


_KINDS = {"v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence",
          "i": "index", "I": "index", "c": "composite type", "t": "TOAST table"}  # fmt: skip


def _check_present(
    box: Any, req: TableRestoreRequest, sandbox: Any, tables: list[tuple[str, str]]
) -> list[int]:
    """The oids of the tables asked for; refuses names that were not tables at the target."""
    at = f"{req.target.describe()} (backup {sandbox.backup.id})"
    oids = []
    for schema, table in tables:
        row = box.execute(
            "SELECT oid, relkind FROM pg_class WHERE oid = to_regclass(%s)",
            (f"{ident(schema)}.{ident(table)}",),
        ).fetchone()
        if row is None:
            raise PgkuraError(
                f"table {schema}.{table} did not exist in database {req.dbname} at {at}",
                hint="check the name, or choose another target",
            )
        if row[1] not in ("r", "p"):
            raise PgkuraError(
                f"{schema}.{table} was a {_KINDS.get(row[1], 'relation')} at {at}, not a table",
                hint="--table restores tables (a --schema restore takes every object of a schema)",
            )
        oids.append(int(row[0]))
    for schema in req.schemas:
        if not box.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            raise PgkuraError(f"schema {schema} did not exist in database {req.dbname} at {at}")
    return oids


def _check_sparse(box: Any, sandbox: Any, tset: Any, schemas: list[str]) -> None:
    from pgkura.physical.sandbox import SparseFallback

    rows = box.execute(STORAGE_SQL, (list(tset.relations), schemas)).fetchall()
    missing = sandbox.selection.missing([r[0] for r in rows if r[0] is not None])
    if missing:
        raise SparseFallback(f"the sandbox lacks {missing[0]}, which the tables asked for need")


def _place(box: Any, live: Any, req: TableRestoreRequest, tset: Any, new_schema: str) -> list[str]:
    """Renames or moves the restored tables in the sandbox to where they go in the live
    database; returns pg_dump's arguments to dump them from there."""
    from pgkura.logical.table_names import move_into, rename_as
    from pgkura.logical.table_trees import describe

    if req.as_name or req.replace:
        if req.as_name:
            rename_as(box, live, tset, req.as_name)
        return [arg for rel in describe(box, list(tset.relations)).values()
                for arg in ("-t", rel.qualified)]  # fmt: skip
    restored = []
    for schema in req.schemas:
        renamed = f"{new_schema}_{schema}"
        box.execute(f"ALTER SCHEMA {ident(schema)} RENAME TO {ident(renamed)}")
        restored.append(renamed)
    # A tree goes where its root goes: a table asked for into the new schema, a table of a
    # schema asked for stays in it (renamed); what already is in a restored schema stays.
    # Tables of the root's own schema move first: on a clash, the others are renamed.
    now = describe(box, list(tset.relations))
    targets = {}
    for root in tset.roots():
        home = now[root].schema if now[root].schema in restored else new_schema
        tree = sorted(tset.tree(root), key=lambda oid: now[oid].schema != now[root].schema)
        targets.update({oid: home for oid in tree if now[oid].schema not in restored})
    if new_schema in targets.values():
        box.execute(f"CREATE SCHEMA {ident(new_schema)}")
        restored.insert(0, new_schema)
    move_into(box, targets)
    return [arg for schema in restored for arg in ("-n", ident(schema))]


def _dump(sandbox: Any, db: str, dump_args: list[str], dump: Path) -> None:
    _tool(
        [str(sandbox.server.bin_dir / "pg_dump"), "-h", str(sandbox.server.socket_dir),
         "-p", str(sandbox.server.port), "-U", sandbox.superuser(), "-d", db,
         "--format=plain", "--no-subscriptions", "--no-publications", "-f", str(dump),
         *dump_args],
        "pg_dump in the sandbox",
    )  # fmt: skip


def _report(
    tset: Any, placed: dict[int, Any], attached: frozenset[int]
) -> tuple[RestoredTable, ...]:
    """Each restored table as the report shows it, in tree order."""
    alone = {c.child.oid: c.parent.text for c in tset.cuts if c.restored}
    left_out: dict[int, list[str]] = {}
    for cut in tset.cuts:
        if not cut.restored:
            left_out.setdefault(cut.parent.oid, []).append(cut.child.text)
    out = []
    for oid, rel in tset.relations.items():
        up = tset.parent.get(oid)
        depth, node = 0, oid
        while node in tset.parent:
            depth, node = depth + 1, tset.parent[node]
        kind = "partitioned table" if rel.relkind == "p" else "table"
        if up is not None:
            kind = "partition" if rel.ispartition else "inheritance child"
        out.append(RestoredTable(
            table=placed[oid].text, was=rel.text, rows=tset.counts[oid], kind=kind,
            parent=placed[up].text if up is not None else None, depth=depth,
            alone_from=alone.get(oid), attached_again=oid in attached,
            children_left_out=tuple(left_out.get(oid, [])),
        ))  # fmt: skip
    return tuple(out)


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


def _tool(
    cmd: list[str], what: str, explain: Callable[[str], PgkuraError | None] | None = None
) -> None:
    proc = run(cmd, cwd="/", check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        known = explain(stderr) if explain is not None else None
        if known is not None:
            raise known
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        detail = "; ".join(lines[-3:]) if lines else f"exit status {proc.returncode}"
        raise PgkuraError(
            f"{what} failed: {detail}",
            hint="nothing was changed in the live database (the load runs in one transaction)",
        )
