"""The S3 server stops in the middle of a backup, of WAL archiving (sync and async), of a
restore and of gc (a real SeaweedFS, stopped and started again): a clear error, nothing
committed half-way, and once it is back the repository verifies, the next run completes and
what was backed up restores."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pgkura.errors import PgkuraError
from pgkura.storage.s3 import S3Storage
from pgutil import switch_and_wait_archived, switch_wal
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


def pause_and_stop_server(proc: subprocess.Popen[str], server: Any) -> None:
    """Stop the S3 server while ``proc`` is paused where it is (SIGSTOP), then let it go on:
    its next request finds no server, wherever in its work it was."""
    # pgkura itself, under runuser when there is one (runuser stops itself when its child
    # stops, so it is continued too).
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    pgkura = int(children[0]) if children else proc.pid
    os.kill(pgkura, signal.SIGSTOP)
    try:
        server.stop()
    finally:
        os.kill(pgkura, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGCONT)


def one_error(err: str, *words: str) -> str:
    """The one ``pgkura: error:`` line of ``err``, which holds each of ``words`` and is
    followed by a hint."""
    errors = [line for line in err.splitlines() if line.startswith("pgkura: error: ")]
    assert len(errors) == 1, err
    assert all(w in errors[0] for w in words), err
    assert "\nhint: " in err, err
    return errors[0]


class HoldingProxy:
    """A TCP proxy in front of an S3 server that holds the first request matching ``pattern``
    (set ``held``), then, once ``release`` is set, drops its connection unanswered; a
    connection the server refuses is dropped too. The server is the real one: the proxy only
    lets a test act at one exact request."""

    def __init__(self, endpoint: str, pattern: bytes) -> None:
        self._target = ("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))
        self._pattern = re.compile(pattern)
        self.held, self.release = threading.Event(), threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if requests and not self.held.is_set() and self._pattern.search(data):
                    self.held.set()
                    self.release.wait()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


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
    # Recovery asking for WAL meanwhile is stopped, not told "not in the archive" (exit 1),
    # which would end it and promote the server early (restore_command's contract).
    fetched = work_dir / "fetched"
    fetched.mkdir()
    os.chmod(fetched, 0o777)
    for flags in ((), ("--archive-async", "on", "--spool-path", str(work_dir / "spool"))):
        got = run_pgkura(*repo.args, *flags, "archive-get", segment, str(fetched / segment),
                         check=False)  # fmt: skip
        assert got.returncode == 255, got
        assert repo.url in got.stderr and "did not answer" in got.stderr, got.stderr
        assert not (fetched / segment).exists()
    deadline = time.monotonic() + 60
    while src.sql("SELECT failed_count FROM pg_stat_archiver")[0][0] == 0:
        assert time.monotonic() < deadline, "the archiver never tried"
        time.sleep(0.2)
    assert (src.pgdata / "pg_wal" / "archive_status" / f"{segment}.ready").exists()

    private_seaweedfs.start()
    # After three failures in a row the archiver waits up to a minute, or for a new segment.
    switch_wal(src)
    deadline = time.monotonic() + 120
    while (last_archived(src) or "") < segment:
        assert time.monotonic() < deadline, "the archiver did not catch up"
        time.sleep(0.2)
    key = f"wal/main/{segment[:16]}/{segment}"
    assert store.exists(key), sorted(o.key for o in store.list("wal/"))
    run_pgkura(*repo.args, "archive-get", segment, str(fetched / segment))
    assert (fetched / segment).read_bytes() == (src.pgdata / "pg_wal" / segment).read_bytes()
    absent = run_pgkura(*repo.args, "archive-get", "00000001FFFFFFFF000000FE",
                        str(fetched / "absent"), check=False)  # fmt: skip
    assert absent.returncode == 1  # what "not in the archive" is


def test_a_restore_and_a_gc_cut_off_by_the_server_stopping_lose_nothing_and_their_reruns_complete(
    make_server: Any, work_dir: Path, private_seaweedfs: Any
) -> None:
    """A restore cut off leaves a target that says it is incomplete and that a rerun with
    --delta completes; a gc cut off in the middle of its deletions leaves a repository that
    verifies, whose every backup restores, and the next gc finishes the work."""
    from pgkura.repository import layout
    from pgkura.repository.manifest import delete_manifest
    from pgkura.repository.repo import Repository

    repo = S3Repo(private_seaweedfs, work_dir / "s3", "t/restore-gc-fault", owner=os_user())
    repo.write_config(retry_seconds=3)
    run_pgkura(*repo.args, "init")
    src = make_server("src", extra_conf=s3_archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
            "FROM generate_series(1, 400000) g")  # fmt: skip
    digest = "SELECT count(*), md5(string_agg(v, ',' ORDER BY g)) FROM big"
    first = run_pgkura(*repo.args, "backup", "--jobs", "2", env=env).stdout.strip()
    # The second backup shares the table's second half with the first.
    src.sql("UPDATE big SET v = md5(v) WHERE g <= 200000")
    src.sql("VACUUM big")
    second = run_pgkura(*repo.args, "backup", "--jobs", "2", env=env).stdout.strip()
    expected = src.sql(digest)[0]
    switch_and_wait_archived(src)
    store = repo.store(retry_seconds=3)

    # -- a restore cut off ------------------------------------------------------------------
    dest = work_dir / "restored"
    restore_args = (*repo.args, "restore", "--backup", second, "--target-dir", str(dest),
                    "--to-immediate", "--archive-mode", "off")  # fmt: skip
    restore = start_pgkura(*restore_args, env={})
    deadline = time.monotonic() + 120
    while restore.poll() is None and (not dest.exists() or bytes_under(dest) < 4 << 20):
        assert time.monotonic() < deadline, "the restore wrote nothing"
        time.sleep(0.01)
    pause_and_stop_server(restore, private_seaweedfs)
    _out, err = restore.communicate(timeout=300)
    assert restore.returncode != 0, "the restore ended before the server was stopped"
    one_error(err, repo.url, "did not answer", f"{dest} is incomplete")
    assert "hint: check --s3-endpoint" in err and "then run the restore again with --delta" in err
    assert not (dest / "global" / "pg_control").exists()  # it cannot be started by mistake

    private_seaweedfs.start()
    again = run_pgkura(*restore_args, check=False)
    one_error(again.stderr, "is not empty")  # nothing touched without --delta
    assert again.returncode != 0 and "--delta" in again.stderr
    run_pgkura(*restore_args, "--delta")
    restored = make_server("restored", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert restored.sql(digest)[0] == expected
    restored.stop()

    # -- a gc cut off -----------------------------------------------------------------------
    # What an expire leaves for gc: the first backup deleted, its blocks still stored.
    delete_manifest(Repository.open(store), "main", first)
    packed = {o.key: o.size for o in store.list("packs/")}
    # gc goes through a proxy that holds its first deletion of a pack: the server stops
    # right there, after that pack's index object was deleted and before the pack was.
    proxy = HoldingProxy(private_seaweedfs.endpoint, rb"<Key>[^<]*/packs/")
    saved = repo.config.read_text()
    repo.config.write_text(saved.replace(private_seaweedfs.endpoint, proxy.endpoint))
    try:
        gc = start_pgkura(*repo.args, "--max-unused", "1", "gc", "--output", "json", env={})
        assert proxy.held.wait(120), f"gc deleted no pack: {gc.communicate()}"
        private_seaweedfs.stop()
        proxy.release.set()
        out, err = gc.communicate(timeout=300)
    finally:
        proxy.close()
        repo.config.write_text(saved)
    assert gc.returncode != 0, f"gc ended before the server was stopped: {out}"
    one_error(err, proxy.endpoint, "did not answer", "packs/")

    private_seaweedfs.start()
    verified = json.loads(run_pgkura(*repo.args, "verify", "--output", "json").stdout)
    assert verified["ok"] is True, verified
    info = json.loads(run_pgkura(*repo.args, "info", "--output", "json").stdout)
    assert [b["id"] for b in info["backups"]] == [second]
    finished = json.loads(run_pgkura(*repo.args, "--max-unused", "1", "gc", "--output",
                                     "json").stdout)  # fmt: skip
    # The pack whose index went first is deleted by the next run, with the rest.
    assert finished["packs_deleted"] >= 1, finished
    assert finished["packs_waiting"] == 0 and not finished["unreadable_kept"], finished
    assert finished["unreferenced_bytes_kept"] <= 0.01 * finished["repository_bytes"], finished
    gone = set(packed) - {o.key for o in store.list("packs/")}
    assert gone, packed
    assert not any(store.exists(layout.index_key(key.rsplit("/", 1)[1])) for key in gone)
    again_gc = json.loads(run_pgkura(*repo.args, "gc", "--output", "json").stdout)
    assert again_gc["packs_deleted"] == 0 and again_gc["packs_waiting"] == 0, again_gc
    assert json.loads(run_pgkura(*repo.args, "verify", "--output", "json").stdout)["ok"]
    dest2 = work_dir / "after-gc"
    run_pgkura(*repo.args, "restore", "--backup", second, "--target-dir", str(dest2),
               "--to-immediate", "--archive-mode", "off")  # fmt: skip
    after_gc = make_server("after-gc", pgdata=dest2, init=False)
    after_gc.wait_for_promotion()
    assert after_gc.sql(digest)[0] == expected


def test_a_lock_that_cannot_be_released_leaves_the_commands_own_error(
    work_dir: Path, private_seaweedfs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The server gone at the end of a command: the error the user sees is what the command
    met, not the failed removal of its lock (which is left for the next command to take
    over)."""
    from pgkura.repository import locks
    from pgkura.repository.repo import Repository

    repo = S3Repo(private_seaweedfs, work_dir / "s3", "t/lock-release", owner=None)
    opened = Repository.create(repo.store(retry_seconds=1))
    failure = pytest.raises(PgkuraError, match="the command's own failure")
    with failure, locks.maintenance_lock(opened), locks.shared_lock(opened):
        private_seaweedfs.stop()
        raise PgkuraError("the command's own failure")
    removals = [r.getMessage() for r in caplog.records if "could not remove the lock" in
                r.getMessage()]  # fmt: skip
    assert len(removals) == 2 and all(repo.url in m for m in removals), removals
    private_seaweedfs.start()
    assert opened.storage.exists("locks/exclusive.lock")  # left, as a crash leaves it


