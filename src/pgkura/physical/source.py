"""Listing the files of a data directory and its tablespaces, as a backup stores them.

Paths are relative to the data directory and use '/'. Files of a tablespace are listed under
``pg_tblspc/<oid>/`` (the way PostgreSQL addresses them through its link), so the manifest is
one tree whatever the tablespace locations were.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pgkura.errors import PgkuraError
from pgkura.repository.manifest import Tablespace


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative, '/'-separated
    abspath: str
    type: str  # "file", "dir" or "tablespace"
    mode: int
    size: int = 0
    mtime: float = 0.0
    target: str | None = None


#: Decides, from a relative path and whether it is a directory, if the entry is left out.
Exclude = Callable[[str, bool], bool]


def _never(_path: str, _is_dir: bool) -> bool:
    return False


def list_tablespaces(pgdata: Path) -> list[Tablespace]:
    tbl = pgdata / "pg_tblspc"
    out = []
    if tbl.is_dir():
        for entry in sorted(os.scandir(tbl), key=lambda e: e.name):
            if entry.is_symlink() and entry.name.isdigit():
                out.append(Tablespace(int(entry.name), os.readlink(entry.path)))
    return out


def walk_data_directory(pgdata: Path, exclude: Exclude = _never) -> Iterator[SourceFile]:
    """Yield every directory, file and tablespace link below ``pgdata``, parents first."""
    yield from _walk(str(pgdata), "", exclude, follow_tablespaces=True)


def _walk(root: str, rel: str, exclude: Exclude, follow_tablespaces: bool) -> Iterator[SourceFile]:
    directory = os.path.join(root, rel) if rel else root
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return  # removed while we walked (a dropped database during an online backup)
    except PermissionError as exc:
        raise PgkuraError(
            f"cannot read directory {directory}: permission denied",
            hint="run pgkura as the cluster's owner (usually postgres)",
        ) from exc
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            if follow_tablespaces and rel == "pg_tblspc" and entry.name.isdigit():
                target = os.readlink(entry.path)
                yield SourceFile(path, entry.path, "tablespace", 0o777, target=target)
                yield from _walk(root, path, exclude, follow_tablespaces=False)
            elif rel == "" and entry.name == "pg_wal":
                # pg_wal may be a link to another disk (initdb --waldir); store its content.
                yield SourceFile(path, entry.path, "dir", 0o700)
                yield from _walk(root, path, exclude, follow_tablespaces=False)
            continue  # other links are not PostgreSQL's; pg_basebackup skips them too
        is_dir = stat.S_ISDIR(st.st_mode)
        if exclude(path, is_dir):
            continue
        mode = stat.S_IMODE(st.st_mode)
        if is_dir:
            yield SourceFile(path, entry.path, "dir", mode)
            yield from _walk(root, path, exclude, follow_tablespaces)
        elif stat.S_ISREG(st.st_mode):
            yield SourceFile(path, entry.path, "file", mode, st.st_size, st.st_mtime)
