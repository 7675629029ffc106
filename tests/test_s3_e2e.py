"""End to end on an S3 repository (a real SeaweedFS): init, offline and online backups with
archive_command pushing into the same bucket, point-in-time restore, verify, gc, info; the
restored servers are started and their data compared with what was committed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pgutil import switch_and_wait_archived
from runner import PGKURA, run_pgkura
from seaweed import ACCESS_KEY, SECRET_KEY


def s3_archiving_conf(repo: Any) -> dict[str, str]:
    command = shlex.join([PGKURA, *repo.args, "archive-push"]) + " %p"
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": command,
        "archive_timeout": "0",
    }


def count(server: Any, table: str = "t") -> int:
    return int(server.sql(f"SELECT count(*) FROM {table}")[0][0])


def test_backups_on_s3_restore_to_a_point_in_time_and_verify(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    run_pgkura(*s3_repo.args, "init")
    conf = s3_archiving_conf(s3_repo)
    # The secret lives in the credentials file, never in a command line (ps shows those).
    assert SECRET_KEY not in conf["archive_command"] and ACCESS_KEY not in conf["archive_command"]
    src = make_server("src", extra_conf=conf)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql(
        "CREATE TABLE t AS SELECT g AS a, repeat('x', 200) AS pad FROM generate_series(1, 20000) g"
    )

    src.stop()
    offline_id = run_pgkura(*s3_repo.args, "backup", "--type", "offline", env=env).stdout.strip()
    src.start()
    online_id = run_pgkura(*s3_repo.args, "backup", "--jobs", "2", env=env).stdout.strip()
    src.sql("INSERT INTO t SELECT g, 'after backup' FROM generate_series(20001, 25000) g")
    target_lsn = str(src.sql("SELECT pg_current_wal_lsn()::text")[0][0])
    src.sql("DELETE FROM t WHERE a > 100")  # the accident, after the target
    switch_and_wait_archived(src)

    # Point in time: the online backup plus the archived WAL up to the target, from S3.
    dest = work_dir / "pitr"
    run_pgkura(*s3_repo.args, "restore", "--backup", online_id, "--target-dir", str(dest),
               "--to-lsn", target_lsn, "--archive-mode", "off", "--jobs", "2")  # fmt: skip
    auto_conf = (dest / "postgresql.auto.conf").read_text()
    assert s3_repo.url in auto_conf and SECRET_KEY not in auto_conf  # restore_command
    pitr = make_server("pitr", pgdata=dest, init=False)
    pitr.wait_for_promotion()
    assert count(pitr) == 25000
    assert pitr.sql("SELECT count(*) FROM t WHERE pad = 'after backup'")[0][0] == 5000

    # The offline backup starts as it was stopped, without any WAL from the archive.
    off_dest = work_dir / "offline"
    run_pgkura(*s3_repo.args, "restore", "--backup", offline_id, "--target-dir", str(off_dest),
               "--archive-mode", "off")  # fmt: skip
    offline = make_server("offline", pgdata=off_dest, init=False)
    assert count(offline) == 20000

    verified = json.loads(run_pgkura(*s3_repo.args, "verify", "--output", "json").stdout)
    assert verified["ok"] is True, verified
    info = json.loads(run_pgkura(*s3_repo.args, "info", "--output", "json").stdout)
    assert {b["id"] for b in info["backups"]} == {offline_id, online_id}
    gc = json.loads(run_pgkura(*s3_repo.args, "gc", "--output", "json").stdout)
    assert gc["packs_deleted"] == 0  # nothing unreferenced: both backups keep their blocks
    # What gc kept still restores (a read of every block, again from the bucket).
    assert json.loads(run_pgkura(*s3_repo.args, "verify", "--output", "json").stdout)["ok"]
