"""Content-addressed blocks in immutable packs, and the index that finds them.

Writers seal blocks into a pack buffer; a full buffer is stored as one pack (put-if-absent),
then its index object, which is the moment the blocks become known to the repository. A writer
may store its packs from a thread of its own, so that sealing goes on while a pack is written
and synced to disk (on this project's machine a durable 16 MiB write takes 70 ms).
Readers look a block id up in the index and fetch its byte range from the pack.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import blake3

from pgkura.codec.compression import LARGE_OBJECT, hash_threads
from pgkura.errors import CorruptionError
from pgkura.repository import layout
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.repo import BLOCK_IDENTITY, Repository
from pgkura.repository.sealed import frame_parts, keyed_digest

PACK_TARGET_SIZE = 16 * 1024 * 1024
PACK_TRAILER_MAGIC = b"PGKPACK1"
PACK_TRAILER = struct.Struct("<Q8s")
#: Bytes of each block's stored digest in its pack's index (docs/repository-format.md,
#: "Stored digests")
STORED_DIGEST_SIZE = 16


class BlockLocation(NamedTuple):
    """Where a block is stored: its pack, and the offset and length of its sealed bytes.
    A named tuple, not a dataclass: every command builds one per block of the repository
    when it loads the index, and a frozen dataclass takes twice as long to make."""

    pack_id: str
    offset: int
    length: int
    raw_length: int


class BlockIndex:
    """Every block the repository knows, loaded from the index objects; thread-safe."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._blocks: dict[bytes, BlockLocation] = {}
        self._pending: set[bytes] = set()
        self._packs: set[str] = set()
        self.damaged: list[str] = []  # messages about packs whose index cannot be read
        self.unindexed: list[str] = []  # packs read from their trailer: no index object
        #: damaged index objects of packs that were read from their trailer instead
        self.replaced: list[str] = []
        self.doomed: set[str] = set()  # packs gc is about to delete (repository.doomed)
        #: with load(keep_packs=True): every pack's blocks, whichever copy the index uses
        self.pack_entries: dict[str, list[tuple[bytes, BlockLocation]]] = {}
        #: with load(columns_only=True): the same, as the index objects gave them (for
        #: parsed forms, repository.index_parsed.PackEntries: columns)
        self.pack_columns: dict[str, Sequence[tuple[bytes, BlockLocation]]] = {}

    def load(
        self,
        *,
        write_back: bool = False,
        keep_packs: bool = False,
        fresh: bool = False,
        columns_only: bool = False,
    ) -> BlockIndex:
        """Read every index object. A damaged one is replaced by the copy of the index inside
        its pack; when both are unreadable the pack is listed in ``damaged`` and its blocks
        count as missing (restores that need them stop and say so; verify reports them).

        A pack that has no index object at all (lost, or its writer was killed between the
        pack and the index) is read from its own trailer too, and listed in ``unindexed``:
        its blocks may be ones a backup references. ``write_back`` writes such an index
        object again (the same bytes as the pack's copy), for callers that may write.

        A block of a pack gc is about to delete (repository.doomed) is found in another
        pack if one has it; a writer (``write_back``) does not know it at all, and stores it
        again. ``keep_packs`` keeps each pack's entries in ``pack_entries``;
        ``columns_only`` (gc) keeps them in ``pack_columns`` as they were read, and makes no
        lookup by block id (``get`` and ``in`` then know nothing).

        Index objects come from the local cache where it has them (repository/index_cache.py),
        checked like fresh ones (``fresh``: every object is read from the store, for verify
        and repair, which check what is stored, not a copy of it); a merged object that
        cannot be read is reported in ``damaged``, its packs read from their trailers (and,
        with ``write_back``, given their own index objects, after which the damaged one is
        deleted)."""
        from pgkura.repository.doomed import doomed_packs
        from pgkura.repository.index_files import read_index_objects
        from pgkura.repository.index_parsed import as_list

        self.damaged = []
        self.replaced = []
        self.unindexed = []
        self.doomed = doomed_packs(self.repo)
        found = read_index_objects(self.repo, use_cache=not fresh)
        loaded = found.packs
        for pack_id, message in found.damaged_packs:
            if pack_id in loaded:
                continue  # a merged object covers it too
            try:
                loaded[pack_id] = self._parse_index(pack_id, read_pack_index(self.repo, pack_id))
                self.replaced.append(f"{message}; the copy of the index in its pack was read")
            except (CorruptionError, KeyError, struct.error):
                self.damaged.append(f"{message}, and so is the copy in its pack")
                self._packs.add(pack_id)
        for pack_id in sorted(self.present_packs() - set(loaded) - self._packs):
            try:
                copy = read_pack_index(self.repo, pack_id)
                loaded[pack_id] = self._parse_index(pack_id, copy)
            except (CorruptionError, KeyError, struct.error):
                self.damaged.append(
                    f"pack {layout.pack_key(pack_id)} has no index object and its own copy of "
                    "the index cannot be read"
                )
                continue
            self.unindexed.append(pack_id)
            if write_back and pack_id not in self.doomed:
                self.repo.storage.put_if_absent(layout.index_key(pack_id), copy)
        self._merged_damage(found.damaged_merged, write_back)
        if columns_only:
            self._packs.update(loaded)
            self.pack_columns = loaded
            return self
        with self._lock:
            self._packs.update(loaded)
            for entries in (e for p, e in loaded.items() if p not in self.doomed):
                self._blocks.update(entries)
            for entries in (e for p, e in loaded.items() if p in self.doomed and not write_back):
                self._blocks.update((b, loc) for b, loc in entries if b not in self._blocks)
        if keep_packs:
            self.pack_entries = {p: as_list(e) for p, e in loaded.items()}
        return self

    def _merged_damage(self, damaged: list[tuple[str, str]], write_back: bool) -> None:
        """Report merged index objects that cannot be read; with ``write_back``, once every
        pack has an index object again (none is damaged), delete them."""
        if not damaged:
            return
        if write_back and not self.damaged:
            self.repo.storage.delete_many([key for key, _message in damaged])
            return
        for _key, message in damaged:
            self.damaged.append(
                f"{message}; the packs it covered were read from their own copies of the "
                "index (run pgkura repair index)"
            )

    def present_packs(self) -> set[str]:
        """The ids of the packs the store holds."""
        return set(self.pack_sizes())

    def pack_sizes(self) -> dict[str, int]:
        """The packs the store holds, with their sizes."""
        return {o.key.rsplit("/", 1)[-1]: o.size for o in self.repo.storage.list("packs/")}

    def _parse_index(self, pack_id: str, sealed_index: bytes) -> list[tuple[bytes, BlockLocation]]:
        from pgkura.repository.index_files import parse_index_object

        key = layout.index_key(pack_id)
        return list(parse_index_object(self.repo, key, sealed_index)[pack_id])

    def __contains__(self, block_id: bytes) -> bool:
        return block_id in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, block_id: bytes) -> BlockLocation | None:
        return self._blocks.get(block_id)

    def items(self) -> list[tuple[bytes, BlockLocation]]:
        with self._lock:
            return list(self._blocks.items())

    def blocks_of(self, pack_id: str) -> list[bytes]:
        """The ids of the blocks the index finds in ``pack_id``."""
        with self._lock:
            return [b for b, loc in self._blocks.items() if loc.pack_id == pack_id]

    @property
    def pack_ids(self) -> set[str]:
        return set(self._packs)

    def claim(self, block_id: bytes) -> bool:
        """True if the caller should store ``block_id``: it is neither known nor being stored."""
        with self._lock:
            if block_id in self._blocks or block_id in self._pending:
                return False
            self._pending.add(block_id)
            return True

    def claim_all(self, block_ids: list[bytes]) -> list[bool]:
        """:meth:`claim` for each of ``block_ids`` in turn, under one lock: an id that comes
        twice is claimed once."""
        with self._lock:
            blocks, pending = self._blocks, self._pending
            claimed = []
            for block_id in block_ids:
                new = block_id not in blocks and block_id not in pending
                if new:
                    pending.add(block_id)
                claimed.append(new)
            return claimed

    def publish(self, pack_id: str, entries: Iterable[tuple[bytes, BlockLocation]]) -> None:
        with self._lock:
            self._packs.add(pack_id)
            for block_id, loc in entries:
                self._blocks[block_id] = loc
                self._pending.discard(block_id)


