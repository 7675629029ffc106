"""Timeline history files: which timeline each stretch of WAL belongs to.

When a server is promoted (end of archive recovery, or a standby's promotion) it starts a new
timeline N and writes ``<N as %08X>.history``: one line per ancestor timeline, oldest first,

    <parent TLI><TAB><switch point LSN><TAB><reason>

meaning that the parent timeline's WAL is valid up to (not including) the switch point, after
which its child takes over. Blank lines and lines starting with '#' are comments. The reader here
follows PostgreSQL's readTimeLineHistory (src/backend/access/transam/timeline.c): timeline ids
must increase, and the target timeline itself spans from the last switch point onwards.
Timeline 1 has no history file; its history is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgkura.wal.names import format_lsn, parse_lsn

_LINE_RE = re.compile(r"^(\d+)\s+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})(?:\s+(.*))?$")


class HistoryFormatError(ValueError):
    """The text is not a valid timeline history file."""


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a history file: ``parent_tli`` ended at ``switchpoint``."""

    parent_tli: int
    switchpoint: int
    reason: str

    def to_line(self) -> str:
        return f"{self.parent_tli}\t{format_lsn(self.switchpoint)}\t{self.reason}"


@dataclass(frozen=True)
class TimelineSpan:
    """``timeline`` owns WAL from ``begin`` (inclusive) to ``end`` (exclusive; None: open)."""

    timeline: int
    begin: int
    end: int | None

    def contains(self, lsn: int) -> bool:
        return self.begin <= lsn and (self.end is None or lsn < self.end)


@dataclass(frozen=True)
class TimelineHistory:
    """The history of ``timeline``: its ancestors' switch points, oldest first."""

    timeline: int
    entries: tuple[HistoryEntry, ...]

    def spans(self) -> list[TimelineSpan]:
        """Every timeline of the history with the LSN range it owns, oldest first."""
        out: list[TimelineSpan] = []
        begin = 0
        for entry in self.entries:
            out.append(TimelineSpan(entry.parent_tli, begin, entry.switchpoint))
            begin = entry.switchpoint
        out.append(TimelineSpan(self.timeline, begin, None))
        return out

    def timelines(self) -> list[int]:
        """The target timeline and all its ancestors, oldest first."""
        return [span.timeline for span in self.spans()]

    def to_text(self) -> str:
        """The history file's content, as PostgreSQL writes it (without its comment lines)."""
        return "".join(entry.to_line() + "\n" for entry in self.entries)


def parse_history(text: str, timeline: int) -> TimelineHistory:
    """Parse the content of ``<timeline>.history``; HistoryFormatError when it is malformed."""
    if timeline < 1:
        raise HistoryFormatError(f"invalid timeline {timeline}")
    entries: list[HistoryEntry] = []
    last_tli = 0
    last_switch = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE_RE.match(line)
        if not m:
            raise HistoryFormatError(
                f"line {number} of the history of timeline {timeline} is not "
                f"'<parent timeline> <switch point LSN> <reason>': {raw!r}"
            )
        tli = int(m.group(1))
        switchpoint = parse_lsn(m.group(2))
        if tli <= last_tli:
            raise HistoryFormatError(
                f"line {number} of the history of timeline {timeline}: timeline ids must "
                f"increase ({tli} follows {last_tli})"
            )
        if switchpoint < last_switch:
            raise HistoryFormatError(
                f"line {number} of the history of timeline {timeline}: switch point "
                f"{format_lsn(switchpoint)} precedes {format_lsn(last_switch)}"
            )
        entries.append(HistoryEntry(tli, switchpoint, (m.group(3) or "").strip()))
        last_tli, last_switch = tli, switchpoint
    if last_tli >= timeline:
        raise HistoryFormatError(
            f"the history of timeline {timeline} names timeline {last_tli}: ancestors' ids "
            "must be lower than their child's"
        )
    return TimelineHistory(timeline, tuple(entries))


def timeline_switch_points(history: TimelineHistory) -> dict[int, int]:
    """For each ancestor timeline, the LSN at which its child took over."""
    return {entry.parent_tli: entry.switchpoint for entry in history.entries}


def timeline_of_lsn(history: TimelineHistory, lsn: int) -> int:
    """The timeline whose WAL holds ``lsn`` in this history (PostgreSQL's tliOfPointInHistory).

    A switch point belongs to the child: the parent's WAL is valid only up to, not including, it.
    """
    for span in history.spans():
        if span.contains(lsn):
            return span.timeline
    # Unreachable: the spans cover 0 to infinity without gaps.
    raise ValueError(f"LSN {format_lsn(lsn)} is in no timeline of the history")  # pragma: no cover


def switchpoint_of(history: TimelineHistory, timeline: int) -> int | None:
    """Where ``timeline`` ended in this history; None when it is the target (still open).

    ValueError when ``timeline`` is not in the history at all (tliSwitchPoint's error).
    """
    for span in history.spans():
        if span.timeline == timeline:
            return span.end
    raise ValueError(f"timeline {timeline} is not in the history of timeline {history.timeline}")
