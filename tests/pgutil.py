"""Helpers shared by the tests that run archiving servers."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runner import PGKURA, os_user

BALANCES = (
    "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
    " (SELECT sum(tbalance) FROM pgbench_tellers),"
    " (SELECT sum(bbalance) FROM pgbench_branches),"
    " (SELECT coalesce(sum(delta), 0) FROM pgbench_history)"
)


def archiving_conf(repo: str, stanza: str = "main") -> dict[str, str]:
    command = shlex.join([PGKURA, "--repo", repo, "--stanza", stanza, "archive-push"]) + " %p"
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": command,
        "archive_timeout": "0",
    }


def chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def assert_balanced(server: Any) -> tuple[int, ...]:
    """pgbench's invariant: every transaction adds the same delta to all four tables."""
    row = tuple(int(v) for v in server.sql(BALANCES)[0])
    assert len(set(row)) == 1, f"pgbench balances differ: {row}"
    return row


def pg_verifybackup(server: Any, target: Path) -> None:
    """PostgreSQL's own check of the restored directory against the backup_manifest pgkura
    left there (before the server is started; -n: WAL is checked by pgkura, not here)."""
    import subprocess

    cmd = [str(server.bin_dir / "pg_verifybackup"), "-n", str(target)]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr


def switch_wal(server: Any) -> str:
    """Force a WAL switch; the name of the segment it finished.

    A switch with nothing written since the previous one (pg_backup_stop switches too)
    returns the segment boundary, and pg_walfile_name names a boundary as the segment before
    it up to PostgreSQL 16 but as the one after it from 17 on: a record is written first, so
    the switch always finishes a segment that holds WAL."""
    server.sql("SELECT pg_logical_emit_message(false, 'pgkura-test', 'switch')")
    return str(server.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0])


def switch_and_wait_archived(server: Any, timeout: float = 60) -> str:
    """Force a WAL switch and wait until the archiver has archived the finished segment."""
    import time

    segment = switch_wal(server)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = server.sql("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")[0]
        if row[0] is not None and row[0] >= segment:
            return segment
        time.sleep(0.05)
    raise AssertionError(f"{segment} was not archived within {timeout} s: {row}")


def pgbench(server: Any, seconds: int, clients: int = 4) -> subprocess.Popen[bytes]:
    """A pgbench write load on ``server`` for ``seconds``, started and left running."""
    cmd = [str(server.bin_dir / "pgbench"), "-n", "-c", str(clients), "-T", str(seconds),
           "postgres"]  # fmt: skip
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    env = {**os.environ, **server.libpq_env()}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
