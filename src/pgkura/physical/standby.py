"""What an online backup does differently when its server is a standby.

On a standby, pg_backup_start forces no WAL switch and pg_backup_stop returns the standby's
minimum recovery point (pg_control's) as the backup's end, which recovery takes from the
restored pg_control ("BACKUP FROM: standby" in backup_label; xlogrecovery.c). So pg_control is
copied last, after every other file and before pg_backup_stop: its minimum recovery point is
then at or past every page the copy read. The backup's last segment is finished only when the
primary switches WAL, which ``--primary-dbconn`` asks it to do (PostgreSQL docs, "Making a
Base Backup Using the Low Level API"; backup.c's do_pg_backup_stop).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.errors import PgkuraError, PostgresError
from pgkura.physical.source import Exclude, SourceFile
from pgkura.physical.store import StoreResult

PG_CONTROL = "global/pg_control"


def without_pg_control(exclude: Exclude) -> Exclude:
    """``exclude``, and pg_control too (a standby's backup copies it on its own, last)."""

    def check(path: str, is_dir: bool) -> bool:
        return path == PG_CONTROL or exclude(path, is_dir)

    return check


def pg_control_source(pgdata: Path) -> SourceFile:
    path = pgdata / PG_CONTROL
    st = path.stat()
    return SourceFile(
        PG_CONTROL, str(path), "file", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime
    )


def joined(first: StoreResult, last: StoreResult) -> StoreResult:
    """The result of a copy made in two parts (pg_control last)."""
    return StoreResult(
        files=first.files + last.files,
        size_bytes=first.size_bytes + last.size_bytes,
        new_bytes=first.new_bytes + last.new_bytes,
        checksum_failures=first.checksum_failures + last.checksum_failures,
        read_bytes=first.read_bytes + last.read_bytes,
        mismatches=first.mismatches + last.mismatches,
    )


def check_still_standby(conn: Any, start_timeline: int) -> None:
    """Refuse a backup during which the standby was promoted or its timeline changed: its
    end would not be on the timeline its start is (PostgreSQL refuses a promotion during the
    backup itself in pg_backup_stop; a new timeline from the primary is caught here)."""
    row = conn.execute(
        "SELECT pg_is_in_recovery(), min_recovery_end_timeline FROM pg_control_recovery()"
    ).fetchone()
    in_recovery, timeline = bool(row[0]), int(row[1] or 0)
    if not in_recovery:
        raise PostgresError(
            "the standby was promoted during the backup; the backup was not recorded",
            hint="take the backup again, from the new primary or from a standby",
        )
    if timeline not in (0, start_timeline):
        raise PostgresError(
            f"the standby moved from timeline {start_timeline} to {timeline} during the "
            "backup; the backup was not recorded",
            hint="take the backup again now that the standby follows the new timeline",
        )


def switch_primary_wal(cfg: Config) -> None:
    """Ask the primary (``--primary-dbconn``) to finish its WAL segment, so that the one
    holding the standby backup's end is archived now instead of at the next switch."""
    if not cfg.primary_dbconn:
        return
    from pgkura.pg.connection import connect

    try:
        conn = connect(cfg.primary_dbconn)
    except PgkuraError as exc:
        raise PostgresError(
            f"cannot connect to the primary (--primary-dbconn): {exc.message}",
            hint="check --primary-dbconn; it must reach the primary this standby follows",
        ) from None
    try:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row and row[0]:
            raise PostgresError(
                "--primary-dbconn reaches a server that is in recovery, not the primary",
                hint="point --primary-dbconn at the primary this standby follows",
            )
        conn.execute("SELECT pg_switch_wal()")
    finally:
        conn.close()


def archive_hint() -> str:
    return (
        "on a standby the backup's last segment is finished only when the primary switches "
        "WAL: give --primary-dbconn (the primary's connection string) so the backup asks it "
        "to, or raise --archive-timeout; and check that the standby (archive_mode = always) "
        "or the primary archives into this stanza (pgkura check)"
    )
