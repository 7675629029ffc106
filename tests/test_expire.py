"""expire, delete, pin and gc on real clusters with real WAL: exactly the expected backups
stay, each restores and starts with its data, PITR inside the window lands exactly, and
nothing a kept backup needs is ever deleted."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgutil import archiving_conf, switch_and_wait_archived
from runner import run_pgkura


def wal_segments(repo: str, archive: str = "main") -> set[str]:
    root = Path(repo, "wal", archive)
    return {p.name for p in root.rglob("*") if p.is_file() and len(p.name) == 24}


def backup_ids(repo: str, stanza: str = "main") -> list[str]:
    info = json.loads(run_pgkura("--repo", repo, "--stanza", stanza, "info", "--output",
                                 "json").stdout)  # fmt: skip
    return [b["id"] for b in info["backups"]]


class Cluster:
    """An archiving cluster whose table ``t`` grows by 1000 rows before each backup."""

    def __init__(self, server: Any, repo: str) -> None:
        self.server, self.repo = server, repo
        self.env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        server.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS a")
        self.rows: dict[str, int] = {}  # rows committed when each backup became consistent

    def insert(self) -> int:
        self.server.sql("INSERT INTO t SELECT generate_series(1, 1000)")
        return int(self.server.sql("SELECT count(*) FROM t")[0][0])

    def backup(self, *flags: str) -> str:
        rows = self.insert()
        out = run_pgkura("--repo", self.repo, *flags, "backup", env=self.env)
        backup_id = out.stdout.strip()
        self.rows[backup_id] = rows
        return backup_id


def restore_rows(make_server: Any, work_dir: Path, repo: str, name: str, *args: str) -> int:
    dest = work_dir / name
    run_pgkura("--repo", repo, "restore", "--target-dir", str(dest), "--archive-mode", "off",
               *args)  # fmt: skip
    server = make_server(name, pgdata=dest, init=False)
    server.wait_for_promotion()
    rows = int(server.sql("SELECT count(*) FROM t")[0][0])
    server.stop()
    return rows


def test_keep_last_expires_the_oldest_its_wal_and_keeps_each_kept_backup_restorable(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    switch_and_wait_archived(c.server)  # WAL from before the first backup
    first, second, third = c.backup(), c.backup(), c.backup()
    switch_and_wait_archived(c.server)
    wal_before = wal_segments(repo)

    dry = run_pgkura("--repo", repo, "--keep-last", "2", "expire", "--dry-run")
    assert f"{first} physical expired" in dry.stdout
    assert f"{third} physical kept: newest, last 2" in dry.stdout
    assert f"{second} physical kept: last 2" in dry.stdout
    assert backup_ids(repo) == [first, second, third] and wal_segments(repo) == wal_before

    out = json.loads(run_pgkura("--repo", repo, "--keep-last", "2", "expire", "--output",
                                "json").stdout)  # fmt: skip
    assert out["expired"] == [first]
    assert backup_ids(repo) == [second, third]
    # The WAL before the oldest kept backup's start is gone, all after it stays.
    manifest = json.loads(run_pgkura("--repo", repo, "info", second, "--output", "json").stdout)
    start = manifest["backups"][0]["start_wal"]
    after = wal_segments(repo)
    assert after == {s for s in wal_before if s >= start}
    assert out["wal_deleted"] >= len(wal_before - after) > 0  # and the .backup files
    assert run_pgkura("--repo", repo, "verify").returncode == 0
    for n, backup_id in enumerate((second, third)):
        rows = restore_rows(make_server, work_dir, repo, f"r{n}", "--backup", backup_id,
                            "--to-immediate")  # fmt: skip
        assert rows == c.rows[backup_id]
    assert restore_rows(make_server, work_dir, repo, "end", "--backup", second) == c.rows[third]


def test_nothing_is_deleted_when_the_policy_keeps_every_backup(make_server: Any, repo: str) -> None:
    """pgbackrest#680: WAL before the first backup is not purged by an expire that deleted no
    backup."""
    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    switch_and_wait_archived(c.server)
    switch_and_wait_archived(c.server)
    ids = [c.backup(), c.backup()]
    wal = wal_segments(repo)
    out = run_pgkura("--repo", repo, "--keep-within", "1h", "expire").stdout
    assert f"{ids[0]} physical kept: within 1h" in out
    assert backup_ids(repo) == ids and wal_segments(repo) == wal


def test_pitr_window_keeps_the_backup_at_its_start_and_refuses_a_time_before_it(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    first = c.backup()
    time.sleep(1.1)
    second = c.backup()
    time.sleep(1.1)
    c.insert()
    inside = str(c.server.sql("SELECT now()::text")[0][0])
    rows_inside = int(c.server.sql("SELECT count(*) FROM t")[0][0])
    time.sleep(1.1)
    third = c.backup()
    c.insert()
    switch_and_wait_archived(c.server)
    # The archive's clock is the archived WAL's: make the newest segment look archived an
    # hour after the window must start, between the second backup and the third.
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    stop = {b["id"]: datetime.fromisoformat(b["finished"].replace("Z", "+00:00"))
            for b in info["backups"]}  # fmt: skip
    newest = max((p for p in Path(repo, "wal", "main").rglob("0000*") if len(p.name) == 24),
                 key=lambda p: p.name)  # fmt: skip
    when = stop[second] + (stop[third] - stop[second]) / 2 + timedelta(hours=1)
    os.utime(newest, (when.timestamp(), when.timestamp()))

    out = run_pgkura("--repo", repo, "--keep-last", "1", "--pitr-window", "1h", "expire").stdout
    assert f"{second} physical kept: pitr window" in out, out
    assert f"{first} physical expired" in out
    assert backup_ids(repo) == [second, third]
    assert restore_rows(make_server, work_dir, repo, "inside", "--to-time", inside) == rows_inside
    before = (stop[first] + (stop[second] - stop[first]) / 2).astimezone(UTC).isoformat()
    refused = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "before"),
                         "--to-time", before, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "recoverable window is from" in refused.stderr and second in refused.stderr


def test_pins_keep_a_backup_and_delete_refuses_what_it_must(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    first = c.backup()
    bad = run_pgkura("--repo", repo, "delete", first, check=False)
    assert bad.returncode == 3 and "only backup" in bad.stderr and "hint:" in bad.stderr
    second, third = c.backup(), c.backup()
    env = c.env
    dump = run_pgkura("--repo", repo, "dump", "-d", "postgres", env=env).stdout.strip()
    for args, words in (
        (("pin", "20200101T000000000Z"), "no backup"),
        (("pin", dump), "is a logical dump"),
        (("pin", "latest"), "is a logical dump"),  # latest names the newest, here the dump
        (("delete", "latest"), "is the newest dump"),
        (("unpin", second), "is not pinned"),
        (("delete", "nope"), "no backup"),
        (("delete", third), "newest backup"),
        (("--keep-last", "x", "expire"), "keep-last"),
        (("--keep-within", "14", "expire"), "is not a duration"),
        (("expire",), "no retention policy"),
        # refused before anything is deleted, not by the gc at the end
        (("--keep-last", "1", "--max-unused", "100", "expire"), "--max-unused 100"),
        (("--max-unused", "250", "delete", second), "--max-unused 250"),
    ):
        before = sorted(p.relative_to(repo) for p in Path(repo).rglob("*") if p.is_file())
        r = run_pgkura("--repo", repo, *args, check=False)
        assert r.returncode != 0 and words in r.stderr, (args, r.stderr)
        assert "hint:" in r.stderr and r.stderr.count("error:") == 1
        after = sorted(p.relative_to(repo) for p in Path(repo).rglob("*") if p.is_file())
        assert [p for p in after if not str(p).startswith("locks")] == [
            p for p in before if not str(p).startswith("locks")
        ], args
    run_pgkura("--repo", repo, "pin", first)
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert [b["id"] for b in info["backups"] if b["pinned"]] == [first]
    assert "pinned" in run_pgkura("--repo", repo, "info").stdout
    refused = run_pgkura("--repo", repo, "delete", first, check=False)
    assert refused.returncode == 3 and "is pinned" in refused.stderr
    out = run_pgkura("--repo", repo, "--keep-last", "1", "expire").stdout
    assert f"{first} physical kept: pinned" in out and f"{second} physical expired" in out
    assert backup_ids(repo) == [first, third, dump]
    # A pin without --pitr keeps only the WAL that makes its backup consistent.
    m = json.loads(run_pgkura("--repo", repo, "info", first, "--output", "json").stdout)
    b = m["backups"][0]
    kept_wal = wal_segments(repo)
    assert {s for s in kept_wal if s < backup_ids_start(repo, third)} == {
        s for s in kept_wal if b["start_wal"] <= s <= b["stop_wal"]
    }
    assert run_pgkura("--repo", repo, "verify").returncode == 0  # that gap is no problem
    assert restore_rows(make_server, work_dir, repo, "pinned", "--backup", first,
                        "--to-immediate") == c.rows[first]  # fmt: skip
    run_pgkura("--repo", repo, "unpin", first)
    run_pgkura("--repo", repo, "delete", first)
    assert backup_ids(repo) == [third, dump]
    assert run_pgkura("--repo", repo, "verify").returncode == 0


def backup_ids_start(repo: str, backup_id: str) -> str:
    m = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    return str(m["backups"][0]["start_wal"])


def test_expire_auto_runs_after_each_backup_and_dump(make_server: Any, repo: str) -> None:
    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    auto = ("--keep-last", "1")
    env = {**c.env, "PGKURA_EXPIRE_AUTO": "on"}
    first = run_pgkura("--repo", repo, *auto, "backup", env=env).stdout.strip()
    second = run_pgkura("--repo", repo, *auto, "backup", env=env)
    assert f"expire-auto: {first} physical expired" in second.stderr
    d1 = run_pgkura("--repo", repo, *auto, "dump", "-d", "postgres", env=env).stdout.strip()
    d2 = run_pgkura("--repo", repo, *auto, "dump", "-d", "postgres", env=env).stdout.strip()
    assert backup_ids(repo) == [second.stdout.strip(), d2] and d1 != d2
    # Without a policy, expire-auto fails loudly after the backup was stored.
    bad = run_pgkura("--repo", repo, "backup", env=env, check=False)
    assert bad.returncode == 3 and "was stored, but expire-auto could not run" in bad.stderr
    assert len(backup_ids(repo)) == 3


def test_a_timeline_branch_keeps_its_history_and_wal_after_expire(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    oldest = c.backup()
    kept = c.backup()
    c.insert()
    time.sleep(0.1)
    branch_at = str(c.server.sql("SELECT now()::text")[0][0])
    rows_at = int(c.server.sql("SELECT count(*) FROM t")[0][0])
    time.sleep(0.1)
    c.insert()
    switch_and_wait_archived(c.server)
    # Recover the kept backup to a time after it: the server promotes onto timeline 2 and
    # archives its history file and its WAL into the same stanza.
    dest = work_dir / "branch"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(dest), "--to-time", branch_at)
    branch = make_server("branch", pgdata=dest, init=False)
    branch.wait_for_promotion()
    branch.sql("CREATE TABLE on_branch AS SELECT generate_series(1, 777) AS a")
    switch_and_wait_archived(branch)
    branch.stop()
    tl2 = {s for s in wal_segments(repo) if s.startswith("00000002")}
    assert tl2 and Path(repo, "wal", "main", "history", "00000002.history").is_file()

    out = run_pgkura("--repo", repo, "--keep-last", "1", "expire").stdout
    assert f"{oldest} physical expired" in out
    assert {s for s in wal_segments(repo) if s.startswith("00000002")} == tl2
    assert Path(repo, "wal", "main", "history", "00000002.history").is_file()
    dest2 = work_dir / "again"
    run_pgkura("--repo", repo, "restore", "--backup", kept, "--target-dir", str(dest2),
               "--target-timeline", "2", "--archive-mode", "off")  # fmt: skip
    again = make_server("again", pgdata=dest2, init=False)
    again.wait_for_promotion()
    assert int(again.sql("SELECT count(*) FROM t")[0][0]) == rows_at
    assert int(again.sql("SELECT count(*) FROM on_branch")[0][0]) == 777


def test_expire_and_gc_on_s3_keep_the_newest_restorable(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    from test_s3_e2e import s3_archiving_conf

    run_pgkura(*s3_repo.args, "init")
    server = make_server("src", extra_conf=s3_archiving_conf(s3_repo))
    env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
    server.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS a")
    ids = []
    for _ in range(3):
        server.sql("INSERT INTO t SELECT generate_series(1, 20000)")
        ids.append(run_pgkura(*s3_repo.args, "backup", env=env).stdout.strip())
    rows = int(server.sql("SELECT count(*) FROM t")[0][0])
    switch_and_wait_archived(server)
    out = json.loads(run_pgkura(*s3_repo.args, "--keep-last", "1", "--max-unused", "1",
                                "expire", "--output", "json").stdout)  # fmt: skip
    assert out["expired"] == ids[:2] and out["wal_deleted"] > 0, out
    # What the expired backups alone held may be too little to repack: the share is the test.
    assert out["gc"]["unreferenced_bytes_kept"] <= 0.01 * out["gc"]["repository_bytes"], out
    info = json.loads(run_pgkura(*s3_repo.args, "info", "--output", "json").stdout)
    assert [b["id"] for b in info["backups"]] == [ids[2]]
    first_wal = info["timelines"][0]["ranges"][0]["first"]
    assert first_wal == info["backups"][0]["start_wal"], info
    assert run_pgkura(*s3_repo.args, "verify").returncode == 0
    dest = work_dir / "restored"
    run_pgkura(*s3_repo.args, "restore", "--target-dir", str(dest), "--archive-mode", "off")
    restored = make_server("restored", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert int(restored.sql("SELECT count(*) FROM t")[0][0]) == rows


def test_an_expire_killed_after_deleting_manifests_has_its_wal_cleanup_done_by_the_next(
    make_server: Any, repo: str
) -> None:
    """The state a kill between the two steps leaves: the expiry record written and the
    manifest deleted, the WAL not yet. The next expire deletes no backup, yet cleans up."""
    from pathlib import Path as P

    from pgkura.repository.expiry import record_pending
    from pgkura.repository.manifest import delete_manifest
    from pgkura.repository.repo import Repository
    from pgkura.storage import open_storage

    c = Cluster(make_server("src", extra_conf=archiving_conf(repo)), repo)
    first, second = c.backup(), c.backup()
    switch_and_wait_archived(c.server)
    wal = wal_segments(repo)
    start = backup_ids_start(repo, second)
    r = Repository.open(open_storage(repo))
    stanza = r.stanza("main")
    assert stanza is not None
    record_pending(r, "main", {stanza.system_identifier})
    delete_manifest(r, "main", first)
    if os.geteuid() == 0:
        for p in P(repo).rglob("*"):
            os.chown(p, *_postgres_ids())
    out = json.loads(run_pgkura("--repo", repo, "--keep-last", "5", "expire", "--output",
                                "json").stdout)  # fmt: skip
    assert out["expired"] == [] and out["wal_deleted"] > 0
    assert wal_segments(repo) == {s for s in wal if s >= start}
    assert not P(repo, "expire", "main.json").exists()
    assert run_pgkura("--repo", repo, "verify").returncode == 0


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid
