"""`pgkura copy`: backups and dumps of one stanza, and the WAL they need, copied from one
repository into another, which then restores them on its own (docs/repository-format.md,
"Copies").

For each backup the destination does not hold, oldest first: its blocks the destination
lacks are stored (packs and their index objects), then the WAL that makes it consistent, and
last its manifest, the commit point. A copy killed midway leaves blocks no manifest
references (the next copy uses them; gc removes them otherwise) and no backup. With ``wal``
the WAL for point-in-time recovery after the copied backups follows. Then each copied backup
is verified in the destination (physical/verify.py) from what was written there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgkura.errors import BackupNotFoundError
from pgkura.physical.verify import verify_backups
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.copy import BlockCopier, adopt_stanza, copied_manifest
from pgkura.repository.manifest import Manifest, list_backup_ids, read_manifest, write_manifest
from pgkura.repository.pins import copy_pin
from pgkura.repository.repo import Repository
from pgkura.repository.stanzas import Generation, StanzaInfo
from pgkura.wal.copy import WalCopier, consistency_wal, pitr_wal

#: Workers, at most: each holds the pack it fills, the one being stored and a range read from
#: the source (tens of MiB). With four, a copy of a pgbench scale-100 backup peaked at 210 MB
#: of RSS, S3 either way; with two, 160 to 200 MB.
MAX_WORKERS = 4


@dataclass(frozen=True)
class CopiedBackup:
    """One backup or dump asked for: ``copied`` now, or ``present`` in the destination."""

    id: str
    kind: str
    method: str
    status: str
    blocks_stored: int = 0  # blocks the destination lacked
    bytes_stored: int = 0  # their sealed bytes in the destination
    pinned: bool = False  # its pin was copied with it
    drill_copied: bool = False  # so was the record of its latest drill

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "status": self.status,
            "blocks_stored": self.blocks_stored,
            "bytes_stored": self.bytes_stored,
            "pinned": self.pinned,
            "drill_copied": self.drill_copied,
        }


@dataclass
class CopyReport:
    source: str
    destination: str
    stanza: str
    created: bool  # the destination was initialised by this copy
    backups: list[CopiedBackup] = field(default_factory=list)
    wal_files: int = 0  # archived files written into the destination
    wal_bytes: int = 0
    verified: list[str] = field(default_factory=list)  # backups read back in the destination
    problems: list[str] = field(default_factory=list)

    @property
    def bytes_written(self) -> int:
        return sum(b.bytes_stored for b in self.backups) + self.wal_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "stanza": self.stanza,
            "created": self.created,
            "backups": [b.to_json() for b in self.backups],
            "wal_files": self.wal_files,
            "wal_bytes": self.wal_bytes,
            "bytes_written": self.bytes_written,
            "verified": self.verified,
            "problems": self.problems,
            "ok": not self.problems,
        }


def chosen_backups(source: Repository, stanza: str, backup_id: str | None) -> list[str]:
    """The ids ``copy`` is asked for: one (an id or ``latest``), or every one (None)."""
    ids = list_backup_ids(source, stanza)
    if not ids:
        raise BackupNotFoundError(
            f"stanza {stanza!r} of {source.location} has no backups or dumps to copy",
            hint="check --repo and --stanza; list them with: pgkura info",
        )
    if backup_id is None:
        return ids
    wanted = ids[-1] if backup_id == "latest" else backup_id
    if wanted not in ids:
        raise BackupNotFoundError(
            f"no backup or dump {backup_id!r} in stanza {stanza!r} of {source.location}",
            hint="list them with: pgkura info; or copy them all with --all",
        )
    return [wanted]


def copy_backups(
    source: Repository,
    dest: Repository,
    stanza: str,
    ids: list[str],
    *,
    wal: bool,
    jobs: int,
    created: bool,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy backups ``ids`` of ``stanza`` (and their WAL) from ``source`` into ``dest``. The
    caller holds a shared lock on the source and the stanza's backup lock on the
    destination (so gc there keeps what this copy stores before its manifests)."""
    report = CopyReport(source.location, dest.location, stanza, created)
    manifests = [read_manifest(source, stanza, i) for i in ids]
    info = _stanza_of(source, stanza, manifests)
    dest_info = adopt_stanza(dest, info, {m.system_identifier for m in manifests})
    present = set(list_backup_ids(dest, stanza))
    todo = [m for m in manifests if m.id not in present]
    wal_copier = WalCopier(source, dest, min(jobs, MAX_WORKERS))
    report.backups += [_present(m) for m in manifests if m.id in present]
    if todo:
        workers = min(source.workers_for(jobs), dest.workers_for(jobs), MAX_WORKERS)
        dest_index = BlockIndex(dest).load(write_back=True)
        copier = BlockCopier(BlockIndex(source).load(), dest_index, workers)
        for bid in sorted(present & set(list_backup_ids(source, stanza))):
            copier.learn(read_manifest(source, stanza, bid), read_manifest(dest, stanza, bid))
        for m in todo:
            report.backups.append(
                _copy_one(copier, wal_copier, info, dest_info, m, progress or NoProgress())
            )
    if wal:
        for gen in info.generations:
            of_gen = [m for m in manifests if m.system_identifier == gen.system_identifier]
            names = pitr_wal(source, info.archive(gen), of_gen)
            if names:  # a generation none of the copied backups is of: none of its WAL
                wal_copier.copy(info.archive(gen), _dest_archive(dest_info, gen), names)
    report.wal_files, report.wal_bytes = wal_copier.copied.files, wal_copier.copied.bytes
    report.backups.sort(key=lambda b: b.id)
    if todo:  # read back from the destination: every block, file CRC and consistency WAL
        verified = [m.id for m in todo]
        checked = verify_backups(dest, stanza, None, jobs, pages=False, backup_ids=verified)
        report.problems += checked.problems
        report.verified = verified
    return report


