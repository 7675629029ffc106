"""What the server says about its archiving (`pgkura metrics --dbconn`): how far the
repository's WAL archive is behind the server's WAL, in bytes and seconds, and
pg_stat_archiver's counts.

The lag counts whole segments: the bytes from the end of the newest segment the repository
holds (on the server's timeline or one before it) to the start of the segment the server is
writing now. The segment being written cannot be archived yet (archive_timeout bounds how
long it waits), so a server whose archiving keeps up shows 0, and each finished segment the
archive lacks adds one segment's size. The seconds are how long the oldest such segment has
waited: the age of the oldest ``.ready`` file in pg_wal/archive_status (PostgreSQL writes
one when a segment is finished; pg_ls_archive_statusdir needs superuser or pg_monitor), or,
where that cannot be read, the time since the repository last received a segment.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from pgkura.pg.connection import connect
from pgkura.wal.catalog import ArchiveCatalog, newest_archived_time
from pgkura.wal.names import parse_wal_name


@dataclass(frozen=True)
class ServerFacts:
    in_recovery: bool
    timeline: int | None
    current_lsn: str | None
    #: None on a standby (its primary archives) and when the archive holds no segment
    archive_lag_bytes: int | None
    archive_lag_seconds: float | None
    archived_count: int
    failed_count: int
    last_archived_wal: str | None
    last_archived_time: float | None
    last_failed_wal: str | None
    last_failed_time: float | None

    def to_json(self) -> dict[str, Any]:
        from pgkura.monitor.facts import rfc3339

        out = asdict(self)
        for name in ("last_archived_time", "last_failed_time"):
            out[name] = rfc3339(out[name])
        return out


_ARCHIVER = (
    "SELECT archived_count, last_archived_wal, extract(epoch FROM last_archived_time), "
    "failed_count, last_failed_wal, extract(epoch FROM last_failed_time) FROM pg_stat_archiver"
)
_PRIMARY = (
    "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn()), "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
    "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
)
_OLDEST_READY = (
    "SELECT extract(epoch FROM min(modification)) FROM pg_ls_archive_statusdir() "
    "WHERE name LIKE '%.ready'"
)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def server_facts(dbconn: str | None, catalog: ArchiveCatalog) -> ServerFacts:
    """The archiving facts of the server ``dbconn`` against the WAL archive ``catalog`` (of
    the stanza's current generation)."""
    import psycopg

    with connect(dbconn) as conn:
        row0 = conn.execute(_ARCHIVER).fetchone()
        assert row0 is not None
        archiver: tuple[Any, ...] = tuple(row0)
        in_recovery = bool(conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,))
        lag_bytes: int | None = None
        lag_seconds: float | None = None
        timeline = lsn = None
        if not in_recovery:
            row: Any = conn.execute(_PRIMARY).fetchone()
            assert row is not None
            lsn, walfile, position, seg_size = str(row[0]), str(row[1]), int(row[2]), int(row[3])
            timeline = int(walfile[:8], 16)
            archived_end = _archived_end(catalog, timeline, seg_size)
            if archived_end is not None:
                lag_bytes = max(0, (position // seg_size) * seg_size - archived_end)
                lag_seconds = 0.0
            if lag_bytes:
                try:
                    oldest = conn.execute(_OLDEST_READY).fetchone()
                    since = _float(oldest[0]) if oldest else None
                except psycopg.Error:  # no pg_monitor: the archive's own time instead
                    since = None
                since = since if since is not None else newest_archived_time(catalog)
                lag_seconds = max(0.0, time.time() - since) if since is not None else None
    return ServerFacts(
        in_recovery=in_recovery,
        timeline=timeline,
        current_lsn=lsn,
        archive_lag_bytes=lag_bytes,
        archive_lag_seconds=None if lag_seconds is None else round(lag_seconds, 3),
        archived_count=int(archiver[0]),
        last_archived_wal=archiver[1],
        last_archived_time=_float(archiver[2]),
        failed_count=int(archiver[3]),
        last_failed_wal=archiver[4],
        last_failed_time=_float(archiver[5]),
    )


def _archived_end(catalog: ArchiveCatalog, timeline: int, seg_size: int) -> int | None:
    """The byte position where the newest segment the archive holds on ``timeline`` or an
    earlier one ends (None: it holds none), in segments of the server's ``seg_size``."""
    newest = [
        (tli, max(tl.segnos))
        for tli, tl in catalog.timelines.items()
        if tli <= timeline and tl.segnos
    ]
    if not newest:
        return None
    tli, segno = max(newest, key=lambda t: t[1])
    # Named and parsed again: the catalog may have been read with another segment size.
    segno = parse_wal_name(catalog.describe_segment(tli, segno), seg_size).segno or 0
    return (segno + 1) * seg_size
