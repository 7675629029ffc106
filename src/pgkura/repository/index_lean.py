"""The index as `pgkura verify --quick` of a whole repository needs it, read without an object
per block (docs/repository-format.md, "Index objects").

:class:`~pgkura.repository.blocks.BlockIndex` makes a ``bytes`` id and a ``BlockLocation`` of
every block it loads (at pgbench scale 200, 48,000 of them: 0.05 s of the 0.09 s its load
takes). A whole check needs of the index only the set of block ids (to find the referenced
ones that are missing) and, per pack, its entries when the pack's check has to look at its
blocks one by one; a sound unencrypted pack whose copy of its index is its index object's very
bytes needs none of them (stored_check.check_pack). So here each index object is unsealed and
its JSON parsed as BlockIndex does, and its entries are kept as the JSON lists them, ids as
hex strings; a pack's ``(bytes, BlockLocation)`` entries are made only when asked for
(:class:`LazyEntries`).

Only the common form of the index is read so: one index object per pack, every pack in the
store with its own, no doomed packs, every object readable and well formed. Anything else (a
merged object, a damaged one, a pack without one, gc's doomed lists) returns None, and the
caller loads BlockIndex, whose messages name what is wrong.

Each object is always read from the store. The first time, it is unsealed (which proves its
content is the one its header's keyed digest names) and its JSON parsed; what it lists is
then kept in the local cache beside the keyed BLAKE3 of the object's stored bytes and the
number of entries: their ids in marshal's form, and their offsets and lengths as columns of
machine integers (:func:`_cached_entries`; each part loaded only when looked at:
:class:`Listed`). A later check whose object has those very stored bytes takes the entries
from there: the bytes are the ones unsealed and checked then, so neither decompressing them
nor parsing their JSON again can find anything new (at scale 200, 13 ms of unsealing and 23
ms of JSON against 1 ms of hashing and 8 ms of marshal). Any other stored bytes under the key
(damage, another version) miss and are unsealed and parsed. The copy is sealed like every
cached object (named ``cache lean <key>``; LZ4, which decompresses faster than zstd), so a
damaged or foreign one is discarded.
"""

from __future__ import annotations

import json
import marshal
import struct
import sys
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from operator import itemgetter
from typing import Any

from pgkura.codec.compression import LZ4, Codec
from pgkura.errors import CorruptionError, ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.blocks import BlockLocation
from pgkura.repository.doomed import doomed_packs
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.index_parsed import Entry, PairsOnDemand
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError, keyed_digest

#: Hex digits of a block id (a 32-byte keyed BLAKE3).
HEX_ID_SIZE = 64
#: The cached entries' magic: marshal's form is the interpreter's own, so its version is in
#: it, and the columns are machine integers (of this byte order).
_FORM_MAGIC = b"PGKLEAN3 %d.%d marshal %d %s\n" % (
    *sys.version_info[:2],
    marshal.version,
    sys.byteorder.encode(),
)
_FORM_CODEC = Codec(LZ4, 0)
_SIZES = struct.Struct("<II")  # the number of entries, the size of the ids' form
_COLUMN = "q"  # offsets, lengths, raw lengths: signed 64-bit


class Listed:
    """What one index object lists: the number of its entries, their hex block ids, and
    their offsets, lengths and raw lengths as three columns. From the cached form, the ids
    (marshal's form) and the columns (machine integers) are each loaded only when looked at:
    a sound unencrypted pack whose copy of its index is its index object needs only their
    number, and finding the referenced blocks the index lacks only the ids (at scale 200,
    4 ms of marshal against 12 for whole entries)."""

    __slots__ = ("_columns", "_forms", "_ids", "count")

    def __init__(
        self,
        count: int,
        ids: list[str] | None = None,
        columns: tuple[array[int], array[int], array[int]] | None = None,
        forms: tuple[memoryview, memoryview] | None = None,
    ) -> None:
        self.count, self._ids, self._columns, self._forms = count, ids, columns, forms

    @classmethod
    def of_json(cls, raw: list[list[Any]]) -> Listed:
        """Of the entries as an index object's JSON lists them (each checked a list of four
        whose first is a hex id: :func:`_entries`); TypeError or OverflowError when a
        number is not a machine integer."""
        a, b, c = (array(_COLUMN, map(itemgetter(i), raw)) for i in (1, 2, 3))
        return cls(len(raw), list(map(itemgetter(0), raw)), (a, b, c))

    # The forms stay (views of one cached body): a pack's check may ask for the columns in
    # its thread while the main thread asks for the ids.
    def ids(self) -> list[str]:
        """The hex id of each entry, in their order."""
        if self._ids is None:
            ids = marshal.loads(self._forms[0]) if self._forms is not None else None
            if not isinstance(ids, list) or len(ids) != self.count:
                raise _damaged()
            self._ids = ids
        return self._ids

    def columns(self) -> tuple[array[int], array[int], array[int]]:
        """The offsets, lengths and raw lengths of the entries, in their order."""
        if self._columns is None:
            form = self._forms[1] if self._forms is not None else None
            size = array(_COLUMN).itemsize * self.count
            if form is None or len(form) != 3 * size:
                raise _damaged()
            made = []
            for i in range(3):
                column = array(_COLUMN)
                column.frombytes(form[i * size : (i + 1) * size])
                made.append(column)
            self._columns = (made[0], made[1], made[2])
        return self._columns

    def raw(self) -> list[list[Any]]:
        """The entries as the index object's JSON lists them."""
        return [[h, o, n, r] for h, o, n, r in zip(self.ids(), *self.columns(), strict=True)]

    def form(self) -> bytes:
        """The cached form: the number, the size of the ids' form, the ids, the columns."""
        ids = marshal.dumps(self.ids())
        return b"".join([_SIZES.pack(self.count, len(ids)), ids, *map(bytes, self.columns())])


