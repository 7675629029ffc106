"""The heads of a stanza's manifests (everything but the list of files), kept in the local
cache so that `pgkura metrics` and `check --max-age` do not read every manifest again at each
scrape, nor expire to apply its policy: a manifest of a thousand-file cluster is 200 KB of
JSON, and 100 of them take about a second to parse, where the catalog's facts and expire's
decisions need a few hundred bytes of each.

Manifests never change once written, so a cached head stays good for as long as the listing
of ``snapshots/<stanza>/`` shows its manifest with the same size and the cached copy of that
manifest (repository/manifest.py, ``listed_copy``: checked against the catalog in an
encrypted repository) has the digest the head records; otherwise the manifest is read and
its head cached again. write_manifest caches the head of each new backup. Each head is
sealed like a stored object (``repo.seal``, named ``cache <key>``): a damaged copy is
discarded and read again, and in an encrypted repository the cache holds nothing readable
without the key. The copies live beside the index cache (``<cache-dir>/<repository
id>/heads/<stanza>/<backup id>``, written and pruned by repository/index_cache.py).
"""

from __future__ import annotations

import json
import time

from pgkura.errors import CorruptionError
from pgkura.repository import layout
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.manifest import (
    Manifest,
    listed_backups,
    listed_copy,
    read_sealed_manifest,
)
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError, sealed_digest


def manifest_heads(
    repo: Repository, stanza: str, *, strict: bool = False
) -> tuple[list[Manifest], list[str]]:
    """The stanza's manifests without their files, oldest first, and the ids of those that
    cannot be read (damaged); ``strict``: a damaged one raises its CorruptionError instead
    (expire, which must know every backup's WAL needs)."""
    cache = IndexCache.of(repo)
    listed_at = time.time()
    listed = listed_backups(repo, stanza, prune_cache=False)
    heads: list[Manifest] = []
    damaged: list[str] = []
    for backup_id in sorted(listed):
        try:
            heads.append(manifest_head(repo, stanza, backup_id, listed[backup_id]))
        except CorruptionError:
            if strict:
                raise
            damaged.append(backup_id)
    cache.keep_backups(head_cache_key(stanza, ""), listed, listed_at)
    return heads, damaged


def manifest_head(repo: Repository, stanza: str, backup_id: str, listed_size: int) -> Manifest:
    """The head of the manifest a listing just showed at ``listed_size``: the cached one when
    it was made from the cached copy of that manifest (the digest it records is that copy's),
    else read from the manifest (CorruptionError when it is damaged) and cached."""
    copy = listed_copy(repo, stanza, backup_id, listed_size)
    if copy is not None:
        head = _cached(repo, stanza, backup_id, listed_size, copy)
        if head is not None:
            return head
    whole, sealed = read_sealed_manifest(repo, stanza, backup_id, listed_size=listed_size)
    if (whole.stanza, whole.id) != (stanza, backup_id):
        return whole.with_changes(files=())  # not cached under another backup's name
    from pgkura.repository.manifest_refs import remember_refs

    remember_refs(repo, whole, sealed)  # read whole once: gc need not parse it again
    return remember_head(repo, whole, sealed)


def remember_head(repo: Repository, manifest: Manifest, sealed: bytes) -> Manifest:
    """Cache the head of ``manifest``, stored as ``sealed``; return it."""
    head = manifest.with_changes(files=())
    try:
        digest = sealed_digest(sealed).hex()
    except SealError:
        return head
    record = {"listed": len(sealed), "digest": digest, "head": head.to_json()}
    name = _name(manifest.stanza, manifest.id)
    data = repo.seal(json.dumps(record).encode(), name=name).data
    IndexCache.of(repo).put(head_cache_key(manifest.stanza, manifest.id), data)
    return head


def head_cache_key(stanza: str, backup_id: str) -> str:
    return f"heads/{stanza}/{backup_id}"


def _name(stanza: str, backup_id: str) -> str:
    return f"cache {layout.snapshot_key(stanza, backup_id)}"


def _cached(
    repo: Repository, stanza: str, backup_id: str, stamp: int, manifest_copy: bytes
) -> Manifest | None:
    data = IndexCache.of(repo).read(head_cache_key(stanza, backup_id))
    if data is None:
        return None
    try:
        record = json.loads(repo.unseal(data, name=_name(stanza, backup_id)))
        made_from = (record.get("listed"), record.get("digest"))
        if made_from != (stamp, sealed_digest(manifest_copy).hex()):
            return None
        head = Manifest.from_json(record["head"])
    except (SealError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return head if head.id == backup_id and head.stanza == stanza and not head.files else None
