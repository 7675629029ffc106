"""The S3 server stops in the middle of a backup and of WAL archiving (a real SeaweedFS, stopped
and started again): a clear error, nothing committed, and once it is back the next run
completes and restores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pgkura.storage.s3 import S3Storage
from runner import PGKURA, os_user, run_pgkura
from seaweed import S3Repo
from test_s3_e2e import s3_archiving_conf


def start_pgkura(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``pgkura ARGS`` started in the background, as run_pgkura runs it."""
    cmd = [PGKURA, *args]
    if os_user() is not None and os.geteuid() == 0:
        cmd = ["runuser", "-u", os_user() or "", "--", *cmd]
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PGKURA_", "PG"))}
    full["PATH"] = f"{Path(sys.executable).parent}:{full.get('PATH', '/usr/bin:/bin')}"
    full.update(env)
    return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd="/")  # fmt: skip


def wait_for_key(store: S3Storage, prefix: str, proc: subprocess.Popen[str]) -> None:
    """Until an object under ``prefix`` exists (the run is under way) or the run ended."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if next(store.list(prefix), None) is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {prefix} object appeared while the run lasted")


def last_archived(server: Any) -> str | None:
    row = server.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0]
    return None if row[0] is None else str(row[0])


def test_a_backup_cut_off_by_the_server_stopping_commits_nothing_and_the_next_completes(
    make_server: Any, work_dir: Path, private_seaweedfs: Any
) -> None:
    repo = S3Repo(private_seaweedfs, work_dir / "s3", "t/backup-fault", owner=os_user())
    repo.write_config(retry_seconds=3)
    run_pgkura(*repo.args, "init")
    src = make_server("src", extra_conf=s3_archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) || "
            "md5((g * 13)::text) AS v FROM generate_series(1, 700000) g")  # fmt: skip
    store = repo.store(retry_seconds=3)

    backup = start_pgkura(*repo.args, "backup", "--jobs", "1", env=env)
    wait_for_key(store, "packs/", backup)
    private_seaweedfs.stop()
    _out, err = backup.communicate(timeout=300)
    assert backup.returncode != 0, "the backup ended before the server was stopped"
    error = [line for line in err.splitlines() if line.startswith("pgkura: error: ")]
    assert len(error) == 1 and repo.url in error[0] and "did not answer" in error[0], err
    assert "hint: check --s3-endpoint" in err

    private_seaweedfs.start()
    info = json.loads(run_pgkura(*repo.args, "info", "--output", "json").stdout)
    assert info["backups"] == []  # nothing committed half-way
    assert json.loads(run_pgkura(*repo.args, "verify", "--output", "json").stdout)["ok"]
    gc = json.loads(run_pgkura(*repo.args, "gc", "--output", "json").stdout)
    assert gc["packs_deleted"] >= 1  # what the cut-off backup had stored

    backup_id = run_pgkura(*repo.args, "backup", "--jobs", "2", env=env).stdout.strip()
    expected = src.sql("SELECT count(*), md5(string_agg(v, ',' ORDER BY g)) FROM big")[0]
    dest = work_dir / "restored"
    run_pgkura(*repo.args, "restore", "--backup", backup_id, "--target-dir", str(dest),
               "--to-immediate", "--archive-mode", "off")  # fmt: skip
    restored = make_server("restored", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert (
        restored.sql("SELECT count(*), md5(string_agg(v, ',' ORDER BY g)) FROM big")[0] == expected
    )


def test_archiving_while_the_server_is_stopped_fails_clearly_and_catches_up(
    make_server: Any, work_dir: Path, private_seaweedfs: Any
) -> None:
    repo = S3Repo(private_seaweedfs, work_dir / "s3", "t/archive-fault", owner=os_user())
    repo.write_config(retry_seconds=2)
    run_pgkura(*repo.args, "init")
    src = make_server("src", extra_conf=s3_archiving_conf(repo))
    src.sql("CREATE TABLE t (a int)")
    store = repo.store(retry_seconds=2)

    private_seaweedfs.stop()
    src.sql("INSERT INTO t SELECT generate_series(1, 1000)")
    segment = str(src.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    # PostgreSQL's archiver fails and keeps the segment (it retries); so does a push by hand.
    pushed = run_pgkura(*repo.args, "archive-push", str(src.pgdata / "pg_wal" / segment),
                        check=False)  # fmt: skip
    assert pushed.returncode != 0
    lines = pushed.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("pgkura: error: cannot "), pushed.stderr
    assert repo.url in lines[0] and "did not answer" in lines[0]
    deadline = time.monotonic() + 60
    while src.sql("SELECT failed_count FROM pg_stat_archiver")[0][0] == 0:
        assert time.monotonic() < deadline, "the archiver never tried"
        time.sleep(0.2)
    assert (src.pgdata / "pg_wal" / "archive_status" / f"{segment}.ready").exists()

    private_seaweedfs.start()
    deadline = time.monotonic() + 120
    while (last_archived(src) or "") < segment:
        assert time.monotonic() < deadline, "the archiver did not catch up"
        time.sleep(0.2)
    key = f"wal/main/{segment[:16]}/{segment}"
    assert store.exists(key), sorted(o.key for o in store.list("wal/"))
    fetched = work_dir / "fetched"
    fetched.mkdir()
    os.chmod(fetched, 0o777)
    run_pgkura(*repo.args, "archive-get", segment, str(fetched / segment))
    assert (fetched / segment).read_bytes() == (src.pgdata / "pg_wal" / segment).read_bytes()
