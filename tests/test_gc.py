"""gc reclaims what failed backups and dumps left behind, and nothing a backup needs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from runner import PGKURA, os_user, run_pgkura


def tree_size(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def test_gc_reclaims_a_killed_backup_and_keeps_every_restorable_one(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src")
    src.pgbench_init(5)
    src.stop()
    args = ("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    run_pgkura(*args)
    kept = tree_size(repo)
    # A second backup of a changed cluster, killed once it has written packs.
    src.start()
    src.sql("UPDATE pgbench_accounts SET abalance = abalance + 1")
    src.stop()
    cmd = [PGKURA, *args, "--jobs", "1"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def packs() -> set[str]:
        return {p.name for p in Path(repo, "packs").rglob("*") if p.is_file()
                and not p.name.endswith(".tmp-pgkura")}  # fmt: skip

    before = packs()
    deadline = time.monotonic() + 60
    while not packs() - before and time.monotonic() < deadline:  # a whole new pack is written
        time.sleep(0.02)
    for pid in subprocess.run(["pgrep", "-f", f"{PGKURA} --repo {repo} --pgdata"],
                              capture_output=True, text=True).stdout.split():  # fmt: skip
        os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)
    assert tree_size(repo) > kept

    dry = run_pgkura("--repo", repo, "gc", "--dry-run", "--output", "json")
    assert json.loads(dry.stdout)["packs_deleted"] >= 1
    out = json.loads(run_pgkura("--repo", repo, "gc", "--output", "json").stdout)
    assert out["packs_deleted"] >= 1 and out["bytes_deleted"] > 0
    assert tree_size(repo) <= kept + 64 * 1024  # back to what the one backup needs
    assert run_pgkura("--repo", repo, "verify").returncode == 0
    target = work_dir / "after-gc"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    restored = make_server("after-gc", pgdata=target, init=False)
    assert restored.sql("SELECT count(*) FROM pgbench_accounts")[0][0] == 500000
