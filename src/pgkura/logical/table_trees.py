"""The tables a table restore brings back, found in the sandbox at the target, and the proof
that all their rows arrived.

A partitioned table holds no rows: they are in its partitions. A ``SELECT`` on an inheritance
parent returns its children's rows too. So a table asked for comes with its partitions at every
depth, always, and with its inheritance children unless ``--only`` (pg_dump 16's
``--table-and-children``); pg_dump's ``--table`` takes the one table, so each of them is named
to it. A table whose parent is not restored (a partition or a child asked for alone) comes
alone: it is detached from that parent in the sandbox, or the dump would attach it to the live
parent (``ATTACH PARTITION``) or inherit from it (``INHERITS``). With ``--only`` the children
left out are detached in the sandbox as well, so that a count there is of the parent's own rows.

Every restored table is then counted in the sandbox with the query a user would run,
``SELECT count(*)`` (its partitions and children included), and the load into the live
database runs the same counts inside its transaction and rolls back on any difference
(``count_check``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from pgkura.errors import PgkuraError, UsageError


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def exists(conn: Any, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{ident(schema)}.{ident(table)}",)
    ).fetchone()
    return bool(row[0])


def relkind(conn: Any, schema: str, table: str) -> str | None:
    row = conn.execute(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
        (f"{ident(schema)}.{ident(table)}",),
    ).fetchone()
    return str(row[0]) if row else None


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    relkind: str
    ispartition: bool
    bound: str | None  # a partition's FOR VALUES clause

    @property
    def qualified(self) -> str:
        return f"{ident(self.schema)}.{ident(self.name)}"

    @property
    def text(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Cut:
    """A pg_inherits edge across the border of the restored set, cut in the sandbox."""

    child: Relation
    parent: Relation
    #: True: the child is restored without its parent; False: a child --only left out
    restored: bool


@dataclass
class TableSet:
    """Every table restored, roots first and each followed by its tree (as at the target)."""

    relations: dict[int, Relation]
    parent: dict[int, int]  # a restored table's parent among the restored ones
    cuts: list[Cut]
    #: the parents (and theirs) of tables restored alone: foreign keys to them are cut too
    outside_ancestors: set[int]
    counts: dict[int, int] = field(default_factory=dict)

    def roots(self) -> list[int]:
        return [oid for oid in self.relations if oid not in self.parent]

    def tree(self, root: int) -> list[int]:
        """``root`` and every restored table under it."""
        out = [root]
        for oid in self.relations:
            if oid != root and self.root_of(oid) == root:
                out.append(oid)
        return out

    def root_of(self, oid: int) -> int:
        while oid in self.parent:
            oid = self.parent[oid]
        return oid


DESCRIBE_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispartition,
       pg_get_expr(c.relpartbound, c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s::oid[])
"""