def _damaged() -> CorruptionError:
    return CorruptionError(
        "the local cache's entries of an index object are damaged",
        hint="delete the cache directory (--cache-dir, ~/.cache/pgkura) and verify again",
    )


class LazyEntries(PairsOnDemand):
    """A pack's entries as BlockIndex gives them (``(block id, BlockLocation)``), made from
    the columns the first time they are looked at; their number is known without."""

    def __init__(self, pack_id: str, listed: Listed) -> None:
        self.pack_id = pack_id
        self._listed = listed
        self._made: list[Entry] | None = None

    def __len__(self) -> int:
        return self._listed.count

    def pairs(self) -> list[Entry]:
        if self._made is None:
            pack_id, fromhex = self.pack_id, bytes.fromhex
            self._made = [
                (fromhex(h), BlockLocation(pack_id, offset, length, raw_length))
                for h, offset, length, raw_length in zip(
                    self._listed.ids(), *self._listed.columns(), strict=True
                )
            ]
        return self._made

    def for_tags(self) -> Iterator[tuple[bytes, tuple[str, int, int, int]]]:
        """(block id, (hex id, offset, length, raw length)) of each, as Cipher.failed_tags
        reads them (unpacked as four), without a BlockLocation each."""
        ids = self._listed.ids()
        entries = zip(ids, *self._listed.columns(), strict=True)
        return zip(map(bytes.fromhex, ids), entries, strict=True)


class LeanIndex:
    """Every pack's entries as its index object lists them, and the store's packs."""

    def __init__(
        self,
        listed: dict[str, Listed],
        sizes: dict[str, int],
        digests: dict[str, bytes] | None = None,
    ) -> None:
        self.listed = listed  # by pack id, in the order of their keys
        self.sizes = sizes  # the packs the store holds, with their sizes
        #: by pack id, the keyed BLAKE3 of its index object's stored bytes, as read
        self.digests = digests or {}
        self._pack_of: dict[str, str] | None = None

    @property
    def packs(self) -> dict[str, list[list[Any]]]:
        """Every pack's entries, as its index object lists them."""
        return {pack_id: listed.raw() for pack_id, listed in self.listed.items()}

    def ids(self) -> set[str]:
        """The hex id of every block the index knows."""
        return set(chain.from_iterable(listed.ids() for listed in self.listed.values()))

    def missing(self, hex_ids: set[str]) -> set[str]:
        """Those of ``hex_ids`` the index does not know: one set difference with every
        pack's ids, without a set of them all."""
        if not hex_ids:
            return set()
        return hex_ids.difference(*(listed.ids() for listed in self.listed.values()))

    def holders(self, hex_ids: set[str]) -> list[str]:
        """The packs whose index objects list any of ``hex_ids``."""
        return [p for p, listed in self.listed.items() if not hex_ids.isdisjoint(listed.ids())]

    def entries(self, pack_id: str) -> LazyEntries:
        return LazyEntries(pack_id, self.listed.get(pack_id) or Listed.of_json([]))

    def pack_of(self, hex_id: str) -> str | None:
        """The pack BlockIndex would find the block in (of two that hold it, the later)."""
        if self._pack_of is None:
            self._pack_of = {h: p for p, listed in self.listed.items() for h in listed.ids()}
        return self._pack_of.get(hex_id)


