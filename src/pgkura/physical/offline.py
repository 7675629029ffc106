"""Offline physical backup: every file of a cleanly stopped cluster, pg_wal included.

A cleanly stopped cluster needs the WAL of its last checkpoint to start, so nothing is left out.
Refuses while a postmaster owns the data directory or pg_control does not say "shut down",
because a copy of a running cluster without backup mode and WAL is not restorable.
"""

from __future__ import annotations

import stat
from pathlib import Path

from pgkura.errors import ServerRunningError
from pgkura.pg.binaries import find_pg_bin
from pgkura.pg.controldata import ControlData, read_control_data
from pgkura.pg.postmaster import running_postmaster_pid
from pgkura.pg.versions import capabilities
from pgkura.physical.backup import (
    new_backup_id,
    previous_files,
    store_files,
    stored_bytes,
)
from pgkura.physical.restore_owner import data_directory_owner
from pgkura.physical.source import list_tablespaces, walk_data_directory
from pgkura.physical.store import PageCheck
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.locks import backup_lock
from pgkura.repository.manifest import Manifest, write_manifest
from pgkura.repository.repo import Repository, iso, utc_now
from pgkura.repository.stanzas import bind_new_stanza
from pgkura.wal.names import format_lsn

#: Files a restored data directory holds until its recovery has begun (backup_label) or ended.
RECOVERY_MARKERS = ("backup_label", "recovery.signal", "standby.signal")


def check_stopped(pgdata: Path, control: ControlData) -> None:
    pid = running_postmaster_pid(pgdata)
    if pid is not None:
        raise ServerRunningError(
            f"the server is running: postmaster pid {pid} owns {pgdata}",
            hint=f"stop it (pg_ctl stop -D {pgdata}), take an online backup instead "
            "(--type online), or override with --force",
        )
    restoring = [n for n in RECOVERY_MARKERS if (pgdata / n).exists()]
    if not control.clean_shutdown and restoring:
        raise ServerRunningError(
            f"the cluster in {pgdata} has not finished its recovery ({' and '.join(restoring)} "
            f"present; pg_control state: {control.state!r}): no server is running on it, but a "
            "copy of it now would not start",
            hint="start it once so that it recovers (and stop it cleanly with pg_ctl stop -m "
            "fast), or back up the cluster it was restored from",
        )
    if not control.clean_shutdown:
        raise ServerRunningError(
            f"the cluster in {pgdata} was not shut down cleanly "
            f"(pg_control state: {control.state!r})",
            hint="start it and stop it cleanly with pg_ctl stop -m fast, or override with --force",
        )


def backup_offline(
    repo: Repository,
    stanza: str,
    pgdata: Path,
    *,
    pg_bin: str | None,
    search_path: str | None = None,
    jobs: int,
    force: bool = False,
    progress: Progress | None = None,
) -> Manifest:
    pg_version = int((pgdata / "PG_VERSION").read_text().strip())
    what = f"the cluster in {pgdata}"
    capabilities(pg_version, what)
    # pg_control's layout is the major's own: only its pg_controldata reads it right.
    bin_dir = find_pg_bin(pg_bin, major=pg_version, search_path=search_path, what=what)
    control = read_control_data(pgdata, bin_dir)
    if not force:
        check_stopped(pgdata, control)
    bind_new_stanza(repo, stanza, control.system_identifier, pg_version)
    with backup_lock(repo, stanza):
        started = utc_now()
        index = BlockIndex(repo).load(write_back=True)
        previous = previous_files(repo, stanza, control.system_identifier)
        checksums = control.data_checksum_version > 0
        result = store_files(
            repo,
            index,
            walk_data_directory(pgdata),
            jobs=jobs,
            page_check=PageCheck(enabled=checksums),
            progress=progress,
            previous=previous,
        )
        manifest = Manifest(
            id=new_backup_id(started),
            stanza=stanza,
            kind="physical",
            method="offline",
            started=iso(started),
            finished=iso(utc_now()),
            pg_version=pg_version,
            system_identifier=control.system_identifier,
            files=tuple(result.files),
            tablespaces=tuple(list_tablespaces(pgdata)),
            data_checksums=checksums,
            forced=force,
            timeline=control.timeline,
            start_lsn=format_lsn(control.redo_lsn),
            stop_lsn=format_lsn(control.checkpoint_lsn),
            checksum_failures=tuple(result.checksum_failures),
            size_bytes=result.size_bytes,
            stored_bytes=stored_bytes(index, result.files),
            new_bytes=result.new_bytes,
            options={"jobs": jobs, "compression": repo.codec.spec},
            extra={
                "pgdata_mode": stat.S_IMODE(pgdata.stat().st_mode),
                "state": control.state,
                **({"pgdata_owner": owner} if (owner := data_directory_owner(pgdata)) else {}),
            },
        )
        write_manifest(repo, manifest)
        return manifest
