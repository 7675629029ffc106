"""Which archived WAL the kept backups still need, per timeline, from the history files.

A kept backup needs the segments from its start to its stop on its timeline to become
consistent. A backup kept by the policy (or pinned with ``--pitr``) also keeps every point
after it recoverable: every segment from its start onward on its own timeline and on each
timeline that branched from it after it started, as the archived history files say. Never the
order of names or the numbers of timelines: a timeline whose history file is missing keeps all
its WAL (nothing proves it unneeded). History files are never deleted: they are tiny, and
recovery along any timeline needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pgkura.errors import PgkuraError
from pgkura.repository.manifest import Manifest
from pgkura.repository.repo import Repository
from pgkura.wal.catalog import archived_files, timeline_history
from pgkura.wal.history import TimelineHistory
from pgkura.wal.names import DEFAULT_SEG_SIZE, parse_lsn


@dataclass(frozen=True)
class WalAnchor:
    """What one kept backup needs of the archive."""

    backup_id: str
    timeline: int
    start_lsn: int
    stop_lsn: int
    #: keep every point after the backup recoverable, not only its consistency
    forward: bool


def anchor_of(m: Manifest, forward: bool) -> WalAnchor | None:
    """The anchor of an online or basebackup backup; None for those that need no WAL."""
    if m.kind != "physical" or m.method == "offline" or not m.start_lsn or not m.stop_lsn:
        return None
    return WalAnchor(m.id, m.timeline or 1, parse_lsn(m.start_lsn), parse_lsn(m.stop_lsn), forward)


def seg_size_of(manifests: list[Manifest]) -> int:
    for m in reversed(manifests):
        if "wal_segment_size" in m.extra:
            return int(m.extra["wal_segment_size"])
    return DEFAULT_SEG_SIZE


def unneeded_wal(
    repo: Repository, archive: str, anchors: list[WalAnchor], seg_size: int
) -> list[tuple[str, int]]:
    """(name, stored size) of each archived segment, .partial and .backup file of ``archive``
    that no anchor needs."""
    histories: dict[int, TimelineHistory | None] = {}

    def history(tli: int) -> TimelineHistory | None:
        if tli not in histories:
            try:
                histories[tli] = timeline_history(repo, archive, tli)
            except PgkuraError:
                histories[tli] = None
        return histories[tli]

    out = []
    for wal, size in archived_files(repo, archive, seg_size):
        if wal.kind == "history" or wal.segno is None:
            continue
        if not any(_needs(a, wal.timeline, wal.segno, seg_size, history) for a in anchors):
            out.append((wal.name, size))
    return out


def _needs(
    anchor: WalAnchor,
    tli: int,
    segno: int,
    seg_size: int,
    history: Callable[[int], TimelineHistory | None],
) -> bool:
    first = anchor.start_lsn // seg_size
    if segno < first:
        return False
    if tli == anchor.timeline:
        return anchor.forward or segno <= anchor.stop_lsn // seg_size
    if not anchor.forward:
        return False
    h = history(tli)
    if h is None:
        return True  # no history file: nothing proves this timeline unneeded
    for span in h.spans():
        if span.timeline == anchor.timeline:
            # The timeline branched from the backup's after the backup started: replay from
            # the backup can follow it.
            return span.end is None or span.end > anchor.start_lsn
    return False


def pitr_backup(
    manifests: list[Manifest], newest_wal: float | None, window: timedelta
) -> tuple[Manifest | None, str]:
    """The backup the PITR window starts from: the newest online backup consistent at or
    before ``window`` before the newest archived WAL (or the oldest one, when none is that
    old), and a note saying where the window starts."""
    from pgkura.physical.choose import consistency_time

    online = sorted((m for m in manifests if anchor_of(m, True) is not None), key=consistency_time)
    if not online:
        return None, "no online backup: the PITR window keeps nothing"
    if newest_wal is None:
        return online[-1], "no archived WAL: the window starts at the newest backup"
    start = datetime.fromtimestamp(newest_wal, UTC) - window
    at_or_before = [m for m in online if consistency_time(m) <= start]
    when = start.isoformat(timespec="seconds")
    if not at_or_before:
        return online[0], f"window from {when}; no backup is that old, the oldest is kept"
    return at_or_before[-1], f"window from {when}"
