"""Expiry: the backups and dumps a retention policy no longer keeps, deleted by policy
(:func:`expire`) or by hand (:func:`delete_backup`), then the archived WAL no kept backup
needs, then gc, which gives the space back.

The caller holds the maintenance lock: backups, dumps, restores and the WAL archive go on
beside it. The policy engine is repository.retention, the WAL's needs wal.retention (per
generation and timeline, from the archived history files), gc repository.prune. A backup
still being written has no manifest yet, so it is never a candidate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgkura.errors import BackupNotFoundError, UsageError
from pgkura.repository.expiry import clear_pending, pending_generations, record_pending
from pgkura.repository.manifest import (
    Manifest,
    delete_manifest,
    list_backup_ids,
    listed_backups,
    read_manifest,
)
from pgkura.repository.manifest_heads import manifest_head, manifest_heads
from pgkura.repository.pins import pins
from pgkura.repository.prune import PruneReport, prune
from pgkura.repository.repo import Repository
from pgkura.repository.retention import Candidate, Decision, Policy, decide
from pgkura.wal.catalog import delete_archived, load_catalog, newest_archived_time
from pgkura.wal.retention import anchor_of, pitr_backup, seg_size_of, unneeded_wal


@dataclass
class ExpireReport:
    dry_run: bool
    policy: str
    decisions: list[Decision] = field(default_factory=list)
    wal_deleted: int = 0
    wal_bytes_deleted: int = 0
    notes: list[str] = field(default_factory=list)
    gc: PruneReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "policy": self.policy,
            "backups": [d.to_json() for d in self.decisions],
            "expired": [d.id for d in self.decisions if not d.keep],
            "wal_deleted": self.wal_deleted,
            "wal_bytes_deleted": self.wal_bytes_deleted,
            "notes": self.notes,
            "gc": None if self.gc is None else asdict(self.gc),
        }


def _time_of(m: Manifest) -> datetime:
    when = datetime.fromisoformat(m.started.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _manifests(repo: Repository, stanza: str) -> list[Manifest]:
    """The stanza's backups, oldest first, as their heads (manifests without their files:
    all that the policy and the WAL's needs are decided on; repository/manifest_heads.py).
    A damaged manifest stops expire with its error: its WAL needs are unknown."""
    return manifest_heads(repo, stanza, strict=True)[0]


def expire(
    repo: Repository, stanza: str, policy: Policy, max_unused: float, dry_run: bool
) -> ExpireReport:
    """Apply ``policy`` to the stanza's backups and dumps, then their WAL, then gc."""
    report = ExpireReport(dry_run, policy.describe())
    manifests = _manifests(repo, stanza)
    pinned = pins(repo, stanza)
    info = repo.stanza(stanza)
    current = info.system_identifier if info else None
    window_backup = None
    if policy.pitr_window is not None and info is not None:
        in_current = [m for m in manifests if m.system_identifier == current]
        catalog = load_catalog(repo, info.archive(info.current), seg_size_of(in_current))
        chosen, note = pitr_backup(in_current, newest_archived_time(catalog), policy.pitr_window)
        window_backup = chosen.id if chosen else None
        report.notes.append(f"pitr window {policy.describe_window()}: {note}")
    report.decisions = decide(
        [Candidate(m.id, m.kind, _time_of(m), m.id in pinned) for m in manifests],
        policy,
        window_backup,
    )
    gone = {d.id for d in report.decisions if not d.keep}
    generations = {m.system_identifier for m in manifests if m.id in gone}
    if policy.pitr_window is not None and current is not None:
        generations.add(current)  # the window decides what WAL goes, a backup gone or not
    kept = [m for m in manifests if m.id not in gone]
    reasons = {d.id: d.reasons for d in report.decisions}
    forward = {
        m.id
        for m in kept
        if set(reasons[m.id]) != {"pinned"} or pinned[m.id].pitr  # pinned alone: consistency
    }
    _remove(repo, stanza, sorted(gone), generations, kept, forward, report)
    report.gc = _gc(repo, max_unused, dry_run, {(stanza, i) for i in gone})
    return report


