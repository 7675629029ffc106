"""The pg_basebackup method: an online backup taken through the replication protocol, for
servers whose files pgkura cannot read directly (another host, another OS user).

pg_basebackup writes a plain copy into a scratch directory (tablespaces mapped into it too),
without WAL (``-X none``: the archive has it); pgkura then stores that copy in the same block
store with the same kind of manifest as an online backup, so restore and PITR do not care how
the backup was taken. The scratch directory (under $TMPDIR, needing the cluster's size) is
removed afterwards, also on errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pgkura.config import Config
from pgkura.errors import PgkuraError, PostgresError
from pgkura.pg.binaries import find_pg_bin, pg_tool
from pgkura.pg.process import run
from pgkura.pg.versions import major_of_version_num
from pgkura.physical.backup import new_backup_id, previous_files, store_files
from pgkura.physical.exclusions import OnlineExclusions
from pgkura.physical.online import (
    OnlineCopy,
    ServerFacts,
    finish_online_backup,
    label_timeline,
    server_facts,
)
from pgkura.physical.source import walk_data_directory
from pgkura.physical.standby import check_still_standby, switch_primary_wal
from pgkura.physical.store import PageCheck
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.locks import backup_lock
from pgkura.repository.manifest import FileEntry, Manifest
from pgkura.repository.repo import Repository, iso, utc_now
from pgkura.repository.stanzas import bind_new_stanza
from pgkura.scratch import make_scratch
from pgkura.wal.names import parse_lsn

_LABEL_FIELD = re.compile(r"^(START WAL LOCATION): ([^ \n]+)", re.MULTILINE)


def _manifest_end_lsn(path: Path) -> int:
    """The end of the WAL the backup needs, from pg_basebackup's backup_manifest (with
    ``-X none`` it prints no end point)."""
    try:
        ranges = json.loads(path.read_text())["WAL-Ranges"]
        return max(parse_lsn(r["End-LSN"]) for r in ranges)
    except (OSError, ValueError, KeyError, TypeError):
        raise PostgresError(f"pg_basebackup's {path.name} has no readable WAL-Ranges") from None


def _label_start_lsn(label: str) -> int:
    fields = dict(_LABEL_FIELD.findall(label))
    try:
        return parse_lsn(fields["START WAL LOCATION"])
    except (KeyError, ValueError):
        raise PgkuraError("pg_basebackup wrote a backup_label pgkura cannot read") from None


def _command(
    bin_dir: Path,
    pgdata: Path,
    scratch: Path,
    facts: ServerFacts,
    dbconn: str | None,
    fast_checkpoint: bool,
) -> list[str]:
    """pg_basebackup copying the cluster into ``pgdata`` (tablespaces beside it, no WAL:
    the archive has it)."""
    cmd = [
        pg_tool(bin_dir, "pg_basebackup"), "-D", str(pgdata), "-Fp", "-X", "none",
        "--no-sync", "--manifest-checksums=NONE",
        "--checkpoint", "fast" if fast_checkpoint else "spread",
        "--label", "pgkura basebackup",
    ]  # fmt: skip
    for ts in facts.tablespaces:
        cmd += ["-T", f"{ts.location}={scratch / f'ts-{ts.oid}'}"]
    if dbconn:
        cmd += ["-d", dbconn]
    return cmd


def _real_tablespace_targets(
    files: Sequence[FileEntry], facts: ServerFacts
) -> tuple[FileEntry, ...]:
    """The copy's tablespace links point into the scratch directory; record where the
    tablespaces really are."""
    locations = {str(ts.oid): ts.location for ts in facts.tablespaces}
    return tuple(
        replace(f, target=locations.get(f.path.rsplit("/", 1)[-1], f.target))
        if f.type == "tablespace"
        else f
        for f in files
    )


def backup_basebackup(
    repo: Repository,
    cfg: Config,
    *,
    jobs: int,
    fast_checkpoint: bool,
    progress: Progress | None = None,
) -> Manifest:
    from pgkura.pg.connection import connect

    with connect(cfg.dbconn) as conn:
        facts = server_facts(conn)  # refuses an unsupported major
    stanza = cfg.stanza
    pg_version = major_of_version_num(facts.version_num)
    # pg_basebackup reads servers of its own major and older ones: the server's own is
    # chosen, unless --pg-bin names one (a newer one works too).
    major, path = (None if cfg.pg_bin else pg_version), cfg.pg_search_path
    bin_dir = find_pg_bin(cfg.pg_bin, major=major, search_path=path, what="the server")
    bind_new_stanza(repo, stanza, facts.system_identifier, pg_version)
    scratch = make_scratch("basebackup")
    try:
        pgdata = scratch / "pgdata"
        cmd = _command(bin_dir, pgdata, scratch, facts, cfg.dbconn, fast_checkpoint)
        with backup_lock(repo, stanza):
            started = utc_now()
            backup_id = new_backup_id(started)
            run(cmd, timeout=None)
            stop_time = iso(utc_now())
            stop_lsn = _manifest_end_lsn(pgdata / "backup_manifest")
            (pgdata / "backup_manifest").unlink()  # pg_basebackup's, not part of PGDATA
            label = (pgdata / "backup_label").read_text()
            start_lsn = _label_start_lsn(label)
            if facts.in_recovery:  # as for an online backup from a standby (standby.py)
                with connect(cfg.dbconn) as conn:
                    check_still_standby(conn, label_timeline(label))
                switch_primary_wal(cfg)
            index = BlockIndex(repo).load(write_back=True)
            result = store_files(
                repo,
                index,
                walk_data_directory(pgdata, OnlineExclusions(pgdata)),
                jobs=jobs,
                page_check=PageCheck(enabled=facts.data_checksums, start_lsn=start_lsn),
                progress=progress,
                previous=previous_files(repo, stanza, facts.system_identifier),
            )
            files = _real_tablespace_targets(result.files, facts)
            return finish_online_backup(
                repo,
                stanza,
                OnlineCopy(
                    backup_id=backup_id,
                    method="basebackup",
                    started=started,
                    pg_version=pg_version,
                    facts=facts,
                    files=files,
                    result=result,
                    index=index,
                    start_lsn=start_lsn,
                    stop_lsn=stop_lsn,
                    label=label,
                    spcmap="".join(f"{ts.oid} {ts.location}\n" for ts in facts.tablespaces) or None,
                    # pg_basebackup returns after pg_backup_stop; this client-side time is a
                    # little later than the server's stop, which only makes choices safer.
                    stop_time=stop_time,
                    pgdata_mode=stat.S_IMODE(os.stat(pgdata).st_mode),
                ),
                jobs=jobs,
                fast_checkpoint=fast_checkpoint,
                archive_timeout=cfg.archive_timeout,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
