"""Which backup a restore starts from, and whether its target can be reached at all.

Everything here is decided before anything is written: a target before the oldest backup's
consistency point, or past the end of the archived WAL, is refused with the recoverable
window in the message, instead of a cluster that fails to start.

A stanza that was upgraded (``pgkura stanza upgrade``) has several generations, each its own
cluster with its own WAL archive. A restore works within one: the chosen backup's, whose WAL
alone is replayed. A time target picks the newest backup of any generation that was
consistent before it; other targets (and none) the newest backup's generation, unless
``--backup`` names another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgkura.errors import BackupNotFoundError, IncompleteArchiveError, UsageError
from pgkura.pg.versions import capabilities
from pgkura.physical.recovery import RecoveryTarget
from pgkura.repository.manifest import Manifest, list_backup_ids, read_manifest, resolve_backup_id
from pgkura.repository.repo import Repository
from pgkura.wal.catalog import ArchiveCatalog, load_catalog, timeline_history
from pgkura.wal.history import TimelineHistory
from pgkura.wal.names import DEFAULT_SEG_SIZE, format_lsn, parse_lsn, segment_name_of_segno


@dataclass(frozen=True)
class Choice:
    manifest: Manifest
    note: str | None  # what was picked and why, when pgkura picked it
    archive: str  # the WAL archive of the backup's generation (layout.wal_archive)
    #: where an --to-xid or --to-name target is in the archived WAL, when it was looked up
    target_lsn: int | None = None


def consistency_lsn(m: Manifest) -> int:
    return parse_lsn(m.stop_lsn) if m.stop_lsn else 0


def consistency_time(m: Manifest) -> datetime:
    """When the backup became consistent: pg_backup_stop's time on the server's clock
    (older manifests: when the backup finished, a little later)."""
    text = str(m.extra.get("stop_time") or m.finished)
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _seg_size(m: Manifest) -> int:
    return int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))


def _time_of(target: RecoveryTarget) -> datetime:
    assert target.value is not None
    return datetime.fromisoformat(target.value)


def physical_backups(repo: Repository, stanza: str) -> list[Manifest]:
    """Physical backups, oldest first."""
    out = []
    for backup_id in list_backup_ids(repo, stanza):
        m = read_manifest(repo, stanza, backup_id)
        if m.kind == "physical":
            out.append(m)
    return out


def _window(backups: list[Manifest], end_lsn: int, end_time: float | None) -> str:
    recoverable = [b for b in backups if b.method != "offline"]
    if not recoverable:
        return "there is no online backup, so no point in time can be recovered"
    first = recoverable[0]
    until = f"LSN {format_lsn(end_lsn)}"
    if end_time is not None:
        until += f", archived {datetime.fromtimestamp(end_time, UTC).isoformat(sep=' ')}"
    return (
        f"the recoverable window is from {consistency_time(first).isoformat(sep=' ')} "
        f"(LSN {first.stop_lsn}, backup {first.id}) to the end of the archived WAL ({until})"
    )


def target_history(
    repo: Repository, archive: str, target: RecoveryTarget, m: Manifest, catalog: ArchiveCatalog
) -> TimelineHistory:
    """The history recovery from ``m`` follows for ``target``'s --target-timeline."""
    if target.timeline == "current":
        tli = m.timeline or 1
    elif target.timeline == "latest":
        tli = max(catalog.latest_timeline(), m.timeline or 1)
    else:
        tli = int(target.timeline)
    history = timeline_history(repo, archive, tli)
    if (m.timeline or 1) not in history.timelines():
        raise UsageError(
            f"backup {m.id} is on timeline {m.timeline}, which is not in the history of "
            f"timeline {tli} ({' -> '.join(str(t) for t in history.timelines())})",
            hint="choose a backup taken on that history, or another --target-timeline",
        )
    return history


def _locate(
    repo: Repository,
    archive: str,
    target: RecoveryTarget,
    online: list[Manifest],
    catalog: ArchiveCatalog,
    bin_dir: Path,
) -> int:
    """Where a restore point or a transaction's end is in the archived WAL; refuse when the
    archive does not have it (PostgreSQL would replay everything, then refuse to start)."""
    from pgkura.wal.scan import find_target_lsn

    assert target.value is not None
    history = target_history(repo, archive, target, online[-1], catalog)
    first = online[0]
    start = parse_lsn(first.start_lsn) if first.start_lsn else consistency_lsn(first)
    lsn = find_target_lsn(
        repo, archive, catalog, history, start, target.kind, target.value, bin_dir
    )
    if lsn is not None:
        return lsn
    end_lsn, _end_time = catalog.replay_end(history, start)
    what = (
        f"restore point {target.value!r} was never created"
        if target.kind == "name"
        else f"transaction {target.value} never committed or aborted"
    )
    raise UsageError(
        f"{what} in the archived WAL from {format_lsn(start)} (backup {first.id}) to "
        f"{format_lsn(end_lsn)} on timeline {history.timeline}; recovery would end before "
        "reaching it",
        hint="check the name or xid (restore points come from pg_create_restore_point), "
        "or wait until the WAL that holds it is archived",
    )


