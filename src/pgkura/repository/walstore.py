"""The WAL archive's objects: one sealed object per archived segment, .partial, .backup and
.history file, in the archive of one stanza generation (docs/repository-format.md, "WAL
archive", "Stanza generations").

This module names, seals, reads and lists them; wal/archive.py decides what to push and
wal/catalog.py what an archive holds. Imported by archive-push once per WAL segment: no
dataclasses, no typing at run time.
"""

from __future__ import annotations

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout, sealed, stored_digest
from pgkura.repository.sealed import SealError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from pgkura.repository.repo import Repository

__all__ = ["ArchivedFile", "SealError", "StoredWal", "WalStore"]


class ArchivedFile:
    """A file the archive lists: its name, its object's size, and when it was archived
    (seconds since the epoch) where the store knows it."""

    __slots__ = ("mtime", "name", "size")

    def __init__(self, name: str, size: int, mtime: float | None) -> None:
        self.name, self.size, self.mtime = name, size, mtime


class StoredWal:
    """An archived file's sealed object, as read from the store."""

    __slots__ = ("_repo", "data", "key")

    def __init__(self, repo: Repository, key: str, data: bytes) -> None:
        self._repo, self.key, self.data = repo, key, data

    @property
    def size(self) -> int:
        return len(self.data)

    def claims(self, digest: bytes) -> bool:
        """Whether the object's header says it holds the content whose digest is ``digest``
        (without checking that it does)."""
        return sealed.claims(self.data, digest)

    def content(self, expect_digest: bytes | None = None) -> bytes:
        """The verified content; SealError when the object is damaged."""
        self._check_stored()
        return self._repo.unseal(self.data, expect_digest, name=self.key)

    def write_to(self, write: Callable[[memoryview], None]) -> None:
        """Hand the content to ``write`` piece by piece, verifying it; SealError at the end
        when it is damaged (``write`` may have had pieces: the caller discards them)."""
        self._check_stored()
        self._repo.unseal_to(self.data, write, name=self.key)

    def check(self) -> None:
        """Raise SealError when the object is damaged."""
        self._check_stored()
        self._repo.unseal_to(self.data, lambda _piece: None, name=self.key)

    def check_stored(self) -> bool:
        """verify --quick's check of an unencrypted object: the digest of its stored bytes
        it ends with (True), or False when it has none; SealError when it does not match."""
        return stored_digest.check_stored_digest(self.data, self._repo.key)

    def _check_stored(self) -> None:
        # Every reader checks the stored digest too: an object whose frame was damaged
        # (its content intact) is damaged for all, so that a push replaces it.
        if self._repo.cipher is None:
            self.check_stored()


class WalStore:
    """The WAL archives of a repository; ``archive`` is a layout.wal_archive name (a stanza's
    name, or ``stanza@n`` for a later generation)."""

    __slots__ = ("_repo",)

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def key(self, archive: str, name: str) -> str:
        """The object key of ``name`` in ``archive``, for messages."""
        return layout.wal_key(archive, name)

    def exists(self, archive: str, name: str) -> bool:
        return self._repo.storage.exists(layout.wal_key(archive, name))

    def get(self, archive: str, name: str) -> StoredWal:
        """The archived ``name``; ObjectNotFound when it is not archived, StorageError when
        the store fails."""
        key = layout.wal_key(archive, name)
        return StoredWal(self._repo, key, self._repo.storage.get(key))

    def find(self, archive: str, name: str) -> StoredWal | None:
        """:meth:`get`, None when ``name`` is not archived."""
        try:
            return self.get(archive, name)
        except ObjectNotFound:
            return None

    def put_if_absent(
        self,
        archive: str,
        name: str,
        raw: bytes | memoryview,
        digest: bytes,
        compressed: bytes | None = None,
    ) -> int | None:
        """Seal and store ``raw`` (whose digest is ``digest``; ``compressed``: compressed by
        the repository's codec already) as ``name`` unless it is archived; the stored size
        when this call wrote it, None when it was there."""
        key = layout.wal_key(archive, name)
        data = self._sealed(raw, digest, key, compressed)
        if self._repo.storage.put_if_absent(key, data):
            return len(data)
        return None

    def replace(self, archive: str, name: str, raw: bytes | memoryview, digest: bytes) -> int:
        """Seal and store ``raw`` as ``name``, replacing the archived object atomically (a
        damaged copy of the same content); the stored size."""
        key = layout.wal_key(archive, name)
        data = self._sealed(raw, digest, key)
        self._repo.storage.put(key, data)
        return len(data)

    def _sealed(
        self, raw: bytes | memoryview, digest: bytes, key: str, compressed: bytes | None = None
    ) -> bytes:
        """The object to store: sealed, and unencrypted, with the digest of its stored bytes
        that verify --quick checks instead of decompressing it
        (stored_digest.with_stored_digest)."""
        data = self._repo.seal(raw, digest, name=key, compressed=compressed).data
        if self._repo.cipher is None:
            data = stored_digest.with_stored_digest(data, self._repo.key)
        return data

    @property
    def time_resolution(self) -> float:
        """How coarse an :class:`ArchivedFile`'s time is: it was archived no later than its
        ``mtime`` plus this many seconds."""
        return self._repo.storage.mtime_resolution

    def list(self, archive: str, timeline: str = "") -> Iterator[ArchivedFile]:
        """Every object of ``archive`` (history files included), or only the segments whose
        name starts with ``timeline`` (eight hex digits), in no particular order."""
        prefix = layout.wal_prefix(archive) + timeline
        for obj in self._repo.storage.list(prefix):
            yield ArchivedFile(obj.key.rsplit("/", 1)[-1], obj.size, obj.mtime)

    def delete(self, archive: str, names: Iterable[str]) -> None:
        """Delete these files of ``archive`` (retention: wal/retention.py says which)."""
        self._repo.storage.delete_many([layout.wal_key(archive, name) for name in names])
