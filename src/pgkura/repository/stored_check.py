"""Checking stored objects as they are stored, without decompressing them (`pgkura verify
--quick`; docs/repository-format.md, "Stored digests").

A pack is read whole, in one request (or, when only some of its blocks are asked for, in
spans of nearby blocks), and its blocks are checked against what the copy of its index at
its end records: in an encrypted repository each block's AES-GCM tag, which binds it to its
id; in an unencrypted one the keyed BLAKE3 of all its sealed blocks at once, and of each
block only when that fails (to name the damaged ones) or when only some are read. A block of
a pack written before pgkura recorded stored digests is unsealed instead (decompressed and
its keyed hash compared with its id), and counted as checked in full.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3

from pgkura.codec.compression import hash_threads
from pgkura.errors import CorruptionError, ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.blocks import (
    PACK_TRAILER,
    PACK_TRAILER_MAGIC,
    STORED_DIGEST_SIZE,
    BlockLocation,
    read_pack_index,
)
from pgkura.repository.index_files import PackCopy, parse_pack_copy
from pgkura.repository.index_lean import LazyEntries
from pgkura.repository.reader import SCATTER_GAP, SCATTER_SPAN
from pgkura.repository.repo import BLOCK_IDENTITY, Repository
from pgkura.repository.sealed import SealError
from pgkura.repository.walstore import StoredWal

Entries = Sequence[tuple[bytes, BlockLocation]]


@dataclass(frozen=True)
class PackToCheck:
    """A pack to check: its id, its size as listed (None: not in the store), its entries as
    the index gives them (``trailer_read``: from the pack's own copy of its index, there
    being no index object to compare it with), and the blocks wanted (None: all)."""

    pack_id: str
    size: int | None
    entries: Entries
    trailer_read: bool = False
    wanted: frozenset[bytes] | None = None


@dataclass
class PackFindings:
    """What checking one pack found."""

    pack_id: str
    key: str  # the pack's object key, for messages
    problems: list[str] = field(default_factory=list)  # about the pack as a whole
    damaged: dict[bytes, str] = field(default_factory=dict)  # block id: what is wrong with it
    blocks: int = 0  # blocks checked
    in_full: int = 0  # of those, unsealed (no stored digest)
    bytes_read: int = 0


#: What a read-ahead maps at most (the pack that crosses it included): on posix the mapped
#: packs are the page cache's; elsewhere it holds a quarter of it in memory.
READ_AHEAD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class WholePack:
    """A whole pack as read: its bytes, the sealed copy of its index (from its trailer; None
    when it has no sound one), in an unencrypted repository the keyed BLAKE3 of its blocks
    (what its copy's ``blocks_digest`` records), and the bytes of its own index object when
    they were read too (None: not read, or none)."""

    data: bytes | mmap.mmap
    copy_bytes: bytes | None
    blocks_digest: bytes | None
    index_object: bytes | None = None


def read_whole(repo: Repository, pack_id: str, index_object: bool = False) -> WholePack:
    """Read the whole pack (mapped where the store can: posix) and hash its blocks, and
    with ``index_object`` its index object; this releases the GIL, so it can run while the
    index is parsed (:class:`ReadAhead`)."""
    key = layout.pack_key(pack_id)
    mapped = getattr(repo.storage, "get_mapped", None)
    data = mapped(key) if mapped is not None else repo.storage.get(key)
    end, copy_bytes = _trailer(data)
    digest = None
    if repo.cipher is None and end is not None:
        with memoryview(data) as view:
            digest = blake3.blake3(view[:end], key=repo.key, max_threads=hash_threads()).digest()
    own = None
    if index_object:
        with contextlib.suppress(ObjectNotFound):  # consolidated since the listing
            own = repo.storage.get(layout.index_key(pack_id))
    return WholePack(data, copy_bytes, digest, own)


class ReadAhead:
    """The first packs of the store (in the order a whole check takes them, up to
    READ_AHEAD_BYTES), read and hashed by threads of their own from the moment the ``with``
    block starts: while this thread parses the index, which holds the GIL. A pack that has
    an index object of its own has it read too (:func:`check_pack` compares its bytes with
    the pack's copy)."""

    def __init__(self, repo: Repository, jobs: int, enabled: bool = True) -> None:
        self._repo, self._enabled = repo, enabled
        self._workers = max(1, repo.workers_for(jobs))
        self._pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, Future[WholePack]] = {}
        #: the packs that have an index object of their own (read with them)
        self.own_index: set[str] = set()

    def __enter__(self) -> ReadAhead:
        if not self._enabled:
            return self
        storage = self._repo.storage
        own = self.own_index = {o.key.rsplit("/", 1)[-1] for o in storage.list(layout.INDEX_PREFIX)}
        limit = READ_AHEAD_BYTES if hasattr(storage, "get_mapped") else READ_AHEAD_BYTES // 4
        first, total = [], 0
        for o in sorted(storage.list("packs/"), key=lambda o: o.key.rsplit("/", 1)[-1]):
            if total >= limit:
                break
            first.append(o.key.rsplit("/", 1)[-1])
            total += o.size
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="pgkura-ahead")
        self.futures = {p: self._pool.submit(read_whole, self._repo, p, p in own) for p in first}
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.futures = {}

    def take(self, pack_id: str) -> Future[WholePack] | None:
        """The read of ``pack_id`` begun ahead (forgotten here: the pack is unmapped once
        its check is done with it)."""
        return self.futures.pop(pack_id, None)


