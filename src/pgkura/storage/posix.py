"""A repository on a local or NFS-mounted directory.

Every write goes through :func:`write_atomic`: temporary name, fsync, rename, fsync of the
directory, so that a crash leaves either the old object or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

from pgkura.storage.base import ObjectInfo, Storage

# Paths are strings joined with os.path, not pathlib: archive-push opens this storage once per
# WAL segment, and pathlib (with fnmatch, re, urllib.parse) costs it about 5 ms to import.

_TMP_SUFFIX = ".tmp-pgkura"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes, *, replace: bool = True, mode: int = 0o640) -> bool:
    """Write ``data`` to ``path`` crash-safely; with ``replace=False`` never overwrite.

    Returns False (and writes nothing) when ``replace`` is False and ``path`` exists.
    The no-replace case uses link(2), which fails atomically if the name is taken. The
    directory must exist (PosixStorage._make_dirs).
    """
    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f".{name}.{os.urandom(6).hex()}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)
    return True


class PosixStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        # Symbolic links in the location are resolved once: a command reads the repository's
        # key and writes its objects in the same directory even if a link is re-pointed while
        # it runs (sealing with one repository's key into another would read as corruption).
        self.root = os.path.realpath(root)
        self.location = str(root)
        # Only a repository being made may create its directory: one that was there and is
        # gone (an unmounted file system, a removed directory) must not be made anew, empty,
        # by the next write, say of a background archive pusher.
        self._may_create_root = not os.path.isdir(self.root)

    def _make_dirs(self, directory: str) -> None:
        """Create ``directory`` and its missing parents, each made durable in its parent (a
        WAL segment acknowledged in a new directory must survive a crash with it)."""
        if os.path.isdir(directory):
            return
        if not self._may_create_root and not os.path.isdir(self.root):
            raise FileNotFoundError(
                errno.ENOENT, "the repository directory is gone (unmounted or removed?)",
                str(self.root),
            )  # fmt: skip
        missing = []
        while not os.path.isdir(directory) and directory != os.path.dirname(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for made in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made by a concurrent writer
                os.mkdir(made)
            fsync_dir(os.path.dirname(made))

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return os.path.join(self.root, key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        self._make_dirs(os.path.dirname(path))
        return write_atomic(path, data, replace=False)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._make_dirs(os.path.dirname(path))
        write_atomic(path, data, replace=True)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                if start:
                    f.seek(start)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise KeyError(key) from None

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory part of the prefix, then filter by the rest.
        base_dir, _, _ = prefix.rpartition("/")
        start = os.path.join(self.root, base_dir) if base_dir else self.root
        if not os.path.isdir(start):
            return
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def remove_incomplete(self) -> int:
        # archive-push takes no lock (it runs once per segment): a temporary file under wal/
        # may be a push in progress, so only old ones go.
        wal_dir = os.path.join(self.root, "wal")
        now = time.time()
        freed = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if not name.endswith(_TMP_SUFFIX):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                    if dirpath.startswith(wal_dir) and now - st.st_mtime < 3600:
                        continue
                    os.unlink(path)
                    freed += st.st_size
                except FileNotFoundError:
                    continue
        return freed

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:  # pragma: no cover - depends on the file system
            if exc.errno != errno.ENOENT:
                raise
        fsync_dir(os.path.dirname(path))
