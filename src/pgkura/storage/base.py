"""The byte-store interface every repository backend implements.

Keys are '/'-separated relative names ("packs/ab/ab12....pack"). A backend knows nothing of
PostgreSQL or of the repository's layout; the repository knows nothing of how bytes are kept.
The operations are the small set an object store can offer atomically: put-if-absent (the
primitive for immutable objects and locks), atomic replace, ranged get, list by prefix, delete.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator


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

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` durably unless ``key`` exists; True if this call wrote it."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably, replacing any object atomically."""

    @abc.abstractmethod
    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Read ``length`` bytes from ``start`` (to the end when None); KeyError if absent."""

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

    def remove_incomplete(self) -> int:
        """Delete what interrupted writes left (temporary files); call only while no writer
        can run. Returns the bytes freed. Stores whose writes are atomic have nothing to do."""
        return 0

    def check_writable(self) -> None:
        """Raise an OSError-derived error when the store cannot take writes."""
        probe = ".pgkura-write-probe"
        self.put(probe, b"ok")
        self.delete(probe)
