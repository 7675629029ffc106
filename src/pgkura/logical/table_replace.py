"""``--replace``: the restored trees take the place of the live ones, in the load's one
transaction. Each live table asked for is dropped with its partitions and inheritance
children as they are now, the restored tree is created in their place, and a partition or a
child asked for alone is attached again to the parent it had at the target, when that parent
is live and the live table was still attached to it (one detached on purpose stays apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgkura.errors import UsageError
from pgkura.logical.table_trees import Relation, TableSet, exists, ident, live_tree


@dataclass(frozen=True)
class Swap:
    before: str = ""  # SQL that runs first in the load's transaction
    after: str = ""  # SQL that runs after the dump's, before the counts are checked
    dropped: list[str] = field(default_factory=list)
    attached: frozenset[int] = frozenset()  # restored tables attached to their live parent


def replace_plan(
    live: Any, dbname: str, only: bool, tset: TableSet, placed: dict[int, Relation]
) -> Swap:
    """What the load runs around the dump to swap the trees, from the live database as it is
    just before the load."""
    drops: list[tuple[str, str]] = []
    for root in tset.roots():
        rel = placed[root]
        if not exists(live, rel.schema, rel.name):
            continue
        tree = [(s, t) for s, t, _part in live_tree(live, rel.schema, rel.name)]
        if only and tree:
            raise UsageError(
                f"--replace --only would drop the children of {rel.text} with it",
                hint="restore its own rows beside it with --only --as NAME",
            )
        drops += [(rel.schema, rel.name), *tree]
    gone = set(drops)
    for rel in placed.values():
        if (rel.schema, rel.name) not in gone and exists(live, rel.schema, rel.name):
            raise UsageError(
                f"--replace would create {rel.text}, but database {dbname} has a {rel.text} "
                "that is not in the tree it replaces",
                hint="rename or drop the live one first, or restore beside it with --as NAME",
            )
    after = []
    attached = set()
    for cut in tset.cuts:
        if not cut.restored:
            continue
        child, parent = placed[cut.child.oid], cut.parent
        if not exists(live, parent.schema, parent.name):
            continue
        if exists(live, child.schema, child.name) and not _inherits(live, child, parent):
            continue
        if cut.child.ispartition:
            after.append(
                f"ALTER TABLE {parent.qualified} ATTACH PARTITION {child.qualified} "
                f"{cut.child.bound};"
            )
        else:
            after.append(f"ALTER TABLE {child.qualified} INHERIT {parent.qualified};")
        attached.add(cut.child.oid)
    before = ""
    if drops:
        names = ", ".join(f"{ident(s)}.{ident(t)}" for s, t in drops)
        before = f"DROP TABLE {names};\n"
    return Swap(
        before,
        "".join(line + "\n" for line in after),
        [f"{s}.{t}" for s, t in drops],
        frozenset(attached),
    )


def _inherits(live: Any, child: Relation, parent: Relation) -> bool:
    row = live.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s) "
        "AND inhparent = to_regclass(%s))",
        (child.qualified, parent.qualified),
    ).fetchone()
    return bool(row[0])