def _remove(
    repo: Repository,
    stanza: str,
    gone: list[str],
    generations: set[str],
    kept: list[Manifest],
    forward: set[str],
    report: ExpireReport,
) -> None:
    """Delete the manifests ``gone``, then the WAL of ``generations`` (system identifiers)
    that no kept backup needs."""
    generations = generations | pending_generations(repo, stanza)
    if not report.dry_run and generations:
        record_pending(repo, stanza, generations)
    if not report.dry_run:
        for backup_id in gone:
            delete_manifest(repo, stanza, backup_id)
    # A backup committed since the decisions were made keeps what it needs too.
    known = {m.id for m in kept} | set(gone)
    for backup_id, size in sorted(listed_backups(repo, stanza, prune_cache=False).items()):
        if backup_id not in known:
            kept = [*kept, manifest_head(repo, stanza, backup_id, size)]
            forward = forward | {backup_id}
    info = repo.stanza(stanza)
    for sysid in sorted(generations):
        gen = info.generation_of(sysid) if info else None
        if info is None or gen is None:
            continue
        of_gen = [m for m in kept if m.system_identifier == sysid]
        anchors = [a for m in of_gen if (a := anchor_of(m, m.id in forward)) is not None]
        if of_gen and not anchors:
            report.notes.append(
                f"generation {gen.number}: kept only offline backups and dumps, which need no "
                "WAL; its WAL is kept (nothing says which of it is unneeded)"
            )
            continue
        archive = info.archive(gen)
        unneeded = unneeded_wal(repo, archive, anchors, seg_size_of(of_gen))
        report.wal_deleted += len(unneeded)
        report.wal_bytes_deleted += sum(size for _name, size in unneeded)
        if not report.dry_run and unneeded:
            delete_archived(repo, archive, [name for name, _size in unneeded])
    if not report.dry_run and generations:
        clear_pending(repo, stanza)


def _gc(
    repo: Repository, max_unused: float, dry_run: bool, deleting: set[tuple[str, str]]
) -> PruneReport:
    """gc under the maintenance lock already held; a dry run counts the backups ``deleting``
    (stanza, id) as gone, as the real run would find them. gc reads the kept backups' blocks
    itself (repository/manifest_refs.py): expire's heads have no files to count them from."""
    gone = deleting if dry_run else None
    return prune(repo, max_unused=max_unused, dry_run=dry_run, gone=gone)


def existing_backup(repo: Repository, stanza: str, backup_id: str) -> Manifest:
    if backup_id not in list_backup_ids(repo, stanza):
        raise BackupNotFoundError(
            f"no backup {backup_id!r} in stanza {stanza!r}",
            hint="list the backups with: pgkura info",
        )
    return read_manifest(repo, stanza, backup_id)


def delete_backup(
    repo: Repository,
    stanza: str,
    backup_id: str,
    *,
    force: bool,
    max_unused: float,
    dry_run: bool,
) -> ExpireReport:
    """Delete one backup or dump by hand; the newest of its kind and a pinned one only with
    ``force``, the only one never."""
    victim = existing_backup(repo, stanza, backup_id)
    manifests = _manifests(repo, stanza)
    if len(manifests) == 1:
        raise UsageError(
            f"backup {backup_id} is the only backup of stanza {stanza!r}: deleting it "
            "would leave nothing to restore",
            hint="take another backup first, then delete this one",
        )
    newest = [m for m in manifests if m.kind == victim.kind][-1]
    pinned = pins(repo, stanza)
    if not force and newest.id == backup_id:
        kind = "backup" if victim.kind == "physical" else "dump"
        raise UsageError(
            f"backup {backup_id} is the newest {kind} of stanza {stanza!r}",
            hint=f"add --force to delete it anyway: pgkura delete {backup_id} --force",
        )
    if not force and backup_id in pinned:
        raise UsageError(
            f"backup {backup_id} is pinned",
            hint=f"unpin it first (pgkura unpin {backup_id}), or add --force",
        )
    report = ExpireReport(dry_run, f"delete {backup_id}")
    report.decisions = [
        Decision(m.id, m.kind, () if m.id == backup_id else ("not deleted",)) for m in manifests
    ]
    kept = [m for m in manifests if m.id != backup_id]
    forward = {m.id for m in kept if m.id not in pinned or pinned[m.id].pitr}
    _remove(repo, stanza, [backup_id], {victim.system_identifier}, kept, forward, report)
    report.gc = _gc(repo, max_unused, dry_run, {(stanza, backup_id)})
    return report
