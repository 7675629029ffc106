"""Online physical backup through the low-level backup API.

pg_backup_start → parallel copy of PGDATA and tablespaces → pg_backup_stop, in one session
(non-exclusive mode: if pgkura dies, the session ends and the server leaves backup mode by
itself). The copy is made consistent by the WAL from the start LSN to the stop LSN, so the
backup is only committed once that WAL is in the archive.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.errors import PgkuraError, PostgresError
from pgkura.pg.versions import capabilities, major_of_version_num
from pgkura.physical.backup import new_backup_id, previous_files, store_files, stored_bytes
from pgkura.physical.exclusions import OnlineExclusions
from pgkura.physical.guided import Guide
from pgkura.physical.restore_owner import data_directory_owner
from pgkura.physical.source import Exclude, walk_data_directory
from pgkura.physical.standby import (
    archive_hint,
    check_still_standby,
    joined,
    pg_control_source,
    switch_primary_wal,
    without_pg_control,
)
from pgkura.physical.store import PageCheck
from pgkura.physical.summaries import SummaryDecision, decide, summaries_apply, summary_note
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.locks import backup_lock
from pgkura.repository.manifest import Manifest, Tablespace, write_manifest
from pgkura.repository.repo import Repository, iso, utc_now
from pgkura.repository.stanzas import bind_new_stanza
from pgkura.wal.names import format_lsn, parse_lsn, segment_name, segments_between


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    system_identifier: str
    data_directory: str
    data_checksums: bool
    wal_segment_size: int
    tablespaces: tuple[Tablespace, ...]
    #: a standby (physical/standby.py): pg_control is copied last, the primary switches WAL
    in_recovery: bool = False


def server_facts(conn: Any) -> ServerFacts:
    def one(query: str) -> Any:
        row = conn.execute(query).fetchone()
        return row[0] if row else None

    version_num = int(one("SHOW server_version_num"))
    capabilities(major_of_version_num(version_num), "the server")
    wal_level = one("SHOW wal_level")
    if wal_level not in ("replica", "logical"):
        raise PostgresError(
            f"wal_level is {wal_level}: an online backup needs replica or logical",
            hint="set wal_level = replica in postgresql.conf and restart the server",
        )
    archive_mode = one("SHOW archive_mode")
    if archive_mode not in ("on", "always"):
        raise PostgresError(
            f"archive_mode is {archive_mode}: an online backup needs the WAL archive",
            hint="set archive_mode = on and archive_command = 'pgkura --repo ... archive-push %p'"
            " in postgresql.conf, then restart the server",
        )
    rows = conn.execute(
        "SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace "
        "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
    ).fetchall()
    seg_size_text = one("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
    seg_size = int(seg_size_text)
    if seg_size < 1024 * 1024:  # older versions report it in 8 kB units
        seg_size *= 8192
    return ServerFacts(
        version_num=version_num,
        system_identifier=str(one("SELECT system_identifier FROM pg_control_system()")),
        data_directory=one("SHOW data_directory"),
        data_checksums=one("SHOW data_checksums") == "on",
        wal_segment_size=seg_size,
        tablespaces=tuple(Tablespace(int(o), loc, name) for o, name, loc in rows),
        in_recovery=bool(one("SELECT pg_is_in_recovery()")),
    )


def _start_backup(conn: Any, version_num: int, label: str, fast: bool) -> int:
    caps = capabilities(major_of_version_num(version_num))
    row = conn.execute(caps.backup_start_sql, (label, fast)).fetchone()
    return parse_lsn(str(row[0]))


def _stop_backup(conn: Any, version_num: int) -> tuple[int, str, str, str]:
    # wait_for_archive is false: pgkura waits for the archive itself, with a timeout, instead
    # of letting the server block forever when archiving is broken.
    caps = capabilities(major_of_version_num(version_num))
    lsn, label, spcmap = conn.execute(caps.backup_stop_sql).fetchone()
    # The server's clock, which recovery_target_time is compared with: once the WAL up to the
    # stop LSN is replayed, every transaction committed before this time is in.
    (stop_time,) = conn.execute("SELECT clock_timestamp()").fetchone()
    return parse_lsn(str(lsn)), label, spcmap or "", stop_time.isoformat()


def label_timeline(label: str) -> int:
    for line in label.splitlines():
        if line.startswith("START TIMELINE:"):
            return int(line.split(":", 1)[1])
    raise PgkuraError("backup_label returned by the server has no START TIMELINE line")


def _archiver_healthy(conn: Any) -> bool:
    """Whether archive_command has not failed since it last succeeded: only then does the
    backup push its own segments; a failing archiver keeps it waiting, so that it times out
    naming the problem instead of hiding it."""
    (ok,) = conn.execute(
        "SELECT coalesce(last_failed_time IS NULL OR last_failed_time < last_archived_time, "
        "false) FROM pg_stat_archiver"
    ).fetchone()
    return bool(ok)


def push_finished_segments(
    repo: Repository, stanza: str, pg_wal: Path, segments: list[str], pg_version: int
) -> None:
    """Archive, straight from pg_wal, the backup's segments that the server has finished
    (archive_status says .ready or .done) but the archive does not hold yet.

    The backup is not kept waiting for archive_command's next start: the archiver's own push
    of the same file later finds identical content and succeeds. Anything that goes wrong here
    (a segment recycled meanwhile fails the header check, say) is left to the archiver, and
    wait_for_archive judges."""
    from pgkura.wal.archive import push_wal

    status = pg_wal / "archive_status"
    archive = repo.wal_archive(stanza)  # the current generation's: push refuses any other
    for name in segments:
        if repo.wal.exists(archive, name):
            continue
        if not ((status / f"{name}.ready").exists() or (status / f"{name}.done").exists()):
            continue  # still being written: only the archiver may take it
        try:
            push_wal(repo, stanza, pg_wal / name, pg_version=pg_version)
        except (PgkuraError, OSError):
            continue


def wait_for_archive(
    repo: Repository,
    stanza: str,
    segments: list[str],
    timeout: float,
    *,
    meanwhile: Callable[[list[str]], None] | None = None,
    hint: str | None = None,
) -> None:
    """Wait until every segment is in the archive of the stanza's current generation (the
    backup's); a missing one after ``timeout`` is an error. ``meanwhile`` is called with the
    segments still missing on each round (a standby's backup pushes those its server has
    finished since)."""
    archive = repo.wal_archive(stanza)
    deadline = time.monotonic() + timeout
    pending = list(segments)
    pause = 0.02  # the last segment is usually archived within a few tens of milliseconds
    while pending:
        pending = [s for s in pending if not repo.wal.exists(archive, s)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise PgkuraError(
                f"WAL segment {pending[0]} needed by the backup did not reach the archive "
                f"within {timeout:.0f} s; the backup was not recorded",
                hint=hint
                or "check archive_command (pgkura check) and the server log, "
                "or raise --archive-timeout",
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
        if meanwhile is not None:
            meanwhile(pending)


def backup_online(
    repo: Repository,
    cfg: Config,
    pgdata: Path,
    *,
    jobs: int,
    fast_checkpoint: bool,
    progress: Progress | None = None,
) -> Manifest:
    from pgkura.pg.connection import connect

    conn = connect(cfg.dbconn)
    try:
        facts = server_facts(conn)
        if os.path.realpath(facts.data_directory) != os.path.realpath(pgdata):
            raise PgkuraError(
                f"the server's data directory is {facts.data_directory}, not {pgdata}",
                hint="point --pgdata and the connection (PGHOST/PGPORT or --dbconn) at the "
                "same cluster",
            )
        pg_version = int((pgdata / "PG_VERSION").read_text().strip())
        stanza = cfg.stanza
        bind_new_stanza(repo, stanza, facts.system_identifier, pg_version)
        with backup_lock(repo, stanza):
            started = utc_now()
            backup_id = new_backup_id(started)
            # The index and the previous manifest load while the server checkpoints.
            with ThreadPoolExecutor(1, thread_name_prefix="pgkura-load") as pool:
                loading = pool.submit(
                    lambda: (
                        BlockIndex(repo).load(write_back=True),
                        previous_files(repo, stanza, facts.system_identifier),
                    )
                )
                start_lsn = _start_backup(
                    conn, facts.version_num, f"pgkura {backup_id}", fast_checkpoint
                )
                index, previous = loading.result()
            decision = None
            if summaries_apply(facts.version_num, cfg.wal_summaries):
                decision = decide(
                    conn, pgdata, previous.base, start_lsn, cfg.summary_timeout,
                    facts.wal_segment_size,
                )  # fmt: skip
            guide = _guide(repo, decision)
            result = _copy(repo, index, pgdata, facts, start_lsn, jobs, progress, previous, guide)
            stop_lsn, label, spcmap, stop_time = _stop_backup(conn, facts.version_num)
            if facts.in_recovery:
                check_still_standby(conn, label_timeline(label))
                switch_primary_wal(cfg)
            manifest = finish_online_backup(
                repo,
                stanza,
                OnlineCopy(
                    backup_id=backup_id,
                    method="online",
                    started=started,
                    pg_version=pg_version,
                    facts=facts,
                    files=tuple(result.files),
                    result=result,
                    index=index,
                    start_lsn=start_lsn,
                    stop_lsn=stop_lsn,
                    label=label,
                    spcmap=spcmap or None,
                    stop_time=stop_time,
                    pgdata_mode=stat.S_IMODE(pgdata.stat().st_mode),
                    pgdata_owner=data_directory_owner(pgdata),
                    summaries=summary_note(decision, result) if decision else None,
                ),
                jobs=jobs,
                fast_checkpoint=fast_checkpoint,
                archive_timeout=cfg.archive_timeout,
                pg_wal=pgdata / "pg_wal" if _archiver_healthy(conn) else None,
            )
            return manifest
    finally:
        conn.close()


def _copy(
    repo: Repository,
    index: BlockIndex,
    pgdata: Path,
    facts: ServerFacts,
    start_lsn: int,
    jobs: int,
    progress: Progress | None,
    previous: Any,
    guide: Guide | None = None,
) -> Any:
    """Store the cluster's files; on a standby pg_control on its own, after all the others."""
    exclude: Exclude = OnlineExclusions(pgdata)
    check = PageCheck(enabled=facts.data_checksums, start_lsn=start_lsn)
    walk = walk_data_directory(
        pgdata, without_pg_control(exclude) if facts.in_recovery else exclude
    )
    result = store_files(
        repo, index, walk, jobs=jobs, page_check=check, progress=progress, previous=previous,
        guide=guide,
    )  # fmt: skip
    if not facts.in_recovery:
        return result
    last = store_files(
        repo, index, [pg_control_source(pgdata)], jobs=1, page_check=check, progress=progress,
        previous=previous,
    )  # fmt: skip
    return joined(result, last)


