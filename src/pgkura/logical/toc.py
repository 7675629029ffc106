"""Reading a stored dump back to PostgreSQL's tools: whole, streamed, or staged on disk; and its
table of contents (``pg_restore --list``).

pg_restore reads custom and tar archives from stdin, so those are streamed from the repository
with no local copy. A directory-format dump, and a custom one restored with ``--jobs`` (parallel
workers need a seekable file), are staged in a scratch directory first.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pgkura.errors import PostgresError
from pgkura.logical.records import SINGLE_FILE, DatabaseDump, database_files
from pgkura.logical.streams import entry_blocks
from pgkura.logical.tools import PgTools, ToolProcess, tool_message
from pgkura.pg.process import PIPE
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockReader
from pgkura.repository.manifest import FileEntry, Manifest
from pgkura.scratch import scratch_dir

#: Object types ``pg_restore --table`` selects (PostgreSQL docs, pg_restore, option -t).
RELATION_TYPES = ("TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE")
_DESCS = sorted(
    (*RELATION_TYPES, "TABLE DATA", "MATERIALIZED VIEW DATA", "SEQUENCE SET", "SEQUENCE OWNED BY"),
    key=len,
    reverse=True,
)


@dataclass(frozen=True)
class TocEntry:
    desc: str
    schema: str
    name: str
    owner: str


def parse_toc(listing: str) -> list[TocEntry]:
    """The relation entries of a ``pg_restore --list`` listing.

    Lines read ``ID; TABLEOID OID DESC SCHEMA NAME OWNER`` (pg_backup_archiver.c,
    PrintTOCSummary); DESC may hold spaces, so it is matched against the known ones."""
    out = []
    for line in listing.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        parts = line.split(" ", 3)
        if len(parts) < 4 or not parts[0].endswith(";"):
            continue
        rest = parts[3]
        desc = next((d for d in _DESCS if rest.startswith(d + " ")), None)
        if desc is None or desc not in RELATION_TYPES:
            continue
        words = rest[len(desc) + 1 :].split(" ")
        if len(words) < 3:
            continue
        out.append(TocEntry(desc, words[0], " ".join(words[1:-1]), words[-1]))
    return out


def feed(
    reader: BlockReader, entry: FileEntry, proc: ToolProcess, progress: Progress | None = None
) -> None:
    """Stream a stored file into a tool's stdin; a tool that stops reading early (it failed,
    or ``--list`` read all it needed) is not an error here: its exit status says."""
    progress = progress or NoProgress()
    try:
        for data in entry_blocks(reader, entry):
            proc.stdin.write(data)
            progress.advance(len(data))
        proc.stdin.close()
    except BrokenPipeError:
        pass


def stage_file(reader: BlockReader, entry: FileEntry, path: Path) -> None:
    with open(path, "wb") as out:
        for data in entry_blocks(reader, entry):
            out.write(data)


@contextlib.contextmanager
def staged_dump(
    reader: BlockReader, manifest: Manifest, db: DatabaseDump, *, only_toc: bool = False
) -> Iterator[Path]:
    """A scratch copy of one database's dump: the dump file, or the dump directory (only its
    ``toc.dat`` with ``only_toc``); removed afterwards."""
    with scratch_dir("restore") as tmp:
        root = Path(tmp) / "dump"
        files = database_files(manifest, db)
        single = len(files) == 1 and files[0].path == f"{db.prefix}/{SINGLE_FILE}"
        if single:
            stage_file(reader, files[0], root)
        else:
            root.mkdir(mode=0o700)
            for f in files:
                rel = f.path[len(db.prefix) + 1 :]
                if only_toc and rel != "toc.dat":
                    continue
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                stage_file(reader, f, root / rel)
        yield root


def dump_entry(manifest: Manifest, db: DatabaseDump) -> FileEntry:
    """The single stored file of a custom, tar or plain dump."""
    (entry,) = database_files(manifest, db)
    return entry


def read_toc(
    tools: PgTools, reader: BlockReader, manifest: Manifest, db: DatabaseDump, fmt: str
) -> str:
    """``pg_restore --list`` of one database's dump."""
    if fmt == "directory":
        with staged_dump(reader, manifest, db, only_toc=True) as root:
            return _list(tools, [str(root)], None)
    return _list(tools, [], (reader, dump_entry(manifest, db)))


def _list(tools: PgTools, extra: list[str], source: tuple[BlockReader, FileEntry] | None) -> str:
    args = [tools.path("pg_restore"), "--list", *extra]
    with tempfile.TemporaryFile() as out:
        stdin: int | IO[bytes] | None = PIPE if source else None
        with ToolProcess(args, stdin=stdin, stdout=out) as proc:
            if source is not None:
                feed(source[0], source[1], proc)
            rc, err = proc.wait()
        if rc != 0:
            raise PostgresError(f"pg_restore --list failed: {tool_message(err)}")
        out.seek(0)
        return out.read().decode("utf-8", "replace")
