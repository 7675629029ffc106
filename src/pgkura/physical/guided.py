"""Storing a relation file by reading only the blocks the WAL summaries list as changed.

A file is cut into repository blocks (64 KiB by default: 8 pages) as always. A block of the
previous backup is reused, unread, when it was whole in the previous backup and is whole in
the file now, lies before the fork's limit block (a truncation or drop in the range), and
holds no page the summaries list; every other block is read. The file's CRC-32C is combined
from the per-block CRCs the previous manifest keeps (pgkura.codec.crc), so it stays the CRC of
the whole content without reading it.

Cross-check (summaries have had bugs): a read block's pages the summaries call unchanged must
not carry an LSN from the summarized range; one that does means the summaries missed a change,
and the file is read whole instead (the backup records it).
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING

import google_crc32c

from pgkura.codec.crc import crc32c_combine
from pgkura.pg.relfile import BLCKSZ, RELSEG_BLOCKS
from pgkura.physical.source import SourceFile
from pgkura.physical.summaries import RelationKey, Summaries, relation_key
from pgkura.repository.manifest import FileEntry

if TYPE_CHECKING:
    from pgkura.physical.store import FileStorer, Task
    from pgkura.repository.blocks import BlockIndex, PackWriter


@dataclass(frozen=True)
class GuidedPlan:
    """How one relation file is stored: which of its blocks are read."""

    prev: FileEntry
    #: one byte per repository block of the file: 1 when it is read
    read: bytes
    #: pages (numbered within the file, sorted) the summaries list as changed
    changed_pages: array[int]
    #: bytes [0, trusted) are expected unchanged outside changed_pages
    trusted: int
    size: int  # the file's size when the walk saw it
    read_bytes: int  # how much of it the plan reads


@dataclass(frozen=True)
class Guide:
    """The summaries of a guided backup (None: this one is not guided, but keeps per-block
    CRCs for the next)."""

    summaries: Summaries | None
    block_size: int

    def plan(self, src: SourceFile, prev: FileEntry | None, index: BlockIndex) -> GuidedPlan | None:
        """The plan for ``src``; None when it must be read as usual (not a main fork, new, or
        its previous entry lacks per-block CRCs or blocks the index no longer has)."""
        found = relation_key(src.path)
        if self.summaries is None or found is None or prev is None:
            return None
        if not prev.block_crcs or len(prev.block_crcs) != len(prev.blocks):
            return None
        key, segno = found
        bs = self.block_size
        changes = self.summaries.of(key)
        first = segno * RELSEG_BLOCKS
        limit = RELSEG_BLOCKS if changes.limit is None else changes.limit - first
        trusted = max(0, min(prev.size, src.size, limit * BLCKSZ))
        blocks = changes.blocks
        lo = bisect_left(blocks, first)
        hi = bisect_left(blocks, first + RELSEG_BLOCKS, lo)
        pages = array("I", (b - first for b in blocks[lo:hi]))
        count = -(-src.size // bs)
        read = bytearray(
            0 if _reusable(i * bs, bs, src.size, prev.size, trusted) else 1 for i in range(count)
        )
        for page in pages:
            if page * BLCKSZ < src.size:
                read[page * BLCKSZ // bs] = 1
        if not all(bytes.fromhex(prev.blocks[i]) in index for i in range(count) if not read[i]):
            return None
        to_read = sum(min(bs, src.size - i * bs) for i in range(count) if read[i])
        return GuidedPlan(prev, bytes(read), pages, trusted, src.size, to_read)


def keeps_block_crcs(path: str) -> bool:
    """Whether a file's entry keeps per-block CRCs: main forks, which summaries describe."""
    return relation_key(path) is not None


def block_crcs_of(chunk: bytes, block_size: int) -> list[str]:
    """The CRC-32C of each ``block_size`` piece of ``chunk``, as a manifest keeps them."""
    # google-crc32c's C function takes bytes only, not a memoryview.
    return [
        f"{google_crc32c.value(chunk[i : i + block_size]):08x}"
        for i in range(0, len(chunk), block_size)
    ]


def store_planned(
    storer: FileStorer, writer: PackWriter, src: SourceFile, plan: GuidedPlan
) -> FileEntry:
    """Store ``src`` by its plan; read whole instead, and recorded, when its pages contradict
    the summaries (or it vanished meanwhile: the usual path records it empty)."""
    assert storer.guide is not None and storer.guide.summaries is not None
    summaries = storer.guide.summaries
    try:
        entry, read = store_guided(storer, writer, src, plan, summaries.base_start, summaries.start)
    except FileNotFoundError:
        return storer._store_range(writer, src, 0, None)
    storer._count_read(read, mismatch=src.path if entry is None else None)
    if entry is None:
        return storer._store_range(writer, src, 0, None)
    storer.progress.advance(entry.size)
    return entry


