"""Offline physical backup and restore against real clusters (issue: foundations)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from killing import kill_a_busy_worker, pgkura_processes, wait_out
from pgutil import pg_verifybackup
from runner import PGKURA, os_user, run_pgkura

FINGERPRINT = (
    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t"
)


def fingerprint(server: Any, tables: list[str], dbname: str = "postgres") -> dict[str, Any]:
    return {t: tuple(server.sql(FINGERPRINT.format(t), dbname=dbname)[0]) for t in tables}


def chown(path: Path) -> None:
    if os.geteuid() == 0:
        import shutil

        shutil.chown(path, "postgres", "postgres")


def make_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    chown(path)
    return path


def backup_ids(repo: str) -> list[str]:
    out = run_pgkura("--repo", repo, "info", "--output", "json").stdout
    return [b["id"] for b in json.loads(out)["backups"]]


def tree_size(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def populate(server: Any, work_dir: Path) -> list[str]:
    ts_dir = make_dir(work_dir / "ts1")
    server.sql(f"CREATE TABLESPACE ts1 LOCATION '{ts_dir}'")
    server.sql(
        "CREATE TABLE plain AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g"
    )
    server.sql(
        "CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id, repeat('x', g % 50) AS v "
        "FROM generate_series(1, 5000) g"
    )
    server.sql("CREATE INDEX ON in_ts (id)")
    return ["plain", "in_ts"]


@pytest.mark.matrix
def test_offline_round_trip_with_tablespace(make_server: Any, work_dir: Path, repo: str) -> None:
    src = make_server("src")
    tables = populate(src, work_dir)
    before = fingerprint(src, tables)
    src.stop()

    backup = run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    backup_id = backup.stdout.strip()
    assert backup_ids(repo) == [backup_id]

    # The damaged original is gone; restore elsewhere, the tablespace mapped by name.
    target = work_dir / "restored"
    new_ts = work_dir / "ts1-restored"
    run_pgkura(
        "--repo",
        repo,
        "restore",
        "--target-dir",
        str(target),
        "--tablespace-map",
        f"{_ts_oid(src, work_dir)}={new_ts}",
    )
    link = target / "pg_tblspc" / _ts_oid(src, work_dir)
    assert os.readlink(link) == str(new_ts)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "PG_VERSION").stat().st_mode) == 0o600
    if os.geteuid() == 0:
        assert (target / "PG_VERSION").stat().st_uid == (work_dir.stat().st_uid)

    pg_verifybackup(src, target)
    restored = make_server("restored", pgdata=target, init=False)
    assert fingerprint(restored, tables) == before


_oids: dict[str, str] = {}


def _ts_oid(server: Any, work_dir: Path) -> str:
    key = str(work_dir)
    if key not in _oids:
        names = [p.name for p in (server.pgdata / "pg_tblspc").iterdir()]
        assert len(names) == 1
        _oids[key] = names[0]
    return _oids[key]


def test_group_access_modes_are_kept(make_server: Any, work_dir: Path, repo: str) -> None:
    src = make_server("grp", initdb_args=["--allow-group-access"], start=False)
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    target = work_dir / "grp-restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert stat.S_IMODE((target / "PG_VERSION").stat().st_mode) == 0o640
    assert stat.S_IMODE((target / "base").stat().st_mode) == 0o750


def test_offline_backup_refuses_a_running_server(make_server: Any, repo: str) -> None:
    src = make_server("running")
    result = run_pgkura(
        "--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline", check=False
    )
    assert result.returncode == 6
    assert "server is running" in result.stderr
    assert "hint:" in result.stderr
    assert backup_ids(repo) == []
    # --force overrides, and the manifest says so.
    forced = run_pgkura(
        "--repo",
        repo,
        "--pgdata",
        str(src.pgdata),
        "backup",
        "--type",
        "offline",
        "--force",
        "--output",
        "json",
    )
    backup_id = json.loads(forced.stdout)["id"]
    info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    assert info["backups"][0]["forced"] is True


def test_crashed_cluster_is_refused_without_force(make_server: Any, repo: str) -> None:
    src = make_server("crashed")
    src.stop(mode="immediate")  # leaves pg_control "in production"
    result = run_pgkura(
        "--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline", check=False
    )
    assert result.returncode == 6
    assert "not shut down cleanly" in result.stderr


def test_a_restored_cluster_never_started_is_named_as_such(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A restore of an online backup that was not started yet holds backup_label and
    recovery.signal: it is not a running server, and the refusal says what it is."""
    from pgutil import archiving_conf

    src = make_server("src", extra_conf=archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    assert (target / "backup_label").exists() and (target / "recovery.signal").exists()
    result = run_pgkura(
        "--repo", repo, "--pgdata", str(target), "backup", "--type", "offline", check=False
    )
    assert result.returncode == 6
    error = result.stderr.splitlines()[0]
    assert "has not finished its recovery (backup_label and recovery.signal present" in error
    assert "start it once so that it recovers" in result.stderr


def test_unchanged_cluster_backs_up_in_under_five_percent(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("dedup")
    src.pgbench_init(2)
    src.stop()
    args = ("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    run_pgkura(*args)
    size_after_first = tree_size(repo)
    run_pgkura(*args)
    growth = tree_size(repo) - size_after_first
    assert growth < 0.05 * size_after_first, (growth, size_after_first)
    # Every backup is still complete for restore.
    ids = backup_ids(repo)
    assert len(ids) == 2
    target = work_dir / "second"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--backup", ids[1])
    restored = make_server("dedup-restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*) FROM pgbench_accounts")[0][0] == 200000


def test_restore_refuses_a_non_empty_target_and_delta_rewrites_only_changes(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("delta")
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")
    src.stop()
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    target = make_dir(work_dir / "delta-target")
    (target / "stray").write_text("not PostgreSQL")
    chown(target / "stray")
    refused = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), check=False)
    assert refused.returncode != 0
    assert "is not empty" in refused.stderr and "--delta" in refused.stderr
    assert (target / "stray").read_text() == "not PostgreSQL"

    # --delta rewrites a data directory only: this one is not (yet) one, so it is refused.
    refused = run_pgkura(
        "--repo", repo, "restore", "--target-dir", str(target), "--delta", check=False
    )  # fmt: skip
    assert refused.returncode == 3 and "would delete" in refused.stderr
    assert (target / "stray").read_text() == "not PostgreSQL"
    (target / "PG_VERSION").write_text("15\n")  # an old copy of a cluster, say
    chown(target / "PG_VERSION")
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--delta")
    assert not (target / "stray").exists()
    # Damage one file, then a delta restore rewrites just that one.
    victim = next(p for p in (target / "base").rglob("*") if p.is_file() and p.stat().st_size)
    victim.write_bytes(b"\0" * victim.stat().st_size)
    out = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--delta")
    assert "0 removed" in out.stderr
    restored = make_server("delta-restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*), sum(g) FROM t")[0] == (10000, 50005000)


def test_bad_inputs_get_one_clear_message(make_server: Any, work_dir: Path, repo: str) -> None:
    missing = run_pgkura("--repo", str(work_dir / "nope"), "info", check=False)
    assert missing.returncode == 4 and "not a pgkura repository" in missing.stderr
    assert "pgkura --repo" in missing.stderr and "init" in missing.stderr

    conf = work_dir / "bad.toml"
    conf.write_text('repo = "/x"\ncolour = "blue"\n')
    chown(conf)
    bad_conf = run_pgkura("--config", str(conf), "info", check=False)
    assert bad_conf.returncode == 3 and "unknown key 'colour'" in bad_conf.stderr
    no_conf = run_pgkura("--config", str(work_dir / "absent.toml"), "info", check=False)
    assert no_conf.returncode == 3 and "does not exist" in no_conf.stderr
    conf.write_text("repo = [")
    broken = run_pgkura("--config", str(conf), "info", check=False)
    assert broken.returncode == 3 and "is not valid TOML" in broken.stderr

    not_pgdata = make_dir(work_dir / "empty")
    bad_pgdata = run_pgkura("--repo", repo, "--pgdata", str(not_pgdata), "backup", check=False)
    assert bad_pgdata.returncode != 0 and "not a PostgreSQL data directory" in bad_pgdata.stderr

    unknown = run_pgkura(
        "--repo",
        repo,
        "restore",
        "--target-dir",
        str(work_dir / "t"),
        "--backup",
        "20000101",
        check=False,
    )
    assert unknown.returncode != 0 and "no backup '20000101'" in unknown.stderr
    assert not (work_dir / "t").exists()
    assert list(Path(repo, "snapshots").glob("**/*")) == []


def test_killed_backup_leaves_no_backup_and_the_next_one_works(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("killed")
    src.pgbench_init(10)
    # pgbench's rows compress about thirtyfold: its first 16 MiB pack is stored only as the
    # backup ends. Hex digits compress about twofold, so a pack is stored well before.
    src.sql("CREATE TABLE noise AS SELECT md5(g::text) || md5((g * 7)::text) AS h "
            "FROM generate_series(1, 600000) g")  # fmt: skip
    src.stop()
    cmd = [
        PGKURA,
        "--repo",
        repo,
        "--pgdata",
        str(src.pgdata),
        "backup",
        "--type",
        "offline",
        "--jobs",
        "1",
    ]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(Path(repo, "packs").glob("*/*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    # kill -9 the pgkura process itself (runuser forwards nothing on SIGKILL).
    children = subprocess.run(
        ["pgrep", "-f", f"{repo} --pgdata"], capture_output=True, text=True
    ).stdout.split()
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=30)
    for pid in children:  # SIGKILL is asynchronous: wait until the processes are gone
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            time.sleep(0.02)
    assert proc.returncode != 0
    assert backup_ids(repo) == []
    # The stale lock of the dead process does not block the next backup, nor restores.
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    target = work_dir / "after-kill"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    restored = make_server("after-kill", pgdata=target, init=False)
    assert restored.sql("SELECT count(*) FROM pgbench_accounts")[0][0] == 1_000_000


def test_ctrl_c_stops_a_backup_cleanly(make_server: Any, work_dir: Path, repo: str) -> None:
    src = make_server("interrupted")
    src.pgbench_init(10)
    src.stop()
    cmd = [PGKURA, "--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline"]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(Path(repo, "packs").glob("*/*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    # pgkura itself, not the worker processes it forked (they ignore SIGINT; the parent stops
    # them). The workers are held (SIGSTOP) while the parent is interrupted, so that the
    # backup cannot end in between, however slowly the machine runs the test.
    pids = pgkura_processes(f"{PGKURA} --repo {repo} --pgdata")
    parents = [pid for pid, parent in pids.items() if parent not in pids]
    assert len(parents) == 1, pids
    workers = [pid for pid in pids if pid not in parents]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    os.kill(parents[0], signal.SIGINT)  # what a terminal sends on Ctrl-C
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert backup_ids(repo) == []
    assert not list(Path(repo, "locks").glob("*"))  # the lock was released
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    assert len(backup_ids(repo)) == 1


def _pgkura_pids(repo: str) -> dict[int, int]:
    """pid -> parent pid of every pgkura process working on ``repo`` (runuser left out)."""
    return pgkura_processes(f"{PGKURA} --repo {repo} ")


def run_with_a_worker_killed(repo: str, busy_under: Path, *args: str) -> str:
    """Run ``pgkura --repo REPO ARGS``, kill one of its worker processes while it holds a
    file under ``busy_under`` open (so it dies holding a unit of work that no other worker
    will finish), and return its stderr, checked to be one clear error (exit 2, no
    traceback)."""
    cmd = [PGKURA, "--repo", repo, *args]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_a_busy_worker(f"{PGKURA} --repo {repo} ", busy_under)
    err = wait_out(proc)
    assert proc.returncode == 2, err
    assert "a worker process ended abruptly" in err and "Traceback" not in err
    return err


def test_a_killed_worker_process_fails_the_backup_with_one_clear_message(
    make_server: Any, repo: str
) -> None:
    src = make_server("worker-killed")
    src.pgbench_init(10)
    src.stop()
    err = run_with_a_worker_killed(
        repo, src.pgdata, "--pgdata", str(src.pgdata), "backup", "--type", "offline", "--jobs", "2"
    )
    assert "no backup was recorded" in err
    assert backup_ids(repo) == []
    assert _pgkura_pids(repo) == {}  # the other worker is gone too
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    assert len(backup_ids(repo)) == 1


def test_a_killed_restore_worker_is_reported_and_delta_finishes_the_job(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("restore-worker-killed")
    src.pgbench_init(10)
    src.stop()
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline")
    target = work_dir / "restored"
    err = run_with_a_worker_killed(
        repo, target, "restore", "--target-dir", str(target), "--jobs", "2"
    )
    assert "the restore is incomplete" in err and "--delta" in err
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--delta")
    restored = make_server("restored-after-kill", pgdata=target, init=False)
    assert restored.sql("SELECT count(*) FROM pgbench_accounts")[0][0] == 1_000_000
