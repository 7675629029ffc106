"""A restore that becomes a standby: `restore --type standby` rebuilds a replica from the
repository instead of from the primary (issue: standby backups and restores)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pgutil import archiving_conf, switch_and_wait_archived
from runner import run_pgkura


def _primary_with_backup(make_server: Any, repo: str) -> tuple[Any, str]:
    primary = make_server("primary", extra_conf=archiving_conf(repo))
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
    primary.sql("INSERT INTO t SELECT g, 'before backup' FROM generate_series(1, 1000) g")
    env = {**primary.libpq_env(), "PGKURA_PGDATA": str(primary.pgdata)}
    out = run_pgkura("--repo", repo, "backup", "--output", "json", env=env)
    return primary, json.loads(out.stdout)["id"]


def _wait_for_rows(server: Any, query: str, expected: int, timeout: float = 90) -> None:
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