def read_relations_whole(
    storer: FileStorer, guided: list[Task], by_path: dict[str, FileEntry]
) -> int:
    """Read whole the other segments of the relations whose pages contradicted the summaries
    (one wrong segment makes the relation's summary suspect); the bytes this stored."""
    from pgkura.physical.store import FileStorer

    suspect = {_key_of(path) for path in storer._mismatches}
    again = [
        src
        for src, *_rest in guided
        if _key_of(src.path) in suspect and src.path not in storer._mismatches
    ]
    if not again:
        return 0
    whole = FileStorer(
        storer.index, storer.jobs, storer.page_check, guide=Guide(None, storer.block_size)
    ).store(again)
    for entry in whole.files:
        by_path[entry.path] = entry
    storer._count_read(whole.read_bytes)
    storer._mismatches += [src.path for src in again]
    storer._failures += whole.checksum_failures
    return whole.new_bytes


def _key_of(path: str) -> RelationKey | None:
    found = relation_key(path)
    return None if found is None else found[0]


def _reusable(at: int, bs: int, size: int, prev_size: int, trusted: int) -> bool:
    """Whether the block at ``at`` may be the previous backup's: trusted to its end, and of the
    same length in both (a partial last block is reused only if the file kept its size)."""
    end = min(at + bs, size)
    return end <= trusted and end == min(at + bs, prev_size)


def store_guided(
    storer: FileStorer, writer: PackWriter, src: SourceFile, plan: GuidedPlan, base_start: int,
    start: int,
) -> tuple[FileEntry | None, int]:  # fmt: skip
    """Store ``src`` by ``plan``: the entry (None when the cross-check failed: the caller
    reads the file whole) and the bytes read."""
    bs = storer.block_size
    relation = relation_key(src.path)
    assert relation is not None
    first_page = relation[1] * RELSEG_BLOCKS
    blocks: list[str] = []
    crcs: list[str] = []
    crc = size = read = 0
    bad: list[int] = []
    count = -(-plan.size // bs)
    changed = set(plan.changed_pages) if any(plan.read) else set()
    with open(src.abspath, "rb", buffering=0) as f:
        for i in range(count):
            if not plan.read[i]:
                blocks.append(plan.prev.blocks[i])
                crcs.append(plan.prev.block_crcs[i])
                length = min(bs, plan.size - i * bs)
                crc = crc32c_combine(crc, int(plan.prev.block_crcs[i], 16), length)
                size += length
                continue
            chunk = os.pread(f.fileno(), bs, i * bs)
            read += len(chunk)
            if not chunk:
                break  # truncated meanwhile: WAL replay truncates it too
            if _missed_change(chunk, i * bs, changed, plan.trusted, base_start, start):
                return None, read
            if storer.page_check.enabled and len(chunk) % BLCKSZ == 0:
                bad += storer._failing_pages(f, chunk, i * bs, first_page + i * bs // BLCKSZ)
            block_crc = google_crc32c.value(chunk)
            blocks += writer.add_blocks(memoryview(chunk), bs)
            crcs.append(f"{block_crc:08x}")
            crc = crc32c_combine(crc, block_crc, len(chunk))
            size += len(chunk)
            if len(chunk) < bs:
                break
    if bad:
        storer._record_failures(src.path, bad)
    entry = FileEntry(
        src.path, "file", src.mode, size, src.mtime, tuple(blocks), f"{crc:08x}", None,
        tuple(crcs),
    )  # fmt: skip
    return entry, read


_LSN = struct.Struct("<II")  # pd_lsn: xlogid, xrecoff (PageXLogRecPtr), in host order


def _missed_change(
    chunk: bytes, offset: int, changed: set[int], trusted: int, base_start: int, start: int
) -> bool:
    """Whether a page of ``chunk`` the summaries call unchanged was written by WAL between
    the two backups' starts. Pages changed after this backup's start are not evidence: replay
    rewrites them from a full-page image."""
    for at in range(0, len(chunk) - BLCKSZ + 1, BLCKSZ):
        page = (offset + at) // BLCKSZ
        if page in changed or (page + 1) * BLCKSZ > trusted:
            continue
        hi, lo = _LSN.unpack_from(chunk, at)
        if base_start <= (hi << 32 | lo) < start:
            return True
    return False