def describe(conn: Any, oids: list[int] | set[int]) -> dict[int, Relation]:
    rows = conn.execute(DESCRIBE_SQL, (sorted(oids),)).fetchall()
    return {int(r[0]): Relation(int(r[0]), r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows}


def find_set(conn: Any, start: list[int], only: bool) -> TableSet:
    """The tables to restore for the tables ``start`` (asked for, or in a schema asked for):
    with their partitions, and their inheritance children unless ``only``."""
    # pg_inherits links partitioned indexes too: only tables' links make trees of tables.
    query = (
        "SELECT inhrelid, inhparent FROM pg_inherits WHERE inhrelid IN "
        "(SELECT oid FROM pg_class WHERE relkind IN ('r', 'p', 'f')) "
        "ORDER BY inhparent, inhseqno, inhrelid"
    )
    edges = [(int(c), int(p)) for c, p in conn.execute(query)]
    kids: dict[int, list[int]] = {}
    parents: dict[int, list[int]] = {}
    for child, up in edges:
        kids.setdefault(up, []).append(child)
        parents.setdefault(child, []).append(up)
    info = describe(conn, set(start) | {o for edge in edges for o in edge})
    inside: set[int] = set()
    stack = list(reversed(start))
    while stack:
        oid = stack.pop()
        if oid not in inside:
            inside.add(oid)
            if info[oid].relkind == "p" or not only:
                stack += kids.get(oid, [])
    parent = {}
    for oid in inside:
        within = [p for p in parents.get(oid, []) if p in inside]
        if within:
            parent[oid] = within[0]
    order = _tree_order([o for o in dict.fromkeys(start) if o not in parent], kids, parent, info)
    cuts = [Cut(info[c], info[p], c in inside) for c, p in edges if (c in inside) != (p in inside)]
    ancestors: set[int] = set()
    todo = [cut.parent.oid for cut in cuts if cut.restored]
    while todo:
        oid = todo.pop()
        if oid not in ancestors:
            ancestors.add(oid)
            todo += parents.get(oid, [])
    tset = TableSet({oid: info[oid] for oid in order}, parent, cuts, ancestors)
    for oid in order:
        if info[oid].relkind not in ("r", "p"):
            raise PgkuraError(
                f"{info[oid].text}, in the tree of {info[tset.root_of(oid)].text}, is a foreign "
                "table: its rows are not in the backup, so the tree cannot be restored whole",
                hint="ask for the other partitions or children one by one with --table",
            )
    return tset


def _tree_order(
    roots: list[int], kids: dict[int, list[int]], parent: dict[int, int], info: dict[int, Relation]
) -> list[int]:
    """Each root followed by its tree, depth first, siblings by name."""
    order: list[int] = []
    stack = list(reversed(roots))
    while stack:
        oid = stack.pop()
        order.append(oid)
        under = [c for c in kids.get(oid, []) if parent.get(c) == oid]
        stack += sorted(under, key=lambda c: (info[c].schema, info[c].name), reverse=True)
    return order


def refuse_only_on_partitioned(tset: TableSet, asked: list[int]) -> None:
    for oid in asked:
        rel = tset.relations.get(oid)
        if rel is not None and rel.relkind == "p":
            raise only_partitioned(rel.text)


def only_partitioned(name: str) -> UsageError:
    return UsageError(
        f"{name} is partitioned: its rows are all in its partitions, --only would restore none",
        hint="leave out --only (the partitions come along), or ask for one partition with --table",
    )


FOREIGN_KEYS_SQL = """
SELECT conrelid::regclass::text, conname, confrelid::regclass::text, conrelid = ANY(%(set)s)
FROM pg_constraint
WHERE contype = 'f' AND conparentid = 0 AND (
    (conrelid = ANY(%(set)s) AND NOT confrelid = ANY(%(set)s)) OR confrelid = ANY(%(up)s))
"""


def drop_leaving_foreign_keys(conn: Any, tset: TableSet) -> list[tuple[str, str, str]]:
    """Drops, in the sandbox, the foreign keys from restored tables to tables that are not
    restored (returned, to be reported), and those that point at the parents of tables
    restored alone (they would forbid the detach; they are not dumped anyway). A partition's
    copy of its parent's foreign key (conparentid) goes with the parent's, or becomes its own
    once the partition is detached: call this again after ``cut_borders``."""
    params = {"set": list(tset.relations), "up": sorted(tset.outside_ancestors)}
    left_out = []
    for table, conname, ref, restored in conn.execute(FOREIGN_KEYS_SQL, params).fetchall():
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {ident(conname)}")
        if restored:
            left_out.append((table, conname, ref))
    return left_out


def cut_borders(conn: Any, tset: TableSet) -> None:
    """Detach, in the sandbox, what is restored from what is not (see the module's doc)."""
    for cut in tset.cuts:
        if cut.child.ispartition:
            conn.execute(
                f"ALTER TABLE {cut.parent.qualified} DETACH PARTITION {cut.child.qualified}"
            )
        else:
            conn.execute(f"ALTER TABLE {cut.child.qualified} NO INHERIT {cut.parent.qualified}")


# Every table a count(*) of the restored tables reads: PostgreSQL expands a table to its
# partitions and children, as the sandbox's pg_inherits says now (cut_borders has run).
_HIDE_INDEXES_SQL = """
WITH RECURSIVE tree(oid) AS (
    SELECT unnest(%s::oid[])
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
UPDATE pg_class SET relhasindex = false WHERE oid IN (SELECT oid FROM tree) AND relhasindex
"""


def count_rows(conn: Any, tset: TableSet) -> None:
    """``SELECT count(*)`` of each restored table in the sandbox at the target, its partitions
    and children included, as a user would count it there."""
    # The planner opens every index of a table it plans to scan (plancat.c reads each btree's
    # metapage), and a sparse sandbox has none of the tables' index files (physical/sparse.py).
    # So, in a transaction that is rolled back, the tables say they have no index: the count
    # is a sequential scan, which reads the heap only.
    with conn.transaction(force_rollback=True):
        conn.execute(_HIDE_INDEXES_SQL, (list(tset.relations),))
        for oid, rel in tset.relations.items():
            row = conn.execute(f"SELECT count(*) FROM {rel.qualified}").fetchone()
            tset.counts[oid] = int(row[0])


LIVE_TREE_SQL = """
WITH RECURSIVE tree(oid) AS (
    SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s)
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
SELECT n.nspname, c.relname, c.relispartition
FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1, 2
"""


def live_tree(conn: Any, schema: str, table: str) -> list[tuple[str, str, bool]]:
    """The partitions and inheritance children, at every depth, of a table as it is now, as
    (schema, name, is a partition)."""
    rows = conn.execute(LIVE_TREE_SQL, (f"{ident(schema)}.{ident(table)}",)).fetchall()
    return [(str(r[0]), str(r[1]), bool(r[2])) for r in rows]


_MISMATCH = re.compile(r"pgkura count: (\d+) rows loaded into (.+?), (\d+) at the target")


def count_check(checks: list[tuple[str, str, int]]) -> str:
    """SQL that fails the transaction it runs in unless each (qualified table, name to
    report, rows) has that many rows: the last statement of the load, before COMMIT."""
    lines = ["DECLARE n bigint;", "BEGIN"]
    for qualified, label, rows in checks:
        lines.append(f"  SELECT count(*) INTO n FROM {qualified};")
        lines.append(
            f"  IF n <> {rows} THEN RAISE EXCEPTION 'pgkura count: % rows loaded into %, "
            f"{rows} at the target', n, {literal(label)}; END IF;"
        )
    lines.append("END")
    body = "\n".join(lines)
    tag = "$pgkura$"
    while tag in body:
        tag = f"$pgkura_{secrets.token_hex(4)}$"
    return f"DO {tag}\n{body}\n{tag};\n"


def count_mismatch(stderr: str, dbname: str, target: str) -> PgkuraError | None:
    """The error for a load that ``count_check`` stopped, or None for any other failure."""
    found = _MISMATCH.search(stderr)
    if found is None:
        return None
    loaded, label, expected = found.groups()
    return PgkuraError(
        f"{label}: {loaded} rows were loaded into database {dbname}, but it had {expected} at "
        f"{target}; the load was rolled back, nothing was changed",
        hint="something in the live database changed the rows as they were loaded, such as a "
        "trigger (an event trigger may add one to new tables): find it, then restore again",
    )
