"""Physical backups: the steps every method shares, around a method-specific file source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgkura.physical.source import SourceFile
from pgkura.physical.store import FileStorer, PageCheck, StoreResult
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.manifest import FileEntry, Manifest, list_backup_ids, read_manifest
from pgkura.repository.repo import Repository

if TYPE_CHECKING:
    from pgkura.physical.guided import Guide


def new_backup_id(started: datetime) -> str:
    return started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class PreviousFiles:
    files: dict[str, FileEntry]
    #: Files whose mtime is older than this were read after their last change by that backup.
    reuse_before: float | None
    #: the backup they are from (a summary-guided backup's base)
    base: Manifest | None = None


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
        return PreviousFiles(files, started.timestamp() - 1.0, manifest)
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
    guide: Guide | None = None,
) -> StoreResult:
    storer = FileStorer(
        index,
        jobs,
        page_check,
        progress,
        previous.files if previous else None,
        previous.reuse_before if previous else None,
        guide,
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


@dataclass(frozen=True)
class CatalogLine:
    """One backup's line in the catalog, as `info` and its ``--output json`` show it: what its
    manifest says, with its latest drill, its stanza generation and its pin."""

    id: str
    stanza: str
    kind: str
    method: str
    started: str
    finished: str
    size_bytes: int
    stored_bytes: int
    new_bytes: int
    pg_version: int
    timeline: int | None
    start_lsn: str | None
    stop_lsn: str | None
    start_wal: str | None
    stop_wal: str | None
    forced: bool
    checksum_failures: tuple[dict[str, Any], ...]
    #: ``{"when": ..., "passed": ...}`` of the latest drill, if any
    last_drill: dict[str, Any] | None = None
    generation: int | None = None
    #: ``{"pitr": ..., "since": ...}`` when the backup is pinned
    pinned: dict[str, Any] | None = None
    #: bytes an online backup read from the cluster (None: not recorded)
    read_bytes: int | None = None
    #: ``{"guided", "base", "fallback", "read_whole"}``: whether WAL summaries guided it
    summaries: dict[str, Any] | None = None

    @classmethod
    def of(cls, manifest: Manifest, **extra: Any) -> CatalogLine:
        m = manifest
        note = m.extra.get("summaries")
        summaries = None if not isinstance(note, dict) else {
            "guided": bool(note.get("guided")), "base": note.get("base"),
            "fallback": note.get("fallback"), "read_whole": len(note.get("read_whole") or ()),
        }  # fmt: skip
        read = m.extra.get("read_bytes")
        return cls(
            m.id, m.stanza, m.kind, m.method, m.started, m.finished, m.size_bytes,
            m.stored_bytes, m.new_bytes, m.pg_version, m.timeline, m.start_lsn, m.stop_lsn,
            m.start_wal, m.stop_wal, m.forced, tuple(m.checksum_failures), **extra,
            read_bytes=read if isinstance(read, int) else None, summaries=summaries,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["checksum_failures"] = list(self.checksum_failures)
        return out
