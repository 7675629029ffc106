"""Physical backups: the steps every method shares, around a method-specific file source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgkura.physical.source import SourceFile
from pgkura.physical.store import FileStorer, PageCheck, StoreResult
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.manifest import FileEntry, Manifest, list_backup_ids, read_manifest
from pgkura.repository.repo import Repository


def new_backup_id(started: datetime) -> str:
    return started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class PreviousFiles:
    files: dict[str, FileEntry]
    #: Files whose mtime is older than this were read after their last change by that backup.
    reuse_before: float | None


def previous_files(repo: Repository, stanza: str, system_identifier: str) -> PreviousFiles:
    """The newest physical backup's files, to skip re-reading files that did not change."""
    for backup_id in reversed(list_backup_ids(repo, stanza)):
        manifest = read_manifest(repo, stanza, backup_id)
        if manifest.kind != "physical" or manifest.system_identifier != system_identifier:
            continue
        started = datetime.fromisoformat(manifest.started.replace("Z", "+00:00"))
        files = {f.path: f for f in manifest.files if f.type == "file"}
        # One second of margin: a write in the same second as the read keeps the same mtime
        # on file systems with coarse timestamps.
        return PreviousFiles(files, started.timestamp() - 1.0)
    return PreviousFiles({}, None)


def store_files(
    repo: Repository,
    index: BlockIndex,
    sources: Iterable[SourceFile],
    *,
    jobs: int,
    page_check: PageCheck,
    progress: Progress | None,
    previous: PreviousFiles | None,
) -> StoreResult:
    storer = FileStorer(
        index,
        jobs,
        page_check,
        progress,
        previous.files if previous else None,
        previous.reuse_before if previous else None,
    )
    return storer.store(sources)


def stored_bytes(index: BlockIndex, files: Iterable[FileEntry]) -> int:
    """Sealed size of the distinct blocks the backup references."""
    seen: set[str] = set()
    total = 0
    for f in files:
        for b in f.blocks:
            if b not in seen:
                seen.add(b)
                loc = index.get(bytes.fromhex(b))
                total += loc.length if loc else 0
    return total


def summary(manifest: Manifest) -> dict[str, Any]:
    """The catalog line of a backup, as `info` and `--output json` show it."""
    return {
        "id": manifest.id,
        "stanza": manifest.stanza,
        "kind": manifest.kind,
        "method": manifest.method,
        "started": manifest.started,
        "finished": manifest.finished,
        "size_bytes": manifest.size_bytes,
        "stored_bytes": manifest.stored_bytes,
        "new_bytes": manifest.new_bytes,
        "pg_version": manifest.pg_version,
        "timeline": manifest.timeline,
        "start_lsn": manifest.start_lsn,
        "stop_lsn": manifest.stop_lsn,
        "start_wal": manifest.start_wal,
        "stop_wal": manifest.stop_wal,
        "forced": manifest.forced,
        "checksum_failures": list(manifest.checksum_failures),
    }
