"""The block ids each manifest references, kept in the local cache in a compact binary form,
so that gc counts a kept backup's blocks by reading one small file instead of unsealing and
parsing its manifest (about 4 ms of JSON for a cluster of 1,300 files, paid by every gc for
every kept backup).

A copy is derived from one manifest and records which: the manifest's key, the size the
listing showed and the digest of its sealed bytes. It is used only while the listing shows
that key at that size and the cached copy of the manifest (repository/manifest.py,
``listed_copy``, checked against the catalog in an encrypted repository) carries that
digest; anything else, a copy that does not unseal, is truncated or names another manifest,
and the manifest itself is read (and the copy made again). gc must never count too few
blocks: a block it misses is deleted. The copy is sealed like a stored object (``repo.seal``,
named ``cache refs <key>``): in an encrypted repository it is authenticated by the key and
holds nothing readable without it.

Layout of the sealed content: ``PGKREFS1``, the key's length (u16) and the key, the listed
size (u64), the manifest's digest (32 bytes), the width of a block id (u8) and their count
(u32), then the ids, sorted, each ``width`` bytes. Copies live at ``<cache-dir>/<repository
id>/refs/<stanza>/<backup id>`` (written and pruned by repository/index_cache.py).
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterator
from operator import itemgetter

from pgkura.repository import layout
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.manifest import Manifest, listed_copy, read_sealed_manifest
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError, sealed_digest

_MAGIC = b"PGKREFS1"
_FIXED = struct.Struct("<Q32sBI")  # listed size, manifest digest, id width, id count


def blocks_of(m: Manifest) -> frozenset[bytes]:
    """Every block id the manifest's files reference (a manifest without its files, a head,
    references none: never count a backup's blocks from its head)."""
    return frozenset(bytes.fromhex(b) for f in m.files for b in f.blocks)


def referenced_blocks(
    repo: Repository, stanza: str, backup_id: str, listed_size: int
) -> frozenset[bytes]:
    """The blocks of the backup a listing just showed with a manifest of ``listed_size``
    bytes (:func:`referenced_ids`, as a set)."""
    return frozenset(referenced_ids(repo, stanza, backup_id, listed_size))


def referenced_ids(
    repo: Repository, stanza: str, backup_id: str, listed_size: int
) -> PackedIds | frozenset[bytes]:
    """The ids of the blocks of the backup a listing just showed with a manifest of
    ``listed_size`` bytes, to iterate over (gc adds them to one set of all the kept
    backups' blocks): from its cached copy when that was made from this manifest, else from
    the manifest (CorruptionError when it is damaged), whose copy is then made."""
    copy = listed_copy(repo, stanza, backup_id, listed_size)
    if copy is not None:
        found = _cached(repo, stanza, backup_id, listed_size, copy)
        if found is not None:
            return found
    read_before = _READ.get(repo, {}).get((stanza, backup_id))
    if read_before is not None and read_before[0] == listed_size:
        return read_before[1]
    manifest, sealed = read_sealed_manifest(repo, stanza, backup_id, listed_size=listed_size)
    if (manifest.stanza, manifest.id) == (stanza, backup_id):  # else kept under its own
        remember_refs(repo, manifest, sealed)
    return blocks_of(manifest)


class PackedIds:
    """Block ids of one width, packed end to end, as the cached copy holds them: iterating
    makes one ``bytes`` per id, straight into whatever consumes them. gc adds every kept
    backup's ids to one set; a set per backup first, then their union, cost it twice the
    work (about 40 against 20 ms for a hundred backups of 1,700 blocks)."""

    __slots__ = ("_format", "packed")

    def __init__(self, width: int, packed: bytes) -> None:
        self._format = f"{width}s"
        self.packed = packed

    def __iter__(self) -> Iterator[bytes]:
        return map(itemgetter(0), struct.iter_unpack(self._format, self.packed))