@dataclass(frozen=True)
class OnlineCopy:
    """What an online copy (pgkura's own or pg_basebackup's) produced, before the WAL wait."""

    backup_id: str
    method: str
    started: Any
    pg_version: int
    facts: ServerFacts
    files: tuple[Any, ...]
    result: Any
    index: BlockIndex
    start_lsn: int
    stop_lsn: int
    label: str
    spcmap: str | None
    stop_time: str
    pgdata_mode: int
    pgdata_owner: str | None = None  # the OS user's name (a restore as root gives it back)
    #: summary-guided or not, from which base, and what fell back (physical/summaries.py)
    summaries: dict[str, Any] | None = None


def _guide(repo: Repository, decision: SummaryDecision | None) -> Guide | None:
    if decision is None:
        return None
    return Guide(decision.summaries, repo.config.block_size)


def finish_online_backup(
    repo: Repository,
    stanza: str,
    copy: OnlineCopy,
    *,
    jobs: int,
    fast_checkpoint: bool,
    archive_timeout: float,
    pg_wal: Path | None = None,
) -> Manifest:
    """Wait until the WAL from start to stop is archived, then commit the manifest."""
    timeline = label_timeline(copy.label)
    seg = copy.facts.wal_segment_size
    # The stop LSN may sit exactly on a segment boundary after the switch the server forced;
    # the last segment needed holds the byte before it (XLByteToPrevSeg).
    last_byte = max(copy.stop_lsn - 1, copy.start_lsn)
    segments = segments_between(timeline, copy.start_lsn, last_byte, seg)
    standby = copy.facts.in_recovery
    if pg_wal is not None:
        push_finished_segments(repo, stanza, pg_wal, segments, copy.pg_version)

    def push_more(pending: list[str]) -> None:
        # A standby finishes its last segment when the primary's switch reaches it; only
        # then may the backup push it (it is .done there when the standby does not archive).
        if pg_wal is not None and standby:
            push_finished_segments(repo, stanza, pg_wal, pending, copy.pg_version)

    wait_for_archive(
        repo, stanza, segments, archive_timeout, meanwhile=push_more,
        hint=archive_hint() if standby else None,
    )  # fmt: skip
    manifest = Manifest(
        id=copy.backup_id,
        stanza=stanza,
        kind="physical",
        method=copy.method,
        started=iso(copy.started),
        finished=iso(utc_now()),
        pg_version=copy.pg_version,
        system_identifier=copy.facts.system_identifier,
        files=copy.files,
        tablespaces=copy.facts.tablespaces,
        data_checksums=copy.facts.data_checksums,
        timeline=timeline,
        start_lsn=format_lsn(copy.start_lsn),
        stop_lsn=format_lsn(copy.stop_lsn),
        start_wal=segment_name(timeline, copy.start_lsn, seg),
        stop_wal=segment_name(timeline, last_byte, seg),
        backup_label=copy.label,
        tablespace_map=copy.spcmap,
        checksum_failures=tuple(copy.result.checksum_failures),
        size_bytes=copy.result.size_bytes,
        stored_bytes=stored_bytes(copy.index, copy.result.files),
        new_bytes=copy.result.new_bytes,
        options={
            "jobs": jobs,
            "compression": repo.codec.spec,
            "checkpoint": "fast" if fast_checkpoint else "spread",
        },
        extra={
            "pgdata_mode": copy.pgdata_mode,
            **({"pgdata_owner": copy.pgdata_owner} if copy.pgdata_owner else {}),
            "server_version_num": copy.facts.version_num,
            "wal_segment_size": seg,
            "stop_time": copy.stop_time,
            **({"backup_from": "standby"} if copy.facts.in_recovery else {}),
            **({"read_bytes": copy.result.read_bytes} if copy.method == "online" else {}),
            **({"summaries": copy.summaries} if copy.summaries else {}),
        },
    )
    write_manifest(repo, manifest)
    return manifest
