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


def test_a_block_two_workers_both_stored_survives_gc(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """Worker processes store units side by side, each into packs of its own: a block new to
    both is stored twice and the index keeps one copy. gc may drop the other pack; every
    backup must still verify and restore byte for byte."""
    src = make_server("src")
    src.stop()
    extra = src.pgdata / "extra"
    extra.mkdir()
    same = os.urandom(40 * 1024 * 1024)  # larger than a unit: one unit per copy
    for n in range(4):
        (extra / f"copy{n}").write_bytes(same)
    if os_user():
        subprocess.run(["chown", "-R", "postgres:postgres", str(extra)], check=True)
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline",
               "--jobs", "2")  # fmt: skip
    # One copy per worker was stored (random bytes do not compress): the case under test. If
    # workers ever share new blocks, this test needs another way to store a block twice.
    assert 1.5 * len(same) < tree_size(repo) < 2 * len(same) + 8 * 1024 * 1024
    run_pgkura("--repo", repo, "gc")
    assert run_pgkura("--repo", repo, "verify").returncode == 0
    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    for n in range(4):
        assert (target / "extra" / f"copy{n}").read_bytes() == same
    # Packs kept but no longer pointed to, if any, are still read correctly by a new backup.
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    assert run_pgkura("--repo", repo, "verify").returncode == 0
