"""Major upgrades: `pgkura stanza upgrade` after pg_upgrade, and the stanza's generations
(issue: versions, item 5). Each generation is its own cluster with its own WAL archive:
segment names repeat across them (every new cluster starts on timeline 1), and a restore of
one generation never replays another's WAL."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from pgutil import archiving_conf, switch_and_wait_archived, switch_wal
from pgversions import DEFAULT_MAJOR, bin_of
from runner import os_user, run_pgkura


def pg_upgrade(old: Any, new: Any, work_dir: Path) -> None:
    """PostgreSQL's own pg_upgrade from ``old`` (stopped) to ``new`` (initdb'ed, stopped)."""
    cmd = [
        str(new.bin_dir / "pg_upgrade"), "-b", str(old.bin_dir), "-B", str(new.bin_dir),
        "-d", str(old.pgdata), "-D", str(new.pgdata), "-p", str(old.port), "-P", str(new.port),
        "-s", str(new.socket_dir), "--no-sync",
    ]  # fmt: skip
    if os_user():
        cmd = ["runuser", "-u", os_user() or "", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work_dir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def rows(server: Any) -> int:
    return int(server.sql("SELECT count(*) FROM t")[0][0])


def backup(repo: str, server: Any) -> str:
    env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
    return run_pgkura("--repo", repo, "backup", env=env).stdout.strip()


def restore_and_start(
    server_factory: Any, repo: str, work_dir: Path, name: str, bin_dir: Path, *args: str
) -> Any:
    target = work_dir / name
    out = run_pgkura(
        "--repo", repo, "restore", "--target-dir", str(target), "--archive-mode", "off", *args
    )
    restored = server_factory(name, bin_dir=bin_dir, pgdata=target, init=False)
    restored.wait_for_promotion()
    restored.restore_output = out.stderr
    return restored


def test_pg_upgrade_from_16_to_18_continues_the_stanza_in_a_second_generation(
    server_factory: Any, work_dir: Path, repo: str
) -> None:
    bin16, bin18 = bin_of(16), bin_of(18)
    old = server_factory("old", bin_dir=bin16, extra_conf=archiving_conf(repo))
    old.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    gen1_backup = backup(repo, old)
    old.sql("INSERT INTO t SELECT generate_series(1001, 2000)")
    time.sleep(0.2)
    gen1_time = str(old.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    old.sql("INSERT INTO t SELECT generate_series(2001, 3000)")
    old.sql("SELECT pg_create_restore_point('gen1_end')")
    switch_and_wait_archived(old)
    old.stop()  # archives what it has finished before it exits

    new = server_factory("new", bin_dir=bin18, start=False)
    pg_upgrade(old, new, work_dir)
    with open(new.pgdata / "postgresql.conf", "a") as conf:
        conf.writelines(f"{k} = '{v}'\n" for k, v in archiving_conf(repo).items())
    new.start()
    assert rows(new) == 3000
    between = str(new.sql("SELECT now()::text")[0][0])

    # Before `stanza upgrade` the upgraded cluster is another cluster to the stanza.
    env = {**new.libpq_env(), "PGKURA_PGDATA": str(new.pgdata)}
    refused = run_pgkura("--repo", repo, "backup", env=env, check=False)
    assert refused.returncode != 0 and "stanza upgrade" in refused.stderr
    segment = switch_wal(new)
    deadline = time.monotonic() + 30
    while not new.sql("SELECT failed_count > 0 FROM pg_stat_archiver")[0][0]:
        assert time.monotonic() < deadline, "archive-push of the upgraded cluster did not fail"
        time.sleep(0.1)

    out = run_pgkura("--repo", repo, "--pgdata", str(new.pgdata), "stanza", "upgrade",
                     "--output", "json")  # fmt: skip
    upgraded = json.loads(out.stdout)
    assert upgraded["generation"] == 2 and upgraded["added"] is True
    assert [g["pg_version"] for g in upgraded["generations"]] == [16, 18]
    again = run_pgkura("--repo", repo, "--pgdata", str(new.pgdata), "stanza", "upgrade")
    assert "nothing changed" in again.stdout
    # The archiver's retries now succeed, into the second generation's own archive.
    deadline = time.monotonic() + 60
    while (new.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0][0] or "") < segment:
        assert time.monotonic() < deadline, "the upgraded cluster's WAL was not archived"
        time.sleep(0.1)
    assert list(Path(repo, "wal", "main@2").rglob(segment))
    assert not list(Path(repo, "wal", "main").rglob(segment))

    new.sql("INSERT INTO t SELECT generate_series(3001, 4000)")
    gen2_backup = backup(repo, new)
    new.sql("INSERT INTO t SELECT generate_series(4001, 5000)")
    switch_and_wait_archived(new)

    # The old generation takes nothing any more: its WAL is refused, and so is its cluster.
    old_segment = next(p for p in sorted((old.pgdata / "pg_wal").glob("0000*")))
    stale = run_pgkura("--repo", repo, "archive-push", str(old_segment), check=False)
    assert stale.returncode != 0 and "generation 1" in stale.stderr

    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert [(g["generation"], g["pg_version"], g["backups"]) for g in info["generations"]] == [
        (1, 16, 1),
        (2, 18, 1),
    ]
    assert [(b["id"], b["generation"]) for b in info["backups"]] == [
        (gen1_backup, 1),
        (gen2_backup, 2),
    ]
    gen1, gen2 = info["generations"]
    assert gen1["window"]["from_backup"] == gen1_backup
    assert gen2["window"]["from_backup"] == gen2_backup
    assert info["window"] == gen2["window"] and info["pg_version"] == 18
    text = run_pgkura("--repo", repo, "info").stdout
    assert "2 generations" in text
    assert "generation 1: PostgreSQL 16" in text and "generation 2: PostgreSQL 18" in text

    # Each generation restores with its own major's programs and replays only its own WAL.
    at_time = restore_and_start(
        server_factory, repo, work_dir, "gen1-time", bin16, "--to-time", gen1_time
    )
    assert rows(at_time) == 2000 and f"picked backup {gen1_backup}" in at_time.restore_output
    at_name = restore_and_start(server_factory, repo, work_dir, "gen1-name", bin16,
                                "--backup", gen1_backup, "--to-name", "gen1_end")  # fmt: skip
    assert rows(at_name) == 3000
    latest = restore_and_start(server_factory, repo, work_dir, "gen2", bin18)
    assert rows(latest) == 5000
    assert latest.sql("SHOW server_version_num")[0][0].startswith("18")
    # The end of generation 1's WAL is not the start of generation 2's.
    gap = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "gap"),
                     "--to-time", between, check=False)  # fmt: skip
    assert gap.returncode != 0 and "past the end of the archived WAL" in gap.stderr
    assert gen1_backup in gap.stderr and not (work_dir / "gap").exists()

    # A drill of the old generation finds PostgreSQL 16's programs by itself.
    drill = run_pgkura("--repo", repo, "verify", "--restore", gen1_backup, "--output", "json",
                       env={"TMPDIR": str(work_dir)})  # fmt: skip
    (result,) = json.loads(drill.stdout)["drills"]
    assert result["passed"], result["problems"]
    assert result["row_counts"]["postgres"]["public.t"] == 1000
    verified = run_pgkura("--repo", repo, "verify")
    assert verified.stdout.count(": ok") == 2


def test_generations_keep_wal_of_the_same_names_apart(
    server_factory: Any, work_dir: Path, repo: str
) -> None:
    """A cluster rebuilt from scratch (dump and restore into a fresh initdb) starts its WAL at
    the same segment names as the first: with `stanza upgrade` both stay in the archive and
    each restore replays its own."""
    bin_dir = bin_of(DEFAULT_MAJOR)
    first = server_factory("first", bin_dir=bin_dir, extra_conf=archiving_conf(repo))
    first.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 111) g")
    first_backup = backup(repo, first)
    switch_and_wait_archived(first)
    first.stop()
    second = server_factory("second", bin_dir=bin_dir, extra_conf=archiving_conf(repo),
                            start=False)  # fmt: skip
    run_pgkura("--repo", repo, "--pgdata", str(second.pgdata), "stanza", "upgrade")
    second.start()
    second.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 222) g")
    second_backup = backup(repo, second)
    switch_and_wait_archived(second)
    second.stop()

    names = {1: set(), 2: set()}  # type: dict[int, set[str]]
    for gen, archive in ((1, "main"), (2, "main@2")):
        names[gen] = {p.name for p in Path(repo, "wal", archive).rglob("0000000100000000000000*")}
    assert names[1] & names[2], "the two clusters' WAL should share segment names"

    one = restore_and_start(server_factory, repo, work_dir, "one", bin_dir,
                            "--backup", first_backup)  # fmt: skip
    two = restore_and_start(server_factory, repo, work_dir, "two", bin_dir,
                            "--backup", second_backup)  # fmt: skip
    assert (rows(one), rows(two)) == (111, 222)
    assert one.sql("SELECT system_identifier FROM pg_control_system()") != two.sql(
        "SELECT system_identifier FROM pg_control_system()"
    )
    assert os.path.isdir(Path(repo, "wal", "main@2"))
