"""A sparse restore for a table restore: the catalogs, and only the relations asked for.

Getting one table back does not need the whole cluster in the sandbox. PostgreSQL needs every
non-relation file (pg_xact, pg_multixact, the control file...), the shared catalogs in global/,
and the catalogs of the one database it connects to; pg_dump then reads the catalogs and the
pages of the tables it dumps, and nothing else. Everything else (other databases' relations,
this database's other tables, the requested tables' indexes, which pg_dump dumps as
definitions) can stay in the repository.

Which files are those is decided before the sandbox exists, from the backup's own catalogs read
straight out of the repository: global/pg_filenode.map and pg_database give the database's oid,
its pg_filenode.map and pg_class the relfilenodes. Every version of every pg_class row is
considered, live or dead, so a name that matched at any moment the backup saw is restored: too
much is harmless, too little is caught afterwards (``missing``) by asking the started sandbox
where the wanted relations' files are, and the caller falls back to a full restore.

A partitioned table holds no rows: they are in its partitions, and an inheritance parent's
children hold rows a ``SELECT`` on the parent returns. Both are relations of their own, found
by oid in the backup's pg_inherits (read the same way as pg_class, every version of every row),
and restored with the table asked for: partitions always, sub-partitions too, inheritance
children unless the request says ``only``.

WAL replay still reaches the files that were left out. They are created empty when a record
needs them, full-page images extend them, and records for pages that are not there are
"invalid page" references; ``ignore_invalid_pages`` makes those warnings instead of a PANIC at
consistency. The sandbox never reads those files, and it is thrown away. Since a full-page image
is written for the first change of every page after a checkpoint, and a backup starts at one,
replay never applies a change to a page that is not there, unless the cluster ran with
full_page_writes off; then the sandbox fails to start and the caller falls back to a full
restore.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pgkura.pg.checksum import BLCKSZ, is_relation_file
from pgkura.pg.versions import PgClassLayout, capabilities, is_supported
from pgkura.repository.manifest import FileEntry, Manifest

# Objects created by initdb have oids below this (src/include/access/transam.h): the catalogs,
# their indexes and toast tables, information_schema.
FIRST_NORMAL_OBJECT_ID = 16384
PG_CLASS_OID = 1259
PG_DATABASE_OID = 1262
PG_NAMESPACE_OID = 2615
PG_INHERITS_OID = 2611
PG_TOAST_NAMESPACE = 99

_MAP_MAGIC = 0x592717  # RELMAPPER_FILEMAGIC, src/backend/utils/cache/relmapper.c
_LP_NORMAL = 1
_NAMEDATALEN = 64


@dataclass(frozen=True)
class SparseRequest:
    """What the sandbox will be asked for: tables as (schema, name), and whole schemas."""

    dbname: str
    tables: tuple[tuple[str, str], ...] = ()
    schemas: tuple[str, ...] = ()
    #: leave inheritance children out (``--only``); a partitioned table's partitions always come
    only: bool = False


@dataclass(frozen=True)
class Selection:
    """The files a sparse restore writes, out of a backup's."""

    paths: frozenset[str]
    dboid: int
    restored_bytes: int
    skipped_bytes: int
    # (directory, relfilenode) of every relation file in the backup that was left out
    skipped: frozenset[tuple[str, int]]

    def missing(self, relation_paths: list[str]) -> list[str]:
        """Of the sandbox's ``pg_relation_filepath`` answers, the relations whose files the
        backup held but this restore left out. Relations created after the backup have no
        file in it: replay wrote all of theirs."""
        out = []
        for path in relation_paths:
            directory, _, name = path.rpartition("/")
            if name.isdigit() and (directory, int(name)) in self.skipped:
                out.append(path)
        return out


class NotSparse(Exception):
    """The backup cannot be restored sparsely; the reason says why (then restore it all)."""


