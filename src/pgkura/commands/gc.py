"""`pgkura gc`: delete what no backup references.

A backup or dump that failed (killed, Ctrl-C, pg_dump failing midway) leaves packs that no
manifest references; gc deletes them. It holds the repository's exclusive lock, which waits for
no writer and no reader: backups, dumps, restores and verify hold shared locks, so nothing that
is being written or read can disappear. A pack of which only some blocks are still referenced is
kept whole (no repacking yet); the report says how many bytes such packs hold in vain. Archived
WAL is not touched: it has no retention policy yet.

A pack is deleted only when gc has read what it holds and no manifest references any of it: a
pack whose index object is missing is read from its own trailer (and the index object written
back when a backup needs it); a pack that cannot be read at all is kept and reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, read_pack_index
from pgkura.repository.locks import exclusive_lock
from pgkura.repository.manifest import list_backup_ids, read_manifest
from pgkura.repository.repo import Repository


@dataclass
class GcReport:
    packs_deleted: int = 0
    bytes_deleted: int = 0
    packs_kept: int = 0
    unreferenced_bytes_kept: int = 0
    dry_run: bool = False
    #: packs whose index object was missing and was written again from the pack's own copy
    indexes_rebuilt: list[str] = field(default_factory=list)
    #: packs kept because what they hold cannot be read (verify names the damage)
    unreadable_kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _stanzas(repo: Repository) -> list[str]:
    names = set()
    for obj in repo.storage.list("snapshots/"):
        parts = obj.key.split("/")
        if len(parts) == 3:
            names.add(parts[1])
    return sorted(names)


def run_gc(cfg: Config, dry_run: bool = False) -> GcReport:
    repo = open_repository(cfg)
    report = GcReport(dry_run=dry_run)
    with exclusive_lock(repo):
        if not dry_run:
            report.bytes_deleted += repo.storage.remove_incomplete()
        # Every manifest is read first: one that cannot be read stops gc (its blocks are
        # unknown, so nothing may be judged unreferenced).
        referenced: set[bytes] = set()
        for stanza in _stanzas(repo):
            for backup_id in list_backup_ids(repo, stanza):
                for f in read_manifest(repo, stanza, backup_id).files:
                    referenced.update(bytes.fromhex(b) for b in f.blocks)
        index = BlockIndex(repo).load()
        by_pack: dict[str, list[tuple[bytes, int]]] = {}
        for block_id, loc in index.items():
            by_pack.setdefault(loc.pack_id, []).append((block_id, loc.length))
        readable = set(by_pack)
        unindexed = set(index.unindexed)
        for obj in list(repo.storage.list("packs/")):
            pack_id = obj.key.rsplit("/", 1)[-1]
            blocks = by_pack.get(pack_id, [])
            if pack_id not in readable:
                report.packs_kept += 1
                report.unreadable_kept.append(pack_id)
                continue
            if any(block_id in referenced for block_id, _length in blocks):
                report.packs_kept += 1
                report.unreferenced_bytes_kept += sum(
                    length for block_id, length in blocks if block_id not in referenced
                )
                if pack_id in unindexed:
                    report.indexes_rebuilt.append(pack_id)
                    if not dry_run:
                        _rebuild_index(repo, pack_id)
                continue
            report.packs_deleted += 1
            report.bytes_deleted += obj.size
            if not dry_run:
                # The index first: a pack without an index is an orphan the next gc removes.
                repo.storage.delete(layout.index_key(pack_id))
                repo.storage.delete(obj.key)
        present = index.present_packs()
        for pack_id in set(by_pack) - present:
            # An index whose pack is gone: if a backup needs its blocks that is damage for
            # verify to report, not garbage.
            if not dry_run and not any(b in referenced for b, _len in by_pack[pack_id]):
                repo.storage.delete(layout.index_key(pack_id))
    return report


def _rebuild_index(repo: Repository, pack_id: str) -> None:
    repo.storage.put_if_absent(layout.index_key(pack_id), read_pack_index(repo, pack_id))
