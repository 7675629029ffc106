"""`pgkura verify [ID]`: read back everything a backup needs and say what is wrong, where.

For each backup: the manifest unseals and belongs to the stanza's cluster; every block of every
file is present, its hash matches and it decompresses; each file's CRC-32C matches the
manifest; data page checksums hold (for an online backup, a page whose LSN is at or past the
backup's start may be torn, and WAL replay rewrites it, so only older pages count); the WAL from
the backup's start to its consistency point is archived and intact. Then the archive as a
whole: every archived segment and history file unseals, and gaps are named per timeline.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import google_crc32c

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import PgkuraError
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, BlockReader
from pgkura.repository.manifest import FileEntry, Manifest, list_backup_ids, read_manifest
from pgkura.repository.sealed import SealError, unseal
from pgkura.wal.catalog import describe_runs, load_catalog
from pgkura.wal.names import DEFAULT_SEG_SIZE, parse_lsn, parse_wal_name, segments_between

BATCH_BLOCKS = 16


@dataclass
class VerifyReport:
    backups: list[dict[str, Any]] = field(default_factory=list)
    wal_checked: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backups": self.backups,
            "wal_files_checked": self.wal_checked,
            "problems": self.problems,
            "ok": not self.problems,
        }


def _check_file(
    reader: BlockReader, m: Manifest, entry: FileEntry, start_lsn: int | None
) -> list[str]:
    from pgkura.pg import checksum as pagecheck

    where = f"backup {m.id}: {entry.path}"
    relation = pagecheck.is_relation_file(entry.path) if m.data_checksums else None
    crc = 0
    size = 0
    bad: list[int] = []
    try:
        for i in range(0, len(entry.blocks), BATCH_BLOCKS):
            ids = [bytes.fromhex(b) for b in entry.blocks[i : i + BATCH_BLOCKS]]
            pieces = reader.read_many(ids, entry.path)
            # Page checksums over the whole batch at once: numpy's per-call cost dominates on
            # single 64 KiB blocks.
            batch = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if relation is not None and len(batch) % pagecheck.BLCKSZ == 0:
                first = relation[1] * pagecheck.RELSEG_BLOCKS + size // pagecheck.BLCKSZ
                for failure in pagecheck.verify_pages(batch, first):
                    if start_lsn is None or failure.lsn < start_lsn:
                        bad.append(failure.blkno)
            crc = google_crc32c.extend(crc, batch)
            size += len(batch)
    except PgkuraError as exc:
        return [f"{where}: {exc.message}"]
    problems = []
    if size != entry.size:
        problems.append(f"{where}: {size} bytes read back, the manifest says {entry.size}")
    elif entry.crc32c is not None and f"{crc:08x}" != entry.crc32c:
        problems.append(f"{where}: CRC-32C {crc:08x} does not match the manifest's {entry.crc32c}")
    if bad:
        shown = ", ".join(str(b) for b in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        problems.append(f"{where}: data page checksum failures in block(s) {shown}{more}")
    return problems


def run_verify(cfg: Config, backup_id: str | None, jobs: int) -> VerifyReport:
    from pgkura.repository.locks import shared_lock

    repo = open_repository(cfg)
    with shared_lock(repo):  # gc cannot delete what is being verified
        return _verify(cfg, repo, backup_id, jobs)


def _verify(cfg: Config, repo: Any, backup_id: str | None, jobs: int) -> VerifyReport:
    stanza = cfg.stanza
    report = VerifyReport()
    index = BlockIndex(repo).load()
    report.problems += index.damaged
    if backup_id is None:
        for pack_id in sorted(index.pack_ids):
            problem = _check_pack(repo, pack_id)
            if problem:
                report.problems.append(problem)
    reader = BlockReader(index)
    info = repo.stanza(stanza)
    ids = [backup_id] if backup_id else list_backup_ids(repo, stanza)
    verified: set[tuple[str | None, ...]] = set()
    catalog = None
    for bid in ids:
        try:
            m = read_manifest(repo, stanza, bid)
        except PgkuraError as exc:
            report.problems.append(exc.message)
            report.backups.append({"id": bid, "ok": False})
            continue
        before = len(report.problems)
        if info is not None and m.system_identifier != info.system_identifier:
            report.problems.append(
                f"backup {m.id}: its manifest belongs to system identifier "
                f"{m.system_identifier}, not the stanza's {info.system_identifier}"
            )
        start_lsn = parse_lsn(m.start_lsn) if m.start_lsn and m.method != "offline" else None
        files = [
            f for f in m.files if f.type == "file" and (f.path, f.crc32c, *f.blocks) not in verified
        ]
        with ThreadPoolExecutor(jobs, thread_name_prefix="pgkura-verify") as pool:
            checks = [pool.submit(_check_file, reader, m, f, start_lsn) for f in files]
            for problems in (c.result() for c in checks):
                report.problems += problems
        verified.update((f.path, f.crc32c, *f.blocks) for f in files)
        if m.kind == "physical" and m.method != "offline" and m.start_lsn and m.stop_lsn:
            seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
            if catalog is None:
                catalog = load_catalog(repo, stanza, seg)
            start, stop = parse_lsn(m.start_lsn), parse_lsn(m.stop_lsn)
            for name in segments_between(m.timeline or 1, start, max(stop - 1, start), seg):
                if not repo.storage.exists(layout.wal_key(stanza, name)):
                    report.problems.append(
                        f"backup {m.id}: WAL segment {name}, needed to make it consistent, "
                        "is missing from the archive"
                    )
        report.backups.append(
            {"id": m.id, "files": len(m.files), "ok": len(report.problems) == before}
        )
    if backup_id is None:
        _verify_archive(repo, stanza, report, jobs)
    return report


def _check_pack(repo: Any, pack_id: str) -> str | None:
    """A pack ends with a copy of its index and a trailer pointing at it; a pack that was
    truncated, extended or overwritten at the end no longer does."""
    from pgkura.repository.blocks import PACK_TRAILER, PACK_TRAILER_MAGIC

    key = layout.pack_key(pack_id)
    size = repo.storage.size(key)
    if size is None:
        return f"pack {key} is missing"
    if size < PACK_TRAILER.size:
        return f"pack {key} is truncated ({size} bytes)"
    offset, magic = PACK_TRAILER.unpack(
        repo.storage.get(key, size - PACK_TRAILER.size, PACK_TRAILER.size)
    )
    if magic != PACK_TRAILER_MAGIC or not 0 <= offset <= size - PACK_TRAILER.size:
        return f"pack {key} does not end with its trailer: it was truncated or extended"
    try:
        expected = repo.storage.get(layout.index_key(pack_id))
    except KeyError:
        return None  # the index object is checked by BlockIndex.load
    if repo.storage.get(key, offset, size - PACK_TRAILER.size - offset) != expected:
        return f"pack {key}: the index copy at its end differs from {layout.index_key(pack_id)}"
    return None


def _verify_archive(repo: Any, stanza: str, report: VerifyReport, jobs: int) -> None:
    objects = list(repo.storage.list(layout.wal_prefix(stanza)))

    def check(key: str) -> str | None:
        name = key.rsplit("/", 1)[-1]
        try:
            parse_wal_name(name)
        except ValueError:
            return None  # not a WAL file name: not ours to judge
        try:
            unseal(repo.storage.get(key), repo.key)
        except SealError as exc:
            return f"archived WAL file {name} is damaged: {exc}"
        except KeyError:
            return f"archived WAL file {name} vanished while it was verified"
        return None

    with ThreadPoolExecutor(jobs, thread_name_prefix="pgkura-verify-wal") as pool:
        for problem in pool.map(check, [o.key for o in objects]):
            report.wal_checked += 1
            if problem:
                report.problems.append(problem)
    catalog = load_catalog(repo, stanza)
    for tl in describe_runs(catalog):
        if not tl["history_file"]:
            report.problems.append(
                f"timeline {tl['timeline']}: its history file is missing from the archive"
            )
        for gap in tl["gaps"]:  # type: ignore[attr-defined]
            report.problems.append(
                f"timeline {tl['timeline']}: WAL segments {gap['first']} to {gap['last']} "
                "are missing from the archive"
            )