def select(
    manifest: Manifest, request: SparseRequest, read: Callable[[FileEntry], bytes]
) -> Selection:
    """The files of ``manifest`` that a sandbox for ``request`` needs. ``read`` returns a
    file's content from the repository. Raises NotSparse when it cannot tell."""
    if not is_supported(manifest.pg_version):
        raise NotSparse(f"pgkura does not know PostgreSQL {manifest.pg_version}'s pg_class")
    # Every supported major has ignore_invalid_pages (13 and newer); pg_class's layout moves.
    pg_class = capabilities(manifest.pg_version).pg_class
    if sys.byteorder != "little":
        raise NotSparse("page layouts are read for little-endian machines only")
    files = {f.path: f for f in manifest.files if f.type == "file"}

    def content(path: str) -> bytes:
        entry = files.get(path)
        if entry is None:
            raise NotSparse(f"the backup has no {path}")
        return read(entry)

    shared_map = filenode_map(content("global/pg_filenode.map"))
    pg_database = f"global/{shared_map.get(PG_DATABASE_OID, PG_DATABASE_OID)}"
    dboids = {
        oid for oid, name in _oid_names(_relation(content, pg_database)) if name == request.dbname
    }
    if len(dboids) != 1:
        raise NotSparse(f"database {request.dbname} is not (or not once) in the backup")
    dboid = dboids.pop()
    db_dir = _database_dir(files, dboid)
    local_map = filenode_map(content(f"{db_dir}/pg_filenode.map"))
    rows = list(_class_rows(_relation(content, f"{db_dir}/{local_map[PG_CLASS_OID]}"), pg_class))
    nodes = _wanted_filenodes(rows, local_map, request, content, db_dir)

    paths, skipped = set(), set()
    restored = skipped_bytes = 0
    for path, entry in files.items():
        keep = True
        found = is_relation_file(path)
        if found is not None and not path.startswith("global/"):
            directory = path.rpartition("/")[0]
            node = found[0]
            keep = directory.endswith(f"/{dboid}") and (
                node < FIRST_NORMAL_OBJECT_ID or node in nodes
            )
            if not keep:
                skipped.add((directory, node))
        if keep:
            paths.add(path)
            restored += entry.size
        else:
            skipped_bytes += entry.size
    return Selection(frozenset(paths), dboid, restored, skipped_bytes, frozenset(skipped))


def _database_dir(files: dict[str, FileEntry], dboid: int) -> str:
    """Where the database's own pg_filenode.map is: base/<oid>, or its default tablespace."""
    for path in files:
        if path.endswith(f"/{dboid}/pg_filenode.map"):
            return path.rpartition("/")[0]
    raise NotSparse(f"the backup has no pg_filenode.map for database oid {dboid}")


def _relation(content: Callable[[str], bytes], path: str) -> Iterator[bytes]:
    """The heap tuples' data of a relation's main fork (all of its 1 GiB segments)."""
    seg = 0
    name = path
    while True:
        try:
            data = content(name)
        except NotSparse:
            if seg == 0:
                raise
            return
        yield from heap_tuples(data)
        seg += 1
        name = f"{path}.{seg}"


def _oid_names(tuples: Iterator[bytes]) -> Iterator[tuple[int, str]]:
    """(oid, name) of catalogs that start ``oid, name`` (pg_database, pg_namespace)."""
    for data in tuples:
        if len(data) >= 4 + _NAMEDATALEN:
            yield struct.unpack_from("=I", data)[0], _name(data, 4)


@dataclass(frozen=True)
class ClassRow:
    oid: int
    relname: str
    relnamespace: int
    relfilenode: int
    reltoastrelid: int
    relkind: str


def _class_rows(tuples: Iterator[bytes], layout: PgClassLayout) -> Iterator[ClassRow]:
    """pg_class rows, read at the version's byte offsets (pgkura.pg.versions.PgClassLayout):
    the columns up to relkind are fixed width and never null."""
    for data in tuples:
        if len(data) < layout.min_length:
            continue
        (oid,) = struct.unpack_from("=I", data, 0)
        (relnamespace,) = struct.unpack_from("=I", data, layout.relnamespace)
        (relfilenode,) = struct.unpack_from("=I", data, layout.relfilenode)
        (reltoastrelid,) = struct.unpack_from("=I", data, layout.reltoastrelid)
        relkind = chr(data[layout.relkind])
        yield ClassRow(oid, _name(data, 4), relnamespace, relfilenode, reltoastrelid, relkind)


