"""Point-in-time recovery to each kind of target, modelled on PostgreSQL's
src/test/recovery/t/003_recovery_targets.pl, and timelines (issue: PITR)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pgutil import archiving_conf, switch_and_wait_archived
from runner import run_pgkura


def insert_batch(server: Any, n: int) -> None:
    server.sql(f"INSERT INTO tab_int SELECT generate_series({n * 1000 + 1}, {(n + 1) * 1000})")


class History:
    """A source cluster with batches of rows and a target recorded after each."""

    def __init__(self, server: Any, repo: str) -> None:
        self.server = server
        self.repo = repo
        self.env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        server.sql("CREATE TABLE tab_int AS SELECT generate_series(1, 1000) AS a")
        self.backup_id = run_pgkura("--repo", repo, "backup", env=self.env).stdout.strip()
        with server.connect() as conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO tab_int SELECT generate_series(1001, 2000)")
            self.xid = str(conn.execute("SELECT pg_current_xact_id()").fetchone()[0])
            conn.execute("COMMIT")
        insert_batch(server, 2)
        time.sleep(0.1)
        self.time = str(server.sql("SELECT now()::text")[0][0])
        time.sleep(0.1)
        insert_batch(server, 3)
        server.sql("SELECT pg_create_restore_point('before_batch_5')")
        # What follows in segments of their own: a recovery to the restore point leaves whole
        # segments of timeline 1 behind it, archived before timeline 2 begins.
        server.sql("SELECT pg_switch_wal()")
        insert_batch(server, 4)
        self.lsn = str(server.sql("SELECT pg_current_wal_lsn()::text")[0][0])
        insert_batch(server, 5)
        server.sql("DROP TABLE tab_int")  # the accident
        switch_and_wait_archived(server)


@pytest.fixture
def history(make_server: Any, repo: str) -> History:
    return History(make_server("src", extra_conf=archiving_conf(repo)), repo)


def restore_and_count(
    make_server: Any, work_dir: Path, repo: str, name: str, *target: str
) -> tuple[int | None, Any]:
    dest = work_dir / name
    run_pgkura("--repo", repo, "restore", "--target-dir", str(dest), "--archive-mode", "off",
               *target)  # fmt: skip
    server = make_server(name, pgdata=dest, init=False)
    server.wait_for_promotion()
    if server.sql("SELECT to_regclass('tab_int') IS NULL")[0][0]:
        return None, server
    return int(server.sql("SELECT count(*) FROM tab_int")[0][0]), server


# Each target, and the rows committed before it (None: the table was dropped by then).
TARGETS = {
    "immediate": (("--to-immediate",), 1000),
    "xid": (("--to-xid", "XID"), 2000),
    "xid-exclusive": (("--to-xid", "XID", "--exclusive"), 1000),
    "time": (("--to-time", "TIME"), 3000),
    "name": (("--to-name", "before_batch_5"), 4000),
    "lsn": (("--to-lsn", "LSN"), 5000),
    "end": ((), None),  # the end of the archive: the table is gone, as on the source
}


@pytest.mark.matrix
def test_each_target_restores_exactly_what_was_committed_before_it(
    make_server: Any, work_dir: Path, history: History
) -> None:
    """One history, restored to each kind of target in turn (one source cluster for all of
    them keeps the test matrix's cost down)."""
    values = {"XID": history.xid, "TIME": history.time, "LSN": history.lsn}
    counts = {}
    for name, (target, _rows) in TARGETS.items():
        args = tuple(values.get(a, a) for a in target)
        counts[name], server = restore_and_count(make_server, work_dir, history.repo, name, *args)
        server.stop()
    assert counts == {name: rows for name, (_target, rows) in TARGETS.items()}


@pytest.mark.matrix
def test_a_promoted_restore_archives_its_new_timeline_and_latest_follows_it(
    make_server: Any, work_dir: Path, history: History
) -> None:
    repo = history.repo
    # Recover to the restore point and keep archiving (the default): timeline 2 begins.
    dest = work_dir / "tl2"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(dest), "--to-name", "before_batch_5")
    tl2 = make_server("tl2", pgdata=dest, init=False)
    tl2.wait_for_promotion()
    assert tl2.sql("SELECT timeline_id FROM pg_control_checkpoint()")[0][0] >= 1
    tl2.sql("CHECKPOINT")
    assert tl2.sql("SELECT timeline_id FROM pg_control_checkpoint()")[0][0] == 2
    tl2.sql("INSERT INTO tab_int VALUES (-1)")
    switch_and_wait_archived(tl2)
    tl2.stop()
    history.server.stop()
    assert list(Path(repo, "wal").rglob("00000002.history"))

    # A later restore of the same backup follows the latest timeline to its end.
    count, server = restore_and_count(make_server, work_dir, repo, "follow")
    assert count == 4001
    assert server.sql("SELECT count(*) FROM tab_int WHERE a = -1")[0][0] == 1
    # And --target-timeline current stays on timeline 1 (where the table was dropped).
    count, _ = restore_and_count(
        make_server, work_dir, repo, "current", "--target-timeline", "current"
    )
    assert count is None
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    timelines = {tl["timeline"]: tl for tl in info["timelines"]}
    assert set(timelines) == {1, 2} and timelines[2]["history_file"]
    assert info["window"]["timeline"] == 2
    assert info["window"]["from_backup"] == history.backup_id
    assert "window_warning" not in info  # timeline 1 stopped before timeline 2 began
    text = run_pgkura("--repo", repo, "info").stdout
    assert "WAL timeline 2:" in text and "recoverable window (timeline 2)" in text

    # A lost history file: verify names it, and a restore that needs it refuses up front.
    next(Path(repo, "wal").rglob("00000002.history")).unlink()
    report = run_pgkura("--repo", repo, "verify", check=False)
    assert report.returncode == 7
    assert "timeline 2: its history file is missing" in report.stdout
    lost = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "lost"),
                      check=False)  # fmt: skip
    assert lost.returncode == 9 and "00000002.history" in lost.stderr
    assert not (work_dir / "lost").exists()


