"""Restore from S3 in forked worker processes: the parent fetches each unit's blocks (the S3
client does not survive a fork), the workers verify, decompress and write them
(physical/restore_fetch.py, repository/prefetched.py). The restored servers are started and
their rows compared with the source's."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from killing import kill_a_busy_worker, pgkura_processes, wait_out
from pgkura.errors import CorruptionError
from runner import PGKURA, os_user, run_pgkura

DIGEST = "SELECT count(*), md5(string_agg(v, ',' ORDER BY g)) FROM noise"
BALANCES = "SELECT sum(abalance), count(*) FROM pgbench_accounts"


def _source(make_server: Any, s3_repo: Any, name: str) -> tuple[Any, list[Any]]:
    """A stopped cluster with pgbench's tables (one relation file of 128 MiB: ranges) and a
    table that compresses about twofold, backed up offline into ``s3_repo``; its rows."""
    run_pgkura(*s3_repo.args, "init")
    src = make_server(name)
    src.pgbench_init(10)
    src.sql("CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
            "FROM generate_series(1, 300000) g")  # fmt: skip
    rows = _rows(src)
    src.stop()
    run_pgkura(*s3_repo.args, "--pgdata", str(src.pgdata), "backup", "--type", "offline",
               "--jobs", "2")  # fmt: skip
    return src, rows


def _rows(server: Any) -> list[Any]:
    return [server.sql(DIGEST)[0], server.sql(BALANCES)[0]]


def _restore_processes(url: str) -> dict[int, int]:
    """pid -> parent pid of the pgkura processes restoring from ``url`` (runuser left out)."""
    return pgkura_processes(f"--repo {url} restore")


def _workers(url: str, restore: subprocess.Popen[str], want: int) -> set[int]:
    """The worker processes forked by the restore from ``url``, watched until ``want`` of them
    were seen or the restore ended (one may be forked a moment after the other)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen) < want and restore.poll() is None:
        pids = _restore_processes(url)
        main = next((pid for pid, parent in pids.items() if parent not in pids), 0)
        seen.update(pid for pid, parent in pids.items() if parent == main)
        time.sleep(0.005)
    return seen


def _start_restore(s3_repo: Any, *args: str) -> subprocess.Popen[str]:
    cmd = [PGKURA, *s3_repo.args, "restore", *args]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_restore_from_s3_with_two_jobs_writes_in_worker_processes_and_gives_the_same_rows(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    _src, expected = _source(make_server, s3_repo, "s3-workers")
    target = work_dir / "restored"
    restore = _start_restore(s3_repo, "--target-dir", str(target), "--jobs", "2")
    workers = _workers(s3_repo.url, restore, want=2)
    _out, err = restore.communicate(timeout=300)
    assert restore.returncode == 0, err
    assert len(workers) == 2, f"the restore forked {len(workers)} worker process(es), not 2"
    restored = make_server("s3-workers-restored", pgdata=target, init=False)
    assert _rows(restored) == expected


def test_a_killed_restore_worker_on_s3_is_reported_and_delta_finishes_the_job(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    _src, expected = _source(make_server, s3_repo, "s3-worker-killed")
    target = work_dir / "restored"
    restore = _start_restore(s3_repo, "--target-dir", str(target), "--jobs", "2")
    # Killed while it writes a file of the target: it dies holding work no other worker does
    # (one that took none yet would lose nothing).
    kill_a_busy_worker(f"--repo {s3_repo.url} restore", target)
    err = wait_out(restore)
    assert restore.returncode == 2, err
    assert "a worker process ended abruptly" in err and "Traceback" not in err
    assert "the restore is incomplete" in err and "--delta" in err
    assert not (target / "global" / "pg_control").exists()
    assert _restore_processes(s3_repo.url) == {}  # the other worker is gone too
    run_pgkura(*s3_repo.args, "restore", "--target-dir", str(target), "--delta", "--jobs", "2")
    restored = make_server("s3-worker-killed-restored", pgdata=target, init=False)
    assert _rows(restored) == expected


def test_a_damaged_block_and_a_missing_pack_on_s3_stop_the_workers_restore_naming_the_file(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    """What a worker finds wrong reaches the parent as the error it is (exit 7, the file that
    needed the block), and no worker is left behind."""
    _source(make_server, s3_repo, "s3-workers-damage")
    store = s3_repo.store()
    packs = sorted((o for o in store.list("packs/")), key=lambda o: -o.size)
    data = bytearray(store.get(packs[0].key))
    data[len(data) // 3] ^= 0xFF
    store.put(packs[0].key, bytes(data))
    args = (*s3_repo.args, "restore", "--jobs", "2", "--archive-mode", "off")
    damaged = run_pgkura(*args, "--target-dir", str(work_dir / "a"), check=False)
    assert damaged.returncode == 7, damaged.stderr
    assert "is damaged" in damaged.stderr and "needed by base/" in damaged.stderr
    assert "Traceback" not in damaged.stderr
    store.delete(packs[0].key)
    missing = run_pgkura(*args, "--target-dir", str(work_dir / "b"), check=False)
    assert missing.returncode == 7, missing.stderr
    # Found missing before anything is written (a pack gone during the restore is what the
    # SpanReader reports: test_blocks_fetched_ahead_read_back_as_the_store_gives_them).
    pack_id = packs[0].key.rsplit("/", 1)[1]
    assert f"is in pack {pack_id}, which is missing; nothing was written" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert _restore_processes(s3_repo.url) == {}


def test_blocks_fetched_ahead_read_back_as_the_store_gives_them(s3_repo: Any) -> None:
    """SpanReader serves, from one process's fetch, what a BlockReader reads from S3: runs of
    adjacent blocks, scattered blocks, and a pack that is gone names the file that needed it."""
    from pgkura.repository.blocks import BlockIndex, PackWriter
    from pgkura.repository.prefetched import SpanReader, fetch_spans
    from pgkura.repository.reader import BlockReader
    from pgkura.repository.repo import Repository

    run_pgkura(*s3_repo.args, "init", "--compress", "zstd:3")
    repo = Repository.open(s3_repo.store())
    rows = [os.urandom(40 * 1024) + bytes(24 * 1024) for _ in range(40)]
    writer = PackWriter(BlockIndex(repo).load())
    ids = [bytes.fromhex(h) for h in writer.add_blocks(memoryview(b"".join(rows)), 64 * 1024)]
    writer.close()
    index = BlockIndex(repo).load()
    reader = BlockReader(index)
    wanted = ids[3:20] + ids[30:33] + ids[0:1]
    spans = fetch_spans(reader, wanted)
    fetched = SpanReader(index, spans)
    assert fetched.read_many(ids[3:20]) == reader.read_many(ids[3:20]) == rows[3:20]
    assert fetched.read_scattered(wanted) == reader.read_scattered(wanted)
    assert [fetched.read(b) for b in ids[30:33]] == rows[30:33]
    # A run of adjacent blocks that two fetches brought in two ranges is read across both.
    halves = fetch_spans(reader, ids[3:10])
    for key, (offsets, pieces) in fetch_spans(reader, ids[10:20]).ranges.items():
        for offset, piece in zip(offsets, pieces, strict=True):
            halves.add(key, offset, piece)
    assert sum(len(offsets) for offsets, _ in halves.ranges.values()) == 2
    assert SpanReader(index, halves).read_many(ids[3:20]) == rows[3:20]

    spans.missing.update(spans.ranges)
    with pytest.raises(CorruptionError, match=r"is missing \(needed by base/1/1234\)"):
        SpanReader(index, spans).read_many(ids[3:5], "base/1/1234")
