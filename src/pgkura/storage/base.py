"""The byte-store interface every repository backend implements.

Keys are '/'-separated relative names ("packs/ab/ab12....pack"). A backend knows nothing of
PostgreSQL or of the repository's layout; the repository knows nothing of how bytes are kept.
The operations are the small set an object store can offer atomically: put-if-absent (the
primitive for immutable objects and locks), atomic replace, ranged get, list by prefix, delete.

The contract, the same for every backend (tests/test_storage_contract.py runs it against
each one):

- an absent object: ``get`` raises :class:`pgkura.errors.ObjectNotFound` (a StorageError,
  and a KeyError for older callers), ``size`` returns None, ``delete`` and ``delete_many`` do
  nothing; no other operation reports absence;
- a key that could climb out of the store ("../x", "/etc"): ValueError, before any I/O;
- every other failure: :class:`pgkura.errors.StorageError`, never the backend's own exception
  (no OSError, no obstore error): the message names the operation, the key and the location,
  the hint what to fix. The S3 backend raises it after retrying transient failures (5xx,
  429/503 SlowDown, dropped connections) within its time budget; the posix backend has nothing
  transient to retry, and its errors carry the ``errno`` and ``strerror`` the operating system
  reported (ENOSPC, EROFS, EACCES...), for the layers above to explain in their own words.

Connections: ``max_connections`` is how many requests the backend takes at once before more
only queue (or are refused); engines size their pools with :meth:`Storage.workers_for`, never
with ``--jobs`` alone.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator


class ObjectInfo:
    """A stored object's key and size, and when it was written (seconds since the epoch)
    where the store knows it."""

    __slots__ = ("key", "mtime", "size")  # not a dataclass: imported by archive-push

    def __init__(self, key: str, size: int, mtime: float | None = None) -> None:
        self.key = key
        self.size = size
        self.mtime = mtime

    def __repr__(self) -> str:
        return f"ObjectInfo({self.key!r}, {self.size}, {self.mtime})"


class Storage(abc.ABC):
    """A flat namespace of immutable-or-atomically-replaced byte objects."""

    #: A human-readable location for messages ("/backups/repo", "s3://bucket/prefix").
    location: str

    #: How many requests engines may have in flight against this store at once; None when
    #: only the machine limits them (a local file system: CPUs and disks, which --jobs sizes).
    max_connections: int | None = None

    #: Whether a forked child process may use this object. The S3 client's I/O runs in threads
    #: that fork(2) does not copy: engines must use threads, not forked workers, when False.
    fork_safe: bool = True

    #: How coarse the times :meth:`list` gives are, in seconds: an object was written no later
    #: than its listed time plus this (S3's Last-Modified is kept to the second, truncated).
    mtime_resolution: float = 0.0

    def workers_for(self, jobs: int) -> int:
        """How many workers that each use this store to run for ``jobs`` asked: never more
        than the store takes at once, never fewer than one."""
        limit = self.max_connections
        return max(1, jobs if limit is None else min(jobs, limit))

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` durably unless ``key`` exists; True if this call wrote it."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably, replacing any object atomically."""

    @abc.abstractmethod
    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Read ``length`` bytes from ``start`` (to the end when None); ObjectNotFound if
        absent. A read from at or past the end gives b""."""

    @abc.abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in no particular order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already gone."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove every key of ``keys``; absent ones are no error. Backends batch the requests
        (S3: 1000 keys a request)."""
        for key in keys:
            self.delete(key)

    def remove_incomplete(self) -> int:
        """Delete what interrupted writes left (temporary files); call only while no writer
        can run. Returns the bytes freed. Stores whose writes are atomic have nothing to do."""
        return 0

    def sweep(self) -> int:
        """Remove what writers that died left (temporary files), never a live writer's;
        cheap enough for every command's start. Returns the bytes freed."""
        return 0

    def check_writable(self) -> None:
        """Raise StorageError when the store cannot take writes."""
        probe = ".pgkura-write-probe"
        self.put(probe, b"ok")
        self.delete(probe)