def check_packs(
    repo: Repository,
    packs: list[PackToCheck],
    jobs: int,
    meanwhile: Callable[[], None] | None = None,
    ahead: ReadAhead | None = None,
) -> list[PackFindings]:
    """:func:`check_pack` of each, by ``jobs`` threads (reading and hashing release the
    GIL), taking what ``ahead`` read already; ``meanwhile`` runs in this thread while they
    do (once in any case)."""
    workers = max(1, min(repo.workers_for(jobs), len(packs)))
    with ThreadPoolExecutor(workers, thread_name_prefix="pgkura-quick") as pool:
        futures = [
            pool.submit(check_pack, repo, p, ahead.take(p.pack_id), p.pack_id in ahead.own_index)
            if ahead is not None
            else pool.submit(check_pack, repo, p)
            for p in packs
        ]
        if meanwhile is not None:
            meanwhile()
        return [f.result() for f in futures]


def check_pack(
    repo: Repository,
    pack: PackToCheck,
    early: Future[WholePack] | None = None,
    own_index: bool = False,
) -> PackFindings:
    """Check ``pack``'s blocks as they are stored (the module's docstring says how); a
    whole pack from ``early`` when it was read ahead, else read now (with its own index
    object when it has one: ``own_index``)."""
    key = layout.pack_key(pack.pack_id)
    found = PackFindings(pack.pack_id, key)
    entries = pack.entries
    if pack.wanted is not None:
        entries = [(b, loc) for b, loc in entries if b in pack.wanted]
    found.blocks = len(entries)
    if pack.size is None:
        found.problems.append(f"pack {key} is missing")
        _all_damaged(found, entries, "its pack is missing")
        return found
    whole = pack.wanted is None or 2 * sum(loc.length for _b, loc in entries) >= pack.size
    intact: bytes | None = None
    try:
        if whole:
            read = early.result() if early else read_whole(repo, pack.pack_id, own_index)
            found.bytes_read = len(read.data)
            intact = read.blocks_digest
            runs = [(0, memoryview(read.data), entries)]
            if _is_index_object(pack, read):
                if repo.cipher is not None:  # authenticated as the index object: the tags
                    _check_blocks(repo, found, 0, runs[0][1], entries, None)
                    return found
                if intact is not None and _blocks_digest(repo, pack, read) == intact:
                    return found  # its index object's very bytes, and every block intact
            copy = _parse_copy(repo, found, read.copy_bytes)
        else:
            copy = _parse_copy(repo, found, _ranged_copy(repo, pack.pack_id))
            runs = list(_read_spans(repo, found, entries))
    except ObjectNotFound:
        found.problems.append(f"pack {key} vanished while it was verified")
        _all_damaged(found, entries, "its pack is missing")
        return found
    if copy is not None and not pack.trailer_read and not copy.same_as(list(pack.entries)):
        found.problems.append(
            f"pack {key}: the index copy at its end differs from its index object"
        )
        copy = _unlisted(found, copy, entries)
    if copy is not None and intact is not None and intact == copy.blocks_digest:
        return found  # every sealed block is, byte for byte, what its writer stored
    digests = _digests(found, copy) if repo.cipher is None else None
    for base, view, run in runs:
        _check_blocks(repo, found, base, view, run, digests)
    return found


