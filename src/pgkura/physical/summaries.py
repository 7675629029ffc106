"""What changed since the previous backup, from the server's WAL summaries (PostgreSQL 17+).

With ``summarize_wal = on`` the WAL summarizer writes, for each stretch of WAL, which blocks
of which relation forks its records touched, and the "limit block" of each fork that was
truncated or dropped (pg_wal/summaries; src/backend/postmaster/walsummarizer.c). A block no
record touched between the previous backup's start and this backup's start holds, on disk,
the bytes the previous backup read (or bytes that WAL replay from the previous start
rewrites, which this backup's replay rewrites too): its block id can be reused unread. Pages
changed after this backup's start are written again by replay from their full-page image
(the first change of a page after the backup's checkpoint logs it whole).

Summaries are a hint, not the only truth (they had bugs): :mod:`pgkura.physical.guided`
cross-checks every page it reads. Whenever the summaries cannot be shown to cover the whole
range, on every timeline of the history in between, the backup reads as it always did, and
its manifest says why.
"""

from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgkura.pg.versions import capabilities, major_of_version_num
from pgkura.repository.manifest import Manifest
from pgkura.wal.history import HistoryFormatError, TimelineHistory, parse_history
from pgkura.wal.names import format_lsn, parse_lsn

log = logging.getLogger("pgkura")

#: (tablespace oid, database oid, relfilenode) of a relation's main fork, as summaries name it
RelationKey = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class RelationChanges:
    """A main fork's blocks touched in the range (relation-wide numbers, sorted; 4 bytes each,
    so that a large change costs little memory), and its smallest limit block (None: never
    truncated in the range)."""

    blocks: array[int]
    limit: int | None


@dataclass(frozen=True)
class Summaries:
    """What changed from ``base_start`` (the previous backup's start) to ``start``."""

    base_id: str
    base_start: int
    start: int
    relations: dict[RelationKey, RelationChanges] = field(default_factory=dict)
    #: the summary files used, as ``tli/start/end``
    used: tuple[str, ...] = ()

    def of(self, key: RelationKey) -> RelationChanges:
        changes = self.relations.get(key, _UNCHANGED)
        # Relfilenode 0 stands for every relation of a database in a tablespace: created or
        # dropped as a whole (CREATE DATABASE ... STRATEGY FILE_COPY copies files without
        # logging their blocks), so its limit block applies to each (walsummarizer.c,
        # SummarizeDbaseRecord).
        whole = self.relations.get((key[0], key[1], 0))
        if whole is None or whole.limit is None:
            return changes
        limit = whole.limit if changes.limit is None else min(whole.limit, changes.limit)
        return RelationChanges(changes.blocks, limit)


_UNCHANGED = RelationChanges(array("I"), None)
# A relation with more changed blocks than this (32 GiB of them) is read whole instead of
# listed: the list would cost more memory than it saves reading.
MAX_LISTED = 4_000_000


@dataclass(frozen=True)
class SummaryDecision:
    """Whether this backup is summary-guided: ``summaries`` when it is, else ``reason``;
    ``loud`` whether the fallback deserves a warning rather than a note. Either way the
    backup keeps per-block CRCs, so that the next one can be guided."""

    summaries: Summaries | None = None
    reason: str | None = None
    loud: bool = False


def summaries_apply(version_num: int, enabled: bool) -> bool:
    """Whether the summary path exists at all for this server and setting."""
    return enabled and capabilities(major_of_version_num(version_num)).has_wal_summaries


def decide(
    conn: Any,
    pgdata: Path,
    base: Manifest | None,
    start_lsn: int,
    timeout: float,
    seg_size: int,
) -> SummaryDecision:
    """Load the changes since ``base`` from the summaries, or say why they cannot be used
    (in one line on stderr: a warning when summaries were expected, else at info level)."""
    import psycopg

    try:
        decision = _decide(conn, pgdata, base, start_lsn, timeout, seg_size)
    except psycopg.Error as exc:
        # A summary removed between listing and reading it, or a role without EXECUTE on
        # the summary functions (superusers only by default): an error in this session does
        # not end its backup.
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        decision = _fallback(f"the WAL summaries could not be read ({first})")
    if decision.summaries is not None:
        log.info(
            "summary-guided backup: reading the blocks changed since backup %s (%s)",
            decision.summaries.base_id, format_lsn(decision.summaries.base_start),
        )  # fmt: skip
    else:
        (log.warning if decision.loud else log.info)(
            "not summary-guided, reading every changed file whole: %s", decision.reason
        )
    return decision