def _copy_one(
    copier: BlockCopier,
    wal_copier: WalCopier,
    info: StanzaInfo,
    dest_info: StanzaInfo,
    m: Manifest,
    progress: Progress,
) -> CopiedBackup:
    """Blocks, then the WAL that makes it consistent, then its pin, the manifest and the
    record of its latest drill. The pin goes first: a copy killed after it leaves a pin of
    no backup (which keeps nothing), never a backup the source pinned that an expire of the
    destination may delete."""
    before_blocks, before_bytes = copier.blocks_stored, copier.bytes_written
    progress.start(f"copying {m.kind} {m.id}", m.size_bytes)
    translated = copier.translate(m, progress.advance)
    copier.finish()
    written = copier.bytes_written - before_bytes
    progress.finish()
    gen = info.generation_of(m.system_identifier)
    assert gen is not None  # _stanza_of made sure
    archive = info.archive(gen)
    needed = consistency_wal(copier.source, archive, m)
    wal_copier.copy(archive, _dest_archive(dest_info, gen), needed)
    committed = copied_manifest(translated, copier.source).with_changes(
        stored_bytes=copier.stored_bytes(translated), new_bytes=written
    )
    pinned = copy_pin(copier.source, copier.dest, m.stanza, m.id)
    write_manifest(copier.dest, committed)
    drill = copier.source.drills.latest(m.stanza, m.id)
    if drill is not None:  # the same blocks, read back by this copy: the drill holds for them
        copier.dest.drills.record(m.stanza, m.id, {**drill, "copied_from": copier.source.location})
    stored = copier.blocks_stored - before_blocks
    return CopiedBackup(
        m.id, m.kind, m.method, "copied", stored, written, pinned, drill is not None
    )


def _present(m: Manifest) -> CopiedBackup:
    return CopiedBackup(m.id, m.kind, m.method, "present")


def _dest_archive(dest_info: StanzaInfo, gen: Generation) -> str:
    return dest_info.archive_for(gen.system_identifier)


def _stanza_of(source: Repository, stanza: str, manifests: list[Manifest]) -> StanzaInfo:
    """The source's stanza record, with a generation for each cluster the manifests name
    (a repository whose record was lost still has its backups)."""
    info = source.stanza(stanza)
    if info is None:
        first = manifests[0]
        info = StanzaInfo(
            stanza,
            [Generation(1, first.system_identifier, first.pg_version, first.started)],
            first.started,
        )
    for m in manifests:
        info.archive_for(m.system_identifier)  # a RepositoryError when it is none of them
    return info
