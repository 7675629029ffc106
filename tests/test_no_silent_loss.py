"""Faults that used to lose committed rows without a word, or destroy a live cluster (issue:
no silent data loss). Each test reproduces one of them against real servers and repositories."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pgutil import archiving_conf, chown, switch_and_wait_archived
from runner import PGKURA, os_user, run_pgkura

ROWS = "SELECT count(*) FROM t"


def archived(repo: str, name: str) -> Path:
    return Path(repo, "wal", "main", name[:16], name)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class Batches:
    """A source cluster, one online backup, then three batches of rows each in a segment of
    its own: ``segments[i]`` holds batch i (1000 rows each)."""

    def __init__(self, make_server: Any, repo: str) -> None:
        self.repo = repo
        self.src = make_server("src", extra_conf=archiving_conf(repo))
        self.env = {**self.src.libpq_env(), "PGKURA_PGDATA": str(self.src.pgdata)}
        self.src.sql("CREATE TABLE t (i int)")
        self.backup = run_pgkura("--repo", repo, "backup", env=self.env).stdout.strip()
        self.segments: list[str] = []
        for n in range(3):
            self.src.sql(f"INSERT INTO t SELECT generate_series({n * 1000 + 1}, {n * 1000 + 1000})")
            self.segments.append(
                str(self.src.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
            )
            switch_and_wait_archived(self.src)
        switch_and_wait_archived(self.src)


def restore(repo: str, target: Path, *args: str, check: bool = True) -> Any:
    return run_pgkura(
        "--repo", repo, "restore", "--target-dir", str(target), "--archive-mode", "off", *args,
        check=check,
    )  # fmt: skip


def test_restore_refuses_the_directories_of_a_running_server(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    ts = work_dir / "ts1"
    ts.mkdir()
    chown(ts)
    src.sql(f"CREATE TABLESPACE ts1 LOCATION '{ts}'")
    src.sql("CREATE TABLE t TABLESPACE ts1 AS SELECT generate_series(1, 100) AS i")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    src.sql("INSERT INTO t SELECT generate_series(101, 200)")  # committed after the backup
    wal_before = sorted(p.name for p in (src.pgdata / "pg_wal").iterdir())

    attempts = [
        ("--target-dir", str(src.pgdata), "--delta"),
        ("--target-dir", str(src.pgdata / "base"), "--delta"),
        ("--target-dir", str(work_dir), "--delta"),  # holds the live data directory
        ("--target-dir", str(work_dir / "new"), "--tablespace-map", f"ts1={ts}", "--delta"),
        ("--target-dir", str(work_dir / "new2"), "--tablespace-map", f"ts1={ts}"),
    ]
    for args in attempts:
        result = run_pgkura("--repo", repo, "restore", *args, check=False)
        assert result.returncode == 6, (args, result.stderr)
        assert "running" in result.stderr and "nothing was written" in result.stderr
    assert not (work_dir / "new").exists() and not (work_dir / "new2").exists()
    # The live cluster is as it was: its pid file, its WAL, its rows, and it still archives.
    assert (src.pgdata / "postmaster.pid").is_file()
    assert not (src.pgdata / "backup_label").exists()
    assert not (src.pgdata / "recovery.signal").exists()
    assert set(wal_before) <= {p.name for p in (src.pgdata / "pg_wal").iterdir()}
    assert src.sql(ROWS)[0][0] == 200
    switch_and_wait_archived(src)


def test_a_damaged_segment_in_the_middle_is_refused_and_stops_recovery_loudly(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    b = Batches(make_server, repo)
    # First a restore made while the archive was intact, started after the damage: recovery
    # must stop at the damaged segment instead of promoting with 1000 of 3000 rows.
    early = work_dir / "early"
    restore(repo, early)
    flip_byte(archived(repo, b.segments[1]))
    server = make_server("early", pgdata=early, init=False, start=False)
    try:
        server.start(timeout=60)
        server.wait_for_promotion(timeout=60)
        promoted = True
    except Exception:
        promoted = False
    assert not promoted, f"recovery promoted past damage with {server.sql(ROWS)} rows"
    log = server.log_file.read_text()
    assert b.segments[1] in log and "damaged" in log
    assert not list(Path(repo, "wal", "main", "history").glob("00000002.history"))

    # archive-get itself: 126 (stop recovery), not 1 (not in the archive).
    dest = work_dir / "dest"
    dest.mkdir()
    chown(dest)
    got = run_pgkura("--repo", repo, "archive-get", b.segments[1], str(dest / "x"), check=False)
    assert got.returncode == 255 and "damaged" in got.stderr
    assert not (dest / "x").exists()

    # A new restore to the end refuses before writing, naming the segment and the way out.
    target = work_dir / "refused"
    refused = restore(repo, target, check=False)
    assert refused.returncode == 7, refused.stderr
    assert b.segments[1] in refused.stderr and "damaged" in refused.stderr
    assert not target.exists()
    hint = refused.stderr.split("--to-lsn ", 1)[1].split()[0]

    # Following the hint gives every row committed before the damaged segment.
    ok = work_dir / "to-lsn"
    restore(repo, ok, "--to-lsn", hint)
    restored = make_server("ok", pgdata=ok, init=False)
    restored.wait_for_promotion()
    assert restored.sql(ROWS)[0][0] == 1000


def test_a_hole_in_the_archive_is_refused_before_writing(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    b = Batches(make_server, repo)
    archived(repo, b.segments[1]).unlink()
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert any(tl["gaps"] for tl in info["timelines"])

    target = work_dir / "refused"
    refused = restore(repo, target, check=False)
    assert refused.returncode == 7, refused.stderr
    assert b.segments[1] in refused.stderr and "missing" in refused.stderr
    assert not target.exists()

    # During recovery archive-get calls the hole a hole: recovery stops, it does not end.
    dest = work_dir / "dest"
    dest.mkdir()
    chown(dest)
    got = run_pgkura("--repo", repo, "archive-get", b.segments[1], str(dest / "x"), check=False)
    assert got.returncode == 255 and "hole" in got.stderr
    # The end of the archive is still "not found", as PostgreSQL's probing expects.
    past = b.segments[-1][:16] + "000000FF"
    end = run_pgkura("--repo", repo, "archive-get", past, str(dest / "y"), check=False)
    assert end.returncode == 1

    hint = refused.stderr.split("--to-lsn ", 1)[1].split()[0]
    ok = work_dir / "to-lsn"
    restore(repo, ok, "--to-lsn", hint)
    restored = make_server("ok", pgdata=ok, init=False)
    restored.wait_for_promotion()
    assert restored.sql(ROWS)[0][0] == 1000
    conf = (ok / "postgresql.auto.conf").read_text()
    assert "--stop-after" in conf


def test_archive_get_never_reports_an_error_as_not_found(work_dir: Path) -> None:
    # No repository at all: restore_command must stop recovery (126), not end it (1).
    dest = work_dir / "dest"
    dest.mkdir()
    chown(dest)
    cmd = [PGKURA, "--repo", str(work_dir / "nowhere"), "archive-get",
           "000000010000000000000003", str(dest / "x")]  # fmt: skip
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    assert proc.returncode == 255, proc.stderr
    assert "not a pgkura repository" in proc.stderr


def test_gc_never_deletes_a_pack_whose_index_object_was_lost(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT generate_series(1, 50000) AS i")
    src.stop()
    args = ("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    run_pgkura(*args)
    run_pgkura(*args)  # two backups reference the same packs
    packs = sorted(p.name for p in Path(repo, "packs").rglob("*") if p.is_file())
    victim = max(packs, key=lambda name: Path(repo, "packs", name[:2], name).stat().st_size)
    Path(repo, "index", victim).unlink()

    # verify names the loss and the repair; restore reads the pack's own copy meanwhile.
    found = run_pgkura("--repo", repo, "verify", check=False)
    assert found.returncode == 7 and victim in found.stdout and "repair index" in found.stdout
    early = work_dir / "early"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(early))

    report = json.loads(run_pgkura("--repo", repo, "gc", "--output", "json").stdout)
    assert report["packs_deleted"] == 0 and report["indexes_rebuilt"] == [victim]
    assert Path(repo, "packs", victim[:2], victim).is_file()
    assert Path(repo, "index", victim).is_file()
    assert run_pgkura("--repo", repo, "verify").returncode == 0

    # pgkura repair index does the same without gc.
    Path(repo, "index", victim).unlink()
    repaired = json.loads(run_pgkura("--repo", repo, "repair", "index", "--output", "json").stdout)
    assert repaired["rebuilt"] == [victim] and Path(repo, "index", victim).is_file()
    target = work_dir / "after-gc"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql(ROWS)[0][0] == 50000


def test_every_form_of_password_is_refused(make_server: Any, repo: str) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    host, port = str(src.socket_dir), str(src.port)
    forms = [
        f"postgresql://postgres:pw@/postgres?host={host}&port={port}",
        f"postgres://:pw@/postgres?host={host}&port={port}",
        f"postgresql:///postgres?host={host}&port={port}&password=pw",
        f"host={host} port={port} user=postgres password=pw",
        f"host={host} port={port} user=postgres password = 'p w'",
    ]
    for form in forms:
        result = run_pgkura("--repo", repo, "--dbconn", form, "check", check=False)
        assert result.returncode == 3, (form, result.stderr)
        assert "password" in result.stderr and ".pgpass" in result.stderr
        assert "pw" not in result.stderr.replace("password", "")
    # A database called "password" is not a password.
    src.sql("CREATE DATABASE password_db")
    fine = run_pgkura(
        "--repo", repo, "--dbconn", f"host={host} port={port} dbname=password_db", "check",
    )  # fmt: skip
    assert "reached the archive" in fine.stdout
    # PGPASSWORD would be passed on to libpq and PostgreSQL's programs: refused too.
    for args in (("check",), ("dump", "--dbname", "postgres")):
        env = {**src.libpq_env(), "PGPASSWORD": "pw"}
        result = run_pgkura("--repo", repo, *args, env=env, check=False)
        assert result.returncode == 3, (args, result.stderr)
        assert "PGPASSWORD" in result.stderr and ".pgpass" in result.stderr