def summary_note(decision: SummaryDecision, result: Any) -> dict[str, Any]:
    """The manifest's record of it: guided or not, from which base, and what fell back."""
    s = decision.summaries
    note: dict[str, Any] = {"guided": s is not None}
    if s is None:
        note["fallback"] = decision.reason
        return note
    note.update(base=s.base_id, base_start_lsn=format_lsn(s.base_start), used=list(s.used))
    if result.mismatches:
        note["read_whole"] = list(result.mismatches)
        log.warning(
            "%d file(s) had pages changed that the WAL summaries did not list, and were read "
            "whole (first: %s)", len(result.mismatches), result.mismatches[0],
        )  # fmt: skip
    return note


def _decide(
    conn: Any,
    pgdata: Path,
    base: Manifest | None,
    start_lsn: int,
    timeout: float,
    seg_size: int,
) -> SummaryDecision:
    (summarize,) = conn.execute("SHOW summarize_wal").fetchone()
    if summarize != "on":
        loud = base is not None and bool(base.extra.get("summaries", {}).get("guided"))
        return SummaryDecision(reason="summarize_wal is off", loud=loud)
    why = _base_unusable(base)
    if why is not None:
        return SummaryDecision(reason=why)
    assert base is not None and base.start_lsn is not None and base.timeline is not None
    base_start = parse_lsn(base.start_lsn)
    (tli,) = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    history = _history(pgdata, int(tli))
    if history is None:
        return _fallback(f"the history file of timeline {tli} is missing or malformed")
    needed = _needed_ranges(history, base.timeline, base_start, start_lsn)
    if needed is None:
        return _fallback(
            f"previous backup {base.id} is on timeline {base.timeline}, which is not in "
            f"the history of timeline {tli} before {format_lsn(base_start)}"
        )
    if not needed:
        # A standby's start is its last restartpoint, which may be the base's start or older:
        # every change since is then after this start too, and replay rewrites its pages
        # from their full-page images. Nothing to read from the summaries.
        return SummaryDecision(Summaries(base.id, base_start, start_lsn))
    if not _wait_for_summarizer(conn, start_lsn, timeout):
        return _fallback(
            f"the WAL summarizer did not reach {format_lsn(start_lsn)} within {timeout:.0f} s"
        )
    available = [
        (int(t), parse_lsn(str(s)), parse_lsn(str(e)))
        for t, s, e in conn.execute("SELECT * FROM pg_available_wal_summaries()").fetchall()
    ]
    used: list[tuple[int, int, int]] = []
    for t, lo, hi in needed:
        files = _covering(available, t, lo, hi, seg_size)
        if files is None:
            return _fallback(
                f"the WAL summaries do not cover {format_lsn(lo)} to {format_lsn(hi)} on "
                f"timeline {t} (expired, removed, or summarize_wal was off meanwhile)"
            )
        used += files
    relations = _contents(conn, used)
    names = tuple(f"{t}/{format_lsn(s)}/{format_lsn(e)}" for t, s, e in used)
    return SummaryDecision(Summaries(base.id, base_start, start_lsn, relations, names))


def _fallback(reason: str) -> SummaryDecision:
    return SummaryDecision(reason=reason, loud=True)


def _base_unusable(base: Manifest | None) -> str | None:
    if base is None:
        return "no previous backup of this cluster"
    if base.method != "online" or base.start_lsn is None or base.timeline is None:
        return f"previous backup {base.id} is not an online backup ({base.method})"
    if not base.extra.get("summaries"):
        return f"previous backup {base.id} has no per-block CRCs (taken without summaries)"
    return None


