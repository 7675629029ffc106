"""How many bytes of each pack gc must keep, judged in a few vectorised passes over every
block of the index instead of Python loops (repository/prune.py calls these twice or more
per run: planning, each ready doomed list, and the totals).

A block is *live* where a manifest references it. When several packs hold a copy, one copy
counts: the one in the pack holding the most referenced blocks (so duplicates empty the
others, and a repack copies the chosen copy only). Block ids are compared exactly, as
fixed-width byte strings: numpy's ``S<width>`` pads with NUL bytes, which cannot make two
distinct ids of the same width equal; ids of unequal widths are refused (none exist).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from pgkura.repository.blocks import BlockLocation

Entries = list[tuple[bytes, BlockLocation]]


class _PackArrays:
    """One pack's blocks as arrays: ids, lengths, and the entries they came from."""

    __slots__ = ("entries", "ids", "lengths")

    def __init__(self, entries: Entries, width: int) -> None:
        self.entries = entries
        blob = b"".join(b for b, _loc in entries)
        if len(blob) != width * len(entries):
            raise ValueError("block ids of unequal widths")
        self.ids = np.frombuffer(blob, dtype=f"S{width}") if entries else _EMPTY_IDS[width]
        self.lengths = np.fromiter(
            (loc.length for _b, loc in entries), dtype=np.int64, count=len(entries)
        )


_EMPTY_IDS: dict[int, npt.NDArray[np.bytes_]] = {}


class LiveShares:
    """The arrays of every pack's blocks, made once per gc run and reused by each pass (an
    entries list that is replaced, such as a repacked pack's narrowed one, is made again)."""

    def __init__(self, referenced: Iterable[bytes], width: int | None = None) -> None:
        ref = list(referenced)
        self.width = width or (len(ref[0]) if ref else 32)
        _EMPTY_IDS.setdefault(self.width, np.empty(0, dtype=f"S{self.width}"))
        if any(len(b) != self.width for b in ref):
            raise ValueError("block ids of unequal widths")
        self.referenced = np.unique(np.array(ref, dtype=f"S{self.width}"))
        self._packs: dict[str, _PackArrays] = {}

    def again(self, referenced: Iterable[bytes]) -> LiveShares:
        """The same packs' arrays, judged against ``referenced`` read anew."""
        other = LiveShares(referenced, self.width)
        other._packs = self._packs
        return other

    def arrays(self, pack_id: str, entries: Entries) -> _PackArrays:
        known = self._packs.get(pack_id)
        if known is None or known.entries is not entries:
            known = self._packs[pack_id] = _PackArrays(entries, self.width)
        return known

    def is_referenced(self, ids: npt.NDArray[np.bytes_]) -> npt.NDArray[np.bool_]:
        return _member(ids, self.referenced)

    def owners(
        self, entries: dict[str, Entries], candidates: Iterable[str]
    ) -> tuple[dict[str, int], dict[str, npt.NDArray[np.bool_]]]:
        """For the packs ``candidates``: each one's live bytes (its chosen copies of
        referenced blocks), and a mask of its entries that are those chosen copies."""
        packs = sorted(candidates)
        arrays = [self.arrays(p, entries[p]) for p in packs]
        counts = np.array([len(a.ids) for a in arrays], dtype=np.int64)
        ids = np.concatenate([a.ids for a in arrays]) if arrays else _EMPTY_IDS[self.width]
        lengths = np.concatenate([a.lengths for a in arrays]) if arrays else np.empty(0, np.int64)
        pack_of = np.repeat(np.arange(len(packs)), counts)
        ref = self.is_referenced(ids)
        score = np.bincount(pack_of[ref], minlength=len(packs))
        rows = np.flatnonzero(ref)
        # Sorted by id, then by the score of the copy's pack (highest first), then by pack:
        # the first row of each id is its chosen copy.
        order = np.lexsort((pack_of[rows], -score[pack_of[rows]], ids[rows]))
        rows = rows[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = ids[rows[1:]] != ids[rows[:-1]]
        chosen = np.zeros(len(ids), dtype=bool)
        chosen[rows[first]] = True
        live = np.bincount(pack_of[chosen], weights=lengths[chosen], minlength=len(packs))
        starts = np.concatenate(([0], np.cumsum(counts)))
        masks = {p: chosen[starts[i] : starts[i + 1]] for i, p in enumerate(packs)}
        return {p: int(live[i]) for i, p in enumerate(packs)}, masks

    def stored_bytes(self, pack_id: str, entries: Entries) -> int:
        """The sealed bytes of all of a pack's blocks, live or not."""
        return int(self.arrays(pack_id, entries).lengths.sum())

    def held_ids(self, entries: dict[str, Entries], packs: Iterable[str]) -> npt.NDArray[np.bytes_]:
        """Every block id the packs ``packs`` hold, sorted, once each."""
        parts = [self.arrays(p, entries[p]).ids for p in packs]
        return np.unique(np.concatenate(parts)) if parts else _EMPTY_IDS[self.width]

    def needs(self, pack_id: str, blocks: Entries, elsewhere: npt.NDArray[np.bytes_]) -> bool:
        """Whether the pack holds a referenced block that no id of ``elsewhere`` (sorted)
        matches: the pack must then stay."""
        ids = self.arrays(pack_id, blocks).ids
        return bool((self.is_referenced(ids) & ~_member(ids, elsewhere)).any())


def _member(
    ids: npt.NDArray[np.bytes_], sorted_set: npt.NDArray[np.bytes_]
) -> npt.NDArray[np.bool_]:
    """Which of ``ids`` are in the sorted array ``sorted_set``."""
    if len(sorted_set) == 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(sorted_set, ids)
    at[at == len(sorted_set)] = 0
    return np.asarray(sorted_set[at] == ids)
