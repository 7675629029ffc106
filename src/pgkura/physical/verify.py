"""Verifying backups: read back everything a backup needs and say what is wrong, where
(`pgkura verify`).

For each backup: the manifest unseals and belongs to the stanza's cluster; every block of every
file is present, its hash matches and it decompresses; each file's CRC-32C matches the
manifest; the WAL from the backup's start to its consistency point is archived and intact. Then
the packs and the archive as a whole (wal/verify.py): every archived segment and history file
unseals, and gaps are named per timeline.

Data page checksums: the backup checked every page as it read it and recorded the failures in
the manifest; those are reported, and with ``pages`` (``--pages``) every page checksum is
computed again from the stored blocks. Not by default: each block's keyed BLAKE3 already
proves that its content is what the backup read and checked, so the second computation finds
the same pages unless the backup's own check was wrong, at about the cost of decompressing
and hashing together. Either way, for an online backup a page whose LSN is at or past the
backup's start may be torn, and WAL replay rewrites it, so only older pages count.
(pgBackRest's verify checks no page checksums; its backup does, as pgkura's does.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgkura.errors import PgkuraError
from pgkura.pg.relfile import RELSEG_BLOCKS, is_relation_file
from pgkura.physical.readback import FileToCheck, check_files, page_failures
from pgkura.physical.verdicts import BackupVerdict as BackupVerdict
from pgkura.physical.verdicts import VerifyReport as VerifyReport
from pgkura.physical.verdicts import archive_of, chosen_backups, gaps_matter_from, missing_wal
from pgkura.repository.blocks import BlockIndex, BlockReader
from pgkura.repository.index_files import check_pack, unindexed_problem
from pgkura.repository.manifest import FileEntry, Manifest, read_manifest
from pgkura.repository.repo import Repository
from pgkura.repository.stanzas import StanzaInfo
from pgkura.wal.names import parse_lsn
from pgkura.wal.verify import ArchiveCheck, verify_archives


def verify_backups(
    repo: Repository,
    stanza: str,
    backup_id: str | None,
    jobs: int,
    pages: bool = True,
    *,
    backup_ids: list[str] | None = None,
) -> VerifyReport:
    """Check one backup of ``stanza`` (or all, and then every pack and the whole WAL
    archive; or, with ``backup_ids``, those, as one backup is checked); ``pages`` recomputes
    every data page checksum instead of reporting the failures each backup recorded. The
    caller holds the repository's shared lock (gc cannot delete what is being verified)."""
    report = VerifyReport(pages_recomputed=pages)
    index = BlockIndex(repo).load(keep_packs=True, fresh=True)  # what is stored, not a copy
    report.problems += index.damaged + index.replaced
    whole = backup_id is None and backup_ids is None
    if whole:
        trailer_read = set(index.unindexed)
        for pack_id in sorted(index.pack_ids):
            indexed = None if pack_id in trailer_read else index.pack_entries.get(pack_id)
            problem = check_pack(repo, pack_id, indexed)
            if problem:
                report.problems.append(problem)
    info = repo.stanza(stanza)
    ids = chosen_backups(repo, stanza, backup_id, backup_ids)
    # Every backup's files are read back in one pool; a file stored identically in several
    # backups is read once and its result counts for each of them.
    backups: list[_BackupCheck] = []
    files: list[FileToCheck] = []
    first_seen: dict[tuple[str | None, ...], int] = {}
    for bid in ids:
        try:
            m = read_manifest(repo, stanza, bid)
        except PgkuraError as exc:
            backups.append(_BackupCheck(bid, 0, [exc.message]))
            continue
        backups.append(_plan_backup(repo, info, stanza, m, files, first_seen, pages))
    referenced = {b for f in files for b in f.blocks}
    for pack_id in index.unindexed:
        if any(b.hex() in referenced for b in index.blocks_of(pack_id)):
            report.problems.append(unindexed_problem(pack_id))
    # The archive is checked by this process while worker processes read the backups' files.
    wal = ArchiveCheck()
    archives = [info.archive(g) for g in info.generations] if info is not None else [stanza]
    gaps_from = gaps_matter_from(repo, stanza, info) if whole else {}
    meanwhile = (lambda: verify_archives(repo, archives, wal, jobs, gaps_from)) if whole else None
    results = check_files(BlockReader(index), files, jobs, meanwhile)
    for check in backups:
        problems = list(check.head)
        for n in check.files:
            problems += (f"backup {check.id}: {p}" for p in results[n].problems(files[n]))
        problems += check.recorded
        problems += check.tail
        report.problems += problems
        report.backups.append(BackupVerdict(check.id, check.count, not problems))
    report.wal_checked = wal.checked
    report.problems += wal.problems
    return report


def _plan_backup(
    repo: Repository,
    info: StanzaInfo | None,
    stanza: str,
    m: Manifest,
    files: list[FileToCheck],
    first_seen: dict[tuple[str | None, ...], int],
    pages: bool,
) -> _BackupCheck:
    """What to check of backup ``m``: its files, added to ``files`` (once each: a file
    stored identically by several backups is read once), and the WAL it needs."""
    check = _BackupCheck(m.id, len(m.files))
    archive, check.head = archive_of(info, stanza, m)
    start_lsn = parse_lsn(m.start_lsn) if m.start_lsn and m.method != "offline" else None
    for f in m.files:
        if f.type != "file":
            continue
        key = (f.path, f.crc32c, *f.blocks)
        if key not in first_seen:
            first_seen[key] = len(files)
            files.append(_to_check(m, f, start_lsn, pages))
        check.files.append(first_seen[key])
    if not pages:
        check.recorded += (
            f"backup {m.id}: {page_failures(f['path'], f['blocks'][:5], int(f['count']))}, "
            "found when the backup read them"
            for f in m.checksum_failures
        )
    check.tail += missing_wal(m, archive, repo.wal.exists)
    return check


@dataclass
class _BackupCheck:
    id: str
    count: int  # entries in its manifest
    head: list[str] = field(default_factory=list)  # problems found before its files are read
    files: list[int] = field(default_factory=list)  # its files, as numbers in the check list
    recorded: list[str] = field(default_factory=list)  # page failures its backup found
    tail: list[str] = field(default_factory=list)  # problems with the WAL it needs


def _to_check(m: Manifest, f: FileEntry, start_lsn: int | None, pages: bool) -> FileToCheck:
    relation = is_relation_file(f.path) if pages and m.data_checksums else None
    first_page = relation[1] * RELSEG_BLOCKS if relation is not None else None
    return FileToCheck(f.path, f.size, f.crc32c, f.blocks, first_page, start_lsn)
