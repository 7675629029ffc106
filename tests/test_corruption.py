"""The corruption suite (issue: integrity), after PostgreSQL's pg_verifybackup/t/003_corruption.pl:
damage a repository in one way per test and check that pgkura says so and names the place.
And the other side: a clean repository of a backup taken under heavy writes reports nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from pgutil import archiving_conf
from pgversions import DEFAULT_MAJOR, bin_of
from runner import os_user, run_pgkura


def chown_tree(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


@pytest.fixture(scope="module")
def pristine() -> Iterator[tuple[Path, str]]:
    """A repository with an online backup taken during pgbench, and its WAL archived."""
    base = Path(tempfile.mkdtemp(prefix="pgkura-corrupt-"))
    make_owned_dir(base, os_user(), 0o755)
    repo = base / "repo"
    run_pgkura("--repo", str(repo), "init")
    server = LocalServer(base / "src", free_port(), base, bin_of(DEFAULT_MAJOR), os_user())
    server.initdb(extra_conf=archiving_conf(str(repo)))
    server.start()
    try:
        server.pgbench_init(3)
        cmd = [str(server.bin_dir / "pgbench"), "-n", "-c", "2", "-T", "6", "postgres"]
        if os_user():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        load = subprocess.Popen(cmd, env={**os.environ, **server.libpq_env()}, cwd="/",
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        backup_id = run_pgkura("--repo", str(repo), "backup", env=env).stdout.strip()
        load.wait(timeout=60)
        server.sql("SELECT pg_switch_wal()")
    finally:
        server.stop()
    yield repo, backup_id
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def repo(pristine: tuple[Path, str], work_dir: Path) -> tuple[str, str]:
    copy = work_dir / "repo"
    shutil.copytree(pristine[0], copy)
    chown_tree(copy)
    return str(copy), pristine[1]


def verify(repo: str, *args: str) -> Any:
    return run_pgkura("--repo", repo, "verify", *args, check=False)


def biggest_pack(repo: str) -> Path:
    return max(Path(repo, "packs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)


def test_a_clean_repository_of_a_backup_under_load_reports_nothing(repo: tuple[str, str]) -> None:
    result = verify(repo[0], "--output", "json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] and report["problems"] == [] and report["wal_files_checked"] > 0


def test_an_altered_block_is_named_by_verify_and_stops_restore(
    repo: tuple[str, str], work_dir: Path
) -> None:
    pack = biggest_pack(repo[0])
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0xFF
    pack.write_bytes(bytes(data))
    result = verify(repo[0])
    assert result.returncode == 7
    assert f"backup {repo[1]}: base/" in result.stdout and "damaged" in result.stdout
    restore = run_pgkura("--repo", repo[0], "restore", "--target-dir", str(work_dir / "t"),
                         check=False)  # fmt: skip
    assert restore.returncode == 7 and "is damaged" in restore.stderr
    assert "needed by base/" in restore.stderr  # the file is named


@pytest.mark.parametrize("how", ["truncated", "extended", "missing"])
def test_a_damaged_pack_is_named(repo: tuple[str, str], how: str) -> None:
    pack = biggest_pack(repo[0])
    if how == "truncated":
        pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    elif how == "extended":
        with open(pack, "ab") as f:
            f.write(b"\0" * 1000)
    else:
        pack.unlink()
    result = verify(repo[0])
    assert result.returncode == 7
    assert f"pack packs/{pack.parent.name}/{pack.name}" in result.stdout


@pytest.mark.parametrize("how", ["altered", "truncated"])
def test_a_damaged_manifest_is_named(repo: tuple[str, str], how: str) -> None:
    snapshot = next(Path(repo[0], "snapshots").rglob(repo[1]))
    data = bytearray(snapshot.read_bytes())
    if how == "altered":
        data[-5] ^= 0x01
    else:
        data = data[:100]
    snapshot.write_bytes(bytes(data))
    result = verify(repo[0])
    assert result.returncode == 7
    assert f"the manifest of backup {repo[1]}" in result.stdout and "damaged" in result.stdout


def test_a_manifest_from_another_cluster_is_named(repo: tuple[str, str], make_server: Any) -> None:
    other = make_server("other", start=False)
    run_pgkura("--repo", repo[0], "--stanza", "other", "--pgdata", str(other.pgdata), "backup",
               "--type", "offline")  # fmt: skip
    foreign = next(Path(repo[0], "snapshots", "other").iterdir())
    shutil.copy2(foreign, Path(repo[0], "snapshots", "main", foreign.name))
    chown_tree(Path(repo[0], "snapshots"))
    result = verify(repo[0])
    assert result.returncode == 7
    assert f"backup {foreign.name}: its manifest belongs to system identifier" in result.stdout


def test_missing_and_damaged_wal_are_named(repo: tuple[str, str]) -> None:
    info = json.loads(run_pgkura("--repo", repo[0], "info", repo[1], "--output", "json").stdout)
    start_wal = info["backups"][0]["start_wal"]
    next(Path(repo[0], "wal").rglob(start_wal)).unlink()
    segments = sorted(p for p in Path(repo[0], "wal").rglob("0*") if len(p.name) == 24)
    damaged = segments[-1]
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = verify(repo[0])
    assert result.returncode == 7
    assert f"WAL segment {start_wal}, needed to make it consistent, is missing" in result.stdout
    assert f"archived WAL file {damaged.name} is damaged" in result.stdout


def test_an_unreadable_file_stops_the_backup_and_names_it(make_server: Any, work_dir: Path) -> None:
    repo = str(work_dir / "r2")
    run_pgkura("--repo", repo, "init")
    server = make_server("unreadable", start=False)
    victim = server.pgdata / "global" / "pg_filenode.map"
    victim.chmod(0)
    try:
        result = run_pgkura("--repo", repo, "--pgdata", str(server.pgdata), "backup", "--type",
                            "offline", check=False)  # fmt: skip
    finally:
        victim.chmod(0o600)
    if os_user() is None and os.geteuid() == 0:
        pytest.fail("this check needs a non-root pgkura user")
    assert result.returncode != 0
    assert "global/pg_filenode.map" in result.stderr and "permission denied" in result.stderr
    assert (
        json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)["backups"] == []
    )
