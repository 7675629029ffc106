"""Snapshot manifests: one per backup, written last as the commit point."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pgkura.codec.compression import ZSTD, Codec
from pgkura.errors import BackupNotFoundError, CorruptionError, ObjectNotFound, RepositoryError
from pgkura.repository import layout
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError

MANIFEST_FORMAT = 1
_FILE_TYPES = frozenset({"file", "dir", "tablespace"})
_TABLESPACE_LINK = re.compile(r"pg_tblspc/[0-9]+")


@dataclass(frozen=True)
class FileEntry:
    path: str
    type: str  # "file", "dir" or "tablespace"
    mode: int
    size: int = 0
    mtime: float = 0.0
    blocks: tuple[str, ...] = ()
    crc32c: str | None = None
    target: str | None = None  # tablespace location at backup time
    #: CRC-32C of each block (8 hex digits each), kept for relation files on PostgreSQL 17+:
    #: a summary-guided backup that reuses a block combines its CRC into the file's
    block_crcs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "type": self.type, "mode": self.mode}
        if self.type == "file":
            out.update(size=self.size, mtime=self.mtime, blocks=list(self.blocks))
            if self.crc32c is not None:
                out["crc32c"] = self.crc32c
            if self.block_crcs:
                out["block_crcs"] = "".join(self.block_crcs)
        if self.target is not None:
            out["target"] = self.target
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileEntry:
        if not isinstance(d.get("path"), str) or d.get("type") not in _FILE_TYPES:
            raise ValueError(f"a file entry has no valid path or type: {d!r:.200}")
        if d["type"] == "tablespace" and not (
            _TABLESPACE_LINK.fullmatch(d["path"]) and isinstance(d.get("target"), str)
        ):
            raise ValueError(f"a tablespace entry is malformed: {d!r:.200}")
        return cls(
            path=d["path"],
            type=d["type"],
            mode=int(d["mode"]),
            size=int(d.get("size", 0)),
            mtime=float(d.get("mtime", 0.0)),
            blocks=tuple(d.get("blocks", ())),
            crc32c=d.get("crc32c"),
            target=d.get("target"),
            block_crcs=_block_crcs(d.get("block_crcs", "")),
        )


def _block_crcs(text: Any) -> tuple[str, ...]:
    if not isinstance(text, str) or len(text) % 8:
        raise ValueError(f"a file entry's block_crcs is malformed: {text!r:.80}")
    return tuple(text[i : i + 8] for i in range(0, len(text), 8))


@dataclass(frozen=True)
class Tablespace:
    oid: int
    location: str
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"oid": self.oid, "name": self.name, "location": self.location}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tablespace:
        oid, location = d.get("oid"), d.get("location")
        if not isinstance(oid, int) or isinstance(oid, bool) or oid <= 0:
            raise ValueError(f"a tablespace has no valid oid: {d!r:.200}")
        if (
            not isinstance(location, str)
            or not os.path.isabs(location)
            or os.path.normpath(location) != location
            or location == "/"
        ):
            raise ValueError(f"tablespace {oid} has an unsafe location: {location!r:.200}")
        name = d.get("name")
        return cls(oid, location, name if isinstance(name, str) else None)


@dataclass(frozen=True)
class Manifest:
    id: str
    stanza: str
    kind: str  # "physical" or "logical"
    method: str  # "offline", "online", "basebackup", "pg_dump", ...
    started: str
    finished: str
    pg_version: int
    system_identifier: str
    files: tuple[FileEntry, ...] = ()
    tablespaces: tuple[Tablespace, ...] = ()
    data_checksums: bool = False
    forced: bool = False
    timeline: int | None = None
    start_lsn: str | None = None
    stop_lsn: str | None = None
    start_wal: str | None = None
    stop_wal: str | None = None
    backup_label: str | None = None
    tablespace_map: str | None = None
    checksum_failures: tuple[dict[str, Any], ...] = ()
    size_bytes: int = 0
    stored_bytes: int = 0
    new_bytes: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "id": self.id,
            "stanza": self.stanza,
            "kind": self.kind,
            "method": self.method,
            "started": self.started,
            "finished": self.finished,
            "pg_version": self.pg_version,
            "system_identifier": self.system_identifier,
            "data_checksums": self.data_checksums,
            "forced": self.forced,
            "timeline": self.timeline,
            "start_lsn": self.start_lsn,
            "stop_lsn": self.stop_lsn,
            "start_wal": self.start_wal,
            "stop_wal": self.stop_wal,
            "backup_label": self.backup_label,
            "tablespace_map": self.tablespace_map,
            "tablespaces": [t.to_json() for t in self.tablespaces],
            "files": [f.to_json() for f in self.files],
            "checksum_failures": list(self.checksum_failures),
            "size_bytes": self.size_bytes,
            "stored_bytes": self.stored_bytes,
            "new_bytes": self.new_bytes,
            "options": self.options,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if int(d.get("format", 0)) > MANIFEST_FORMAT:
            raise RepositoryError(f"manifest {d.get('id')} has a newer format; upgrade pgkura")
        return cls(
            id=d["id"],
            stanza=d["stanza"],
            kind=d["kind"],
            method=d["method"],
            started=d["started"],
            finished=d["finished"],
            pg_version=int(d["pg_version"]),
            system_identifier=str(d["system_identifier"]),
            files=tuple(FileEntry.from_json(f) for f in d.get("files", ())),
            tablespaces=tuple(Tablespace.from_json(t) for t in d.get("tablespaces", ())),
            data_checksums=bool(d.get("data_checksums", False)),
            forced=bool(d.get("forced", False)),
            timeline=d.get("timeline"),
            start_lsn=d.get("start_lsn"),
            stop_lsn=d.get("stop_lsn"),
            start_wal=d.get("start_wal"),
            stop_wal=d.get("stop_wal"),
            backup_label=d.get("backup_label"),
            tablespace_map=d.get("tablespace_map"),
            checksum_failures=tuple(d.get("checksum_failures", ())),
            size_bytes=int(d.get("size_bytes", 0)),
            stored_bytes=int(d.get("stored_bytes", 0)),
            new_bytes=int(d.get("new_bytes", 0)),
            options=dict(d.get("options", {})),
            extra=dict(d.get("extra", {})),
        )

    def with_changes(self, **changes: Any) -> Manifest:
        return replace(self, **changes)


def write_manifest(repo: Repository, manifest: Manifest) -> None:
    """Commit a backup. After this returns the backup exists; before, it does not."""
    from pgkura.repository.locks import confirm_locks_held

    confirm_locks_held(repo, f"backup {manifest.id}")
    body = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
    key = layout.snapshot_key(manifest.stanza, manifest.id)
    sealed = repo.seal(body, name=key, codec=_manifest_codec(repo))
    # The catalog lists it first (encrypted repositories): see repository/catalog.py.
    from pgkura.repository.catalog import record_commit

    record_commit(repo, manifest.stanza, manifest.id, sealed.digest)
    if not repo.storage.put_if_absent(key, sealed.data):
        raise RepositoryError(f"a backup with id {manifest.id} already exists")
    from pgkura.repository.index_cache import IndexCache

    IndexCache.of(repo).put(key, sealed.data)  # the next expire or info need not fetch it
    # ... nor parse it: its head (expire's facts) and its block ids (gc's), derived now.
    from pgkura.repository.manifest_heads import remember_head
    from pgkura.repository.manifest_refs import remember_refs

    remember_head(repo, manifest, sealed.data)
    remember_refs(repo, manifest, sealed.data)
    # Still under the command's locks, which gc's deletions wait for (index_files.py).
    from pgkura.repository.index_files import consolidate_quietly

    consolidate_quietly(repo)


def _manifest_codec(repo: Repository) -> Codec:
    """zstd at level 1 when the repository compresses with zstd: a manifest is mostly hex
    block ids, which level 1 packs as small as level 3 (at pgbench scale 200, 3.4 MB to
    1.70 MB against 1.72 MB) in a fifth of the time, and decompresses in half."""
    codec = repo.codec
    return Codec(ZSTD, 1) if codec.codec_id == ZSTD and codec.level > 1 else codec


def read_manifest(
    repo: Repository, stanza: str, backup_id: str, *, listed_size: int | None = None
) -> Manifest:
    """The manifest of ``backup_id``. Given the size a listing just showed, a good copy in the
    local cache (repository/index_cache.py) is used instead of a request: a manifest is
    written once and never changed, so a listed key of the listed size names the cached
    bytes, and they are unsealed, so checked, exactly like fresh ones."""
    return read_sealed_manifest(repo, stanza, backup_id, listed_size=listed_size)[0]


def read_sealed_manifest(
    repo: Repository, stanza: str, backup_id: str, *, listed_size: int | None = None
) -> tuple[Manifest, bytes]:
    """:func:`read_manifest`, with the sealed bytes the manifest was read from (what the
    copies derived from it, its head and its block ids, record that they were made from)."""
    from pgkura.repository.index_cache import IndexCache

    key = layout.snapshot_key(stanza, backup_id)
    cache = IndexCache.of(repo) if listed_size is not None else None
    if cache is not None and (copy := cache.get(key, listed_size or 0)) is not None:
        try:
            return parse_manifest(repo, stanza, backup_id, copy), copy
        except CorruptionError:
            cache.discard(key)  # never trusted: fetched again below
    data = stored_manifest(repo, stanza, backup_id)
    manifest = parse_manifest(repo, stanza, backup_id, data)
    if cache is not None:
        cache.put(key, data)
    return manifest, data


def stored_manifest(repo: Repository, stanza: str, backup_id: str) -> bytes:
    """The sealed bytes of ``backup_id``'s manifest, read from the store, not checked."""
    try:
        return repo.storage.get(layout.snapshot_key(stanza, backup_id))
    except ObjectNotFound:
        raise BackupNotFoundError(
            f"no backup {backup_id!r} in stanza {stanza!r}",
            hint="list the backups with: pgkura info",
        ) from None


