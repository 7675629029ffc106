"""How many bytes of each pack gc must keep, judged with set operations and C-level
iteration (``map``, ``itertools.compress``) over each pack's columns instead of a Python
step per block (repository/prune.py judges twice or more per run: planning, each ready
doomed list, and the totals). numpy would do the same, but importing it costs an expire
more than these passes do at a hundred backups.

A block is *live* where a manifest references it. When several packs hold a copy, one copy
counts: the one in the pack holding the most referenced blocks (ties: the lower pack id), the
pack's first entry of it (so duplicates empty the other packs, and a repack copies the chosen
copy only). Block ids are compared exactly (bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from itertools import compress

from pgkura.repository.index_parsed import Entries, columns_of


class _Columns:
    """One pack's blocks as columns: ids and lengths (a parsed form's own columns, which no
    (id, location) pair is made for), and the entries they came from."""

    __slots__ = ("distinct", "entries", "ids", "lengths")

    def __init__(self, entries: Entries) -> None:
        self.entries = entries
        self.ids, _offsets, self.lengths, _raw = columns_of(entries)
        self.distinct = len(set(self.ids)) == len(self.ids)


class LiveShares:
    """Each pack's columns, made once per gc run and reused by each pass (an entries list
    that is replaced, such as a repacked pack's narrowed one, is made again), and the
    referenced blocks they are judged against."""

    def __init__(self, referenced: Iterable[bytes]) -> None:
        self.referenced = (
            referenced if isinstance(referenced, (set, frozenset)) else set(referenced)
        )
        self._packs: dict[str, _Columns] = {}
        #: each pack's referenced blocks, by the columns they were found in
        self._mine: dict[str, tuple[_Columns, Set[bytes]]] = {}

    def again(self, referenced: Iterable[bytes]) -> LiveShares:
        """The same packs' columns, judged against ``referenced`` read anew: this object
        itself when those are the blocks it judges already (nothing committed since)."""
        if referenced is self.referenced:
            return self
        other = LiveShares(referenced)
        if other.referenced == self.referenced:
            return self
        other._packs = self._packs
        return other

    def columns(self, pack_id: str, entries: Entries) -> _Columns:
        known = self._packs.get(pack_id)
        if known is None or known.entries is not entries:
            known = self._packs[pack_id] = _Columns(entries)
        return known

    def holds_referenced(self, pack_id: str, entries: Entries) -> bool:
        return not self.referenced.isdisjoint(self.columns(pack_id, entries).ids)

    def owners(
        self, entries: dict[str, Entries], candidates: Iterable[str]
    ) -> tuple[dict[str, int], dict[str, list[bool]]]:
        """For the packs ``candidates``: each one's live bytes (its chosen copies of
        referenced blocks), and a mask of its entries that are those chosen copies."""
        cols = {p: self.columns(p, entries[p]) for p in candidates}
        mine = {p: self._referenced_in(p, c) for p, c in cols.items()}
        owned: set[bytes] = set()
        live: dict[str, int] = {}
        chosen: dict[str, list[bool]] = {}
        for pack_id in sorted(cols, key=lambda p: (-len(mine[p]), p)):
            c = cols[pack_id]
            here = mine[pack_id] - owned
            if c.distinct and len(here) in (0, len(c.ids)):  # none or all: no lookups
                mask = [bool(here)] * len(c.ids)
            elif c.distinct:
                mask = list(map(here.__contains__, c.ids))
            else:  # a pack holding one block twice: its first entry is the copy
                seen: set[bytes] = set()
                mask = []
                for b in c.ids:
                    mask.append(b in here and b not in seen)
                    seen.add(b)
            live[pack_id] = sum(compress(c.lengths, mask))
            chosen[pack_id] = mask
            owned |= here
        return live, chosen

    def _referenced_in(self, pack_id: str, c: _Columns) -> Set[bytes]:
        known = self._mine.get(pack_id)
        if known is not None and known[0] is c:
            return known[1]
        found: Set[bytes] = self.referenced.intersection(c.ids)
        self._mine[pack_id] = (c, found)
        return found

    def stored_bytes(self, pack_id: str, entries: Entries) -> int:
        """The sealed bytes of all of a pack's blocks, live or not."""
        return sum(self.columns(pack_id, entries).lengths)

    def held_ids(self, entries: dict[str, Entries], packs: Iterable[str]) -> set[bytes]:
        """Every block id the packs ``packs`` hold."""
        out: set[bytes] = set()
        for p in packs:
            out.update(self.columns(p, entries[p]).ids)
        return out

    def needs(self, pack_id: str, blocks: Entries, elsewhere: Set[bytes]) -> bool:
        """Whether the pack holds a referenced block that ``elsewhere`` lacks: it must then
        stay."""
        return bool(self.referenced.intersection(self.columns(pack_id, blocks).ids) - elsewhere)