def _is_index_object(pack: PackToCheck, read: WholePack) -> bool:
    """Whether the pack's copy of its index is, byte for byte, the pack's own index object,
    which the index was loaded from (an index object never changes while its key exists):
    then what the copy lists is what the index does, and it is as sound as that object
    (unsealed, or authenticated, as the index was loaded), with no need to parse it again."""
    return (
        read.index_object is not None
        and not pack.trailer_read
        and read.copy_bytes == read.index_object
    )


def _blocks_digest(repo: Repository, pack: PackToCheck, read: WholePack) -> bytes | None:
    """The ``blocks_digest`` the copy of an unencrypted pack's index records (its last
    member, as pgkura's pack writer, blocks.PackWriter, writes it), without parsing the rest;
    None when it records none."""
    try:
        plain = repo.unseal(read.copy_bytes or b"", name=layout.index_key(pack.pack_id))
    except SealError:
        return None
    _, sep, tail = plain[-128:].rpartition(b', "blocks_digest": "')
    if not sep or len(tail) != 66 or not tail.endswith(b'"}'):
        return None
    try:
        return bytes.fromhex(tail[:64].decode("ascii"))
    except ValueError:
        return None


def _trailer(data: bytes | mmap.mmap) -> tuple[int | None, bytes | None]:
    """(where the blocks end, the sealed copy of its index) of a whole pack; (None, None)
    when it has no sound trailer (truncated, extended or overwritten at the end)."""
    if len(data) < PACK_TRAILER.size:
        return None, None
    index_offset, magic = PACK_TRAILER.unpack_from(data, len(data) - PACK_TRAILER.size)
    if magic != PACK_TRAILER_MAGIC or not 0 <= index_offset <= len(data) - PACK_TRAILER.size:
        return None, None
    return index_offset, data[index_offset : len(data) - PACK_TRAILER.size]


def _ranged_copy(repo: Repository, pack_id: str) -> bytes | None:
    try:
        return read_pack_index(repo, pack_id)
    except KeyError:
        if repo.storage.size(layout.pack_key(pack_id)) is None:
            raise ObjectNotFound(layout.pack_key(pack_id)) from None
        return None


def _read_spans(
    repo: Repository, found: PackFindings, entries: Entries
) -> Iterable[tuple[int, memoryview, Entries]]:
    for start, end, run in _spans(sorted(entries, key=lambda e: e[1].offset)):
        piece = repo.storage.get(found.key, start, end - start)
        found.bytes_read += len(piece)
        yield start, memoryview(piece), run


def _parse_copy(repo: Repository, found: PackFindings, copy_bytes: bytes | None) -> PackCopy | None:
    if copy_bytes is None:
        found.problems.append(
            f"pack {found.key} does not end with its trailer: it was truncated or extended"
        )
        return None
    try:
        return parse_pack_copy(repo, found.pack_id, copy_bytes)
    except CorruptionError as exc:
        found.problems.append(f"pack {found.key}: the copy of its index at its end: {exc.message}")
        return None


