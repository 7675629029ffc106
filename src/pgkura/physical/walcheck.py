"""Before a restore writes anything: can recovery really get as far as it is asked to?

PostgreSQL takes a restore_command that fails for a segment as the end of the archive: it
ends recovery there and promotes (src/backend/access/transam/xlogarchive.c), so a missing
segment in the middle of the archive, or a damaged one, silently gives a cluster with less
than was committed. Here the segments recovery will read are listed (following the timeline
history as PostgreSQL does) and read back; a hole or a damaged segment before the target is a
refusal that names it, says the last point that can be recovered, and how to restore to it.

Recovery reads a little past its target (records are decoded ahead of replay), so a problem
right after the target's segment matters too: when pg_waldump shows that the target is
reached before it, the restore goes on and its restore_command is told not to serve anything
past the target's segment (``stop_after``), so the read-ahead finds "not in the archive"
instead of the damage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgkura.errors import CorruptionError, IncompleteArchiveError, PgkuraError
from pgkura.physical.choose import Choice, consistency_lsn, target_history
from pgkura.physical.recovery import RecoveryTarget
from pgkura.repository.manifest import Manifest
from pgkura.repository.repo import Repository
from pgkura.wal.catalog import load_catalog
from pgkura.wal.continuity import Record, complete_records, first_damaged
from pgkura.wal.names import DEFAULT_SEG_SIZE, format_lsn, parse_lsn, segment_name_of_segno


@dataclass(frozen=True)
class WalCheck:
    """What the check found: ``stop_after`` is the last segment recovery may be given, when
    the archive has a problem just past the target (None: serve everything)."""

    stop_after: str | None = None
    segments_read: int = 0


@dataclass(frozen=True)
class _Problem:
    segno: int
    name: str
    what: str  # "is missing from the archive (archived WAL continues at X)", "is damaged: ..."
    missing: bool = False  # absent (an incomplete archive), not damaged (corruption)


def check_replay(
    repo: Repository,
    choice: Choice,
    target: RecoveryTarget,
    bin_dir: Path | None,
    jobs: int,
) -> WalCheck:
    """Refuse when recovery from the chosen backup cannot reach ``target`` because of a hole
    (IncompleteArchiveError) or a damaged segment (CorruptionError); otherwise say how far
    restore_command may serve."""
    m = choice.manifest
    if m.kind != "physical" or m.method == "offline" or m.start_lsn is None:
        return WalCheck()
    seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
    archive = choice.archive
    catalog = load_catalog(repo, archive, seg)
    history = target_history(repo, archive, target, m, catalog)
    read = catalog.replay_segments(history, parse_lsn(m.start_lsn))
    names = [segment_name_of_segno(tli, n, seg) for tli, n in read]
    need = _needed_segno(m, target, choice.target_lsn, seg)
    # One segment past the target's: its last record may continue there, and read-ahead
    # asks for it.
    upto = len(read) if need is None else sum(1 for _, n in read if n <= need + 1)
    problem = None
    found = first_damaged(repo, archive, names[:upto], jobs)
    if found is not None:
        problem = _Problem(read[found[0]][1], names[found[0]], f"is damaged ({found[1]})")
    if problem is None and read and (need is None or read[-1][1] <= need):
        # Replay runs out of archived WAL before the target's next segment: the end of the
        # archive, or a hole if it continues further on.
        after = catalog.continues_after(history, read[-1][1])
        if after is not None:
            missing = read[-1][1] + 1
            tli = max(s.timeline for s in history.spans() if s.begin // seg <= missing)
            problem = _hole(missing, after, seg, tli)
    if problem is None:
        return WalCheck(segments_read=upto)
    before = [n for (_, segno), n in zip(read, names, strict=True) if segno < problem.segno]
    records = complete_records(repo, archive, before[-2:], bin_dir) if before and bin_dir else None
    if _reached_before(m, target, choice.target_lsn, problem, records, need, seg):
        return WalCheck(stop_after=before[-1], segments_read=upto)
    raise _refusal(m, target, problem, records, seg)


def _needed_segno(m: Manifest, target: RecoveryTarget, located: int | None, seg: int) -> int | None:
    """The last segment the target needs, when an LSN tells it (None: to the end)."""
    if target.kind == "immediate":
        return (consistency_lsn(m) - 1) // seg
    if target.kind == "lsn" and target.value is not None:
        return max(parse_lsn(target.value), consistency_lsn(m) - 1) // seg
    if target.kind in ("xid", "name") and located is not None:
        return max(located, consistency_lsn(m) - 1) // seg
    return None  # the end of the archive; a time target is judged by its records


def _hole(segno: int, after: tuple[int, int], seg: int, tli: int) -> _Problem:
    name = segment_name_of_segno(tli, segno, seg)
    resumes = segment_name_of_segno(after[0], after[1], seg)
    return _Problem(
        segno,
        name,
        f"is missing from the archive, which continues at {resumes} after it",
        missing=True,
    )


def _reached_before(
    m: Manifest,
    target: RecoveryTarget,
    located: int | None,
    problem: _Problem,
    records: list[Record] | None,
    need: int | None,
    seg: int,
) -> bool:
    """Whether recovery stops at its target before it needs the problem segment."""
    if records is None or target.kind == "none":
        return False
    if problem.segno <= (consistency_lsn(m) - 1) // seg:
        return False  # the backup itself needs it to become consistent
    if target.kind == "immediate":
        return need is not None and problem.segno > need
    if target.kind in ("lsn", "xid", "name"):
        wanted = parse_lsn(target.value) if target.kind == "lsn" and target.value else located
        # Recovery stops at the first record at or past the target: it must be complete.
        return wanted is not None and any(r.lsn >= wanted for r in records)
    if target.kind == "time" and target.value is not None:
        when = datetime.fromisoformat(target.value)
        # It stops at the first transaction record past the target time.
        return any(
            r.time is not None and (r.time > when or (not target.inclusive and r.time == when))
            for r in records
        )
    return False


def _refusal(
    m: Manifest,
    target: RecoveryTarget,
    problem: _Problem,
    records: list[Record] | None,
    seg: int,
) -> PgkuraError:
    last = max((r.lsn for r in records), default=None) if records else None
    consistent = consistency_lsn(m)
    if last is not None and last >= consistent:
        point = f"the last point that can be recovered is LSN {format_lsn(last)}"
        hint = (
            f"restore to that point with --to-lsn {format_lsn(last)} (add --backup {m.id}), "
            f"or put an intact copy of {problem.name} back into the archive (archive-push it "
            "from the server's pg_wal if it is still there)"
        )
    elif problem.segno <= (consistent - 1) // seg:
        point = f"backup {m.id} cannot even become consistent"
        hint = "restore an older backup, or put an intact copy of the segment back"
    else:
        start = format_lsn(problem.segno * seg)
        point = f"recovery cannot get past {start}"
        hint = (
            f"restore to a target before {start} (--to-lsn), or put an intact copy of "
            f"{problem.name} back into the archive"
        )
    error = IncompleteArchiveError if problem.missing else CorruptionError
    return error(
        f"recovery of backup {m.id} to {target.describe()} cannot be proven complete: WAL "
        f"segment {problem.name} {problem.what}; PostgreSQL would end recovery there as if "
        f"the archive ended, losing what was committed after; {point}; nothing was written",
        hint=hint,
    )
