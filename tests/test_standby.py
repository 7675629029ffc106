"""A restore that becomes a standby: `restore --type standby` rebuilds a replica from the
repository instead of from the primary (issue: standby backups and restores)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pgutil import archiving_conf, assert_balanced, pgbench, switch_and_wait_archived
from runner import run_pgkura


def _primary_with_backup(make_server: Any, repo: str) -> tuple[Any, str]:
    primary = make_server("primary", extra_conf=archiving_conf(repo))
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
    primary.sql("INSERT INTO t SELECT g, 'before backup' FROM generate_series(1, 1000) g")
    env = {**primary.libpq_env(), "PGKURA_PGDATA": str(primary.pgdata)}
    out = run_pgkura("--repo", repo, "backup", "--output", "json", env=env)
    return primary, json.loads(out.stdout)["id"]


def _wait_for_rows(server: Any, query: str, expected: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = server.sql(query)[0][0]
        except Exception:  # the standby may not accept connections yet
            seen = None
        if seen == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{query} gave {seen}, not {expected}, within {timeout} s")


def test_a_standby_restored_from_the_repository_streams_from_its_primary(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    primary, _backup = _primary_with_backup(make_server, repo)
    target = work_dir / "standby"
    run_pgkura(
        "--repo", repo, "restore", "--target-dir", str(target), "--type", "standby",
        "--primary-conninfo", f"host={primary.socket_dir} port={primary.port} user=postgres",
    )  # fmt: skip
    assert (target / "standby.signal").is_file() and not (target / "recovery.signal").exists()
    auto = (target / "postgresql.auto.conf").read_text()
    assert f"port={primary.port}" in auto and "recovery_target_action" not in auto
    standby = make_server("standby", pgdata=target, init=False)
    _wait_for_rows(standby, "SELECT count(*) FROM t", 1000)
    assert standby.sql("SELECT pg_is_in_recovery()")[0][0] is True
    # Streaming: a new row reaches the standby without any WAL switch or archiving.
    primary.sql("INSERT INTO t SELECT g, 'after restore' FROM generate_series(1001, 1500) g")
    _wait_for_rows(standby, "SELECT count(*) FROM t WHERE note = 'after restore'", 500)
    row = standby.sql("SELECT status FROM pg_stat_wal_receiver")
    assert row and row[0][0] == "streaming"


def test_a_standby_without_a_primary_follows_the_archive(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    primary, _backup = _primary_with_backup(make_server, repo)
    target = work_dir / "standby"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--type", "standby")
    assert "primary_conninfo" not in (target / "postgresql.auto.conf").read_text()
    standby = make_server("standby", pgdata=target, init=False)
    _wait_for_rows(standby, "SELECT count(*) FROM t", 1000)
    primary.sql("INSERT INTO t SELECT g, 'archived later' FROM generate_series(1001, 1200) g")
    switch_and_wait_archived(primary)
    # restore_command is retried every wal_retrieve_retry_interval (5 s): the new segment is
    # fetched from the repository by archive-get.
    _wait_for_rows(standby, "SELECT count(*) FROM t WHERE note = 'archived later'", 200)
    assert standby.sql("SELECT pg_is_in_recovery()")[0][0] is True


def test_a_standby_restore_refuses_what_does_not_fit_it(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    _primary, backup = _primary_with_backup(make_server, repo)
    target = work_dir / "standby"
    cases = [
        (["--type", "standby", "--to-immediate"], "a standby takes no recovery target"),
        (["--primary-conninfo", "host=/tmp"], "--primary-conninfo is for a restore that"),
        (
            ["--type", "standby", "--primary-conninfo", "host=/tmp password=secret9"],
            "the connection string contains a password",
        ),
    ]
    for extra, message in cases:
        bad = run_pgkura(
            "--repo", repo, "restore", backup, "--target-dir", str(target), *extra, check=False
        )
        assert bad.returncode == 3, (extra, bad.stderr)
        assert message in bad.stderr and "hint:" in bad.stderr
        assert "secret9" not in bad.stderr
        assert not target.exists(), f"{extra} wrote into the target"


def _wait_for_replay(standby: Any, primary: Any, timeout: float = 60) -> None:
    lsn = primary.sql("SELECT pg_current_wal_lsn()")[0][0]
    query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
    _wait_for_rows(standby, query, True, timeout)


def _standby_of(make_server: Any, primary: Any, repo: str, work_dir: Path) -> Any:
    target = work_dir / "standby"
    conninfo = f"host={primary.socket_dir} port={primary.port} user=postgres"
    run_pgkura(
        "--repo", repo, "restore", "--target-dir", str(target), "--type", "standby",
        "--primary-conninfo", conninfo,
    )  # fmt: skip
    return make_server("standby", pgdata=target, init=False)


def test_a_backup_from_a_standby_under_load_restores_like_the_primarys(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    primary = make_server("primary", extra_conf=archiving_conf(repo))
    primary.pgbench_init(3)
    env = {**primary.libpq_env(), "PGKURA_PGDATA": str(primary.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    standby = _standby_of(make_server, primary, repo, work_dir)
    _wait_for_rows(standby, "SELECT count(*) FROM pgbench_branches", 3)
    primary_conn = f"host={primary.socket_dir} port={primary.port} user=postgres"
    on_standby = {**standby.libpq_env(), "PGKURA_PGDATA": str(standby.pgdata)}

    # check on a standby that archives nothing itself: it says how backups get their WAL.
    bad = run_pgkura("--repo", repo, "check", env=on_standby, check=False)
    assert bad.returncode != 0 and "archives nothing itself" in bad.stdout
    assert "--primary-dbconn" in bad.stdout
    ok = run_pgkura("--repo", repo, "--primary-dbconn", primary_conn, "check", env=on_standby)
    assert "WAL switched on the primary" in ok.stdout and "reached the archive" in ok.stdout

    # Without the primary, the backup's last segment is not finished in time: refused, and
    # the message names both ways out. (A checkpoint in the middle of a segment, replayed by
    # the standby: its restartpoint puts the backup's end there.)
    primary.sql("CREATE TABLE mid_segment AS SELECT g FROM generate_series(1, 1000) g")
    primary.sql("CHECKPOINT")
    _wait_for_replay(standby, primary)
    late = run_pgkura(
        "--repo", repo, "--archive-timeout", "3", "backup", env=on_standby, check=False
    )
    assert late.returncode != 0
    assert "--primary-dbconn" in late.stderr and "--archive-timeout" in late.stderr

    load = pgbench(primary, 8, clients=2)
    out = run_pgkura(
        "--repo", repo, "--primary-dbconn", primary_conn, "backup", "--output", "json",
        env=on_standby,
    )  # fmt: skip
    backup_id = json.loads(out.stdout)["id"]
    load.wait(timeout=120)
    assert load.returncode == 0, load.stderr.read() if load.stderr else ""
    # pg_basebackup from the standby: its end is finished by the same switch on the primary.
    primary.sql("CREATE TABLE by_basebackup AS SELECT 3 AS x")
    _wait_for_replay(standby, primary)
    out = run_pgkura(
        "--repo", repo, "--primary-dbconn", primary_conn, "--archive-timeout", "60", "backup",
        "--type", "basebackup", "--output", "json", env=on_standby,
    )  # fmt: skip
    basebackup_id = json.loads(out.stdout)["id"]
    primary.sql("CREATE TABLE after_backup AS SELECT 7 AS x")
    final = assert_balanced(primary)
    switch_and_wait_archived(primary)
    primary.stop()

    target = work_dir / "by-basebackup"
    run_pgkura("--repo", repo, "restore", basebackup_id, "--target-dir", str(target))
    by_basebackup = make_server("by-basebackup", pgdata=target, init=False)
    by_basebackup.wait_for_promotion()
    assert assert_balanced(by_basebackup) == final
    assert by_basebackup.sql("SELECT x FROM by_basebackup")[0][0] == 3
    by_basebackup.stop()

    target = work_dir / "from-standby"
    run_pgkura("--repo", repo, "restore", backup_id, "--target-dir", str(target))
    assert "BACKUP FROM: standby" in (target / "backup_label").read_text()
    standby.stop()
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert assert_balanced(restored) == final
    assert restored.sql("SELECT x FROM after_backup")[0][0] == 7
