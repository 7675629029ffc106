"""What a whole `pgkura verify --quick` proved of a backup's blocks, kept in the local cache
so that the next whole check neither parses the backup's manifest again nor looks each of
its blocks up in the index (at pgbench scale 200, 48,000 blocks: unsealing and parsing the
manifest and the lookups took about a fifth of the check).

A whole check that found every block the manifests reference listed by the index, and no
problem in any pack, records for each manifest it parsed: the keyed BLAKE3 of the
manifest's stored bytes, its head (every field but its files), how many files it has, and
the index objects that list its blocks, each with the keyed BLAKE3 of its stored bytes. A
later whole check takes the record instead of parsing the manifest only when the manifest
it read from the store has that digest (it is, byte for byte, the manifest checked then)
and every one of those index objects is in the store with its recorded digest (every block
it references is still listed where it was); and it keeps what it took only when, its packs
checked, none has any problem (every listed block is still intact where it is listed):
else it parses every manifest and looks every block up, as without records. Index objects
added since change nothing (a block stays listed while its object is unchanged); an object
gone or rewritten (gc), another version of the manifest, a record that does not unseal or
names another backup: the manifest is parsed and its blocks looked up, and the record made
again. The stored bytes are read and the packs checked every time; the catalog's check of an
encrypted repository's manifest (not replayed, the repository not rolled back) runs on the
stored bytes either way.

A record is sealed like a stored object (``repo.seal``, named ``cache cover <key>``): a
damaged one is discarded, and in an encrypted repository it holds nothing readable without
the key. Records live at ``<cache-dir>/<repository id>/cover/<stanza>/<backup id>``; those of
backups no longer listed are dropped by the next whole check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pgkura.repository import layout
from pgkura.repository.catalog import check_manifest
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.manifest import Manifest
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError


@dataclass(frozen=True)
class Cover:
    """A manifest as its record gives it: its head (no files) and how many files it has."""

    head: Manifest
    files: int


def covered(
    repo: Repository, stanza: str, backup_id: str, data: bytes, digests: dict[str, bytes]
) -> tuple[bytes, Cover | None]:
    """The keyed digest of the manifest's stored bytes ``data``, and its record when one
    holds for them and the index objects ``digests`` (:func:`cover_of`), its catalog's check
    passed (CorruptionError when not: the same bytes as when they were proved, but the
    catalog may have moved on since)."""
    stored = repo.digest(data)
    cover = cover_of(repo, stanza, backup_id, stored, digests)
    if cover is not None:
        check_manifest(repo, stanza, backup_id, layout.snapshot_key(stanza, backup_id), data)
    return stored, cover


def cover_of(
    repo: Repository, stanza: str, backup_id: str, stored: bytes, digests: dict[str, bytes]
) -> Cover | None:
    """The record of ``backup_id`` when it was made from the manifest whose stored bytes
    have the keyed digest ``stored`` and every index object it names is listed in
    ``digests`` (pack id: keyed digest of its index object's stored bytes, as just read)
    with its recorded digest; else None."""
    cache = IndexCache.of(repo)
    data = cache.read(cover_key(stanza, backup_id)) if cache.enabled else None
    if data is None:
        return None
    try:
        record = json.loads(repo.unseal(data, name=_name(stanza, backup_id)))
        held, files = record["index"], record["files"]
        if record["manifest"] != layout.snapshot_key(stanza, backup_id) or type(files) is not int:
            raise ValueError("it is another backup's")
        if record["stored"] != stored.hex():
            return None  # another version of the manifest
        if not held or any(digests.get(p, b"").hex() != d for p, d in held.items()):
            return None  # an index object it was proved with is gone or rewritten
        head = Manifest.from_json(record["head"])
    except (SealError, ValueError, KeyError, TypeError, AttributeError):
        cache.discard(cover_key(stanza, backup_id))
        return None
    if (head.id, head.stanza) != (backup_id, stanza) or head.files:
        return None
    return Cover(head, files)


def remember_covers(
    repo: Repository,
    stanza: str,
    proved: list[tuple[Manifest, bytes, dict[str, bytes]]],
    listed: list[str],
    listed_at: float,
) -> None:
    """Record, for each ``(manifest, stored, held_by)`` of ``proved``, that every block of
    the manifest (stored as bytes of keyed digest ``stored``) is listed by the index objects
    ``held_by`` (pack id: digest of its stored bytes); then drop the records of the backups
    the stanza's listing begun at ``listed_at`` did not show (``listed``)."""
    cache = IndexCache.of(repo)
    if not cache.enabled:
        return
    for manifest, stored, held_by in proved:
        if not held_by:
            continue  # references no block: nothing to look up next time either
        record = {
            "manifest": layout.snapshot_key(stanza, manifest.id),
            "stored": stored.hex(),
            "files": len(manifest.files),
            "head": manifest.with_changes(files=()).to_json(),
            "index": {p: d.hex() for p, d in sorted(held_by.items())},
        }
        sealed = repo.seal(json.dumps(record).encode(), name=_name(stanza, manifest.id))
        cache.put(cover_key(stanza, manifest.id), sealed.data)
    cache.keep_backups(cover_key(stanza, ""), listed, listed_at)


def cover_key(stanza: str, backup_id: str) -> str:
    """Where a backup's record is kept in the local cache."""
    return f"cover/{stanza}/{backup_id}"


def _name(stanza: str, backup_id: str) -> str:
    return f"cache cover {layout.snapshot_key(stanza, backup_id)}"