def test_a_timeline_that_went_on_after_a_test_restore_branched_off_it_is_not_left_out(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A test restore left archiving into the stanza (the default --archive-mode keep)
    promotes to timeline 2 while production goes on committing on timeline 1. A later
    restore along the newest timeline, the default, would come back without production's
    newest rows: it is refused, before anything is written, naming both choices; each choice
    restores what it names. (A timeline 1 that stopped before timeline 2 began, an accident
    undone by point-in-time recovery, is followed without a word: the test above.)"""
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.sql("CREATE TABLE tab_int AS SELECT generate_series(1, 1000) AS a")
    run_pgkura("--repo", repo, "backup", env={**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)})
    insert_batch(src, 1)
    switch_and_wait_archived(src)
    test_dir = work_dir / "test-restore"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(test_dir))  # keeps archiving
    test = make_server("test", pgdata=test_dir, init=False)
    test.wait_for_promotion()
    test.sql("INSERT INTO tab_int VALUES (-1)")
    switch_and_wait_archived(test)
    test.stop()
    assert list(Path(repo, "wal").rglob("00000002.history"))
    insert_batch(src, 2)  # production commits on timeline 1
    switch_and_wait_archived(src)
    src.stop()

    refused = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "r"),
                         check=False)  # fmt: skip
    assert refused.returncode == 3, refused.stderr
    error, hint = refused.stderr.strip().splitlines()
    assert "timeline 1 went on archiving WAL" in error and "timeline 2 branched off it" in error
    assert "--target-timeline 1" in hint and "--target-timeline latest" in hint
    assert not (work_dir / "r").exists()
    # info says it before anyone restores.
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert "timeline 1 went on archiving WAL" in info["window_warning"]
    assert "--target-timeline 1" in info["window_warning"]
    assert "warning: timeline 1 went on archiving WAL" in run_pgkura("--repo", repo, "info").stdout
    count, server = restore_and_count(make_server, work_dir, repo, "tl1", "--target-timeline", "1")
    assert count == 3000  # everything production committed
    server.stop()
    count, server = restore_and_count(
        make_server, work_dir, repo, "tl2", "--target-timeline", "latest"
    )
    assert count == 2001 and server.sql("SELECT count(*) FROM tab_int WHERE a = -1")[0][0] == 1
    server.stop()


def test_pgkura_picks_the_backup_and_refuses_targets_outside_the_window(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    before_any = str(src.sql("SELECT now()::text")[0][0])
    src.sql("CREATE TABLE t AS SELECT 1 AS a")
    first = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    src.sql("INSERT INTO t VALUES (2)")
    src.sql("SELECT pg_create_restore_point('between')")
    between = str(src.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    second = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    src.sql("INSERT INTO t VALUES (3)")
    switch_and_wait_archived(src)

    # A time between the two backups can only be reached from the first one.
    dest = work_dir / "between"
    out = run_pgkura("--repo", repo, "restore", "--target-dir", str(dest), "--to-time", between,
                     "--archive-mode", "off")  # fmt: skip
    assert f"picked backup {first}" in out.stderr
    restored = make_server("between", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT array_agg(a ORDER BY a) FROM t")[0][0] == [1, 2]
    restored.stop()

    # So can a restore point made between them: pgkura finds it in the archived WAL.
    dest = work_dir / "by-name"
    out = run_pgkura("--repo", repo, "restore", "--target-dir", str(dest), "--to-name", "between",
                     "--archive-mode", "off")  # fmt: skip
    assert f"picked backup {first}" in out.stderr
    restored = make_server("by-name", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT array_agg(a ORDER BY a) FROM t")[0][0] == [1, 2]
    restored.stop()

    # Before the oldest backup: refused before anything is written, with the window.
    early = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "early"),
                       "--to-time", before_any, check=False)  # fmt: skip
    assert early.returncode == 3 and "recoverable window is from" in early.stderr
    assert not (work_dir / "early").exists()
    # Asking for the second backup with a time before it is refused too.
    wrong = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "wrong"),
                       "--backup", second, "--to-time", between, check=False)  # fmt: skip
    assert wrong.returncode == 3 and f"backup {second} can reach" in wrong.stderr
    # Past the end of the archived WAL.
    future = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "future"),
                        "--to-lsn", "FF/0", check=False)  # fmt: skip
    assert future.returncode == 3 and "past the end of the archived WAL" in future.stderr
    # A timeline that does not exist.
    no_tl = run_pgkura("--repo", repo, "restore", "--target-dir", str(work_dir / "tl"),
                       "--target-timeline", "7", "--to-immediate", check=False)  # fmt: skip
    assert no_tl.returncode == 9 and "00000007.history" in no_tl.stderr
    for name in ("early", "wrong", "future", "tl"):
        assert not (work_dir / name).exists()

    # A hole in the archive is named by info, and the window ends before it.
    segments = sorted(p for p in Path(repo, "wal").rglob("00000001*") if len(p.name) == 24)
    hole = segments[-2]
    hole.unlink()
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    (tl1,) = info["timelines"]
    assert tl1["gaps"] == [{"first": hole.name, "last": hole.name}]
    assert "gap" in run_pgkura("--repo", repo, "info").stdout


def test_two_targets_and_unparsable_targets_are_refused(work_dir: Path, repo: str) -> None:
    base = ("--repo", repo, "restore", "--target-dir", str(work_dir / "x"))
    both = run_pgkura(*base, "--to-lsn", "0/1", "--to-xid", "100", check=False)
    assert both.returncode == 3 and "one target" in both.stderr
    for flag, value in (("--to-time", "yesterday"), ("--to-lsn", "12"), ("--to-xid", "abc")):
        bad = run_pgkura(*base, flag, value, check=False)
        assert bad.returncode == 3 and f"{flag} {value!r} is not" in bad.stderr
    # An action for a target that is not there would be dropped without a word.
    for action in ("pause", "shutdown"):
        alone = run_pgkura(*base, "--target-action", action, check=False)
        assert alone.returncode == 3, alone.stderr
        assert f"--target-action {action} applies to a --to-* target only" in alone.stderr
    assert not (work_dir / "x").exists()


def test_a_restore_point_that_was_never_created_is_refused_before_writing(
    work_dir: Path, history: History
) -> None:
    dest = work_dir / "never"
    result = run_pgkura("--repo", history.repo, "restore", "--target-dir", str(dest),
                        "--to-name", "no_such_point", check=False)  # fmt: skip
    assert result.returncode == 3
    assert "restore point 'no_such_point' was never created" in result.stderr
    assert not dest.exists()
    unknown_xid = run_pgkura("--repo", history.repo, "restore", "--target-dir", str(dest),
                             "--to-xid", "99999", check=False)  # fmt: skip
    assert unknown_xid.returncode == 3 and "transaction 99999 never committed" in unknown_xid.stderr
    assert not dest.exists()