def read_lean_index(repo: Repository, jobs: int) -> LeanIndex | None:
    """Every index object read from the store (none from the local cache: verify checks what
    is stored), or None when the index is not in the common form the module's docstring
    describes."""
    listed_at = time.time()
    listed = [o.key for o in repo.storage.list(layout.INDEX_PREFIX)]
    sizes = {o.key.rsplit("/", 1)[-1]: o.size for o in repo.storage.list("packs/")}
    names = {key.rsplit("/", 1)[-1] for key in listed}
    if any(key.startswith(layout.MERGED_INDEX_PREFIX) for key in listed):
        return None
    if not set(sizes) <= names or doomed_packs(repo):
        return None
    listed.sort()
    workers = max(1, min(repo.workers_for(jobs), len(listed)))
    cache = IndexCache.of(repo)
    with ThreadPoolExecutor(workers, thread_name_prefix="pgkura-index") as pool:
        read = list(pool.map(lambda key: _read_one(repo, cache, key), listed))
    if any(one is None for one in read):
        return None
    prefix = _form_key(layout.INDEX_PREFIX)
    cache.keep_only(prefix, {_form_key(k) for k in listed}, listed_at)
    ids = [key.rsplit("/", 1)[-1] for key in listed]
    found = {pack_id: one[0] for pack_id, one in zip(ids, read, strict=True) if one}
    digests = {pack_id: one[1] for pack_id, one in zip(ids, read, strict=True) if one}
    return LeanIndex(found, sizes, digests) if len(found) == len(listed) else None


def _read_one(repo: Repository, cache: IndexCache, key: str) -> tuple[Listed, bytes] | None:
    """What the index object ``key`` lists and the keyed digest of its stored bytes, or None
    when it is gone or any of it is not as BlockIndex would take it (it then names what is
    wrong)."""
    try:
        sealed = repo.storage.get(key)
        stored = keyed_digest(repo.key, sealed)
        kept = _cached_entries(repo, cache, key, stored)
        if kept is not None:
            return kept, stored  # these very bytes were unsealed and their entries checked
        raw = _entries(json.loads(repo.unseal(sealed, name=key)), key)
        if raw is None:
            return None
        listed = Listed.of_json(raw)
        _cache_entries(repo, cache, key, stored, listed)
        return listed, stored
    except (ObjectNotFound, SealError, ValueError, KeyError, TypeError, OverflowError):
        return None


def _entries(doc: Any, key: str) -> list[list[Any]] | None:
    """The entries of an index object's parsed JSON ``doc``, or None when any of it is not
    as BlockIndex would take it."""
    name = key.rsplit("/", 1)[-1]
    if not isinstance(doc, dict) or doc.get("pack", name) != name:
        return None
    raw = doc["blocks"]
    if not isinstance(raw, list):
        return None
    # Every entry a list of four, every id 64 hex digits: checked by loops in C (a bad hex
    # digit anywhere makes the joined ids' fromhex fail).
    if not raw:  # a pack without blocks: none writes one; BlockIndex says what it is
        return None
    ids = list(map(itemgetter(0), raw)) if set(map(type, raw)) == {list} else []
    if (
        not ids
        or set(map(len, raw)) != {4}
        or set(map(type, ids)) != {str}
        or set(map(len, ids)) != {HEX_ID_SIZE}
    ):
        return None
    bytes.fromhex("".join(ids))
    return raw


def _form_key(key: str) -> str:
    return f"lean/{key}"


def _form_name(key: str) -> str:
    return f"cache lean {key}"


def _form_head(key: str, stored: bytes) -> bytes:
    name = key.encode()
    return _FORM_MAGIC + len(name).to_bytes(2, "little") + name + stored


def _cache_entries(
    repo: Repository, cache: IndexCache, key: str, stored: bytes, listed: Listed
) -> None:
    """Keep the entries (checked) of the object ``key`` whose stored bytes have the keyed
    digest ``stored``."""
    if cache.enabled:
        body = _form_head(key, stored) + listed.form()
        cache.put(_form_key(key), repo.seal(body, name=_form_name(key), codec=_FORM_CODEC).data)


def _cached_entries(repo: Repository, cache: IndexCache, key: str, stored: bytes) -> Listed | None:
    """The entries kept for the object ``key`` whose stored bytes have the keyed digest
    ``stored`` (each part loaded when looked at): None when there are none, or they were
    made from other bytes (discarded when they do not unseal or are another object's)."""
    data = cache.read(_form_key(key)) if cache.enabled else None
    if data is None:
        return None
    try:
        body = repo.unseal(data, name=_form_name(key))
        head = _form_head(key, stored)
        if body[: len(head)] != head:
            return None  # another version of the object, or another interpreter's form
        count, ids_size = _SIZES.unpack_from(body, len(head))
    except (SealError, ValueError, struct.error):
        cache.discard(_form_key(key))
        return None
    forms = memoryview(body)[len(head) + _SIZES.size :]
    return Listed(count, forms=(forms[:ids_size], forms[ids_size:])) if count else None