def _wait_for_summarizer(conn: Any, lsn: int, timeout: float) -> bool:
    """Wait until the summarizer has summarized WAL up to ``lsn`` (PostgreSQL waits the same
    way before an incremental backup: WaitForWalSummarization)."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        row = conn.execute("SELECT summarized_lsn FROM pg_get_wal_summarizer_state()").fetchone()
        if row is not None and row[0] is not None and parse_lsn(str(row[0])) >= lsn:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def _history(pgdata: Path, tli: int) -> TimelineHistory | None:
    if tli == 1:
        return TimelineHistory(1, ())
    try:
        text = (pgdata / "pg_wal" / f"{tli:08X}.history").read_text()
        return parse_history(text, tli)
    except (OSError, HistoryFormatError):
        return None


def _needed_ranges(
    history: TimelineHistory, base_tli: int, base_start: int, start: int
) -> list[tuple[int, int, int]] | None:
    """The (timeline, from, to) stretches of WAL between the two starts; None when the base
    is not on this history at its start."""
    spans = history.spans()
    if not any(s.timeline == base_tli and s.contains(base_start) for s in spans):
        return None
    out = []
    for span in spans:
        lo = max(span.begin, base_start)
        hi = start if span.end is None else min(span.end, start)
        if lo < hi:
            out.append((span.timeline, lo, hi))
    return out


def _covering(
    available: list[tuple[int, int, int]], tli: int, lo: int, hi: int, seg_size: int
) -> list[tuple[int, int, int]] | None:
    """Summary files of ``tli`` that together cover [lo, hi) without a gap (more than needed
    is fine: more blocks are read, never fewer); None when there is a gap."""
    files = sorted(f for f in available if f[0] == tli and f[2] > lo and f[1] < hi)
    reached = lo
    for _t, s, e in files:
        if s > reached and not _only_a_page_header(reached, s, seg_size):
            return None
        reached = max(reached, e)
    return files if reached >= hi else None


# The headers at the start of each WAL page (SizeOfXLogShortPHD) and of each segment's first
# page (SizeOfXLogLongPHD), where no record lies (src/include/access/xlog_internal.h).
_WAL_PAGE = 8192
_SHORT_HEADER, _LONG_HEADER = 24, 40


def _only_a_page_header(begin: int, end: int, seg_size: int) -> bool:
    """Whether [begin, end) is within the header of a WAL page: a new timeline that starts at
    a segment boundary has its first summary start after the header, where its first record
    does."""
    if begin % _WAL_PAGE:
        return False
    header = _LONG_HEADER if begin % seg_size == 0 else _SHORT_HEADER
    return end - begin <= header


_CONTENTS = """
SELECT c.reltablespace, c.reldatabase, c.relfilenode,
       CASE WHEN count(*) FILTER (WHERE NOT c.is_limit_block) <= %s
            THEN array_agg(DISTINCT c.relblocknumber) FILTER (WHERE NOT c.is_limit_block) END,
       count(*) FILTER (WHERE NOT c.is_limit_block),
       min(c.relblocknumber) FILTER (WHERE c.is_limit_block)
FROM unnest(%s::bigint[], %s::pg_lsn[], %s::pg_lsn[]) AS s (tli, start_lsn, end_lsn),
     LATERAL pg_wal_summary_contents(s.tli, s.start_lsn, s.end_lsn) AS c
WHERE c.relforknumber = 0 OR c.relfilenode = 0
GROUP BY 1, 2, 3
"""


def _contents(conn: Any, used: list[tuple[int, int, int]]) -> dict[RelationKey, RelationChanges]:
    """Each main fork's changes in the summaries ``used``, merged (sorted, once each)."""
    rows = conn.execute(
        _CONTENTS,
        (
            MAX_LISTED,
            [t for t, _s, _e in used],
            [format_lsn(s) for _t, s, _e in used],
            [format_lsn(e) for _t, _s, e in used],
        ),
    )
    out: dict[RelationKey, RelationChanges] = {}
    for spc, db, node, blocks, changed, limit in rows:
        if changed and blocks is None:
            limit = 0  # too many to list: the relation is read whole
        listed = array("I", sorted(blocks) if blocks else ())
        out[(int(spc), int(db), int(node))] = RelationChanges(
            listed, None if limit is None else int(limit)
        )
    return out


def relation_key(path: str) -> tuple[RelationKey, int] | None:
    """The main fork and segment a relation file holds; None for anything else (other forks,
    which are taken whole, and non-relation files)."""
    from pgkura.pg.relfile import is_relation_file

    rel = is_relation_file(path)
    if rel is None:
        return None
    parts = path.strip("/").split("/")
    if "_" in parts[-1]:
        return None  # _fsm, _vm, _init
    if parts[0] == "global":
        return (1664, 0, rel[0]), rel[1]  # GLOBALTABLESPACE_OID
    if parts[0] == "base":
        return (1663, int(parts[1]), rel[0]), rel[1]  # DEFAULTTABLESPACE_OID
    return (int(parts[1]), int(parts[3]), rel[0]), rel[1]