def _wanted_filenodes(
    rows: list[ClassRow],
    local_map: dict[int, int],
    request: SparseRequest,
    content: Callable[[str], bytes],
    db_dir: str,
) -> set[int]:
    """relfilenodes of the catalogs, the requested relations with their partitions and
    inheritance children, their toast tables and toast indexes, and every sequence (one page
    each: the owned ones are dumped with a table)."""
    by_oid: dict[int, list[ClassRow]] = {}
    for row in rows:
        by_oid.setdefault(row.oid, []).append(row)
    # pg_namespace's file: every relfilenode its pg_class row ever had that the backup holds.
    nodes = {r.relfilenode for r in by_oid.get(PG_NAMESPACE_OID, []) if r.relfilenode}
    nodes |= {local_map.get(PG_NAMESPACE_OID, PG_NAMESPACE_OID)}
    namespaces: dict[str, set[int]] = {}
    read_any = False
    for node in sorted(nodes):
        try:
            for oid, name in _oid_names(_relation(content, f"{db_dir}/{node}")):
                namespaces.setdefault(name, set()).add(oid)
            read_any = True
        except NotSparse:
            continue
    if not read_any:
        raise NotSparse("the backup's pg_namespace was not found")

    chosen: list[ClassRow] = []
    for schema, table in request.tables:
        ns = namespaces.get(schema, set())
        chosen += [r for r in rows if r.relnamespace in ns and r.relname == table]
    for schema in request.schemas:
        ns = namespaces.get(schema, set())
        chosen += [r for r in rows if r.relnamespace in ns and r.relkind not in ("i", "I")]
    chosen += _descendants(chosen, by_oid, _inheritance(by_oid, content, db_dir), request.only)
    chosen += [r for r in rows if r.oid < FIRST_NORMAL_OBJECT_ID or r.relkind == "S"]
    # Toast tables by pointer and by name, and their indexes by name (pg_toast_<oid>_index).
    owners = {r.oid for r in chosen} | {r.reltoastrelid for r in chosen if r.reltoastrelid}
    toast_names = {f"pg_toast_{oid}" for oid in owners}
    toast_names |= {r.relname for o in owners for r in by_oid.get(o, [])}
    toast_names |= {f"{name}_index" for name in set(toast_names)}
    chosen += [r for r in rows if r.relnamespace == PG_TOAST_NAMESPACE and r.relname in toast_names]
    chosen += [r for o in owners for r in by_oid.get(o, [])]
    return {r.relfilenode or local_map.get(r.oid, r.oid) for r in chosen} | set(local_map.values())


def _inheritance(
    by_oid: dict[int, list[ClassRow]], content: Callable[[str], bytes], db_dir: str
) -> dict[int, set[int]]:
    """Children by parent oid, from every version of every pg_inherits row in every file
    pg_inherits ever had that the backup holds. pg_inherits (inhrelid, inhparent, inhseqno,
    and inhdetachpending from 14 on) is fixed width: the two oids lead every row."""
    nodes = {r.relfilenode for r in by_oid.get(PG_INHERITS_OID, []) if r.relfilenode}
    nodes.add(PG_INHERITS_OID)
    children: dict[int, set[int]] = {}
    read_any = False
    for node in sorted(nodes):
        try:
            for data in _relation(content, f"{db_dir}/{node}"):
                if len(data) >= 8:
                    child, parent = struct.unpack_from("=II", data)
                    children.setdefault(parent, set()).add(child)
            read_any = True
        except NotSparse:
            continue
    if not read_any:
        raise NotSparse("the backup's pg_inherits was not found")
    return children


def _descendants(
    chosen: list[ClassRow],
    by_oid: dict[int, list[ClassRow]],
    children: dict[int, set[int]],
    only: bool,
) -> list[ClassRow]:
    """The rows of every partition (at any depth) of the chosen relations, and of every
    inheritance child unless ``only``: a table restore brings them along."""
    seen = {r.oid for r in chosen}
    todo = sorted(seen)
    found: list[ClassRow] = []
    while todo:
        oid = todo.pop()
        partitioned = any(r.relkind == "p" for r in by_oid.get(oid, []))
        if only and not partitioned:
            continue
        for child in sorted(children.get(oid, set()) - seen):
            seen.add(child)
            todo.append(child)
            found += by_oid.get(child, [])
    return found


def filenode_map(data: bytes) -> dict[int, int]:
    """A pg_filenode.map: the relfilenodes of the mapped catalogs (pg_class among them)."""
    if len(data) < 8:
        raise NotSparse("a pg_filenode.map is truncated")
    magic, count = struct.unpack_from("=ii", data)
    if magic != _MAP_MAGIC or not 0 <= count <= (len(data) - 8) // 8:
        raise NotSparse("a pg_filenode.map is not in a known format")
    return dict(struct.iter_unpack("=II", data[8 : 8 + 8 * count]))


def heap_tuples(data: bytes) -> Iterator[bytes]:
    """The user data of every normal line pointer's tuple on every heap page of ``data``,
    visible or not (src/include/storage/bufpage.h, itemid.h, access/htup_details.h)."""
    view = memoryview(data)
    for start in range(0, len(data) - BLCKSZ + 1, BLCKSZ):
        page = view[start : start + BLCKSZ]
        lower, upper = struct.unpack_from("=HH", page, 12)
        if upper == 0 or lower < 24 or lower > BLCKSZ:
            continue  # a new (all-zero) page, or not a heap page
        for (word,) in struct.iter_unpack("=I", page[24:lower]):
            off, flags, length = word & 0x7FFF, (word >> 15) & 3, word >> 17
            if flags != _LP_NORMAL or length < 23 or off + length > BLCKSZ:
                continue
            hoff = page[off + 22]
            if hoff < 23 or hoff > length:
                continue
            yield bytes(page[off + hoff : off + length])


def _name(data: bytes, offset: int) -> str:
    raw = data[offset : offset + _NAMEDATALEN]
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