def _unlisted(found: PackFindings, copy: PackCopy, entries: Entries) -> PackCopy | None:
    """The index places blocks in the pack that its own copy of the index does not list
    there: those are damaged (the copy's digests still serve for the others)."""
    try:
        own = set(copy.entries())
    except CorruptionError as exc:
        found.problems.append(exc.message)
        return None
    _all_damaged(
        found, [e for e in entries if e not in own], "its pack's own index does not list it"
    )
    return copy


def _digests(found: PackFindings, copy: PackCopy | None) -> dict[int, bytes] | None:
    if copy is None or not copy.has_digests:
        return None
    try:
        return copy.digests_by_offset()
    except CorruptionError as exc:
        found.problems.append(exc.message)
        return None


def _check_blocks(
    repo: Repository,
    found: PackFindings,
    base: int,
    view: memoryview,
    entries: Entries,
    digests: dict[int, bytes] | None,
) -> None:
    """Check ``entries`` one by one, whose bytes ``view`` holds from offset ``base`` of the
    pack: by tag, by stored digest (``digests``, by offset), or else by unsealing."""
    cipher = repo.cipher
    if cipher is not None:  # every tag in one loop; only those that fail are looked at again
        todo = [e for e in entries if e[0] not in found.damaged] if found.damaged else entries
        # A lean index's entries (index_lean) give the loop their ids and offsets without a
        # BlockLocation each; those are made only when a tag fails.
        objects = todo.for_tags() if isinstance(todo, LazyEntries) else todo
        failed = set(cipher.failed_tags(view, base, objects, BLOCK_IDENTITY))
        entries = [e for e in todo if e[0] in failed] if failed else []
    for block_id, loc in entries:
        if block_id in found.damaged:
            continue
        start = loc.offset - base
        piece = view[start : start + loc.length]
        if len(piece) < loc.length:
            found.damaged[block_id] = f"it is cut off: the pack ends before its {loc.length} bytes"
            continue
        try:
            if cipher is not None:
                if not cipher.check_tag(piece, block_id, BLOCK_IDENTITY):
                    repo.authenticate(piece, block_id)  # raises, saying what is wrong
                    raise SealError("its header or tag does not match")
            elif digests is not None:
                recorded = digests.get(loc.offset)
                if blake3.blake3(piece, key=repo.key).digest(STORED_DIGEST_SIZE) != recorded:
                    raise SealError("its stored bytes do not match their recorded digest")
            else:
                repo.unseal(piece, block_id)
                found.in_full += 1
        except SealError as exc:
            found.damaged[block_id] = str(exc)


def _spans(entries: Entries) -> Iterable[tuple[int, int, Entries]]:
    """Runs of ``entries`` (sorted by offset) read in one request each: blocks up to
    SCATTER_GAP apart, at most SCATTER_SPAN bytes a run (as the block reader does)."""
    i = 0
    while i < len(entries):
        start = entries[i][1].offset
        end, j = start + entries[i][1].length, i + 1
        while j < len(entries):
            loc = entries[j][1]
            if loc.offset - end > SCATTER_GAP or loc.offset + loc.length - start > SCATTER_SPAN:
                break
            end, j = max(end, loc.offset + loc.length), j + 1
        yield start, end, entries[i:j]
        i = j


def _all_damaged(found: PackFindings, entries: Entries, why: str) -> None:
    for block_id, _loc in entries:
        found.damaged.setdefault(block_id, why)


def check_stored_wal(repo: Repository, stored: StoredWal) -> bool:
    """Check an archived WAL file as it is stored: its tag in an encrypted repository; in an
    unencrypted one the digest of its stored bytes it ends with, or, archived before pgkura
    recorded one (or stored uncompressed), unsealed in full. SealError when it is damaged;
    whether it was unsealed in full."""
    if repo.cipher is not None:
        repo.authenticate(stored.data, name=stored.key)
        return False
    if stored.check_stored():
        return False
    stored.check()
    return True
