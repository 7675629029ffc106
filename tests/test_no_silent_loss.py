"""Faults that used to lose committed rows without a word, or destroy a live cluster (issue:
no silent data loss). Each test reproduces one of them against real servers and repositories."""

from __future__ import annotations

import json
import shutil
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
    assert refused.returncode == 9, refused.stderr
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
    assert victim in indexed_packs(repo)  # in its own object, or in the merged one gc wrote
    assert run_pgkura("--repo", repo, "verify").returncode == 0

    # pgkura repair index does the same without gc: here for every pack.
    shutil.rmtree(Path(repo, "index"))
    repaired = json.loads(run_pgkura("--repo", repo, "repair", "index", "--output", "json").stdout)
    assert victim in repaired["rebuilt"] and Path(repo, "index", victim).is_file()
    assert sorted(repaired["rebuilt"]) == sorted(packs)
    target = work_dir / "after-gc"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql(ROWS)[0][0] == 50000


def indexed_packs(repo: str) -> set[str]:
    """The packs some index object of the repository names."""
    from pgkura.repository.index_files import read_index_objects
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    return set(read_index_objects(Repository.open(PosixStorage(repo))).packs)


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


def count_files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file())


def test_a_restore_killed_late_leaves_a_directory_that_does_not_start(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    import shutil
    import time

    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT generate_series(1, 100000) AS i")
    for n in range(300):  # many small files, so that the kill lands among them
        src.sql(f"CREATE TABLE small_{n} AS SELECT {n} AS i")
    src.stop()
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    total = count_files(src.pgdata)

    target = work_dir / "killed"
    cmd = [PGKURA, "--repo", repo, "restore", "--target-dir", str(target), "--jobs", "1"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    for _attempt in range(10):  # until the kill lands before the restore's end
        shutil.rmtree(target, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if target.is_dir() and count_files(target) >= total * 7 // 8:
                break
            time.sleep(0.002)
        kill_pgkura(f"restore --target-dir {target}")
        proc.wait(timeout=30)
        if (target / "pgkura_restore_in_progress").exists():
            break
    else:
        raise AssertionError("every restore finished before it could be killed")
    assert not (target / "global" / "pg_control").exists()
    assert (target / "pgkura_restore_in_progress").exists()
    half = make_server("half", pgdata=target, init=False, start=False)
    try:
        half.start(timeout=30)
        started = True
    except Exception:
        started = False
    assert not started, "a half-restored directory started"

    # --delta finishes it; and a --delta restore takes pg_control away before it starts work.
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--delta")
    assert not (target / "pgkura_restore_in_progress").exists()
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql(ROWS)[0][0] == 100000
    assert restored.sql("SELECT i FROM small_299")[0][0] == 299


def test_delta_never_deletes_what_is_not_the_clusters(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    import stat

    src = make_server("src")
    ts = work_dir / "ts1"
    ts.mkdir()
    chown(ts)
    src.sql(f"CREATE TABLESPACE ts1 LOCATION '{ts}'")
    src.sql("CREATE TABLE t TABLESPACE ts1 AS SELECT generate_series(1, 1000) AS i")
    oid = src.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")[0][0]
    src.stop()
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")

    # A directory the user keeps other things in, named by mistake.
    photos = work_dir / "photos"
    photos.mkdir()
    (photos / "summer.jpg").write_text("not a cluster")
    photos.chmod(0o755)
    chown(photos)
    chown(photos / "summer.jpg")
    for args in (
        ("--target-dir", str(photos), "--delta"),
        ("--target-dir", str(work_dir / "new"), "--tablespace-map", f"{oid}={photos}", "--delta"),
    ):
        result = run_pgkura("--repo", repo, "restore", *args, check=False)
        assert result.returncode == 3, (args, result.stderr)
        assert "would delete" in result.stderr and "nothing was changed" in result.stderr
        assert (photos / "summer.jpg").read_text() == "not a cluster"
        assert stat.S_IMODE(photos.stat().st_mode) == 0o755
    assert not (work_dir / "new").exists()

    # A tablespace location shared with another version's directory keeps that directory.
    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target),
               "--tablespace-map", f"{oid}={work_dir / 'ts-new'}")  # fmt: skip
    other = work_dir / "ts-new" / "PG_99_202601011"
    other.mkdir()
    (other / "keep").write_text("another cluster's")
    chown(other)
    chown(other / "keep")
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--delta",
               "--tablespace-map", f"{oid}={work_dir / 'ts-new'}")  # fmt: skip
    assert (other / "keep").read_text() == "another cluster's"
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql(ROWS)[0][0] == 1000


def test_restore_stops_before_writing_when_it_can_know_and_says_when_it_cannot(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT md5(g::text) AS v FROM generate_series(1, 200000) g")
    src.stop()
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    packs = sorted(Path(repo, "packs").rglob("*"), key=lambda p: p.stat().st_size)
    biggest = [p for p in packs if p.is_file()][-1]
    saved = biggest.read_bytes()

    # A missing pack, and a truncated one: known before anything is written.
    for damage in ("missing", "truncated"):
        if damage == "missing":
            biggest.unlink()
        else:
            biggest.write_bytes(saved[: len(saved) // 2])
        target = work_dir / f"refused-{damage}"
        result = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), check=False)
        assert result.returncode == 7, result.stderr
        assert damage in result.stderr and "nothing was written" in result.stderr
        assert not target.exists()

    # Damage inside a block is found only when the block is read: the target is then said
    # to be incomplete, and it has no pg_control.
    damaged = bytearray(saved)
    damaged[len(damaged) // 3] ^= 0xFF
    biggest.write_bytes(bytes(damaged))
    target = work_dir / "partial"
    result = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), check=False)
    assert result.returncode == 7, result.stderr
    assert "is incomplete" in result.stderr and "pg_control was not written" in result.stderr
    assert not (target / "global" / "pg_control").exists()


def kill_pgkura(pattern: str) -> None:
    import os
    import signal

    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    for pid in out.split():
        if int(pid) != os.getpid():
            os.kill(int(pid), signal.SIGKILL)


def wait_for(what: Any, timeout: float = 120) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_what_a_killed_run_leaves_is_removed_by_the_next_run(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    import os

    from pgkura.pg.postmaster import running_postmaster_pid
    from pgkura.pg.procs import pid_alive

    src = make_server("src", extra_conf=archiving_conf(repo))
    src.sql("CREATE TABLE t AS SELECT md5(g::text) AS v FROM generate_series(1, 300000) g")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    switch_and_wait_archived(src)
    scratch = work_dir / "scratch"
    scratch.mkdir()
    chown(scratch)
    env["TMPDIR"] = str(scratch)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PGKURA_", "PG"))}
    env = {**base, **env}

    # A drill killed while its sandbox server runs.
    cmd = [PGKURA, "--repo", repo, "verify", "--restore"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    drill = subprocess.Popen(cmd, env=env, cwd="/",
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def sandbox_server() -> int | None:
        for pid_file in scratch.glob("pgkura-sandbox-*/pgdata/postmaster.pid"):
            return running_postmaster_pid(pid_file.parent)
        return None

    server_pid = wait_for(sandbox_server)
    kill_pgkura(f"{PGKURA} --repo {repo} verify")
    drill.wait(timeout=30)
    assert pid_alive(server_pid), "the sandbox server should outlive the killed drill"

    # A directory-format dump killed while pg_dump writes its staging directory.
    cmd = [PGKURA, "--repo", repo, "dump", "--dbname", "postgres", "--format", "directory"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    dump = subprocess.Popen(cmd, env=env, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: list(scratch.glob("pgkura-dump-*/*")))
    kill_pgkura(f"{PGKURA} --repo {repo} dump")
    kill_pgkura("pg_dump .*pgkura-dump-")  # the OOM killer, say, took both
    dump.wait(timeout=30)
    assert list(scratch.glob("pgkura-*"))

    # The next run of any command removes both, and stops the orphaned server.
    run_pgkura("--repo", repo, "--log-level", "info", "info", env={"TMPDIR": str(scratch)})
    assert not list(scratch.glob("pgkura-*"))
    assert not pid_alive(server_pid)


def test_a_write_that_fails_on_a_full_disk_leaves_no_partial_file(
    make_server: Any, work_dir: Path
) -> None:
    import os

    assert os.geteuid() == 0, "this test mounts a small tmpfs: run the suite as root"
    mount = work_dir / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0777", "tmpfs", str(mount)],
                   check=True)  # fmt: skip
    try:
        repo = str(mount / "repo")
        run_pgkura("--repo", repo, "init")
        src = make_server("src", extra_conf={"wal_level": "replica"})
        # Random rows: segments that do not compress.
        src.sql("CREATE TABLE r AS SELECT gen_random_uuid()::text || md5(random()::text) AS v "
                "FROM generate_series(1, 150000)")  # fmt: skip
        segments = sorted(p for p in (src.pgdata / "pg_wal").iterdir() if len(p.name) == 24)
        src.sql("SELECT pg_switch_wal()")
        filler = mount / "filler"
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        filler.write_bytes(b"\0" * (free - 4 * 1024 * 1024))  # room for less than a segment
        for _ in range(3):  # PostgreSQL retries a failed archive_command
            failed = run_pgkura("--repo", repo, "archive-push", str(segments[1]), check=False)
            assert failed.returncode != 0 and "full" in failed.stderr, failed.stderr
        leftovers = [p for p in Path(repo).rglob("*") if p.is_file() and "tmp-pgkura" in p.name]
        assert leftovers == []
        filler.unlink()
        run_pgkura("--repo", repo, "archive-push", str(segments[1]))
        assert archived(repo, segments[1].name).is_file()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def chown_tree(path: Path) -> None:
    import os

    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


def write_crafted_manifest(repo: str, base_id: str, new_id: str, change: Any) -> None:
    """A manifest sealed with the repository's own key (so it passes as intact), changed."""
    from pgkura.repository.repo import Repository
    from pgkura.repository.sealed import seal, unseal
    from pgkura.storage import open_storage

    r = Repository.open(open_storage(repo))
    doc = json.loads(unseal(r.storage.get(f"snapshots/main/{base_id}"), r.key))
    doc["id"] = new_id
    change(doc)
    r.storage.put(f"snapshots/main/{new_id}", seal(json.dumps(doc).encode(), r.codec, r.key).data)
    chown_tree(Path(repo))


def test_bad_inputs_each_get_one_line_and_change_nothing(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    import os
    import socket

    src = make_server("src")
    ts = work_dir / "ts1"
    ts.mkdir()
    chown(ts)
    src.sql(f"CREATE TABLESPACE ts1 LOCATION '{ts}'")
    src.sql("CREATE TABLE t TABLESPACE ts1 AS SELECT generate_series(1, 10) AS i")
    src.stop()
    good = run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    good_id = good.stdout.strip()

    def refused(code: int, *args: str, words: str, env: dict[str, str] | None = None) -> None:
        result = run_pgkura("--repo", repo, *args, env=env, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and "hint:" in result.stderr

    # Stanza names, whatever the command.
    for stanza in ("..", "a/b", "", "../../etc"):
        refused(3, "--stanza", stanza, "info", words="invalid stanza name")
        refused(3, "--stanza", stanza, "restore", "--target-dir", str(work_dir / "x"),
                words="invalid stanza name")  # fmt: skip
    # An unknown id is bad usage, not corruption; so are worker counts that are not ones.
    refused(3, "verify", "20000101T000000000Z", words="no backup")
    for jobs in ("0", "-3"):
        refused(3, "verify", "--jobs", jobs, words="--jobs must be at least 1")
        refused(3, "restore", "--target-dir", str(work_dir / "x"), "--jobs", jobs,
                words="--jobs must be at least 1")  # fmt: skip
        refused(3, "--pgdata", str(src.pgdata), "backup", "--jobs", jobs,
                words="--jobs must be at least 1")  # fmt: skip
    # Config values of the wrong type.
    for line, words in (("repo = [1, 2]", "not a text value"),
                        ('archive-timeout = "soon"', "not a number"),
                        ("archive-timeout = -1", "not a number greater than 0"),
                        ('archive-async = "maybe"', "not on or off")):  # fmt: skip
        conf = work_dir / "bad.toml"
        conf.write_text(line + "\n")
        conf.chmod(0o644)
        result = run_pgkura("--config", str(conf), "info", check=False)
        assert result.returncode == 3 and words in result.stderr, (line, result.stderr)
    assert not (work_dir / "x").exists()

    # Crafted manifests: one clear error each, nothing created outside the target.
    outside = work_dir / "outside"
    crafted = {
        "20300101T000000001Z": lambda d: d["tablespaces"][0].update(location="relative/ts"),
        "20300101T000000002Z": lambda d: d["tablespaces"][0].update(oid="x"),
        "20300101T000000003Z": lambda d: d["tablespaces"][0].update(
            location=str(outside / ".." / "outside")),
        "20300101T000000004Z": lambda d: d.update(tablespaces=[]),
        "20300101T000000005Z": lambda d: d["files"].append(
            {"path": "pg_tblspc/999/PG_15/x", "type": "file", "mode": 384, "size": 0,
             "mtime": 0, "blocks": []}),
    }  # fmt: skip
    for new_id, change in crafted.items():
        write_crafted_manifest(repo, good_id, new_id, change)
        target = work_dir / f"t-{new_id}"
        result = run_pgkura("--repo", repo, "restore", new_id, "--target-dir", str(target),
                            "--tablespace-map", f"{'x'}=/nowhere", check=False)  # fmt: skip
        plain = run_pgkura("--repo", repo, "restore", new_id, "--target-dir", str(target),
                           check=False)  # fmt: skip
        for r in (result, plain):
            assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 2, r.stderr  # error + hint
        assert not target.exists() and not outside.exists()
        assert not Path("relative").exists()
        Path(repo, "snapshots", "main", new_id).unlink()

    # One damaged manifest: info names it and still lists the others.
    damaged_id = "20300101T000000009Z"
    write_crafted_manifest(repo, good_id, damaged_id, lambda d: None)
    flip_byte(Path(repo, "snapshots", "main", damaged_id))
    listing = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert good_id in [b["id"] for b in listing["backups"]]
    assert [d["id"] for d in listing["damaged"]] == [damaged_id]
    assert "DAMAGED" in run_pgkura("--repo", repo, "info").stdout

    # Locks name their holder and what to wait for; a logical restore takes the shared lock.
    me = {"host": socket.gethostname(), "pid": os.getpid(), "created": "2026-12-01T10:00:00Z"}
    lock = Path(repo, "locks", "backup-main.lock")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({**me, "command": "backup"}))
    chown_tree(Path(repo))
    refused(5, "--pgdata", str(src.pgdata), "backup", words="'pgkura backup' (pid")
    lock.unlink()
    exclusive = Path(repo, "locks", "exclusive.lock")
    exclusive.write_text(json.dumps({**me, "command": "gc"}))
    chown_tree(Path(repo))
    # The maintenance lock refuses a second gc (or expire), never a restore or a backup.
    refused(5, "gc", words="'pgkura gc' (pid")
    refused(5, "--keep-last", "1", "expire", words="'pgkura gc' (pid")
    refused(3, "restore", good_id, "--dbname", "postgres", words="is a physical backup")
    exclusive.unlink()

    # A repository that lost its pgkura.json says so instead of "run init".
    Path(repo, "pgkura.json").unlink()
    result = run_pgkura("--repo", repo, "info", check=False)
    assert result.returncode == 4 and "no pgkura.json" in result.stderr
    assert "do not run init" in result.stderr
