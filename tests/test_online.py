"""Online physical backups under write load, restored through the WAL archive (issue: online)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pgutil import (
    archiving_conf,
    assert_balanced,
    pg_verifybackup,
    pgbench,
    switch_and_wait_archived,
    switch_wal,
)
from runner import PGKURA, os_user, run_pgkura


@pytest.mark.matrix
def test_online_backup_under_load_restores_to_the_end_of_the_archive(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.pgbench_init(5)
    # An unlogged table is left out (only its init fork is copied) and comes back empty.
    src.sql("CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    load = pgbench(src, 8)
    out = run_pgkura("--repo", repo, "backup", "--output", "json", env=env)
    backup_id = json.loads(out.stdout)["id"]
    load.wait(timeout=120)
    assert load.returncode == 0, load.stderr.read() if load.stderr else ""
    src.sql("CREATE TABLE after_backup AS SELECT 1 AS x")
    final = assert_balanced(src)
    switch_and_wait_archived(src)
    src.stop()  # the shutdown checkpoint's segment is archived before the server exits

    info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    entry = info["backups"][0]
    assert entry["method"] == "online" and entry["start_lsn"] and entry["stop_lsn"]

    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    assert (target / "backup_label").is_file() and (target / "recovery.signal").is_file()
    assert not list((target / "pg_wal").glob("0000*"))
    pg_verifybackup(src, target)
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert assert_balanced(restored) == final
    assert restored.sql("SELECT x FROM after_backup")[0][0] == 1
    assert restored.sql("SELECT count(*) FROM scratch")[0][0] == 0


def test_to_immediate_stops_at_the_consistency_point(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    # A spread checkpoint is paced over checkpoint_completion_target * checkpoint_timeout.
    conf = {
        **archiving_conf(repo),
        "checkpoint_timeout": "30s",
        "checkpoint_completion_target": "0.1",
    }
    src = make_server("src", extra_conf=conf)
    src.pgbench_init(2)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", "--checkpoint", "spread", env=env).stdout
    src.sql("CREATE TABLE after_backup AS SELECT 1 AS x")
    switch_and_wait_archived(src)
    target = work_dir / "immediate"
    run_pgkura(
        "--repo", repo, "restore", "--backup", backup_id.strip(), "--target-dir", str(target),
        "--to-immediate", "--archive-mode", "off",
    )  # fmt: skip
    restored = make_server("immediate", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert_balanced(restored)
    assert restored.sql("SELECT to_regclass('after_backup') IS NULL")[0][0] is True
    assert restored.sql("SHOW archive_mode")[0][0] == "off"


def test_recovery_settings_left_in_the_backup_do_not_stop_the_restored_server(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    # As a cluster restored before carries them, or a DBA's ALTER SYSTEM.
    src.sql("ALTER SYSTEM SET recovery_target_name = 'long_gone'")
    src.sql("ALTER SYSTEM SET restore_command = 'false'")
    src.sql("CREATE TABLE kept AS SELECT g FROM generate_series(1, 100) g")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    switch_and_wait_archived(src)
    target = work_dir / "again"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--to-immediate")
    auto = (target / "postgresql.auto.conf").read_text()
    assert "# recovery_target_name = 'long_gone'" in auto
    restored = make_server("again", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*) FROM kept")[0][0] == 100
    assert "archive-get" in restored.sql("SHOW restore_command")[0][0]


def test_online_backup_refuses_without_archiving(make_server: Any, repo: str) -> None:
    src = make_server("src", extra_conf={"wal_level": "replica"})
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    result = run_pgkura("--repo", repo, "backup", env=env, check=False)
    assert result.returncode != 0
    assert "archive_mode is off" in result.stderr and "archive_command" in result.stderr
    assert (
        json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)["backups"] == []
    )


def test_a_slow_archiver_does_not_hold_up_a_backup_but_a_failing_one_fails_it(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """The backup pushes its finished segments from pg_wal itself when archive_command is
    healthy but slow (each call here sleeps 15 s, the backup may wait 8 s); the archiver's
    own pushes of the same files later succeed. When archive_command has been failing, the
    backup does not hide it: it waits, times out naming the segment, and records nothing."""
    slow = archiving_conf(repo)
    slow["archive_command"] = "sleep 15; " + slow["archive_command"]
    src = make_server("slow", extra_conf=slow)
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata), "PGKURA_ARCHIVE_TIMEOUT": "8"}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--to-immediate",
               "--archive-mode", "off")  # fmt: skip
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*) FROM t")[0][0] == 1000
    restored.stop(mode="immediate")
    src.stop(mode="immediate")

    failing = make_server("failing", extra_conf={**archiving_conf(repo, "other"),
                                                 "archive_command": "false"})  # fmt: skip
    failing.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while failing.sql("SELECT failed_count FROM pg_stat_archiver")[0][0] == 0:
        assert time.monotonic() < deadline, "archive_command never failed"
        time.sleep(0.1)
    env = {**failing.libpq_env(), "PGKURA_PGDATA": str(failing.pgdata),
           "PGKURA_ARCHIVE_TIMEOUT": "3"}  # fmt: skip
    result = run_pgkura("--repo", repo, "--stanza", "other", "backup", env=env, check=False)
    assert result.returncode != 0 and "did not reach the archive" in result.stderr
    listed = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert [b["id"] for b in listed["backups"]] == [backup_id]


def test_restore_names_a_missing_wal_segment_before_writing(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    start_wal = info["backups"][0]["start_wal"]
    next(Path(repo, "wal").rglob(start_wal)).unlink()
    target = work_dir / "never"
    result = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), check=False)
    assert result.returncode == 9
    assert f"WAL segment {start_wal}" in result.stderr and "not in the archive" in result.stderr
    assert not target.exists()


def test_killed_online_backup_leaves_backup_mode_and_the_next_one_works(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.pgbench_init(10)
    env = {**os.environ, **src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    cmd = [PGKURA, "--repo", repo, "backup", "--jobs", "1"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(Path(repo, "packs").glob("*/*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert src.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkura'")
    for pid in subprocess.run(
        ["pgrep", "-f", f"{PGKURA} --repo {repo} backup"], capture_output=True, text=True
    ).stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=30)
    # The server noticed the session ended and left backup mode by itself.
    for _ in range(100):
        rows = src.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkura'")
        if rows[0][0] == 0:
            break
        time.sleep(0.1)
    assert (
        json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)["backups"] == []
    )
    time.sleep(0.5)  # let the killed process's zombie be reaped
    backup_id = run_pgkura(
        "--repo", repo, "backup", env=src.libpq_env() | {"PGKURA_PGDATA": str(src.pgdata)}
    ).stdout.strip()
    switch_and_wait_archived(src)
    target = work_dir / "after-kill"
    run_pgkura("--repo", repo, "restore", "--backup", backup_id, "--target-dir", str(target),
               "--to-immediate")  # fmt: skip
    restored = make_server("after-kill", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*) FROM pgbench_accounts")[0][0] == 1_000_000


def test_unreachable_server_and_unwritable_repository(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata), "PGPORT": "1"}
    down = run_pgkura("--repo", repo, "backup", "--type", "online", env=env, check=False)
    assert down.returncode != 0 and "cannot connect to PostgreSQL" in down.stderr
    assert "hint:" in down.stderr

    name = switch_wal(src)
    src.stop()
    segment = src.pgdata / "pg_wal" / name
    readonly = work_dir / "readonly-repo"
    run_pgkura("--repo", str(readonly), "init")
    for path in [readonly, *readonly.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        refused = run_pgkura("--repo", str(readonly), "archive-push", str(segment), check=False)
        assert refused.returncode != 0
        assert "permission denied" in refused.stderr and "retries" in refused.stderr
    finally:
        for path in [readonly, *readonly.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
