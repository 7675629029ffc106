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
id>/heads/<stanza>/<backup id>``); a cache that cannot be written is simply not used.
"""

from __future__ import annotations

import contextlib
import json
import os

from pgkura.errors import CorruptionError
from pgkura.repository import layout
from pgkura.repository.index_cache import cache_root
from pgkura.repository.manifest import Manifest, listed_backups, read_manifest
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError


def _directory(repo: Repository, stanza: str) -> str | None:
    root = cache_root(repo.cache_setting)
    repo_id = repo.config.repo_id
    if root is None or not repo_id or not all(c in "0123456789abcdef" for c in repo_id):
        return None
    return os.path.join(root, repo_id, "heads", stanza)


def manifest_heads(repo: Repository, stanza: str) -> tuple[list[Manifest], list[str]]:
    """The stanza's manifests without their files, oldest first, and the ids of those that
    cannot be read (damaged)."""
    listed = listed_backups(repo, stanza, prune_cache=False)
    directory = _directory(repo, stanza)
    heads: list[Manifest] = []
    damaged: list[str] = []
    for backup_id in sorted(listed):
        stamp = listed[backup_id]
        head = _cached(repo, directory, stanza, backup_id, stamp)
        if head is None:
            try:
                whole = read_manifest(repo, stanza, backup_id, listed_size=stamp)
                head = whole.with_changes(files=())
            except CorruptionError:
                damaged.append(backup_id)
                continue
            directory = _keep(repo, directory, stanza, head, stamp)
        heads.append(head)
    if directory is not None:
        _drop_unlisted(directory, set(listed))
    return heads, damaged


def _name(stanza: str, backup_id: str) -> str:
    return f"cache {layout.snapshot_key(stanza, backup_id)}"


def _cached(
    repo: Repository, directory: str | None, stanza: str, backup_id: str, stamp: int
) -> Manifest | None:
    if directory is None:
        return None
    try:
        with open(os.path.join(directory, backup_id), "rb") as f:
            data = f.read()
        record = json.loads(repo.unseal(data, name=_name(stanza, backup_id)))
        if record.get("listed") != stamp:
            return None
        return Manifest.from_json(record["head"])
    except (OSError, SealError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _keep(
    repo: Repository, directory: str | None, stanza: str, head: Manifest, stamp: int
) -> str | None:
    """Cache ``head``; the directory, or None when the cache cannot be written (then it is
    not tried again by this call)."""
    if directory is None:
        return None
    body = json.dumps({"listed": stamp, "head": head.to_json()}).encode()
    data = repo.seal(body, name=_name(stanza, head.id)).data
    path = os.path.join(directory, head.id)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    return directory


def _drop_unlisted(directory: str, listed: set[str]) -> None:
    """Forget the heads of deleted backups (and temporary files older than a minute)."""
    import time

    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        full = os.path.join(directory, name)
        if name in listed:
            continue
        if name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                if time.time() - os.stat(full).st_mtime < 60:
                    continue
        with contextlib.suppress(OSError):
            os.unlink(full)
