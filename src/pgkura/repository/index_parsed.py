"""Within one gc run, each index object is parsed once (repository/index_files.py reads the
index for gc's load, for the deletions of each doomed list and for its consolidation).

An index object never changes while its key exists, and the local cache already trusts a
listed key of the listed size to name the bytes it holds: so, inside :func:`parsing_once`, an
object listed again under the same key at the same size says what it said when this process
parsed (or wrote) it. Parsing the merged objects again each time cost gc a multiple of the
index. Outside it nothing is kept.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import weakref
from array import array
from collections.abc import Iterator, Sequence
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import overload

from pgkura.repository.blocks import BlockLocation
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError

Entry = tuple[bytes, BlockLocation]
#: A pack's blocks: a list of (id, location), or a PackEntries, its columns
Entries = Sequence[Entry]


class PairsOnDemand(Sequence[Entry]):
    """A pack's blocks as a sequence of (id, location) pairs that a subclass makes, with
    :meth:`pairs`, only when they are first looked at; its ``__len__`` knows their number
    without them."""

    __slots__ = ()

    def pairs(self) -> list[Entry]:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> Entry: ...
    @overload
    def __getitem__(self, i: slice) -> list[Entry]: ...
    def __getitem__(self, i: int | slice) -> Entry | list[Entry]:
        return self.pairs()[i]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.pairs())


class PackEntries(PairsOnDemand):
    """One pack's blocks as its parsed form holds them: the block ids, offsets, lengths and
    raw lengths as columns. gc judges, and writes merged objects, from the columns; the
    (id, location) pairs that other users iterate are made the first time they are asked
    for, and kept (a location per block is most of what loading the index costs)."""

    __slots__ = ("_pairs", "ids", "lengths", "offsets", "pack_id", "raw_lengths")

    def __init__(
        self,
        pack_id: str,
        ids: list[bytes],
        offsets: array[int],
        lengths: array[int],
        raw_lengths: array[int],
    ) -> None:
        if not len(ids) == len(offsets) == len(lengths) == len(raw_lengths):
            raise ValueError("the columns differ in length")
        self.pack_id = pack_id
        self.ids = ids
        self.offsets = offsets
        self.lengths = lengths
        self.raw_lengths = raw_lengths
        self._pairs: list[Entry] | None = None

    def pairs(self) -> list[Entry]:
        if self._pairs is None:
            n = len(self.ids)
            locations = map(
                BlockLocation, repeat(self.pack_id, n), self.offsets, self.lengths, self.raw_lengths
            )
            self._pairs = list(zip(self.ids, locations, strict=True))
        return self._pairs

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackEntries):
            other = other.pairs()
        return isinstance(other, list) and self.pairs() == other

    __hash__ = None  # type: ignore[assignment]


def as_list(entries: Entries) -> list[Entry]:
    """``entries`` as a list of (id, location) pairs."""
    if isinstance(entries, list):
        return entries
    if isinstance(entries, PackEntries):
        return entries.pairs()
    return list(entries)


def columns_of(entries: Entries) -> tuple[list[bytes], Sequence[int], Sequence[int], Sequence[int]]:
    """(ids, offsets, lengths, raw lengths) of ``entries``: a PackEntries' own columns, or
    made from the pairs."""
    if isinstance(entries, PackEntries):
        return entries.ids, entries.offsets, entries.lengths, entries.raw_lengths
    locs = [loc for _b, loc in entries]
    return (
        list(map(itemgetter(0), entries)),
        list(map(attrgetter("offset"), locs)),
        list(map(attrgetter("length"), locs)),
        list(map(attrgetter("raw_length"), locs)),
    )


#: Within :func:`parsing_once`: what each index object read or written says, by repository:
#: key -> (size, packs). Entries are shared, never changed in place.
_PARSED: weakref.WeakKeyDictionary[Repository, dict[str, tuple[int, dict[str, Entries]]]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def parsing_once(repo: Repository) -> Iterator[None]:
    """Within, each index object of ``repo`` is parsed once (the module's docstring)."""
    _PARSED[repo] = {}
    try:
        yield
    finally:
        _PARSED.pop(repo, None)


def remember_parsed(repo: Repository, key: str, size: int, docs: dict[str, Entries]) -> None:
    """Within parsing_once, keep what the object ``key`` of ``size`` bytes says."""
    parsed = _PARSED.get(repo)
    if parsed is not None:
        parsed[key] = (size, docs)


def parsed_before(
    repo: Repository, listed: dict[str, int]
) -> dict[str, tuple[int, dict[str, Entries]]]:
    """Within parsing_once, the objects parsed before, narrowed to the keys ``listed`` (a
    deleted object is forgotten); else nothing."""
    parsed = _PARSED.get(repo)
    if parsed is None:
        return {}
    for key in [k for k in parsed if k not in listed]:
        del parsed[key]
    return parsed


def merged_json(merged_id: str, packs: dict[str, Entries]) -> bytes:
    """The JSON of a merged index object (docs/repository-format.md, "Merged index
    objects"), written out directly: json.dumps of a list per block cost gc more than
    sealing the result. Every value is a hex string or an integer: nothing to escape."""
    parts = [f'{{"id":"{merged_id}","packs":[']
    for n, (pack_id, entries) in enumerate(sorted(packs.items())):
        if len(pack_id) != 32 or not all(c in "0123456789abcdef" for c in pack_id):
            raise ValueError(f"{pack_id!r} is no pack id")
        parts.append(f'{"," if n else ""}{{"pack":"{pack_id}","blocks":[')
        ids, offsets, lengths, raw_lengths = columns_of(entries)
        columns = (map(bytes.hex, ids), offsets, lengths, raw_lengths)
        parts.append(",".join(map('["{}",{:d},{:d},{:d}]'.format, *columns)))
        parts.append("]}")
    parts.append("]}")
    return "".join(parts).encode()


# -- the parsed form of an index object, in the local cache --------------------------------
#
# Parsing an index object (unsealing its JSON, decoding each block's hex id, making its
# location) costs every command a few microseconds per block of the repository. So each
# object read is also kept, parsed, in the local cache (docs/repository-format.md, "The local
# index cache"): ``<cache>/<repository id>/parsed/<key>``, sealed like a stored object (named
# ``cache parsed <key>``; authenticated by the repository's key when it is encrypted). It
# records the key and the listed size of the object it was made from, and is used only while
# the listing shows that key at that size: the same trust the cached copy of the object
# itself has (an index object never changes while its key exists). Anything else (another
# key's form, another size, a form that does not unseal or does not add up) is discarded and
# the object is parsed from its bytes.
#
# Layout of the sealed content: ``PGKIDXP1``, the key's length (u16) and the key, the listed
# size (u64), the width of a block id (u8), the pack count (u32); per pack its id (16 bytes)
# and block count (u32); then every block id (``width`` bytes each), then the offsets, the
# lengths and the raw lengths (u64 each, in the pack order), little-endian.

_FORM_MAGIC = b"PGKIDXP1"
_FORM_HEAD = struct.Struct("<QBI")
_FORM_PACK = struct.Struct("<16sI")


def _form_key(key: str) -> str:
    return f"parsed/{key}"


def _form_name(key: str) -> str:
    return f"cache parsed {key}"


def store_parsed(repo: Repository, key: str, size: int, docs: dict[str, Entries]) -> None:
    """Keep the parsed form of the index object ``key`` of ``size`` bytes in the cache."""
    from pgkura.repository.index_cache import IndexCache

    cache = IndexCache.of(repo)
    if not cache.enabled:
        return
    packs = [(p, columns_of(e)) for p, e in sorted(docs.items())]
    widths = {len(b) for _p, c in packs for b in c[0]}
    if len(widths) > 1:
        return  # never the case; the object is then parsed each time
    width = widths.pop() if widths else 32
    name = key.encode()
    parts = [_FORM_MAGIC, struct.pack("<H", len(name)), name]
    parts.append(_FORM_HEAD.pack(size, width, len(packs)))
    parts.extend(_FORM_PACK.pack(bytes.fromhex(p), len(c[0])) for p, c in packs)
    for _p, c in packs:
        parts.extend(c[0])
    for field in (itemgetter(1), itemgetter(2), itemgetter(3)):  # offsets, lengths, raws
        column = array("Q")
        for _p, c in packs:
            column.extend(field(c))  # an array of "Q" is copied whole
        if sys.byteorder != "little":
            column.byteswap()
        parts.append(column.tobytes())
    cache.put(_form_key(key), repo.seal(b"".join(parts), name=_form_name(key)).data)


def cached_parsed(repo: Repository, key: str, size: int) -> dict[str, Entries] | None:
    """What the index object ``key`` of the listed ``size`` says, from its parsed form in the
    cache when that was made from it; else None (and a form that does not match is
    discarded)."""
    from pgkura.repository.index_cache import IndexCache

    cache = IndexCache.of(repo)
    data = cache.read(_form_key(key)) if cache.enabled else None
    if data is None:
        return None
    try:
        docs = _decoded(repo.unseal(data, name=_form_name(key)), key, size)
    except (SealError, ValueError, struct.error):
        docs = None
    if docs is None:
        cache.discard(_form_key(key))
    return docs


def discard_parsed(repo: Repository, key: str) -> None:
    from pgkura.repository.index_cache import IndexCache

    IndexCache.of(repo).discard(_form_key(key))


def keep_parsed_only(repo: Repository, keys: set[str], listed_at: float) -> None:
    """Drop the parsed forms of index objects no longer listed (IndexCache.keep_only)."""
    from pgkura.repository import layout
    from pgkura.repository.index_cache import IndexCache

    prefix = _form_key(layout.INDEX_PREFIX)
    IndexCache.of(repo).keep_only(prefix, {_form_key(k) for k in keys}, listed_at)


def _decoded(body: bytes, key: str, size: int) -> dict[str, Entries] | None:
    view = memoryview(body)
    if bytes(view[:8]) != _FORM_MAGIC:
        return None
    (name_len,) = struct.unpack_from("<H", view, 8)
    at = 10 + name_len
    if bytes(view[10:at]).decode() != key:
        return None  # another object's form
    listed, width, count = _FORM_HEAD.unpack_from(view, at)
    if listed != size or width == 0:
        return None  # made from another object under this key
    at += _FORM_HEAD.size
    packs = []
    for _n in range(count):
        pack, blocks = _FORM_PACK.unpack_from(view, at)
        packs.append((pack.hex(), blocks))
        at += _FORM_PACK.size
    total = sum(n for _p, n in packs)
    if len(view) != at + total * (width + 24):
        return None
    ids = [b for (b,) in struct.iter_unpack(f"{width}s", view[at : at + total * width])]
    at += total * width
    columns = []
    for _field in range(3):
        column = array("Q")
        column.frombytes(view[at : at + total * 8])
        if sys.byteorder != "little":
            column.byteswap()
        columns.append(column)
        at += total * 8
    offsets, lengths, raws = columns
    out: dict[str, Entries] = {}
    start = 0
    for pack_id, n in packs:
        end = start + n
        out[pack_id] = PackEntries(
            pack_id, ids[start:end], offsets[start:end], lengths[start:end], raws[start:end]
        )
        start = end
    return out
