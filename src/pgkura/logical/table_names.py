"""Where restored tables go, under names that cannot clash: renamed and moved in the sandbox
before the dump, so that the dump creates them there in the live database.

A table, its indexes, its owned sequences and its row type share its schema's namespace with
everything else in it; a name is free when no relation and no type has it, in the sandbox and,
where the table will land beside live objects (``--as``), in the live database too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgkura.errors import PgkuraError
from pgkura.logical.table_trees import Relation, TableSet, describe, ident

NAMEDATALEN = 64

TAKEN_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname = %(name)s)
    OR EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname = %(schema)s AND t.typname = %(name)s)
"""

DEPENDENTS_SQL = """
SELECT 'INDEX', c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = %(oid)s
UNION ALL
SELECT 'SEQUENCE', c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass
  AND d.refclassid = 'pg_class'::regclass AND d.refobjid = %(oid)s AND d.deptype IN ('a', 'i')
ORDER BY 1, 2
"""


def taken(conn: Any, schema: str, name: str) -> bool:
    return bool(conn.execute(TAKEN_SQL, {"schema": schema, "name": name}).fetchone()[0])


def free_name(places: Sequence[tuple[Any, str]], wanted: str) -> str:
    """``wanted`` (cut to PostgreSQL's 63 bytes), or with ``_2``, ``_3``... the first name
    taken in none of ``places`` (connection, schema)."""
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"_{n}"
        raw = wanted.encode()[: NAMEDATALEN - 1 - len(suffix)]
        name = raw.decode("utf-8", "ignore") + suffix
        if not any(taken(conn, schema, name) for conn, schema in places):
            return name
    raise PgkuraError(f"no free name like {wanted} in {', '.join(s for _c, s in places)}")


def derived(name: str, old_base: str, new_base: str) -> str:
    """``orders_2024`` for ``orders`` renamed ``old``: ``old_2024``; other names get the new
    base as a prefix."""
    if name.startswith(old_base) and name != old_base:
        return new_base + name[len(old_base) :]
    return f"{new_base}_{name}"


def rename_as(box: Any, live: Any, tset: TableSet, as_name: str) -> None:
    """``--as``: the one tree asked for, renamed where it is. The root takes ``as_name`` (free
    in the live database, checked before the sandbox), each partition or child a name derived
    from it, and every index and owned sequence one derived from its table's new name."""
    (root_oid,) = tset.roots()
    root = tset.relations[root_oid]
    if taken(box, root.schema, as_name):
        raise PgkuraError(
            f"{root.schema}.{as_name} existed in the backup at the target as well",
            hint="choose another --as name",
        )
    for oid in tset.tree(root_oid):
        rel = tset.relations[oid]
        if oid == root_oid:
            new = as_name
        else:
            new = free_name([(box, rel.schema), (live, rel.schema)],
                            derived(rel.name, root.name, as_name))  # fmt: skip
        _rename_dependents(box, rel, new, [(box, rel.schema), (live, rel.schema)])
        box.execute(f"ALTER TABLE {rel.qualified} RENAME TO {ident(new)}")


def _rename_dependents(
    box: Any, rel: Relation, new_table: str, places: Sequence[tuple[Any, str]]
) -> None:
    for kind, name in box.execute(DEPENDENTS_SQL, {"oid": rel.oid}).fetchall():
        new = free_name(places, derived(name, rel.name, new_table))
        box.execute(f"ALTER {kind} {ident(rel.schema)}.{ident(name)} RENAME TO {ident(new)}")


def move_into(box: Any, oids: dict[int, str]) -> None:
    """Moves each table (oid) into a schema (a new one: nothing live is there), with its
    indexes and owned sequences. A name already taken there (two partitions of one tree in two
    schemas may share one) is first changed to ``<name>_<old schema>``."""
    for oid, target in oids.items():
        rel = describe(box, [oid])[oid]
        if rel.schema == target:
            continue
        places = [(box, rel.schema), (box, target)]
        for kind, name in box.execute(DEPENDENTS_SQL, {"oid": oid}).fetchall():
            if taken(box, target, name):
                new = free_name(places, f"{name}_{rel.schema}")
                box.execute(
                    f"ALTER {kind} {ident(rel.schema)}.{ident(name)} RENAME TO {ident(new)}"
                )
        qualified = rel.qualified
        if taken(box, target, rel.name):
            new = free_name(places, f"{rel.name}_{rel.schema}")
            box.execute(f"ALTER TABLE {qualified} RENAME TO {ident(new)}")
            qualified = f"{ident(rel.schema)}.{ident(new)}"
        box.execute(f"ALTER TABLE {qualified} SET SCHEMA {ident(target)}")
