"""A local copy of the repository's index objects, so that a command does not fetch them all
again (docs/repository-format.md, "The local index cache").

Index objects are immutable: a key names the same bytes for as long as it exists. So a
listing of ``index/`` tells which cached copies are still good (their key is listed, with the
size listed) and which objects are new; copies of keys no longer listed are dropped. What the
cache holds are the sealed bytes as stored: the reader unseals them exactly like fresh ones,
and a copy that fails is discarded and fetched again, never trusted.

One directory per repository, named by the repository's id (pgkura.json), under the cache
directory. Each file is written under a temporary name and renamed, so processes sharing the
cache never read a torn copy. A cache that cannot be written is used no more by this process,
after one warning: the command goes on without.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
from collections.abc import Iterable

from pgkura.repository.repo import Repository

log = logging.getLogger("pgkura")

_warned: set[str] = set()


def default_cache_root() -> str:
    """``$XDG_CACHE_HOME/pgkura``, else ``~/.cache/pgkura`` of the user this process runs as:
    the home directory from the password database, since ``runuser`` and ``su`` keep the
    caller's ``$HOME`` (root's, which the postgres user cannot write)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "pgkura")
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return os.path.join(home, ".cache", "pgkura")


def cache_root(setting: str | None) -> str | None:
    """The cache directory the cache-dir setting names: None when it is ``off``."""
    if setting is None or setting == "":
        return default_cache_root()
    if setting.lower() == "off":
        return None
    return os.path.abspath(os.path.expanduser(setting))


class IndexCache:
    """The cached index objects of one repository; every method is safe to call when the
    cache is off or unusable (it then holds nothing)."""

    def __init__(self, root: str | None, repo_id: str) -> None:
        ok = root is not None and all(c in "0123456789abcdef" for c in repo_id) and repo_id
        self.directory = os.path.join(root, repo_id) if ok and root else None

    @classmethod
    def of(cls, repo: Repository) -> IndexCache:
        """The cache of ``repo`` (one object per Repository, so a warning is given once)."""
        cache = getattr(repo, "_index_cache", None)
        if cache is None:
            cache = cls(cache_root(repo.cache_setting), repo.config.repo_id)
            repo._index_cache = cache
            if cache.directory is not None:
                from pgkura.repository.cache_sweep import note_use

                note_use(cache.directory)
        return cache

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, key: str) -> str | None:
        if self.directory is None or key.startswith("/") or ".." in key.split("/"):
            return None
        return os.path.join(self.directory, key)

    def get(self, key: str, size: int) -> bytes | None:
        """The cached bytes of ``key`` when a copy of the listed ``size`` is there."""
        path = self._path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        return data if len(data) == size else None

    def read(self, key: str) -> bytes | None:
        """The cached bytes of ``key``, whatever their size (a derived copy that records
        what it was made from itself, such as a manifest's head)."""
        path = self._path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def put(self, key: str, data: bytes) -> None:
        """Keep a copy of ``key``: written whole under a temporary name, then renamed."""
        path = self._path(key)
        if path is None:
            return
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._give_up(exc)

    def discard(self, key: str) -> None:
        path = self._path(key)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def keep_only(self, prefix: str, keys: set[str], listed_at: float) -> None:
        """Drop the copies under ``prefix`` whose key is not in ``keys`` (deleted objects),
        and temporary files that writers killed mid-write left. A copy written since
        ``listed_at`` (time.time() when the listing began) is kept: another process may
        have stored and cached an object this listing did not see yet."""
        top = self._path(prefix.rstrip("/"))
        if top is None or self.directory is None:
            return
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.directory).replace(os.sep, "/")
                if key in keys or _written_since(full, listed_at):
                    continue
                if name.endswith(".tmp") and not _left_by_dead_writer(name):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(full)

    def keep_backups(self, prefix: str, backup_ids: Iterable[str], listed_at: float) -> None:
        """:meth:`keep_only` of the copies named ``prefix`` + a backup id: those of the
        backups a listing of a stanza begun at ``listed_at`` showed are kept."""
        self.keep_only(prefix, {prefix + i for i in backup_ids}, listed_at)

    def _give_up(self, exc: OSError) -> None:
        directory, self.directory = self.directory, None
        if directory is not None and directory not in _warned:
            _warned.add(directory)
            log.warning(
                "cannot write the index cache %s (%s); going on without it (set --cache-dir "
                "to a writable directory, or off)",
                directory,
                exc.strerror or exc,
            )


def _written_since(path: str, when: float) -> bool:
    try:
        return os.stat(path).st_mtime >= when
    except OSError:
        return True  # gone already


def _left_by_dead_writer(name: str) -> bool:
    from pgkura.pg.procs import pid_alive

    parts = name.split(".")
    pid = parts[-3] if len(parts) >= 3 else ""
    return not pid.isdigit() or (int(pid) != os.getpid() and not pid_alive(int(pid)))