def choose_backup(
    repo: Repository,
    stanza: str,
    target: RecoveryTarget,
    requested: str | None,
    pg_bin_for: Callable[[int], Path] | None = None,
) -> Choice:
    """The backup to restore for ``target`` (``requested`` if given), checked to reach it;
    ``pg_bin_for(major)`` gives the programs that read the archived WAL (pg_waldump), for xid
    and name targets. Refuses a backup of a PostgreSQL major pgkura does not support."""
    choice = _choose(repo, stanza, target, requested, pg_bin_for)
    m = choice.manifest
    capabilities(m.pg_version, f"backup {m.id}")
    return choice


def _choose(
    repo: Repository,
    stanza: str,
    target: RecoveryTarget,
    requested: str | None,
    pg_bin_for: Callable[[int], Path] | None,
) -> Choice:
    def archive_of(m: Manifest) -> str:
        return repo.wal_archive(stanza, m.system_identifier)

    def to_the_end(m: Manifest) -> Choice:
        """Replay to the end of the archive: the target timeline's history must be there."""
        archive = archive_of(m) if m.kind == "physical" else stanza
        if m.kind == "physical" and m.method != "offline":
            catalog = load_catalog(repo, archive, _seg_size(m))
            history = target_history(repo, archive, target, m, catalog)
            if target.timeline == "latest" and not target.timeline_given:
                left_out = left_out_wal(history, catalog, m.timeline or 1)
                if left_out is not None:
                    raise left_out
        return Choice(m, None, archive)

    if target.kind == "none" and requested not in (None, "latest"):
        return to_the_end(read_manifest(repo, stanza, resolve_backup_id(repo, stanza, requested)))
    if requested is not None:
        manifest = read_manifest(repo, stanza, resolve_backup_id(repo, stanza, requested))
        if manifest.kind != "physical" or target.kind == "none":
            return to_the_end(manifest)
        backups = [manifest]
    else:
        backups = physical_backups(repo, stanza)
        if not backups:
            raise BackupNotFoundError(
                f"stanza {stanza!r} has no physical backup",
                hint="take one with pgkura backup",
            )
        if target.kind == "none":
            return to_the_end(backups[-1])
    # One generation only: the newest backup's, or for a time, the newest one before it.
    pivot = backups[-1]
    if target.kind == "time":
        before = [b for b in backups if b.method != "offline" and _consistent_before(b, target)]
        pivot = before[-1] if before else pivot
    backups = [b for b in backups if b.system_identifier == pivot.system_identifier]
    return _choose_in_generation(
        repo, stanza, archive_of(pivot), target, requested, backups, pg_bin_for
    )


def _choose_in_generation(
    repo: Repository,
    stanza: str,
    archive: str,
    target: RecoveryTarget,
    requested: str | None,
    backups: list[Manifest],
    pg_bin_for: Callable[[int], Path] | None,
) -> Choice:
    """The backup for ``target`` among ``backups``, all of the generation whose WAL archive
    is ``archive``."""
    sysid = backups[-1].system_identifier

    def generation_backups() -> list[Manifest]:
        """The physical backups of the chosen generation, for the recoverable window."""
        return [b for b in physical_backups(repo, stanza) if b.system_identifier == sysid]

    online = [b for b in backups if b.method != "offline"]
    if not online:
        return Choice(backups[-1], None, archive)  # run_restore refuses targets on offline ones
    catalog = load_catalog(repo, archive, _seg_size(online[-1]))

    target_lsn: int | None = None
    if target.kind in ("xid", "name") and pg_bin_for is not None:
        bin_dir = pg_bin_for(online[-1].pg_version)
        target_lsn = _locate(repo, archive, target, online, catalog, bin_dir)

    def reaches(m: Manifest) -> bool:
        if target_lsn is not None:
            return consistency_lsn(m) <= target_lsn
        if target.kind == "time":
            return _consistent_before(m, target)
        if target.kind == "lsn":
            assert target.value is not None
            return consistency_lsn(m) <= parse_lsn(target.value)
        return True  # immediate, xid, name: the newest backup is the natural start

    fitting = [b for b in online if reaches(b)]
    newest = online[-1]
    if not fitting:
        history = target_history(repo, archive, target, newest, catalog)
        end_lsn, end_time = catalog.replay_end(history, consistency_lsn(online[0]))
        which = f"backup {requested}" if requested else "no backup"
        raise UsageError(
            f"{which} can reach {target.describe()}: it lies before "
            f"{'its' if requested else 'the oldest backup'}'s consistency point; "
            + _window(generation_backups(), end_lsn, end_time),
            hint="choose a target inside the window (or an older backup with --backup)",
        )
    chosen = fitting[-1]
    _check_reachable(repo, archive, target, chosen, catalog, generation_backups)
    note = None
    if requested is None:
        why = {
            "time": "the newest that was consistent before the target time",
            "lsn": "the newest that was consistent before the target LSN",
            "xid": "the newest that was consistent before the transaction ended",
            "name": "the newest that was consistent before the restore point",
        }.get(target.kind, "the newest")
        note = (
            f"picked backup {chosen.id} (consistent at {chosen.stop_lsn}, "
            f"{consistency_time(chosen).isoformat(sep=' ')}), {why}"
        )
    return Choice(chosen, note, archive, target_lsn)


