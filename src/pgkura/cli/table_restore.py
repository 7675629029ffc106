"""The table restore of `pgkura restore --table ... --dbname ...` from a physical backup, and
its report: each table with the rows counted in it, partitions and children under theirs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.output import print_json, say

if TYPE_CHECKING:
    from pgkura.commands.table_restore import RestoredTable, TableRestoreResult
    from pgkura.physical.targets import TargetArgs


@dataclass(frozen=True)
class TableRestoreAsk:
    """The options of `restore` that a table restore takes."""

    dbname: str
    tables: tuple[str, ...]
    schemas: tuple[str, ...]
    as_name: str | None
    replace: bool
    yes: bool
    only: bool


def table_restore(
    ctx: click.Context,
    backup_id: str | None,
    ask: TableRestoreAsk,
    target: TargetArgs,
    output: str = "text",
) -> None:
    from pgkura.commands.table_restore import TableRestoreRequest, run_table_restore

    def confirm(question: str) -> bool:
        if ask.yes:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm(question, default=False, err=True)

    request = TableRestoreRequest(
        dbname=ask.dbname,
        tables=list(ask.tables),
        schemas=list(ask.schemas),
        target=target.sandbox_target(),
        backup_id=backup_id,
        as_name=ask.as_name,
        replace=ask.replace,
        only=ask.only,
        confirm=confirm,
    )
    result = run_table_restore(config(ctx), request, say)
    if output == "json":
        print_json(result)
        return
    for line in table_restore_lines(result):
        click.echo(line)


def table_restore_lines(result: TableRestoreResult) -> list[str]:
    """What a table restore brought back: each table with the rows counted in it (the same
    count at the target and after the load), partitions and children indented under theirs."""
    lines = [
        f"restored from backup {result.backup} at {result.target} into database {result.database}:"
    ]
    by_name = {t.table: t for t in result.tables}
    for t in result.tables:
        under = [u for u in result.tables if u.parent == t.table]
        notes = _table_notes(t, under, by_name.get(t.parent or ""))
        text = f"{'  ' * (t.depth + 1)}{t.table}: {t.rows} rows"
        lines.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    if result.replaced:
        dropped = ", ".join(result.replaced)
        lines.append(f"  replaced (dropped in the same transaction): {dropped}")
    for fk in result.foreign_keys_left_out:
        lines.append(f"  foreign key left out (it points outside the restored tables): {fk}")
    return lines


def _table_notes(
    t: RestoredTable, under: list[RestoredTable], parent: RestoredTable | None
) -> list[str]:
    notes = []
    if under:
        partitions = all(u.kind == "partition" for u in under)
        what = ("partition" if partitions else "inheritance child") if len(under) == 1 else (
            "partitions" if partitions else "inheritance children")  # fmt: skip
        notes.append(f"with {len(under)} {what}")
    if parent is not None:
        relation = "partition of" if t.kind == "partition" else "inherits"
        notes.append(f"{relation} {t.parent}")
    # Where a table came from, unless it is where its parent came from, under its own name.
    schema, name = t.was.split(".", 1)
    if t.was != t.table and (
        parent is None or name != t.table.split(".", 1)[1] or schema != parent.was.split(".")[0]
    ):
        notes.append(f"was {t.was}")
    if t.alone_from and t.attached_again:
        notes.append(f"attached to {t.alone_from} again")
    elif t.alone_from:
        notes.append(f"restored without its parent {t.alone_from}")
    if t.children_left_out:
        notes.append(f"its own rows only, children left out: {', '.join(t.children_left_out)}")
    return notes
