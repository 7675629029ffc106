"""What `pgkura verify` reports, and the checks its two engines share: physical/verify.py
(reading every block back) and physical/quick_verify.py (--quick: the stored bytes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pgkura.errors import PgkuraError
from pgkura.repository.manifest import (
    Manifest,
    list_backup_ids,
    read_manifest,
    resolve_backup_id,
)
from pgkura.repository.repo import Repository
from pgkura.repository.stanzas import StanzaInfo
from pgkura.wal.names import DEFAULT_SEG_SIZE, parse_lsn, segments_between


@dataclass(frozen=True)
class BackupVerdict:
    """What verify found of one backup: its id, how many files it checked, whether all held."""

    id: str
    files: int
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "files": self.files, "ok": self.ok}


@dataclass
class VerifyReport:
    backups: list[BackupVerdict] = field(default_factory=list)
    wal_checked: int = 0
    problems: list[str] = field(default_factory=list)
    pages_recomputed: bool = False
    #: --quick (physical/quick_verify.py): stored bytes checked, without decompressing
    quick: bool = False
    blocks_checked: int = 0
    #: of those, unsealed in full (packs written before stored digests were recorded)
    blocks_checked_in_full: int = 0
    #: and archived WAL files unsealed in full (unencrypted, archived before they recorded
    #: the digest of their stored bytes)
    wal_checked_in_full: int = 0
    stored_bytes_read: int = 0

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "pages" if self.pages_recomputed else "blocks"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backups": [b.to_json() for b in self.backups],
            "mode": self.mode,
            "wal_files_checked": self.wal_checked,
            "pages_recomputed": self.pages_recomputed,
        }
        if self.quick:
            out |= {
                "blocks_checked": self.blocks_checked,
                "blocks_checked_in_full": self.blocks_checked_in_full,
                "wal_files_checked_in_full": self.wal_checked_in_full,
                "stored_bytes_read": self.stored_bytes_read,
            }
        return out | {"problems": self.problems, "ok": not self.problems}


def chosen_backups(
    repo: Repository, stanza: str, backup_id: str | None, backup_ids: list[str] | None
) -> list[str]:
    """The ids of the backups to verify: those named, or every backup of ``stanza``. An id
    that names no backup is a usage error (exit 3), not damage to report."""
    if backup_ids is not None:
        return [resolve_backup_id(repo, stanza, i) for i in backup_ids]
    if backup_id:
        return [resolve_backup_id(repo, stanza, backup_id)]
    return list_backup_ids(repo, stanza)


def archive_of(info: StanzaInfo | None, stanza: str, m: Manifest) -> tuple[str, list[str]]:
    """The WAL archive of backup ``m``'s generation, and the problem when its manifest
    belongs to none of the stanza's clusters."""
    generation = info.generation_of(m.system_identifier) if info is not None else None
    if info is not None and generation is None:
        return stanza, [
            f"backup {m.id}: its manifest belongs to system identifier "
            f"{m.system_identifier}, which is none of the stanza's ({info.describe()})"
        ]
    return (info.archive(generation) if info is not None and generation else stanza), []


def missing_wal(m: Manifest, archive: str, exists: Callable[[str, str], bool]) -> list[str]:
    """The WAL segments online backup ``m`` needs to become consistent that ``archive``
    lacks (``exists(archive, name)`` says whether it holds one), as problems."""
    if m.kind != "physical" or m.method == "offline" or not m.start_lsn or not m.stop_lsn:
        return []
    seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
    start, stop = parse_lsn(m.start_lsn), parse_lsn(m.stop_lsn)
    return [
        f"backup {m.id}: WAL segment {name}, needed to make it consistent, is missing from "
        "the archive"
        for name in segments_between(m.timeline or 1, start, max(stop - 1, start), seg)
        if not exists(archive, name)
    ]


def gaps_matter_from(
    repo: Repository,
    stanza: str,
    info: StanzaInfo | None,
    manifests: list[Manifest] | None = None,
) -> dict[str, int]:
    """Per archive, the first segment number from which a gap in the WAL is a problem: the
    start of the oldest online backup that keeps point-in-time recovery after it. Before it,
    gaps are what expire left on purpose: a backup pinned without --pitr keeps only the WAL
    that makes it consistent (docs/repository-format.md, "Retention"). ``manifests``: every
    backup's of the stanza, read already (None: read here)."""
    from pgkura.repository.pins import pins

    pinned = pins(repo, stanza)
    out: dict[str, int] = {}
    for m in _all_manifests(repo, stanza) if manifests is None else manifests:
        bid = m.id
        if m.kind != "physical" or m.method == "offline" or not m.start_lsn:
            continue
        if bid in pinned and not pinned[bid].pitr:
            continue
        gen = info.generation_of(m.system_identifier) if info is not None else None
        archive = info.archive(gen) if info is not None and gen is not None else stanza
        seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
        segno = parse_lsn(m.start_lsn) // seg
        out[archive] = min(out.get(archive, segno), segno)
    return out


def _all_manifests(repo: Repository, stanza: str) -> Iterator[Manifest]:
    for bid in list_backup_ids(repo, stanza):
        try:
            yield read_manifest(repo, stanza, bid)
        except PgkuraError:
            continue
