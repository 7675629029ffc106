"""Sandbox restores: the drill (verify --restore) and its record in info (issue: sandbox)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgutil import archiving_conf
from runner import run_pgkura


def sandboxes_left(base: Path) -> list[str]:
    """Sandbox servers or directories left under ``base`` (the TMPDIR pgkura was given, so that
    another test run on the same machine does not count)."""
    procs = subprocess.run(["pgrep", "-af", f"{base}/pgkura-sandbox-"], capture_output=True,
                           text=True)  # fmt: skip
    dirs = [str(p) for p in base.glob("pgkura-sandbox-*")]
    return [line for line in procs.stdout.splitlines() if "pgrep" not in line] + dirs


@pytest.mark.matrix
def test_a_drill_passes_on_a_good_backup_and_is_recorded(
    make_server: Any, repo: str, work_dir: Path
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.pgbench_init(1)
    src.sql("CREATE DATABASE second")
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1234) g", dbname="second")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    out = run_pgkura("--repo", repo, "verify", "--restore", backup_id, "--output", "json",
                     env={"TMPDIR": str(work_dir)})  # fmt: skip
    (result,) = json.loads(out.stdout)["drills"]
    assert result["passed"], result["problems"]
    assert result["row_counts"]["postgres"]["public.pgbench_accounts"] == 100000
    assert result["row_counts"]["second"]["public.t"] == 1234
    assert result["amcheck"] == "passed"
    assert result["pages_checked"] > 0
    assert set(result["timings"]) == {"restore", "recovery", "checks"}
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert info["backups"][0]["last_drill"]["passed"] is True
    assert "restore proven" in run_pgkura("--repo", repo, "info").stdout
    assert sandboxes_left(work_dir) == []
    # The live cluster was not touched: still running, still archiving into the same stanza.
    assert src.sql("SELECT count(*) FROM pgbench_accounts")[0][0] == 100000

    # --all drills every backup, and says so for each.
    second = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    out = run_pgkura("--repo", repo, "verify", "--restore", "--all", "--output", "json",
                     env={"TMPDIR": str(work_dir)})  # fmt: skip
    drills = json.loads(out.stdout)["drills"]
    assert [d["backup"] for d in drills] == [backup_id, second]
    assert all(d["passed"] for d in drills)
    assert sandboxes_left(work_dir) == []


@pytest.mark.parametrize("damage", ["missing WAL", "damaged block"])
def test_a_drill_fails_naming_the_reason(
    make_server: Any, repo: str, damage: str, work_dir: Path
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.pgbench_init(1)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    if damage == "missing WAL":
        info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
        segment = info["backups"][0]["stop_wal"]
        next(Path(repo, "wal").rglob(segment)).unlink()
        reason = f"WAL segment {segment}"
    else:
        pack = max(Path(repo, "packs").rglob("*"), key=lambda p: p.stat().st_size)
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
        reason = "is damaged"
    result = run_pgkura("--repo", repo, "verify", "--restore", backup_id, check=False,
                        env={"TMPDIR": str(work_dir)})  # fmt: skip
    assert result.returncode != 0
    assert "FAILED" in result.stdout and reason in result.stdout
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert info["backups"][0]["last_drill"]["passed"] is False
    assert sandboxes_left(work_dir) == []


def test_a_sandbox_too_big_for_its_disk_is_refused_up_front(
    make_server: Any, repo: str, work_dir: Path
) -> None:
    """The scratch space is checked before anything is restored, and the message gives the size
    needed. A 20 MiB tmpfs stands in for a full disk (mounting needs root, as the suite is run
    by scripts/test; as another user this test fails rather than pretending)."""
    assert os.geteuid() == 0, "this test mounts a small tmpfs: run the suite as root"
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.pgbench_init(1)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    tiny = work_dir / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m,mode=1777", "tmpfs", str(tiny)],
                   check=True)  # fmt: skip
    try:
        result = run_pgkura("--repo", repo, "verify", "--restore", backup_id, check=False,
                            env={"TMPDIR": str(tiny)})  # fmt: skip
        assert result.returncode != 0
        assert "MiB free; the sandbox needs about" in result.stdout
        assert list(tiny.iterdir()) == []  # nothing was written there
    finally:
        subprocess.run(["umount", str(tiny)], check=True)


def test_a_drill_of_a_cluster_whose_superuser_is_not_postgres(
    make_server: Any, repo: str, work_dir: Path
) -> None:
    src = make_server("admin", initdb_args=["-U", "admin"], extra_conf=archiving_conf(repo))
    env = {**src.libpq_env(), "PGUSER": "admin", "PGKURA_PGDATA": str(src.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    out = run_pgkura("--repo", repo, "verify", "--restore", backup_id, "--output", "json",
                     env={**env, "TMPDIR": str(work_dir)})  # fmt: skip
    (result,) = json.loads(out.stdout)["drills"]
    assert result["passed"], result["problems"]
    assert result["amcheck"] == "passed"


def test_an_offline_backup_is_drilled_as_it_was_taken(
    make_server: Any, repo: str, work_dir: Path
) -> None:
    """An offline backup takes no recovery target; the drill's default (the consistency point
    of an online backup) must not stop it from being drilled, alone or with --all."""
    src = make_server("cold")
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 4321) g")
    src.stop()
    offline = run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type",
                         "offline").stdout.strip()  # fmt: skip
    out = run_pgkura("--repo", repo, "verify", "--restore", offline, "--output", "json",
                     env={"TMPDIR": str(work_dir)})  # fmt: skip
    (result,) = json.loads(out.stdout)["drills"]
    assert result["passed"], result["problems"]
    assert result["row_counts"]["postgres"]["public.t"] == 4321
    assert "offline" in result["target"]
    out = run_pgkura("--repo", repo, "verify", "--restore", "--all", "--output", "json",
                     env={"TMPDIR": str(work_dir)})  # fmt: skip
    assert [d["passed"] for d in json.loads(out.stdout)["drills"]] == [True]
    # A target asked for still cannot apply to an offline backup: refused, not ignored.
    out = run_pgkura("--repo", repo, "verify", "--restore", offline, "--to-lsn", "0/1000000",
                     env={"TMPDIR": str(work_dir)}, check=False)  # fmt: skip
    assert out.returncode != 0 and "offline backup" in out.stdout + out.stderr
    assert sandboxes_left(work_dir) == []
