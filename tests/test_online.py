"""Online physical backups under write load, restored through the WAL archive (issue: online)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgutil import archiving_conf, assert_balanced
from runner import os_user, run_pgkura


@pytest.fixture
def repo(work_dir: Path) -> str:
    path = str(work_dir / "repo")
    run_pgkura("--repo", path, "init")
    return path


def pgbench(server: Any, seconds: int) -> subprocess.Popen[bytes]:
    cmd = [str(server.bin_dir / "pgbench"), "-n", "-c", "4", "-T", str(seconds), "postgres"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    env = {**os.environ, **server.libpq_env()}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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
    src.sql("SELECT pg_switch_wal()")
    src.stop()  # the shutdown checkpoint's segment is archived before the server exits

    info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    entry = info["backups"][0]
    assert entry["method"] == "online" and entry["start_lsn"] and entry["stop_lsn"]

    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    assert (target / "backup_label").is_file() and (target / "recovery.signal").is_file()
    assert not list((target / "pg_wal").glob("0000*"))
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
    src.sql("SELECT pg_switch_wal()")
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


def test_online_backup_refuses_without_archiving(make_server: Any, repo: str) -> None:
    src = make_server("src", extra_conf={"wal_level": "replica"})
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    result = run_pgkura("--repo", repo, "backup", env=env, check=False)
    assert result.returncode != 0
    assert "archive_mode is off" in result.stderr and "archive_command" in result.stderr
    assert (
        json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)["backups"] == []
    )
