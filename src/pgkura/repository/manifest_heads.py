"""The heads of a stanza's manifests (everything but the list of files), kept in the local
cache so that `pgkura metrics` and `check --max-age` do not read every manifest again at each
scrape: a manifest of a thousand-file cluster is 200 KB of JSON, and 100 of them take about a
second to parse, where the catalog's facts need a few hundred bytes of each.

Manifests never change once written, so a cached head stays good for as long as the listing
of ``snapshots/<stanza>/`` shows its manifest with the same size (as for the cached whole
manifests, repository/manifest.py, which a head that is not cached is read from). Each head is
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
from pgkura.repository.manifest import Manifest, listed_backups, read_manifest
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError


def manifest_heads(repo: Repository, stanza: str) -> tuple[list[Manifest], list[str]]:
    """The stanza's manifests without their files, oldest first, and the ids of those that
    cannot be read (damaged)."""
    cache = IndexCache.of(repo)
    listed_at = time.time()
    listed = listed_backups(repo, stanza, prune_cache=False)
    heads: list[Manifest] = []
    damaged: list[str] = []
    for backup_id in sorted(listed):
        stamp = listed[backup_id]
        head = _cached(repo, cache, stanza, backup_id, stamp)
        if head is None:
            try:
                whole = read_manifest(repo, stanza, backup_id, listed_size=stamp)
                head = whole.with_changes(files=())
            except CorruptionError:
                damaged.append(backup_id)
                continue
            body = json.dumps({"listed": stamp, "head": head.to_json()}).encode()
            name = _name(stanza, backup_id)
            cache.put(_key(stanza, backup_id), repo.seal(body, name=name).data)
        heads.append(head)
    prefix = _key(stanza, "")
    cache.keep_only(prefix, {prefix + i for i in listed}, listed_at)
    return heads, damaged


def _key(stanza: str, backup_id: str) -> str:
    return f"heads/{stanza}/{backup_id}"


def _name(stanza: str, backup_id: str) -> str:
    return f"cache {layout.snapshot_key(stanza, backup_id)}"


def _cached(
    repo: Repository, cache: IndexCache, stanza: str, backup_id: str, stamp: int
) -> Manifest | None:
    data = cache.read(_key(stanza, backup_id))
    if data is None:
        return None
    try:
        record = json.loads(repo.unseal(data, name=_name(stanza, backup_id)))
        if record.get("listed") != stamp:
            return None
        return Manifest.from_json(record["head"])
    except (SealError, ValueError, KeyError, TypeError, AttributeError):
        return None