def _check_reachable(
    repo: Repository,
    archive: str,
    target: RecoveryTarget,
    chosen: Manifest,
    catalog: ArchiveCatalog,
    generation_backups: Callable[[], list[Manifest]],
) -> None:
    """Refuse when the archived WAL cannot make ``chosen`` consistent or ends before the
    target."""
    history = target_history(repo, archive, target, chosen, catalog)
    start = parse_lsn(chosen.start_lsn) if chosen.start_lsn else consistency_lsn(chosen)
    end_lsn, end_time = catalog.replay_end(history, start)
    if end_lsn < consistency_lsn(chosen):
        missing = segment_name_of_segno(
            history.timelines()[-1], end_lsn // catalog.seg_size, catalog.seg_size
        )
        raise IncompleteArchiveError(
            f"backup {chosen.id} cannot become consistent: WAL segment {missing} (or its "
            "timeline's copy) is not in the archive",
            hint="restore another backup, or push the segment from pg_wal with archive-push",
        )
    past_end = False
    if target.kind == "lsn":
        assert target.value is not None
        past_end = parse_lsn(target.value) > end_lsn
    elif target.kind == "time" and end_time is not None:
        # On S3 the time is truncated to the second: a target just before the last switch
        # may look later than the archiving of its segment.
        past_end = _time_of(target).timestamp() > end_time + catalog.time_resolution
    if past_end:
        raise UsageError(
            f"{target.describe()} is past the end of the archived WAL; "
            + _window(generation_backups(), end_lsn, end_time),
            hint="wait until the WAL is archived (SELECT pg_switch_wal() on the server "
            "forces it), or choose an earlier target",
        )


def left_out_wal(
    history: TimelineHistory, catalog: ArchiveCatalog, start: int
) -> UsageError | None:
    """The refusal of a restore to the end of the newest timeline (raised by restore, shown
    as a warning by `pgkura info`) when the backup's timeline
    ``start``, or one after it on the newest's history, went on archiving WAL past the point
    where the next one branched off it, after that one began.

    Recovery follows the highest timeline by default. A test restore left archiving into the
    stanza (or a promoted standby that the old primary outlived) makes a timeline that
    branches off an older one, which then goes on committing: following the newest would
    leave those commits out, with nothing said, a restore with less data than was committed.
    A segment of the older timeline that begins past the last byte before the branch point
    holds only what it wrote after that point (the segment holding the branch point may
    hold only the WAL the two share, and is not judged). Archived *before* the newer
    timeline's history file, such segments are what a point-in-time recovery went back
    from (an accident undone): recovery along the newer timeline is what was meant, and
    passes. Where the store records no time for the history file, nothing is judged.
    Timelines before the backup's are not judged: no restore of this backup follows them;
    None when nothing is left out, or ``start`` is not on ``history``."""
    spans = history.spans()
    timelines = [s.timeline for s in spans]
    if start not in timelines:
        return None
    first = timelines.index(start)
    for span, branch in zip(spans[first:-1], spans[first + 1 :], strict=True):
        began = catalog.history_mtimes.get(branch.timeline)
        wal = catalog.timelines.get(span.timeline)
        if began is None or wal is None:
            continue
        assert span.end is not None  # every span but the last ends at a switch point
        shared = (span.end - 1) // catalog.seg_size  # the last segment the two may share
        after = [
            n
            for n in wal.segnos
            if n > shared and wal.mtimes.get(n, 0.0) > began + catalog.time_resolution
        ]
        if not after:
            continue
        last = segment_name_of_segno(span.timeline, max(after), catalog.seg_size)
        return UsageError(
            f"timeline {span.timeline} went on archiving WAL (up to segment {last}) after "
            f"timeline {branch.timeline} branched off it at {format_lsn(span.end)}: a restore "
            f"along timeline {history.timeline}, the newest, would leave out what timeline "
            f"{span.timeline} committed after that point",
            hint=f"choose one: --target-timeline {span.timeline} for timeline "
            f"{span.timeline}'s newest data, or --target-timeline latest to follow timeline "
            f"{history.timeline}",
        )
    return None


def _consistent_before(m: Manifest, target: RecoveryTarget) -> bool:
    return consistency_time(m) <= _time_of(target)