#: The blocks of the manifests this process read whole, by repository: (stanza, backup id) ->
#: (size of the sealed manifest, blocks). With the cache off (or not writable) expire reads
#: each manifest whole for its head, and its gc need not fetch it again: a manifest never
#: changes while its key is listed at that size.
_READ: weakref.WeakKeyDictionary[
    Repository, dict[tuple[str, str], tuple[int, frozenset[bytes]]]
] = weakref.WeakKeyDictionary()


def remember_refs(repo: Repository, manifest: Manifest, sealed: bytes) -> None:
    """Keep the block ids of ``manifest``, just read or stored as ``sealed`` (write_manifest,
    and a head read from its whole manifest). A manifest without files (a head) gets no
    copy: gc then reads the manifest itself."""
    if not manifest.files:
        return
    blocks = blocks_of(manifest)
    _READ.setdefault(repo, {})[(manifest.stanza, manifest.id)] = (len(sealed), blocks)
    _store(repo, manifest.stanza, manifest.id, len(sealed), sealed, blocks)


def forget_unlisted(repo: Repository, stanza: str, listed: set[str], listed_at: float) -> None:
    """Drop the copies of backups the listing begun at ``listed_at`` did not show."""
    IndexCache.of(repo).keep_backups(refs_cache_key(stanza, ""), listed, listed_at)


def refs_cache_key(stanza: str, backup_id: str) -> str:
    return f"refs/{stanza}/{backup_id}"


def _seal_name(stanza: str, backup_id: str) -> str:
    return f"cache refs {layout.snapshot_key(stanza, backup_id)}"


def _store(
    repo: Repository,
    stanza: str,
    backup_id: str,
    listed_size: int,
    sealed: bytes,
    blocks: frozenset[bytes],
) -> None:
    """Cache ``blocks`` as the copy of the manifest stored as ``sealed``, listed at
    ``listed_size`` bytes."""
    widths = {len(b) for b in blocks}
    if len(widths) > 1:
        return  # not a form this file can hold: gc reads the manifest each time
    width = widths.pop() if widths else 32
    try:
        digest = sealed_digest(sealed)
    except SealError:
        return
    key = layout.snapshot_key(stanza, backup_id).encode()
    body = b"".join(
        [
            _MAGIC,
            struct.pack("<H", len(key)),
            key,
            _FIXED.pack(listed_size, digest, width, len(blocks)),
            *sorted(blocks),
        ]
    )
    data = repo.seal(body, name=_seal_name(stanza, backup_id)).data
    IndexCache.of(repo).put(refs_cache_key(stanza, backup_id), data)


def _cached(
    repo: Repository, stanza: str, backup_id: str, listed_size: int, manifest_copy: bytes
) -> PackedIds | None:
    """The ids the cached copy holds, when it was made from the manifest ``manifest_copy``
    (the cached sealed bytes of the listed one); None otherwise."""
    cache = IndexCache.of(repo)
    data = cache.read(refs_cache_key(stanza, backup_id))
    if data is None:
        return None
    try:
        body = repo.unseal(data, name=_seal_name(stanza, backup_id))
        digest = sealed_digest(manifest_copy)
        key = layout.snapshot_key(stanza, backup_id).encode()
        at = len(_MAGIC) + 2 + len(key)
        if (
            body[: len(_MAGIC)] != _MAGIC
            or body[len(_MAGIC) : at] != struct.pack("<H", len(key)) + key
        ):
            raise ValueError("it is the copy of another manifest")
        size, recorded, width, count = _FIXED.unpack_from(body, at)
        at += _FIXED.size
        if size != listed_size or recorded != digest:
            raise ValueError("it was made from another version of the manifest")
        if width == 0 or len(body) != at + width * count:
            raise ValueError("it is truncated")
        return PackedIds(width, body[at:])
    except (SealError, ValueError, struct.error):
        cache.discard(refs_cache_key(stanza, backup_id))
        return None
