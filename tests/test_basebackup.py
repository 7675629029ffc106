"""The pg_basebackup method stores into the same block store and restores like an online
backup (issue: PITR, item 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgutil import (
    archiving_conf,
    assert_balanced,
    chown,
    pg_verifybackup,
    switch_and_wait_archived,
)
from runner import run_pgkura


@pytest.mark.matrix
def test_basebackup_method_restores_and_replays_like_an_online_backup(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    ts_dir = work_dir / "ts"
    ts_dir.mkdir()
    chown(ts_dir)
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.sql(f"CREATE TABLESPACE ts LOCATION '{ts_dir}'")
    src.sql("CREATE TABLE in_ts TABLESPACE ts AS SELECT g FROM generate_series(1, 5000) g")
    src.pgbench_init(2)
    # No --pgdata: the backup goes through the replication protocol only.
    out = run_pgkura("--repo", repo, "backup", "--type", "basebackup", "--output", "json",
                     env=src.libpq_env())  # fmt: skip
    backup_id = json.loads(out.stdout)["id"]
    src.sql("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid <= 1000")
    src.sql("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
            "SELECT 1, 1, 1, 5000, now()")  # fmt: skip
    src.sql("UPDATE pgbench_tellers SET tbalance = tbalance + 5000 WHERE tid = 1")
    src.sql("UPDATE pgbench_branches SET bbalance = bbalance + 5000 WHERE bid = 1")
    final = assert_balanced(src)
    switch_and_wait_archived(src)
    info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    assert info["backups"][0]["method"] == "basebackup"

    target, new_ts = work_dir / "restored", work_dir / "ts-restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--tablespace-map",
               f"ts={new_ts}", "--archive-mode", "off")  # fmt: skip
    pg_verifybackup(src, target)
    src.stop()
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert assert_balanced(restored) == final
    assert restored.sql("SELECT count(*), sum(g) FROM in_ts")[0] == (5000, 12502500)
    assert not list(Path("/tmp").glob("pgkura-basebackup-*"))  # the scratch copy is gone
