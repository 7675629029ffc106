"""--archive-async: a background pusher and a prefetcher behind archive-push/-get
(issue: PITR, item 4). A segment is never acknowledged before it is durable."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgutil import switch_wal
from runner import PGKURA, os_user, run_pgkura


@pytest.mark.matrix
def test_async_archiving_and_prefetching_restore(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    spool = work_dir / "spool"
    flags = ["--repo", repo, "--archive-async", "on", "--spool-path", str(spool)]
    conf = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": shlex.join([PGKURA, *flags, "archive-push"]) + " %p",
    }
    src = make_server("src", extra_conf=conf)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.pgbench_init(5)  # several segments of WAL, archived through the pusher
    backup_id = run_pgkura(*flags, "backup", env=env).stdout.strip()
    src.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 3 = 0")
    expected = src.sql("SELECT sum(abalance) FROM pgbench_accounts")[0][0]
    last = switch_wal(src)
    check = run_pgkura(*flags, "check", env=env)
    assert "reached the archive" in check.stdout
    assert list(Path(repo, "wal").rglob(last))
    # Every acknowledgement was consumed by the archiver: nothing is left pending.
    assert not list((spool / "out").glob("*.error"))

    target = work_dir / "restored"
    run_pgkura(*flags, "restore", "--backup", backup_id, "--target-dir", str(target),
               "--archive-mode", "off")  # fmt: skip
    auto = (target / "postgresql.auto.conf").read_text()
    assert "--archive-async on" in auto
    src.stop()
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT sum(abalance) FROM pgbench_accounts")[0][0] == expected
    # Both background processes ran: the pusher for the archiver, the prefetcher for replay.
    assert (spool / "push.lock").exists()
    # The prefetcher's inbox is the recovered cluster's own: restores of two generations of a
    # stanza (stanza upgrade) ask for segments of the same names.
    sysid = restored.sql("SELECT system_identifier FROM pg_control_system()")[0][0]
    assert (spool / f"in-{sysid}" / "get.lock").exists()
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert info["window"] is not None


def test_async_push_reports_a_refused_segment(make_server: Any, work_dir: Path, repo: str) -> None:
    """A push the background process cannot do fails the foreground command with its reason."""
    spool = work_dir / "spool"
    flags = ["--repo", repo, "--archive-async", "on", "--spool-path", str(spool)]
    first = make_server("first", extra_conf={"wal_level": "replica"})
    second = make_server("second", extra_conf={"wal_level": "replica"})
    seg1 = switch_wal(first)
    run_pgkura("--repo", repo, "archive-push", str(first.pgdata / "pg_wal" / seg1))
    second.sql("CREATE TABLE x AS SELECT 1")
    seg2 = switch_wal(second)
    (second.pgdata / "pg_wal" / "archive_status" / f"{seg2}.ready").touch()
    cmd = [PGKURA, *flags, "--archive-timeout", "20", "archive-push", f"pg_wal/{seg2}"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, cwd=second.pgdata, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "system identifier" in proc.stderr
