"""What the WAL archive of a stanza holds: segments per timeline, gaps, and how far WAL
replay can get from a given start, following timeline history the way PostgreSQL does.

PostgreSQL's recovery (XLogFileReadAnyTLI) reads segment N from the newest timeline of the
target's history that had begun by segment N and has the file; replay stops at the first
segment it cannot find. The end of reachable WAL computed here follows that rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from pgkura.errors import CorruptionError, IncompleteArchiveError
from pgkura.repository import layout
from pgkura.repository.repo import Repository
from pgkura.repository.walstore import SealError
from pgkura.wal.history import HistoryFormatError, TimelineHistory, parse_history
from pgkura.wal.names import (
    DEFAULT_SEG_SIZE,
    WalName,
    format_lsn,
    history_file_name,
    parse_wal_name,
    segment_name_of_segno,
)


@dataclass
class TimelineWal:
    timeline: int
    segnos: set[int] = field(default_factory=set)
    mtimes: dict[int, float] = field(default_factory=dict)

    def runs(self) -> list[tuple[int, int]]:
        """Contiguous runs of archived segment numbers, (first, last) inclusive."""
        out: list[tuple[int, int]] = []
        for n in sorted(self.segnos):
            if out and n == out[-1][1] + 1:
                out[-1] = (out[-1][0], n)
            else:
                out.append((n, n))
        return out


@dataclass
class ArchiveCatalog:
    archive: str  # layout.wal_archive: one generation of a stanza
    seg_size: int
    timelines: dict[int, TimelineWal]
    histories: set[int]
    #: the archive's times are this coarse (seconds): a segment was archived no later than its
    #: time plus this
    time_resolution: float = 0.0
    #: when each timeline's history file was archived (when the timeline began), where the
    #: store says
    history_mtimes: dict[int, float] = field(default_factory=dict)

    def latest_timeline(self) -> int:
        known = set(self.timelines) | self.histories
        return max(known) if known else 1

    def has(self, timeline: int, segno: int) -> bool:
        tl = self.timelines.get(timeline)
        return tl is not None and segno in tl.segnos

    def replay_segments(self, history: TimelineHistory, start_lsn: int) -> list[tuple[int, int]]:
        """(timeline, segment number) of every archived segment replay from ``start_lsn``
        reads on ``history``, in order, up to the first one it cannot find."""
        spans = history.spans()
        segno = start_lsn // self.seg_size
        out: list[tuple[int, int]] = []
        while True:
            found = None
            for span in reversed(spans):
                if span.begin // self.seg_size <= segno and self.has(span.timeline, segno):
                    found = span.timeline
                    break
            if found is None:
                return out
            out.append((found, segno))
            segno += 1

    def replay_end(self, history: TimelineHistory, start_lsn: int) -> tuple[int, float | None]:
        """The LSN where replay from ``start_lsn`` runs out of archived WAL on ``history``,
        and when the last segment it reads was archived."""
        read = self.replay_segments(history, start_lsn)
        if not read:
            return (start_lsn // self.seg_size) * self.seg_size, None
        last_time: float | None = None
        for tli, segno in read:
            last_time = self.timelines[tli].mtimes.get(segno, last_time)
        return (read[-1][1] + 1) * self.seg_size, last_time

    def continues_after(self, history: TimelineHistory, segno: int) -> tuple[int, int] | None:
        """The first archived segment past ``segno`` that replay on ``history`` would read had
        it found ``segno``: (timeline, segment number), or None when the archive ends there.

        When replay runs out at a segment and this is not None, the archive has a hole, not an
        end: PostgreSQL would take the hole for the end of the WAL and promote early."""
        found: list[tuple[int, int]] = []
        for span in history.spans():
            tl = self.timelines.get(span.timeline)
            if tl is None:
                continue
            first = span.begin // self.seg_size
            last = None if span.end is None else (span.end - 1) // self.seg_size
            found += [
                (n, span.timeline)
                for n in tl.segnos
                if n > segno and n >= first and (last is None or n <= last)
            ]
        if not found:
            return None
        n, tli = min(found)
        return tli, n

    def describe_segment(self, timeline: int, segno: int) -> str:
        return segment_name_of_segno(timeline, segno, self.seg_size)


def load_catalog(
    repo: Repository, archive: str, seg_size: int = DEFAULT_SEG_SIZE
) -> ArchiveCatalog:
    """What the WAL ``archive`` (layout.wal_archive) holds."""
    timelines: dict[int, TimelineWal] = {}
    histories: set[int] = set()
    history_mtimes: dict[int, float] = {}
    for obj in repo.wal.list(archive):
        try:
            wal = parse_wal_name(obj.name, seg_size)
        except ValueError:
            continue
        if wal.kind == "history":
            histories.add(wal.timeline)
            if obj.mtime is not None:
                history_mtimes[wal.timeline] = obj.mtime
        elif wal.kind == "segment" and wal.segno is not None:
            tl = timelines.setdefault(wal.timeline, TimelineWal(wal.timeline))
            tl.segnos.add(wal.segno)
            if obj.mtime is not None:
                tl.mtimes[wal.segno] = obj.mtime
    return ArchiveCatalog(
        archive, seg_size, timelines, histories, repo.wal.time_resolution, history_mtimes
    )


def archived_files(
    repo: Repository, archive: str, seg_size: int = DEFAULT_SEG_SIZE
) -> list[tuple[WalName, int]]:
    """Every file of the WAL ``archive``, parsed, with its stored size."""
    out = []
    for obj in repo.wal.list(archive):
        try:
            out.append((parse_wal_name(obj.name, seg_size), obj.size))
        except ValueError:
            continue
    return out


def newest_archived_time(catalog: ArchiveCatalog) -> float | None:
    """When the newest archived segment was archived (None: none is)."""
    times = [t for tl in catalog.timelines.values() for t in tl.mtimes.values()]
    return max(times) if times else None


def delete_archived(repo: Repository, archive: str, names: list[str]) -> None:
    """Delete these WAL files of ``archive`` (retention: wal.retention says which)."""
    repo.wal.delete(archive, names)


def read_archived(repo: Repository, archive: str, name: str) -> bytes | None:
    """The content of a WAL file in ``archive``, verified; None when it is not archived."""
    stored = repo.wal.find(archive, name)
    if stored is None:
        return None
    try:
        return stored.content()
    except SealError as exc:
        raise CorruptionError(
            f"archived WAL file {name} ({stored.key}) is damaged: {exc}",
            hint="run pgkura verify; push it again from pg_wal if the server still has it",
        ) from None


def timeline_history(repo: Repository, archive: str, timeline: int) -> TimelineHistory:
    """The history of ``timeline`` from its history file in ``archive`` (timeline 1 has
    none)."""
    if timeline == 1:
        return TimelineHistory(1, ())
    name = history_file_name(timeline)
    raw = read_archived(repo, archive, name)
    if raw is None:
        raise IncompleteArchiveError(
            f"timeline {timeline} has no history file ({name}) in the archive of "
            f"{layout.describe_archive(archive)}",
            hint="use --target-timeline current or a timeline whose history is archived",
        )
    try:
        return parse_history(raw.decode("utf-8", errors="replace"), timeline)
    except HistoryFormatError as exc:
        raise CorruptionError(f"archived {name} is not a valid history file: {exc}") from None


def describe_runs(catalog: ArchiveCatalog) -> list[dict[str, object]]:
    """Per timeline: the archived ranges and the gaps between them, for `info`."""
    out: list[dict[str, object]] = []
    for tli in sorted(set(catalog.timelines) | catalog.histories):
        tl = catalog.timelines.get(tli, TimelineWal(tli))
        runs = tl.runs()
        ranges = [
            {
                "first": catalog.describe_segment(tli, a),
                "last": catalog.describe_segment(tli, b),
                "start_lsn": format_lsn(a * catalog.seg_size),
                "end_lsn": format_lsn((b + 1) * catalog.seg_size),
            }
            for a, b in runs
        ]
        gaps = [
            {
                "first": catalog.describe_segment(tli, prev_end + 1),
                "last": catalog.describe_segment(tli, next_start - 1),
            }
            for (_, prev_end), (next_start, _) in pairwise(runs)
        ]
        out.append(
            {
                "timeline": tli,
                "history_file": tli in catalog.histories or tli == 1,
                "ranges": ranges,
                "gaps": gaps,
            }
        )
    return out
