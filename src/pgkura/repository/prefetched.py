"""Blocks fetched ahead by one process and read back in another.

A store whose client does not survive a fork (S3: obstore's I/O threads stay in the parent)
cannot be read by forked worker processes. Restore's workers then get the bytes of their
blocks with their work: the parent fetches them with :func:`fetch_spans`, in as few ranged
GETs as the packs allow (blocks up to SCATTER_GAP apart in one request, as
BlockReader.read_scattered does), and a worker reads them through a :class:`SpanReader`,
which unseals and verifies each block as any read does. The parent's threads only wait for
the store; the decompressing, hashing and writing, which hold the GIL, run in the workers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pgkura.errors import CorruptionError, ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.reader import SCATTER_GAP, SCATTER_SPAN, BlockReader

if TYPE_CHECKING:
    from pgkura.repository.blocks import BlockIndex


class Spans:
    """Byte ranges of packs, by pack key, for a SpanReader (bytes, or views of memory the
    parent shared). A pack that was not there is in ``missing``: the reader that needs it
    says so, naming the file it was reading."""

    __slots__ = ("missing", "ranges")

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[list[int], list[bytes | memoryview]]] = {}
        self.missing: set[str] = set()

    def add(self, key: str, offset: int, data: bytes) -> None:
        offsets, pieces = self.ranges.setdefault(key, ([], []))
        at = bisect_right(offsets, offset)
        offsets.insert(at, offset)
        pieces.insert(at, data)

    def find(self, key: str, start: int, length: int) -> memoryview | None:
        """The bytes [start, start + length) of ``key``: a view when one range holds them
        all, else a copy of what the ranges hold of them (the bytes between two blocks that no
        range holds are zeros: nobody unseals them); None when no range overlaps them."""
        offsets, pieces = self.ranges.get(key, ([], []))
        at = max(0, bisect_right(offsets, start) - 1)
        if at < len(offsets) and offsets[at] <= start:
            offset, data = offsets[at], pieces[at]
            if start + length <= offset + len(data):
                return memoryview(data)[start - offset : start - offset + length]
        out, found = bytearray(length), False
        for offset, data in zip(offsets[at:], pieces[at:], strict=True):
            if offset >= start + length:
                break
            lo, hi = max(start, offset), min(start + length, offset + len(data))
            if lo < hi:
                out[lo - start : hi - start] = memoryview(data)[lo - offset : hi - offset]
                found = True
        return memoryview(out) if found else None

    @property
    def nbytes(self) -> int:
        return sum(len(p) for _offsets, pieces in self.ranges.values() for p in pieces)


def fetch_spans(reader: BlockReader, block_ids: Iterable[bytes]) -> Spans:
    """The sealed bytes of ``block_ids``, read in as few requests as the packs allow. A block
    the index does not know is left out, and a pack that is not there recorded as missing:
    the SpanReader that needs them raises the error, with the name of its file."""
    index = reader.index
    located = [(loc.pack_id, loc.offset, loc.length) for b in dict.fromkeys(block_ids)
               if (loc := index.get(b)) is not None]  # fmt: skip
    located.sort()
    spans = Spans()
    i = 0
    while i < len(located):
        pack_id, first, length = located[i]
        end, j = first + length, i + 1
        while j < len(located):
            pack, offset, length = located[j]
            if (
                pack != pack_id
                or offset - end > SCATTER_GAP
                or offset + length - first > SCATTER_SPAN
            ):
                break
            end, j = max(end, offset + length), j + 1
        key = layout.pack_key(pack_id)
        if key not in spans.missing:
            try:
                spans.add(key, first, reader.repo.storage.get(key, first, end - first))
            except ObjectNotFound:
                spans.missing.add(key)
        i = j
    return spans


class SpanReader(BlockReader):
    """A BlockReader that reads what :func:`fetch_spans` fetched, not the store: for a worker
    process that may not use the store's client (a read outside the spans goes to the store,
    which refuses in a forked process: storage/s3.py)."""

    def __init__(self, index: BlockIndex, spans: Spans) -> None:
        super().__init__(index)
        self.spans = spans

    def _fetch(self, key: str, start: int, length: int, where: str) -> bytes:
        if key in self.spans.missing:
            raise CorruptionError(
                f"pack {key} is missing{where}", hint="run pgkura verify; take a new backup"
            )
        found = self.spans.find(key, start, length)
        if found is None:
            return super()._fetch(key, start, length, where)
        return found  # type: ignore[return-value]  # a view: _open slices and unseals it