def test_async_archiving_cut_off_in_the_middle_of_its_pushes_fails_clearly_and_catches_up(
    make_server: Any, work_dir: Path, private_seaweedfs: Any
) -> None:
    """--archive-async on: the S3 server stops once the background pusher has archived the
    first segments of a burst, with more under way and to come. The archiver is told why
    (the pusher's error, naming the bucket), keeps the segments, and once the server is back
    everything is archived: verify passes and a restore replays all of it."""
    repo = S3Repo(private_seaweedfs, work_dir / "s3", "t/async-fault", owner=os_user())
    repo.write_config(retry_seconds=2)
    run_pgkura(*repo.args, "init")
    spool = work_dir / "spool"
    flags = [*repo.args, "--archive-async", "on", "--spool-path", str(spool)]
    conf = {**s3_archiving_conf(repo),
            "archive_command": shlex.join([PGKURA, *flags, "archive-push"]) + " %p"}  # fmt: skip
    src = make_server("src", extra_conf=conf)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql("CREATE TABLE t (g int, v text)")
    backup_id = run_pgkura(*flags, "backup", env=env).stdout.strip()
    store = repo.store(retry_seconds=2)
    archived = {o.key for o in store.list("wal/")}

    # A burst of segments; the server stops once the pusher has begun on them.
    burst = subprocess.Popen(
        [str(src.bin_dir / "psql"), "-X", "-q", "-d", "postgres", "-c",
         "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 600000) g"],
        env={**os.environ, **src.libpq_env()}, cwd="/",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while {o.key for o in store.list("wal/")} <= archived:
        assert time.monotonic() < deadline, "the pusher archived nothing"
        time.sleep(0.01)
    private_seaweedfs.stop()
    assert burst.wait(timeout=120) == 0
    rows = src.sql("SELECT count(*), md5(string_agg(v, ',' ORDER BY g)) FROM t")[0]
    last = switch_wal(src)
    while src.sql("SELECT failed_count FROM pg_stat_archiver")[0][0] == 0:
        assert time.monotonic() < deadline, "the archiver never failed"
        time.sleep(0.1)
    assert (src.pgdata / "pg_wal" / "archive_status" / f"{last}.ready").exists()
    logged = [line for line in src.log_file.read_text().splitlines() if "pgkura: error:" in line]
    assert logged and repo.url in logged[0] and "did not answer" in logged[0], logged

    private_seaweedfs.start()
    last = switch_wal(src)  # which wakes the archiver from its wait after failures, too
    while (last_archived(src) or "") < last:
        assert time.monotonic() < deadline + 120, "the archiver did not catch up"
        time.sleep(0.2)
    verified = json.loads(run_pgkura(*repo.args, "verify", "--output", "json").stdout)
    assert verified["ok"] is True, verified
    dest = work_dir / "restored"
    run_pgkura(*repo.args, "restore", "--backup", backup_id, "--target-dir", str(dest),
               "--archive-mode", "off")  # fmt: skip
    src.stop()
    restored = make_server("restored", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*), md5(string_agg(v, ',' ORDER BY g)) FROM t")[0] == rows
