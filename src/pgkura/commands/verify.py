"""`pgkura verify [ID]`: read back everything a backup needs and say what is wrong, where.

For each backup: the manifest unseals and belongs to the stanza's cluster; every block of every
file is present, its hash matches and it decompresses; each file's CRC-32C matches the
manifest; the WAL from the backup's start to its consistency point is archived and intact. Then
the archive as a whole: every archived segment and history file unseals, and gaps are named per
timeline.

Data page checksums: the backup checked every page as it read it and recorded the failures in
the manifest; those are reported, and every page checksum is computed again from the stored
blocks (``pages``, the default; ``--no-pages`` leaves that out: each block's keyed BLAKE3
already proves that its content is what the backup read, so the second computation finds the
same pages unless the backup's own check was wrong, at about the cost of decompressing and
hashing together). Either way, for an online backup a page whose LSN is at or past the
backup's start may be torn, and WAL replay rewrites it, so only older pages count.
(pgBackRest's verify checks no page checksums; its backup does, as pgkura's does.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import ObjectNotFound, PgkuraError
from pgkura.pg.relfile import RELSEG_BLOCKS, is_relation_file
from pgkura.physical.readback import FileToCheck, check_files, page_failures
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, BlockReader
from pgkura.repository.manifest import (
    FileEntry,
    Manifest,
    list_backup_ids,
    read_manifest,
    resolve_backup_id,
)
from pgkura.repository.sealed import SealError, unseal
from pgkura.wal.catalog import describe_runs, load_catalog
from pgkura.wal.names import DEFAULT_SEG_SIZE, parse_lsn, parse_wal_name, segments_between


@dataclass
class VerifyReport:
    backups: list[dict[str, Any]] = field(default_factory=list)
    wal_checked: int = 0
    problems: list[str] = field(default_factory=list)
    pages_recomputed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "backups": self.backups,
            "wal_files_checked": self.wal_checked,
            "pages_recomputed": self.pages_recomputed,
            "problems": self.problems,
            "ok": not self.problems,
        }


def run_verify(cfg: Config, backup_id: str | None, jobs: int, pages: bool = True) -> VerifyReport:
    """Check one backup (or all, and then the whole WAL archive); ``pages`` recomputes every
    data page checksum instead of reporting the failures each backup recorded."""
    from pgkura.repository.locks import shared_lock

    repo = open_repository(cfg)
    with shared_lock(repo):  # gc cannot delete what is being verified
        return _verify(cfg, repo, backup_id, jobs, pages)


def _verify(cfg: Config, repo: Any, backup_id: str | None, jobs: int, pages: bool) -> VerifyReport:
    stanza = cfg.stanza
    report = VerifyReport(pages_recomputed=pages)
    index = BlockIndex(repo).load()
    report.problems += index.damaged
    if backup_id is None:
        for pack_id in sorted(index.pack_ids):
            problem = _check_pack(repo, pack_id)
            if problem:
                report.problems.append(problem)
    info = repo.stanza(stanza)
    # An id that names no backup is a usage error (exit 3), not damage to report.
    ids = (
        [resolve_backup_id(repo, stanza, backup_id)] if backup_id else list_backup_ids(repo, stanza)
    )
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
        check = _BackupCheck(m.id, len(m.files))
        backups.append(check)
        generation = info.generation_of(m.system_identifier) if info is not None else None
        if info is not None and generation is None:
            check.head.append(
                f"backup {m.id}: its manifest belongs to system identifier "
                f"{m.system_identifier}, which is none of the stanza's ({info.describe()})"
            )
        archive = info.archive(generation) if info is not None and generation else stanza
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
        if m.kind == "physical" and m.method != "offline" and m.start_lsn and m.stop_lsn:
            seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
            start, stop = parse_lsn(m.start_lsn), parse_lsn(m.stop_lsn)
            for name in segments_between(m.timeline or 1, start, max(stop - 1, start), seg):
                if not repo.storage.exists(layout.wal_key(archive, name)):
                    check.tail.append(
                        f"backup {m.id}: WAL segment {name}, needed to make it consistent, "
                        "is missing from the archive"
                    )
    referenced = {b for f in files for b in f.blocks}
    for pack_id in index.unindexed:
        if any(b.hex() in referenced for b in index.blocks_of(pack_id)):
            report.problems.append(
                f"pack {layout.pack_key(pack_id)}: its index object {layout.index_key(pack_id)} "
                "is missing; the pack's own copy of the index was read instead (run pgkura "
                "repair index to write it back)"
            )
    # The archive is checked by this process while worker processes read the backups' files.
    wal = VerifyReport()
    archives = [info.archive(g) for g in info.generations] if info is not None else [stanza]
    gaps_from = _gaps_matter_from(repo, stanza, info) if backup_id is None else {}
    meanwhile = (
        None if backup_id else lambda: _verify_archives(repo, archives, wal, jobs, gaps_from)
    )
    results = check_files(BlockReader(index), files, jobs, meanwhile)
    for check in backups:
        problems = list(check.head)
        for n in check.files:
            problems += (f"backup {check.id}: {p}" for p in results[n].problems(files[n]))
        problems += check.recorded
        problems += check.tail
        report.problems += problems
        report.backups.append({"id": check.id, "files": check.count, "ok": not problems})
    report.wal_checked = wal.wal_checked
    report.problems += wal.problems
    return report


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


def _check_pack(repo: Any, pack_id: str) -> str | None:
    """A pack ends with a copy of its index and a trailer pointing at it; a pack that was
    truncated, extended or overwritten at the end no longer does."""
    from pgkura.repository.blocks import read_pack_index

    key = layout.pack_key(pack_id)
    size = repo.storage.size(key)
    if size is None:
        return f"pack {key} is missing"
    try:
        copy = read_pack_index(repo, pack_id)
    except KeyError:
        return f"pack {key} does not end with its trailer: it was truncated or extended"
    try:
        expected = repo.storage.get(layout.index_key(pack_id))
    except KeyError:
        return None  # no index object: BlockIndex.load read this copy, and verify reports it
    if copy != expected:
        return f"pack {key}: the index copy at its end differs from {layout.index_key(pack_id)}"
    return None


def _gaps_matter_from(repo: Any, stanza: str, info: Any) -> dict[str, int]:
    """Per archive, the first segment number from which a gap in the WAL is a problem: the
    start of the oldest online backup that keeps point-in-time recovery after it. Before it,
    gaps are what expire left on purpose: a backup pinned without --pitr keeps only the WAL
    that makes it consistent (docs/repository-format.md, "Retention")."""
    from pgkura.repository.pins import pins

    pinned = pins(repo, stanza)
    out: dict[str, int] = {}
    for bid in list_backup_ids(repo, stanza):
        try:
            m = read_manifest(repo, stanza, bid)
        except PgkuraError:
            continue
        if m.kind != "physical" or m.method == "offline" or not m.start_lsn:
            continue
        if bid in pinned and not pinned[bid].pitr:
            continue
        gen = info.generation_of(m.system_identifier) if info is not None else None
        archive = info.archive(gen) if gen is not None else stanza
        seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
        segno = parse_lsn(m.start_lsn) // seg
        out[archive] = min(out.get(archive, segno), segno)
    return out


def _verify_archives(
    repo: Any, archives: list[str], report: VerifyReport, jobs: int, gaps_from: dict[str, int]
) -> None:
    """Every WAL archive of the stanza: one per generation."""
    for archive in archives:
        _verify_archive(repo, archive, report, jobs, len(archives) > 1, gaps_from.get(archive))


def _verify_archive(
    repo: Any,
    archive: str,
    report: VerifyReport,
    jobs: int,
    name_generation: bool,
    gaps_from: int | None = None,
) -> None:
    objects = list(repo.storage.list(layout.wal_prefix(archive)))
    where = f" ({layout.describe_archive(archive)})" if name_generation else ""

    def check(key: str) -> str | None:
        name = key.rsplit("/", 1)[-1]
        try:
            parse_wal_name(name)
        except ValueError:
            return None  # not a WAL file name: not ours to judge
        try:
            unseal(repo.storage.get(key), repo.key)
        except SealError as exc:
            return f"archived WAL file {name}{where} is damaged: {exc}"
        except ObjectNotFound:
            return f"archived WAL file {name}{where} vanished while it was verified"
        return None

    # This runs beside the read-back of the blocks, whose requests count against the store's
    # limit too: on a store that takes few, the read-back keeps one (it is serial there).
    workers = max(1, repo.storage.workers_for(jobs + 1) - 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="pgkura-verify-wal") as pool:
        for problem in pool.map(check, [o.key for o in objects]):
            report.wal_checked += 1
            if problem:
                report.problems.append(problem)
    catalog = load_catalog(repo, archive)
    for tl in describe_runs(catalog):
        if not tl["history_file"]:
            report.problems.append(
                f"timeline {tl['timeline']}{where}: its history file is missing from the archive"
            )
        for gap in tl["gaps"]:  # type: ignore[attr-defined]
            last = parse_wal_name(str(gap["last"])).segno
            if gaps_from is not None and last is not None and last < gaps_from:
                continue  # left by expire beside a pinned backup (_gaps_matter_from)
            report.problems.append(
                f"timeline {tl['timeline']}{where}: WAL segments {gap['first']} to "
                f"{gap['last']} are missing from the archive"
            )
