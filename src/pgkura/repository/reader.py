"""Reading blocks back: by id, verified against their id as they are unsealed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pgkura.errors import CorruptionError, ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.sealed import SealError

if TYPE_CHECKING:
    from pgkura.repository.blocks import BlockIndex, BlockLocation

#: read_scattered fetches blocks this close together in one request, up to SCATTER_SPAN bytes
SCATTER_GAP = 256 * 1024
SCATTER_SPAN = 32 * 1024 * 1024


class BlockReader:
    """Fetches and verifies blocks by id."""

    def __init__(self, index: BlockIndex) -> None:
        self.index = index
        self.repo = index.repo

    def read_scattered(self, block_ids: Iterable[bytes], context: str = "") -> dict[bytes, bytes]:
        """Each of ``block_ids``, by id, read in as few requests as the packs allow: sorted by
        pack and offset, and blocks up to SCATTER_GAP apart fetched in one ranged get (the
        bytes between are read and dropped). For many small files at once, whose blocks lie
        near each other but not in the order they are asked for: on S3 a request costs more
        than the bytes of a gap."""
        where = f" (needed by {context})" if context else ""
        wanted = [(b, self._locate(b, where)) for b in dict.fromkeys(block_ids)]
        wanted.sort(key=lambda e: (e[1].pack_id, e[1].offset))
        out: dict[bytes, bytes] = {}
        i = 0
        while i < len(wanted):
            first = wanted[i][1]
            end, j = first.offset + first.length, i + 1
            while j < len(wanted):
                loc = wanted[j][1]
                if loc.pack_id != first.pack_id or loc.offset - end > SCATTER_GAP:
                    break
                if loc.offset + loc.length - first.offset > SCATTER_SPAN:
                    break
                end, j = max(end, loc.offset + loc.length), j + 1
            key = layout.pack_key(first.pack_id)
            view = memoryview(self._fetch(key, first.offset, end - first.offset, where))
            for block_id, loc in wanted[i:j]:
                start = loc.offset - first.offset
                out[block_id] = self._open(view[start : start + loc.length], block_id, key, where)
            i = j
        return out

    def _locate(self, block_id: bytes, where: str) -> BlockLocation:
        loc = self.index.get(block_id)
        if loc is None:
            raise CorruptionError(
                f"block {block_id.hex()[:16]} is missing from the repository{where}",
                hint="run pgkura verify; take a new backup",
            )
        return loc

    def _fetch(self, key: str, start: int, length: int, where: str) -> bytes:
        try:
            return self.repo.storage.get(key, start, length)
        except ObjectNotFound:
            raise CorruptionError(
                f"pack {key} is missing{where}", hint="run pgkura verify; take a new backup"
            ) from None

    def _open(self, piece: bytes | memoryview, block_id: bytes, key: str, where: str) -> bytes:
        try:
            return self.repo.unseal(piece, expect_digest=block_id)
        except SealError as exc:
            raise CorruptionError(
                f"block {block_id.hex()[:16]} in pack {key} is damaged: {exc}{where}",
                hint="run pgkura verify; take a new backup",
            ) from None

    def read_many(self, block_ids: list[bytes], context: str = "") -> list[bytes]:
        """Read several blocks, fetching blocks that lie next to each other in one pack with
        one ranged get (a file's blocks usually do: one writer stored them in order)."""
        return list(self.iter_many(block_ids, context))

    def iter_many(self, block_ids: list[bytes], context: str = "") -> Iterator[bytes]:
        """:meth:`read_many`, one block at a time: a caller that drops each block before the
        next keeps memory flat, and the allocator hands the same memory back each time
        instead of faulting in fresh pages for every block."""
        where = f" (needed by {context})" if context else ""
        locs = [self._locate(block_id, where) for block_id in block_ids]
        i = 0
        while i < len(locs):
            j = i + 1
            while (
                j < len(locs)
                and locs[j].pack_id == locs[i].pack_id
                and locs[j].offset == locs[j - 1].offset + locs[j - 1].length
            ):
                j += 1
            first, last = locs[i], locs[j - 1]
            key = layout.pack_key(first.pack_id)
            length = last.offset + last.length - first.offset
            view = memoryview(self._fetch(key, first.offset, length, where))
            for k in range(i, j):
                start = locs[k].offset - first.offset
                raw = self._open(view[start : start + locs[k].length], block_ids[k], key, where)
                yield raw
                del raw
            i = j

    def read(self, block_id: bytes, context: str = "") -> bytes:
        where = f" (needed by {context})" if context else ""
        loc = self._locate(block_id, where)
        key = layout.pack_key(loc.pack_id)
        return self._open(self._fetch(key, loc.offset, loc.length, where), block_id, key, where)
