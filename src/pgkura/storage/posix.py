"""A repository on a local or NFS-mounted directory.

Every write goes through :func:`write_atomic`: temporary name, fsync, rename, fsync of the
directory, so that a crash leaves either the old object or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Iterator

from pgkura.durable import fsync_dir, write_all
from pgkura.errors import ObjectNotFound, StorageError, UsageError
from pgkura.storage.base import ObjectInfo, Storage
from pgkura.storage.requests import count

TYPE_CHECKING = False  # typing itself is not imported on archive-push's path
if TYPE_CHECKING:
    import mmap

# Paths are strings joined with os.path, not pathlib: archive-push opens this storage once per
# WAL segment, and pathlib (with fnmatch, re, urllib.parse) costs it about 5 ms to import.

_TMP_SUFFIX = ".tmp-pgkura"

#: Set for the command line (commands.as_command_line): as root, write nothing into a
#: repository another user owns. What root writes there is root's (mode 0640), so that
#: user's archive_command, backups and expires could no longer read or replace it, and
#: archiving would stop. Code calling the library (the tests, which run as root beside
#: repositories the server's user made) is not stopped.
refuse_root_writes_to_others = False
# Temporary files live in one directory of the repository (same file system, so rename and
# link stay atomic), named by host and pid: what a killed writer left is found by listing one
# directory, and only a dead writer's is removed.
TMP_DIR = "tmp"
# A temporary file of another host is left alone this long (its writer's liveness cannot be
# asked); no write of one object takes anywhere near it.
FOREIGN_TMP_SECONDS = 3600.0


def _host_tag() -> str:
    return "".join(c if c.isalnum() else "_" for c in os.uname().nodename)[:32] or "host"


def write_atomic(
    path: str,
    data: bytes,
    *,
    replace: bool = True,
    mode: int = 0o640,
    tmp_dir: str | None = None,
) -> bool:
    """Write ``data`` to ``path`` crash-safely; with ``replace=False`` never overwrite.

    Returns False (and writes nothing) when ``replace`` is False and ``path`` exists.
    The no-replace case uses link(2), which fails atomically if the name is taken. The
    directory must exist (PosixStorage._make_dirs). The temporary file goes into ``tmp_dir``
    (default: beside ``path``), and is removed whatever fails (a full disk must not keep the
    partial file that ate the space).
    """
    parent, name = os.path.split(path)
    tag = f"{_host_tag()}.{os.getpid()}.{os.urandom(6).hex()}{_TMP_SUFFIX}"
    tmp = os.path.join(tmp_dir, tag) if tmp_dir else os.path.join(parent, f".{name}.{tag}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
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


def _dead_writer(name: str, mtime: float, now: float) -> bool:
    """Whether the temporary file ``name`` (in TMP_DIR) was left by a writer that is gone."""
    from pgkura.pg.procs import pid_alive

    host, _, rest = name.partition(".")
    pid_text = rest.partition(".")[0]
    if host == _host_tag() and pid_text.isdigit():
        return int(pid_text) != os.getpid() and not pid_alive(int(pid_text))
    return now - mtime > FOREIGN_TMP_SECONDS


class PosixStorage(Storage):
    """Objects as files under one directory; its errors keep the operating system's errno."""

    # Linux stamps a file with the coarse clock, updated once per timer tick (1/HZ: 4 ms at
    # HZ=250, 10 ms at HZ=100), so a file's mtime can read up to a tick before time.time()
    # taken before the write (seen on CI: 1.8 ms).
    mtime_resolution = 0.02

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
        self._write_checked = False
        self._write_refusal: UsageError | None = None

    def _may_write(self) -> None:
        """UsageError when this process is root and another user owns the repository (see
        ``refuse_root_writes_to_others``); checked once, before the first write."""
        if not self._write_checked:
            self._write_refusal = self._root_refusal()
            self._write_checked = True
        if self._write_refusal is not None:
            raise self._write_refusal

    def _root_refusal(self) -> UsageError | None:
        if not refuse_root_writes_to_others or os.geteuid() != 0:
            return None
        try:
            owner = os.stat(self.root).st_uid
        except OSError:
            return None  # a repository being made, or a write that will say what is wrong
        if owner == 0:
            return None
        import pwd

        try:
            user = pwd.getpwuid(owner).pw_name
        except KeyError:
            user = f"uid {owner}"
        return UsageError(
            f"pgkura runs as root, but the repository at {self.location} belongs to {user}: "
            f"what root wrote there {user} could not read, and its archive_command would fail",
            hint=f"run pgkura as {user}, for example: runuser -u {user} -- pgkura ...",
        )

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

    @contextlib.contextmanager
    def _failing(self, op: str, key: str) -> Iterator[None]:
        """Turn the OSError of ``op`` on ``key`` into the contract's StorageError."""
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(
                f"cannot {op} {key or '/'} in the repository at {self.location}: {reason}",
                hint="check the path's permissions and free space, and that the file system "
                "is mounted",
                errno=exc.errno,
                strerror=reason,
            ) from exc

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """Reading ``key``: a missing object is ObjectNotFound, any other OSError the
        contract's StorageError."""
        try:
            with self._failing("read", key):
                yield
        except StorageError as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise ObjectNotFound(
                f"{key} does not exist in the repository at {self.location}"
            ) from None

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return os.path.join(self.root, key)

    def _tmp_dir(self) -> str:
        tmp = os.path.join(self.root, TMP_DIR)
        self._make_dirs(tmp)
        return tmp

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._may_write()
        path = self._path(key)
        count("put", key)
        with self._failing("write", key):
            self._make_dirs(os.path.dirname(path))
            return write_atomic(path, data, replace=False, tmp_dir=self._tmp_dir())

    def put(self, key: str, data: bytes) -> None:
        self._may_write()
        path = self._path(key)
        count("put", key)
        with self._failing("write", key):
            self._make_dirs(os.path.dirname(path))
            write_atomic(path, data, replace=True, tmp_dir=self._tmp_dir())

    def sweep(self) -> int:
        """Remove the temporary files of writers that died (killed mid-write); a live
        writer's are never touched. Cheap: one directory is listed. Returns bytes freed."""
        tmp = os.path.join(self.root, TMP_DIR)
        freed = 0
        now = time.time()
        try:
            with self._failing("list", TMP_DIR):
                entries = list(os.scandir(tmp))
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                return 0
            raise
        for entry in entries:
            try:
                st = entry.stat()
                if _dead_writer(entry.name, st.st_mtime, now):
                    os.unlink(entry.path)
                    freed += st.st_size
            except OSError:
                continue  # gone meanwhile, or not ours to remove
        return freed

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        count("get", key)
        with self._reading(key), open(path, "rb") as f:
            if start:
                f.seek(start)
            return f.read() if length is None else f.read(length)

    def get_mapped(self, key: str) -> bytes | mmap.mmap:
        """The whole object ``key`` as :meth:`get` reads it, mapped into memory (read-only)
        instead of copied: a check that reads a pack once and hashes it needs neither the copy
        nor the fresh memory's page faults (40 MB cost a new process 16 ms of CPU so). The map
        lives while anything refers to it. A pack is never written in place, and gc deletes
        it (unlinks: the mapping stays valid) only when no shared lock holds it; a file cut
        short by hand while it is mapped would kill the process with SIGBUS."""
        import mmap

        path = self._path(key)
        count("get", key)
        with self._reading(key), open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            return mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)

    def size(self, key: str) -> int | None:
        path = self._path(key)
        count("head", key)
        try:
            with self._failing("stat", key):
                return os.stat(path).st_size
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory part of the prefix, then filter by the rest.
        base_dir, _, _ = prefix.rpartition("/")
        count("list", prefix)
        start = os.path.join(self.root, base_dir) if base_dir else self.root
        if not os.path.isdir(start):
            if os.path.lexists(self.root) and not os.path.isdir(self.root):
                with self._failing("list", prefix):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            return  # nothing was ever stored there
        with self._failing("list", prefix):
            yield from self._walk(start, prefix)

    def _walk(self, start: str, prefix: str) -> Iterator[ObjectInfo]:
        def unreadable(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # removed while listed: not there
                raise exc

        for dirpath, _dirnames, filenames in os.walk(start, onerror=unreadable):
            # One relpath per directory, not per file: a WAL archive of 20,000 segments
            # spent half its listing there.
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                full = os.path.join(dirpath, name)
                key = rel + name
                if key.startswith(prefix):
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def remove_incomplete(self) -> int:
        self._may_write()
        # archive-push takes no lock (it runs once per segment): a temporary file under wal/
        # may be a push in progress, so only old ones go. (Temporary files beside their
        # objects are what versions before the tmp/ directory wrote.)
        wal_dir = os.path.join(self.root, "wal")
        now = time.time()
        freed = self.sweep()
        with self._failing("remove temporary files", ""):
            return freed + self._remove_old_tmp(wal_dir, now)

    def _remove_old_tmp(self, wal_dir: str, now: float) -> int:
        freed = 0
        tmp_dir = os.path.join(self.root, TMP_DIR)
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == self.root and TMP_DIR in dirnames:
                dirnames.remove(TMP_DIR)  # swept above: a live writer's files are there
            if dirpath == tmp_dir:
                continue
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
        self._may_write()
        path = self._path(key)
        count("delete", key)
        with self._failing("delete", key):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            fsync_dir(os.path.dirname(path))

    def delete_many(self, keys: Iterable[str]) -> None:
        self._may_write()
        # One fsync per directory, not per key: gc removes thousands of packs at once.
        touched = set()
        for key in keys:
            path = self._path(key)
            count("delete", key)
            with self._failing("delete", key):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
            touched.add(os.path.dirname(path))
        for directory in sorted(touched):
            with self._failing("delete", os.path.relpath(directory, self.root)):
                fsync_dir(directory)