def listed_copy(repo: Repository, stanza: str, backup_id: str, listed_size: int) -> bytes | None:
    """The sealed bytes of the manifest a listing just showed at ``listed_size``, from the
    local cache, when it holds them and (encrypted repositories) the stanza's catalog lists
    their digest as this backup's; else None. Not unsealed: what a copy derived from the
    manifest (its head, its block ids) is checked against, by the digest it records of the
    bytes it was made from, which were unsealed and parsed then."""
    from pgkura.repository.catalog import check_manifest
    from pgkura.repository.index_cache import IndexCache

    key = layout.snapshot_key(stanza, backup_id)
    copy = IndexCache.of(repo).get(key, listed_size)
    if copy is None:
        return None
    try:
        check_manifest(repo, stanza, backup_id, key, copy)
    except (CorruptionError, SealError):
        return None  # read_manifest reads it and says what is wrong
    return copy


def parse_manifest(repo: Repository, stanza: str, backup_id: str, data: bytes) -> Manifest:
    """The manifest ``data`` holds, checked (unsealed; in an encrypted repository, against
    the stanza's catalog): CorruptionError, naming it, when it is damaged or replayed."""
    key = layout.snapshot_key(stanza, backup_id)
    try:
        manifest = Manifest.from_json(json.loads(repo.unseal(data, name=key)))
    except (SealError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptionError(
            f"the manifest of backup {backup_id} ({key}) is damaged: {exc}",
            hint="restore from another backup; run pgkura verify",
        ) from None
    from pgkura.repository.catalog import check_manifest

    check_manifest(repo, stanza, backup_id, key, data)  # not replayed (encrypted only)
    return manifest


def list_backup_ids(repo: Repository, stanza: str) -> list[str]:
    return sorted(listed_backups(repo, stanza, prune_cache=False))


def listed_backups(repo: Repository, stanza: str, *, prune_cache: bool = True) -> dict[str, int]:
    """The stanza's backup ids and their manifests' stored sizes, from one listing; with
    ``prune_cache`` the cached copies of manifests no longer listed are dropped."""
    prefix = layout.snapshot_prefix(stanza)
    listed_at = time.time()
    sizes = {
        info.key[len(prefix) :]: info.size
        for info in repo.storage.list(prefix)
        if "/" not in info.key[len(prefix) :]
    }
    if prune_cache:
        from pgkura.repository.index_cache import IndexCache

        IndexCache.of(repo).keep_backups(prefix, sizes, listed_at)
    return sizes


def read_manifests(repo: Repository, stanza: str) -> list[Manifest]:
    """Every manifest of the stanza, oldest first, from one listing and the local cache
    (read_manifest), so that a command on a repository of many backups does not fetch each
    manifest again (expire and gc read less: repository/manifest_heads.py, manifest_refs.py).
    A damaged one raises CorruptionError. verify reads the store itself (read_manifest
    without a size)."""
    listed = listed_backups(repo, stanza)
    return [read_manifest(repo, stanza, i, listed_size=listed[i]) for i in sorted(listed)]


def list_stanzas(repo: Repository) -> list[str]:
    """The stanzas that have at least one backup or dump."""
    names = set()
    for obj in repo.storage.list("snapshots/"):
        parts = obj.key.split("/")
        if len(parts) == 3:
            names.add(parts[1])
    return sorted(names)


def delete_manifest(repo: Repository, stanza: str, backup_id: str) -> None:
    """Delete a backup: its manifest (after which it does not exist), then its pin and the
    record of its last drill. Its blocks go at the next gc, its WAL at the next expire."""
    key = layout.snapshot_key(stanza, backup_id)
    repo.storage.delete(key)
    from pgkura.repository.index_cache import IndexCache
    from pgkura.repository.manifest_cover import cover_key
    from pgkura.repository.manifest_heads import head_cache_key
    from pgkura.repository.manifest_refs import refs_cache_key

    cache = IndexCache.of(repo)  # its cached copy and what was derived from it
    derived = (head_cache_key, refs_cache_key, cover_key)
    for cached in (key, *(of(stanza, backup_id) for of in derived)):
        cache.discard(cached)
    from pgkura.repository.catalog import record_deletion

    record_deletion(repo, stanza, backup_id)
    repo.storage.delete_many(
        [layout.pin_key(stanza, backup_id), layout.drill_key(stanza, backup_id)]
    )


def resolve_backup_id(
    repo: Repository, stanza: str, wanted: str | None, ids: list[str] | None = None
) -> str:
    """Turn ``None``/``"latest"``/an id into an existing backup id, or fail with a hint;
    ``ids`` are the stanza's, when the caller has just listed them."""
    ids = list_backup_ids(repo, stanza) if ids is None else ids
    if wanted in (None, "latest"):
        if not ids:
            raise BackupNotFoundError(
                f"stanza {stanza!r} has no backups yet",
                hint="take one with: pgkura backup",
            )
        return ids[-1]
    assert wanted is not None
    if wanted not in ids:
        raise BackupNotFoundError(
            f"no backup {wanted!r} in stanza {stanza!r}",
            hint="list the backups with: pgkura info",
        )
    return wanted
