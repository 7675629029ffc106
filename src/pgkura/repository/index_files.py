"""The index objects under ``index/``, and their consolidation (docs/repository-format.md,
"Index objects").

A writer stores each pack's index as its own small object, ``index/<pack-id>``. Left so, a
command would start with one GET per pack (65,000 for a terabyte). So the small objects are
merged: one *merged* object ``index/merged/<id>`` covers up to MERGED_PACKS packs, written
first; only then are the small objects it covers deleted. A reader that lists in between
finds a pack in two objects, which say the same (a pack's index is derived from the pack,
which never changes): harmless. A pack is never left without an index object.

Consolidation never takes a pack a doomed list names (repository.doomed), and reads the lists
before it lists the index: gc may delete a doomed pack while a command runs, and a merged
object written after that would name a pack that is gone. gc, before it deletes packs, drops
them from every index object (:func:`forget_packs`), writing each merged object that named
them again without them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pgkura.errors import CorruptionError, ObjectNotFound, PgkuraError
from pgkura.repository import layout
from pgkura.repository.blocks import STORED_DIGEST_SIZE, BlockLocation, read_pack_index
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.index_parsed import (
    Entries,
    cached_parsed,
    discard_parsed,
    keep_parsed_only,
    merged_json,
    parsed_before,
    remember_parsed,
    store_parsed,
)
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError

log = logging.getLogger("pgkura")

#: Per-pack index objects that make a backup or dump consolidate the small ones when it ends.
MERGE_THRESHOLD = 32
#: The most packs one merged object covers (about 16 GiB of data; its JSON about 25 MiB).
MERGED_PACKS = 1024
#: A merged object that covers fewer packs counts as small: it is merged again.
SMALL_MERGED = MERGED_PACKS // 2
#: A small merged object is merged again only with at least 1/TIER of its packs joining it.
TIER = 2

_PACK_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class IndexObjects:
    """What the index objects say: each pack's blocks, which object covers which packs, and
    the objects that could not be read."""

    packs: dict[str, Entries] = field(default_factory=dict)
    covers: dict[str, set[str]] = field(default_factory=dict)
    #: (pack id, message) of per-pack objects that cannot be read
    damaged_packs: list[tuple[str, str]] = field(default_factory=list)
    #: (key, message) of merged objects that cannot be read
    damaged_merged: list[tuple[str, str]] = field(default_factory=list)


def is_merged(key: str) -> bool:
    return key.startswith(layout.MERGED_INDEX_PREFIX)


def read_index_objects(
    repo: Repository, *, jobs: int = 16, again: bool = True, use_cache: bool = True
) -> IndexObjects:
    """Every index object, each from the local cache when its copy there is good, else from
    the store (several at once), and the cache brought up to date. When a listed object is
    gone by the time it is fetched (a consolidation deleted it after writing its merged
    object, which the listing may have missed), the index is listed and read once more.
    Without ``use_cache`` every object is read from the store (and the cache refreshed)."""
    cache = IndexCache.of(repo)
    listed_at = time.time()
    listed = {o.key: o.size for o in repo.storage.list(layout.INDEX_PREFIX)}
    out = IndexObjects()
    fetch = []
    parsed = parsed_before(repo, listed) if use_cache else {}
    for key, size in sorted(listed.items()):
        if (known := parsed.get(key)) is not None and known[0] == size:
            _add(out, key, known[1])
            continue
        if use_cache and (docs := cached_parsed(repo, key, size)) is not None:
            remember_parsed(repo, key, size, docs)
            _add(out, key, docs)
            continue
        data = cache.get(key, size) if use_cache else None
        if data is not None and _take(repo, key, data, out, final=False, keep_form=True):
            continue
        cache.discard(key)
        fetch.append(key)
    workers = repo.workers_for(jobs) if len(fetch) > 1 else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for key, data in zip(fetch, pool.map(_fetch(repo), fetch), strict=True):
            if data is None:  # deleted since the listing (consolidated, or gc)
                if again:
                    return read_index_objects(repo, jobs=jobs, again=False, use_cache=use_cache)
                continue
            if _take(repo, key, data, out, final=True, keep_form=use_cache):
                cache.put(key, data)
    cache.keep_only(layout.INDEX_PREFIX, set(listed), listed_at)
    keep_parsed_only(repo, set(listed), listed_at)
    return out


def _fetch(repo: Repository) -> Callable[[str], bytes | None]:

    def get(key: str) -> bytes | None:
        try:
            return repo.storage.get(key)
        except ObjectNotFound:
            return None

    return get


def _take(
    repo: Repository, key: str, data: bytes, out: IndexObjects, *, final: bool, keep_form: bool
) -> bool:
    """Add what the object ``key`` says to ``out``; False when it cannot be read (recorded as
    damaged when ``final``: the bytes came from the store). ``keep_form``: keep its parsed
    form in the cache (index_parsed), for the next command."""
    try:
        docs = parse_index_object(repo, key, data)
    except CorruptionError as exc:
        if final and is_merged(key):
            out.damaged_merged.append((key, exc.message))
        elif final:
            out.damaged_packs.append((key.rsplit("/", 1)[1], exc.message))
        return False
    remember_parsed(repo, key, len(data), docs)
    if keep_form:
        store_parsed(repo, key, len(data), docs)
    _add(out, key, docs)
    return True


def _add(out: IndexObjects, key: str, docs: dict[str, Entries]) -> None:
    out.covers[key] = set(docs)
    for pack_id, entries in docs.items():
        out.packs.setdefault(pack_id, entries)


def parse_index_object(repo: Repository, key: str, data: bytes) -> dict[str, Entries]:
    """The packs an index object covers, with their blocks; CorruptionError when it is
    damaged. A per-pack object names its own pack by its key."""
    return _entries(key, _unsealed(repo, key, data))


class PackCopy:
    """A pack's index as the pack's trailer holds it, and what it records of the pack's
    stored bytes (docs/repository-format.md, "Stored digests"; none in an encrypted
    repository, nor in packs written before pgkura recorded them). Parsed as far as asked:
    a pack whose blocks match ``blocks_digest`` needs no more than the JSON."""

    def __init__(self, pack_id: str, doc: Any) -> None:
        self.pack_id = pack_id
        self._doc = doc
        self.key = layout.index_key(pack_id)
        try:
            self.blocks: list[list[Any]] = list(doc["blocks"])
            whole = doc.get("blocks_digest")
            self.blocks_digest = bytes.fromhex(whole) if whole is not None else None
            digests = doc.get("digests") if whole is not None else None
            if digests is not None and len(digests) != len(self.blocks):
                raise ValueError("its stored digests do not match its blocks")
            self._digests: list[str] | None = digests
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise _damaged(self.key, exc) from None

    @property
    def has_digests(self) -> bool:
        return self._digests is not None

    def same_as(self, entries: Entries) -> bool:
        """Whether the copy lists exactly ``entries`` (the index objects' for the pack)."""
        return len(entries) == len(self.blocks) and self.blocks == [
            [b.hex(), loc.offset, loc.length, loc.raw_length] for b, loc in entries
        ]

    def entries(self) -> Entries:
        return _entries(self.key, self._doc)[self.pack_id]

    def digests_by_offset(self) -> dict[int, bytes]:
        """Each block's stored digest, by its offset in the pack; CorruptionError when one is
        malformed."""
        try:
            out = {
                int(entry[1]): bytes.fromhex(digest)
                for entry, digest in zip(self.blocks, self._digests or [], strict=True)
            }
            if any(len(d) != STORED_DIGEST_SIZE for d in out.values()):
                raise ValueError("a stored digest has the wrong length")
            return out
        except (ValueError, TypeError, IndexError) as exc:
            raise _damaged(self.key, exc) from None


def parse_pack_copy(repo: Repository, pack_id: str, data: bytes) -> PackCopy:
    """The copy of its index a pack ends with (blocks.read_pack_index); CorruptionError
    when it is damaged."""
    key = layout.index_key(pack_id)
    doc = _unsealed(repo, key, data)
    if not isinstance(doc, dict) or doc.get("pack", pack_id) != pack_id:
        raise _damaged(key, ValueError("it is not this pack's index"))
    return PackCopy(pack_id, doc)


def _unsealed(repo: Repository, key: str, data: bytes) -> Any:
    try:
        return json.loads(repo.unseal(data, name=key))
    except (SealError, ValueError) as exc:
        raise _damaged(key, exc) from None


def _entries(key: str, doc: Any) -> dict[str, Entries]:
    try:
        name = key.rsplit("/", 1)[1]
        # Each object names itself, so that the bytes of one are never taken for another's
        # (a cached copy under the wrong name is sealed as soundly as the right one).
        if is_merged(key):
            if doc["id"] != name:
                raise ValueError(f"it is the merged index object {doc['id']}")
            docs = {str(d["pack"]): d["blocks"] for d in doc["packs"]}
            if not all(_PACK_ID.match(p) for p in docs):
                raise ValueError("it names a pack by something that is no pack id")
        else:
            if doc.get("pack", name) != name:
                raise ValueError(f"it is the index of pack {doc['pack']}")
            docs = {name: doc["blocks"]}
        return {
            pack_id: [
                (bytes.fromhex(hex_id), BlockLocation(pack_id, offset, length, raw_length))
                for hex_id, offset, length, raw_length in blocks
            ]
            for pack_id, blocks in docs.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(key, exc) from None


def _damaged(key: str, exc: Exception) -> CorruptionError:
    return CorruptionError(
        f"index object {key} is damaged: {exc}",
        hint="run pgkura verify to see which backups are affected",
    )


def _seal_merged(repo: Repository, merged_id: str, packs: dict[str, Entries]) -> bytes:
    body = merged_json(merged_id, packs)
    return repo.seal(body, name=layout.merged_index_key(merged_id)).data


def _write_merged(repo: Repository, packs: dict[str, Entries]) -> list[str]:
    """Store ``packs`` as merged objects of at most MERGED_PACKS packs each; their keys."""
    if repo.config.version < 3:
        from pgkura.repository.repo import raise_version

        raise_version(repo, 3)  # readers of version 2 would take a merged key for a pack's
    cache = IndexCache.of(repo)
    ids = sorted(packs)
    keys = []
    for start in range(0, len(ids), MERGED_PACKS):
        chunk = {p: packs[p] for p in ids[start : start + MERGED_PACKS]}
        merged_id = os.urandom(16).hex()
        key = layout.merged_index_key(merged_id)
        data = _seal_merged(repo, merged_id, chunk)
        repo.storage.put_if_absent(key, data)
        cache.put(key, data)
        remember_parsed(repo, key, len(data), chunk)
        store_parsed(repo, key, len(data), chunk)
        keys.append(key)
    return keys


@dataclass
class Consolidation:
    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def consolidate(
    repo: Repository, *, at_least: int = MERGE_THRESHOLD, redundant: bool = False
) -> Consolidation:
    """Merge the small index objects into merged ones when there are ``at_least`` of them,
    then delete those they covered. The caller holds a lock that gc's deletions wait for (a
    shared, backup or the maintenance lock). ``redundant`` (gc only, under the maintenance
    lock) also deletes merged objects whose every pack another kept merged object covers
    (two commands that consolidated at once leave such twins)."""
    from pgkura.repository.doomed import doomed_packs

    done = Consolidation()
    listed = [o.key for o in repo.storage.list(layout.INDEX_PREFIX)]
    if not redundant and sum(not is_merged(k) for k in listed) < at_least:
        return done  # the usual end of a backup: one LIST, nothing read
    doomed = doomed_packs(repo)  # before the listing: see the module's docstring
    objects = read_index_objects(repo)
    small = _worth_merging(objects.covers)
    if len(small) >= max(at_least, 2):
        take = {p for k in small for p in objects.covers[k]} - doomed
        done.written = _write_merged(repo, {p: objects.packs[p] for p in take})
        done.deleted = [k for k in small if objects.covers[k] <= take]
    if redundant:
        covered: set[str] = set()
        for key in sorted(set(objects.covers) - set(small)):
            if objects.covers[key] <= covered:
                done.deleted.append(key)
            else:
                covered |= objects.covers[key]
    _delete(repo, done.deleted)
    return done


def _worth_merging(covers: dict[str, set[str]]) -> list[str]:
    """The index objects a consolidation merges: every per-pack object, and the small merged
    objects, smallest first, as long as each is at most TIER times the packs gathered before
    it. A merged object is so written again only when what joins it is a fair share of it:
    each pack is rewritten a few times over its life (about log2 of the index's size in
    packs), not at every consolidation, which would cost each gc and each backup that
    consolidates a multiple of the whole index."""
    chosen = [k for k in covers if not is_merged(k)]
    gathered = sum(len(covers[k]) for k in chosen)
    merged = sorted(
        (k for k, packs in covers.items() if is_merged(k) and len(packs) < SMALL_MERGED),
        key=lambda k: (len(covers[k]), k),
    )
    for key in merged:
        if gathered and len(covers[key]) > TIER * gathered:
            break
        chosen.append(key)
        gathered += len(covers[key])
    return chosen


def consolidate_quietly(repo: Repository) -> None:
    """:func:`consolidate` after a backup committed: a failure is logged, not raised (the
    backup is stored; the next one consolidates)."""
    try:
        consolidate(repo)
    except PgkuraError as exc:
        log.warning("could not consolidate the index: %s", exc.message)


def forget_packs(
    repo: Repository, pack_ids: set[str], *, absorb_all_but: set[str] | None = None
) -> None:
    """Drop ``pack_ids`` from every index object, before gc deletes them: each merged object
    that names one is written again without them (the new one first), and their per-pack
    objects are deleted. Given ``absorb_all_but`` (gc, under the maintenance lock: every pack
    a doomed list names, which only gc writes), the first merged object written again also
    takes in the per-pack objects of the other packs, which are then deleted too: the
    consolidation gc ends with would otherwise write the whole merged object once more, to
    add the packs its repacking made."""
    if not pack_ids:
        return
    absorb = absorb_all_but is not None
    doomed = absorb_all_but or set()
    objects = read_index_objects(repo)
    gone = [layout.index_key(p) for p in sorted(pack_ids)]
    loose = {
        p: objects.packs[p]
        for key, packs in objects.covers.items()
        if absorb and not is_merged(key)
        for p in packs
        if p not in pack_ids and p not in doomed
    }
    for key, packs in objects.covers.items():
        if not is_merged(key) or not packs & pack_ids:
            continue
        rest = {p: objects.packs[p] for p in packs - pack_ids}
        if loose:
            rest.update(loose)
            gone.extend(layout.index_key(p) for p in sorted(loose))
            loose = {}
        if rest:
            _write_merged(repo, rest)
        gone.append(key)
    for key, _message in objects.damaged_merged:
        log.debug("index object %s cannot be read; gc leaves it", key)
    _delete(repo, gone)


def _delete(repo: Repository, keys: list[str]) -> None:
    if not keys:
        return
    repo.storage.delete_many(keys)
    cache = IndexCache.of(repo)
    for key in keys:
        cache.discard(key)
        discard_parsed(repo, key)


def check_pack(
    repo: Repository, pack_id: str, indexed: list[tuple[bytes, BlockLocation]] | None = None
) -> str | None:
    """What is wrong with the pack ``pack_id``, or None. A pack ends with a copy of its index
    and a trailer pointing at it; a pack that was truncated, extended or overwritten at the
    end no longer does. ``indexed``: the pack's entries as the index objects give them
    (BlockIndex.pack_entries), which the copy must repeat."""
    key = layout.pack_key(pack_id)
    if repo.storage.size(key) is None:
        return f"pack {key} is missing"
    try:
        copy = read_pack_index(repo, pack_id)
    except KeyError:
        return f"pack {key} does not end with its trailer: it was truncated or extended"
    if indexed is None:
        return None  # no index object: BlockIndex.load read this copy, and verify reports it
    try:
        own = parse_index_object(repo, layout.index_key(pack_id), copy)[pack_id]
    except CorruptionError:
        own = None
    if own != indexed:
        return f"pack {key}: the index copy at its end differs from its index object"
    return None


def unindexed_problem(pack_id: str) -> str:
    """The finding about a pack whose index object is missing and whose own copy was read."""
    return (
        f"pack {layout.pack_key(pack_id)}: its index object {layout.index_key(pack_id)} "
        "is missing; the pack's own copy of the index was read instead (run pgkura "
        "repair index to write it back)"
    )