def read_pack_index(repo: Repository, pack_id: str) -> bytes:
    """The sealed copy of its index a pack ends with (docs/repository-format.md, "Blocks and
    packs"); KeyError when the pack is absent or does not end with a sound trailer."""
    key = layout.pack_key(pack_id)
    size = repo.storage.size(key)
    if size is None or size < PACK_TRAILER.size:
        raise KeyError(key)
    index_offset, magic = PACK_TRAILER.unpack(
        repo.storage.get(key, size - PACK_TRAILER.size, PACK_TRAILER.size)
    )
    if magic != PACK_TRAILER_MAGIC or not 0 <= index_offset <= size - PACK_TRAILER.size:
        raise KeyError(key)
    return repo.storage.get(key, index_offset, size - PACK_TRAILER.size - index_offset)


class PackWriter:
    """Collects sealed blocks into one pack at a time; not shared between threads.

    A pack is gathered in one growing buffer. With ``background``, a full pack is handed to a
    thread of the writer's own that stores it while the next one fills; at most one is being
    stored, so memory stays at two packs: :meth:`wait` returns when every pack handed over is
    stored and known to the index, and raises what storing failed with. Without,
    :meth:`flush` stores the pack before it returns."""

    def __init__(
        self,
        index: BlockIndex,
        target_size: int = PACK_TARGET_SIZE,
        *,
        keep_published: bool = False,
        background: bool = False,
    ) -> None:
        self.index = index
        self.repo = index.repo
        self.target_size = target_size
        # With keep_published, what each flush made known, for a caller in a worker process to
        # hand to its parent's index.
        self.keep_published = keep_published
        self.published: list[tuple[str, list[tuple[bytes, BlockLocation]]]] = []
        self._data = bytearray()
        # The buffer of the last pack stored, filled again by the next one: fresh memory
        # costs a page fault per 4 KiB, which is as dear as copying the bytes once more.
        self._spare: bytearray | None = None
        self._entries: list[tuple[bytes, BlockLocation]] = []
        self._size = 0
        self._pack_id = os.urandom(16).hex()
        self.bytes_written = 0  # sealed bytes of blocks this writer stored
        self._background = background
        self._queue: queue.Queue[_Pack] | None = None
        self._failed: list[BaseException] = []
        self._published_lock = threading.Lock()

    def add(self, raw: bytes | memoryview, digest: bytes | None = None) -> tuple[bytes, int]:
        """Store ``raw`` unless the repository has it; return (block id, sealed bytes added)."""
        if digest is None:
            digest = self.repo.digest(raw)
        if not self.index.claim(digest):
            return digest, 0
        return digest, self._append(digest, len(raw), self.repo.frame(raw, digest))

    def add_blocks(self, data: memoryview, block_size: int) -> list[str]:
        """:meth:`add` for each ``block_size`` piece of ``data``: their ids, in hex. The same
        work with as little Python per block as it takes, for the backup's hot path: the ids
        hashed in one comprehension, claimed under one lock, the compressor's own method
        called, and each sealed block's header and payload appended to the pack apart (no
        joined copy). ``data`` may be a view of a buffer reused afterwards: what the pack
        keeps of it is copied."""
        key, codec, cipher = self.repo.key, self.repo.codec, self.repo.cipher
        pieces = [data[i : i + block_size] for i in range(0, len(data), block_size)]
        if block_size < LARGE_OBJECT:  # keyed_digest would hash a WAL-sized piece in threads
            digests = [blake3.blake3(raw, key=key).digest() for raw in pieces]
        else:
            digests = [keyed_digest(key, raw) for raw in pieces]
        compress, codec_id = codec.block_compressor(block_size), codec.codec_id
        append = self._append
        for raw, digest, new in zip(pieces, digests, self.index.claim_all(digests), strict=True):
            if new:
                header, payload = frame_parts(
                    raw, compress(raw), codec_id, digest, cipher, BLOCK_IDENTITY
                )
                append(digest, len(raw), header, payload)
        return [digest.hex() for digest in digests]

    def add_sealed(self, digest: bytes, sealed: bytes | memoryview, raw_length: int) -> int:
        """Store a sealed block as it is (gc's repack: sizes stay); the bytes added."""
        if not self.index.claim(digest):
            return 0
        return self._append(digest, raw_length, sealed)

    def _append(self, digest: bytes, raw_length: int, *parts: bytes | memoryview) -> int:
        """Append a sealed block, given as the pieces it is made of; the bytes added."""
        length = sum(map(len, parts))
        self._entries.append((digest, BlockLocation(self._pack_id, self._size, length, raw_length)))
        data, end = self._data, self._size
        for part in parts:
            # Into the buffer where it has room (a reused one), growing it where not.
            data[end : end + len(part)] = part
            end += len(part)
        self._size = end
        self.bytes_written += length
        if self._size >= self.target_size:
            self.flush()
        return length

    def flush(self) -> None:
        """Store the pending pack and its index (handed to the writer's thread with
        ``background``); the blocks are known to the repository after."""
        if self._failed:
            raise self._failed[0]
        if not self._entries:
            return
        pack = _Pack(self._pack_id, self._data, self._entries, self._size)
        self._entries, self._size = [], 0
        self._pack_id = os.urandom(16).hex()
        if not self._background:
            self._store(pack)
            self._data = self._take_spare()
            return
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(target=self._storing, name="pgkura-pack", daemon=True).start()
        self._queue.join()  # the pack before this one is stored: two packs in memory at most
        if self._failed:
            raise self._failed[0]
        self._data = self._take_spare()
        self._queue.put(pack)

    def _take_spare(self) -> bytearray:
        """The buffer of the pack stored last, to fill again (a new one if there is none)."""
        spare, self._spare = self._spare, None
        return bytearray() if spare is None else spare

    def wait(self) -> None:
        """Until every pack handed over is stored; raises what storing one failed with."""
        if self._queue is not None:
            self._queue.join()
        if self._failed:
            raise self._failed[0]

    def close(self) -> None:
        """Store what is pending and wait for it."""
        self.flush()
        self.wait()
        self._data, self._spare = bytearray(), None  # nothing pending: the buffers go

    def take_published(self) -> list[tuple[str, list[tuple[bytes, BlockLocation]]]]:
        """What the packs stored since the last call made known (with ``keep_published``)."""
        with self._published_lock:
            taken, self.published = self.published, []
        return taken

    def _storing(self) -> None:
        assert self._queue is not None
        while True:
            pack = self._queue.get()
            try:
                if not self._failed:
                    self._store(pack)
            except BaseException as exc:  # handed to the caller by flush() and wait()
                self._failed.append(exc)
            finally:
                del pack  # not kept while waiting for the next: its buffer is 16 MiB
                self._queue.task_done()

    def _store(self, pack: _Pack) -> None:
        doc: dict[str, object] = {
            "pack": pack.pack_id,
            "blocks": [
                [bid.hex(), loc.offset, loc.length, loc.raw_length] for bid, loc in pack.entries
            ],
        }
        # The buffer may be longer than the pack: a reused one keeps what it held before.
        with memoryview(pack.data)[: pack.size] as blocks:
            if self.repo.cipher is None:  # an encrypted block's tag does what these do
                doc.update(stored_digests(self.repo.key, blocks, pack.entries))
            index_key = layout.index_key(pack.pack_id)
            index_obj = self.repo.seal(json.dumps(doc).encode(), name=index_key).data
            trailer = PACK_TRAILER.pack(pack.size, PACK_TRAILER_MAGIC)
            # One copy: the storage interface takes bytes, and the buffer is filled again.
            data = b"".join((blocks, index_obj, trailer))
        self.repo.storage.put_if_absent(layout.pack_key(pack.pack_id), data)
        del data
        self.repo.storage.put_if_absent(index_key, index_obj)
        # The next command need not fetch it (in a worker process too: the cache is files).
        IndexCache.of(self.repo).put(index_key, index_obj)
        self.index.publish(pack.pack_id, pack.entries)
        if self.keep_published:
            with self._published_lock:
                self.published.append((pack.pack_id, pack.entries))
        self._spare = pack.data  # flush() takes it after this pack is stored


def stored_digests(
    key: bytes, data: bytearray | bytes | memoryview, entries: list[tuple[bytes, BlockLocation]]
) -> dict[str, object]:
    """What a pack's index records of its stored bytes, for verify --quick to check them
    without decompressing (docs/repository-format.md, "Stored digests"): the keyed BLAKE3 of
    all its sealed blocks at once, and a shorter one of each."""
    with memoryview(data) as view:
        blocks = [
            blake3.blake3(view[loc.offset : loc.offset + loc.length], key=key)
            .digest(STORED_DIGEST_SIZE)
            .hex()
            for _bid, loc in entries
        ]
        whole = blake3.blake3(view, key=key, max_threads=hash_threads()).hexdigest()
    return {"digests": blocks, "blocks_digest": whole}


@dataclass(frozen=True)
class _Pack:
    """A pack's sealed blocks, ready to be stored: the first ``size`` bytes of ``data`` (a
    reused buffer may be longer); its index and trailer follow them in the stored pack."""

    pack_id: str
    data: bytearray
    entries: list[tuple[bytes, BlockLocation]]
    size: int


# Readers live in repository/reader.py; imported from here by older callers.
from pgkura.repository.reader import BlockReader as BlockReader  # noqa: E402
