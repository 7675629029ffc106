"""Data page checksums: pgkura's C kernel against the numpy implementation it replaced and
against PostgreSQL's own pg_checksums on real files, and corrupt pages found during a backup
(issue: foundations, item 4)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from pgkura.pg import checksum, checksum_numpy
from pgkura.pg.checksum import (
    BLCKSZ,
    RELSEG_BLOCKS,
    failing_pages,
    is_relation_file,
    page_checksums,
    verify_pages,
    verify_pages_at,
)
from pgkura.pg.scan import scan
from pgutil import chown
from runner import os_user, run_pgkura

# pg_checksums --check, src/bin/pg_checksums/pg_checksums.c (scan_file)
PG_FAILURE = re.compile(
    r'checksum verification failed in file "(?P<path>[^"]+)", block (?P<blkno>\d+): '
    r"calculated checksum (?P<calculated>[0-9A-F]+) but block contains (?P<found>[0-9A-F]+)"
)


def pg_checksums(server: Any) -> subprocess.CompletedProcess[str]:
    cmd = [str(server.bin_dir / "pg_checksums"), "--check", "-D", str(server.pgdata)]
    if os_user():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/")


def relation_path(server: Any, table: str) -> Path:
    return server.pgdata / server.sql(f"SELECT pg_relation_filepath('{table}')")[0][0]


def corrupt_page(path: Path, blkno: int) -> None:
    with open(path, "r+b") as f:
        f.seek(blkno * BLCKSZ + 4000)
        byte = f.read(1)
        f.seek(blkno * BLCKSZ + 4000)
        f.write(bytes([byte[0] ^ 0x5A]))


def relation_files(pgdata: Path) -> list[tuple[Path, int]]:
    """Every relation file of a cluster, with the block number of its first page."""
    found = []
    for path in sorted(pgdata.rglob("*")):
        rel = is_relation_file(path.relative_to(pgdata).as_posix())
        if rel is not None and path.is_file() and path.stat().st_size:
            found.append((path, rel[1] * RELSEG_BLOCKS))
    return found


def test_the_c_kernel_is_built() -> None:
    # The install builds it (scripts/bootstrap brings gcc and python3-dev); without it every
    # backup checks pages at numpy's speed, which this suite must not let pass unnoticed.
    assert checksum.IMPLEMENTATION == "c"
    # And on a processor with AVX2 (this project's machines), its vector loop is the one used.
    flags = Path("/proc/cpuinfo").read_text().split()
    assert checksum.kernel_loop() == ("avx2" if "avx2" in flags else "scalar")


def kernel_loops() -> list[str]:
    """The C kernel's loops this processor runs: the scalar one, and AVX2 where it has it."""
    flags = Path("/proc/cpuinfo").read_text().split()
    return ["scalar", "avx2"] if "avx2" in flags else ["scalar"]


def test_c_kernel_numpy_and_pg_checksums_agree_on_every_page_including_failing_ones(
    make_server: Any,
) -> None:
    server = make_server("agree")
    server.pgbench_init(1)
    server.sql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
    server.sql("CREATE TABLE small AS SELECT 1 AS g")
    server.sql("CHECKPOINT")
    big, small = relation_path(server, "t"), relation_path(server, "small")
    server.stop()
    assert pg_checksums(server).returncode == 0
    corrupted = {(big, 0), (big, 7), (big, 300), (small, 0)}
    for path, blkno in corrupted:
        corrupt_page(path, blkno)
    found_by_pg = pg_checksums(server)
    assert found_by_pg.returncode != 0
    by_pg = {
        (Path(m["path"]), int(m["blkno"])): (int(m["calculated"], 16), int(m["found"], 16))
        for m in PG_FAILURE.finditer(found_by_pg.stderr)
    }
    assert set(by_pg) == corrupted, found_by_pg.stderr

    for loop in kernel_loops():
        before = checksum.kernel_loop(loop)
        try:
            by_kernel, checked = judge_every_page(server.pgdata)
        finally:
            checksum.kernel_loop(before)
        assert by_kernel == by_pg, loop  # same pages, same computed and stored checksums
        assert checked > 1000  # pgbench_accounts alone has 1640 pages


def judge_every_page(pgdata: Path) -> tuple[dict[tuple[Path, int], tuple[int, int]], int]:
    """The failing pages of every relation file by the kernel (after checking it against numpy
    page by page), with their computed and stored checksums; and how many pages were judged."""
    by_kernel = {}
    checked = 0
    for path, first in relation_files(pgdata):
        data = path.read_bytes()
        assert len(data) % BLCKSZ == 0, path
        fast = np.frombuffer(page_checksums(data, first), dtype=np.uint16)
        assert (fast == checksum_numpy.page_checksums(data, first)).all(), path
        pages = np.frombuffer(data, dtype=np.uint8).reshape(-1, BLCKSZ)
        stored = pages[:, 8].astype(np.uint16) | (pages[:, 9].astype(np.uint16) << 8)
        is_new = (pages[:, 14] == 0) & (pages[:, 15] == 0)
        bad = [int(i) for i in np.nonzero((fast != stored) & ~is_new)[0]]
        assert failing_pages(data, first) == bad, path
        assert verify_pages(data, first) == checksum_numpy.verify_pages(data, first), path
        for failure in verify_pages(data, first):
            by_kernel[(path, failure.blkno - first)] = (failure.expected, failure.found)
        checked += int((~is_new).sum())
    return by_kernel, checked


def test_the_kernel_loops_agree_with_numpy_on_random_pages_and_block_numbers() -> None:
    # Random words exercise every lane and the multiply's high bits; the block numbers include
    # ones past uint32 (which wrap as BlockNumber does) and pd_checksum bytes that are set.
    rng = np.random.default_rng(20)
    pages = rng.integers(0, 256, size=300 * BLCKSZ, dtype=np.uint8).tobytes()
    expected = checksum_numpy.page_checksums(pages, 2**32 - 100)
    for loop in kernel_loops():
        before = checksum.kernel_loop(loop)
        try:
            got = np.frombuffer(page_checksums(pages, 2**32 - 100), dtype=np.uint16)
            blknos = [int(b) for b in rng.integers(0, 2**33, size=300)]
            sums = checksum._kernel.checksums(pages, checksum._u32(blknos))  # type: ignore[union-attr]
            at = np.frombuffer(sums, dtype=np.uint16)
        finally:
            checksum.kernel_loop(before)
        assert (got == expected).all(), loop
        for i in range(0, 300, 37):
            one = checksum_numpy.page_checksums(pages[i * BLCKSZ : (i + 1) * BLCKSZ], blknos[i])
            assert at[i] == one[0], (loop, i)


def test_the_block_number_is_part_of_the_checksum() -> None:
    page = bytearray(BLCKSZ)
    page[14:16] = (100).to_bytes(2, "little")  # pd_upper != 0: not a new page
    sums = page_checksums(bytes(page) * 2, 0)
    assert sums[0] != sums[1]
    assert verify_pages(bytes(BLCKSZ) * 3, 7) == []  # all-zero new pages pass
    # BlockNumber is uint32: numbers past it wrap as in C, in both implementations.
    wrapped = page_checksums(bytes(page), 2**32 + 5)
    assert wrapped == page_checksums(bytes(page), 5)
    assert wrapped[0] == checksum_numpy.page_checksums(bytes(page), 5)[0]


def test_pages_of_several_places_are_judged_as_each_place_alone() -> None:
    rng = np.random.default_rng(7)
    first = rng.integers(0, 256, 5 * BLCKSZ, dtype=np.uint8).tobytes()
    second = rng.integers(0, 256, 3 * BLCKSZ, dtype=np.uint8).tobytes()
    blknos = [*range(10, 15), *range(RELSEG_BLOCKS - 1, RELSEG_BLOCKS + 2)]
    together = verify_pages_at(first + second, blknos)
    # Random pages fail wherever pd_upper is not 0; the indices run on across the two parts.
    expected = [f.index for f in verify_pages(first, 10)]
    expected += [5 + f.index for f in verify_pages(second, RELSEG_BLOCKS - 1)]
    assert [f.index for f in together] == expected and len(expected) == 8
    assert together == checksum_numpy.verify_pages_at(first + second, np.array(blknos))
    page = bytearray(BLCKSZ)
    page[14:16] = (100).to_bytes(2, "little")
    page[8:10] = int(page_checksums(bytes(page), 4)[0]).to_bytes(2, "little")
    assert failing_pages(bytes(page) + bytes(BLCKSZ), 4) == []  # a good page, then a new one


def test_scan_finds_corrupt_pages_in_small_files_batched_together_and_in_big_files(
    make_server: Any,
) -> None:
    server = make_server("scan")
    server.sql("CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
    server.sql("CREATE TABLE small AS SELECT 1 AS g")
    big, small = relation_path(server, "big"), relation_path(server, "small")
    server.stop()
    assert big.stat().st_size > 8 * 1024 * 1024  # read as more than one batch
    corrupt_page(big, 1500)
    corrupt_page(small, 0)
    found_by_pg = pg_checksums(server)
    assert f'"{big}", block 1500' in found_by_pg.stderr
    assert f'"{small}", block 0' in found_by_pg.stderr

    pages, failures = scan(server.pgdata, 2)
    pgdata = server.pgdata
    assert sorted(failures) == sorted(
        [
            f"{big.relative_to(pgdata).as_posix()} block 1500",
            f"{small.relative_to(pgdata).as_posix()} block 0",
        ]
    )
    assert f"Blocks scanned:  {pages}\n" in found_by_pg.stdout


def test_offline_backup_reports_corrupt_pages_and_keeps_the_backup(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    ts_dir = work_dir / "ts"
    ts_dir.mkdir()
    chown(ts_dir)
    server = make_server("corrupt")
    server.sql(f"CREATE TABLESPACE ts LOCATION '{ts_dir}'")
    server.sql("CREATE TABLE plain AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    server.sql(
        "CREATE TABLE other TABLESPACE ts AS SELECT g, md5(g::text) FROM generate_series(1, 9000) g"
    )
    plain, other = relation_path(server, "plain"), relation_path(server, "other")
    server.stop()
    corrupt_page(plain, 3)
    corrupt_page(other, 1)
    found_by_pg = pg_checksums(server)
    assert found_by_pg.returncode != 0 and "block 3" in found_by_pg.stderr

    result = run_pgkura(
        "--repo", repo, "--pgdata", str(server.pgdata), "backup", "--type", "offline",
        "--output", "json", check=False,
    )  # fmt: skip
    assert result.returncode == 8, result.stderr
    assert "failed their checksum" in result.stderr
    backup_id = json.loads(result.stdout)["id"]
    info = json.loads(run_pgkura("--repo", repo, "info", backup_id, "--output", "json").stdout)
    failures = {f["path"]: f["blocks"] for f in info["backups"][0]["checksum_failures"]}
    plain_rel = plain.relative_to(server.pgdata).as_posix()
    assert failures[plain_rel] == [3]
    (other_rel,) = [p for p in failures if p.startswith("pg_tblspc/")]
    assert failures[other_rel] == [1]
    text = run_pgkura("--repo", repo, "info", backup_id).stdout
    assert f"{plain_rel} block(s) 3" in text

    # verify --pages computes the pages again from the stored blocks (several small relation
    # files share one numpy call) and finds the same; without, it reports what the backup found.
    for args in (("--pages",), ()):
        checked = run_pgkura("--repo", repo, "verify", backup_id, "--output", "json", *args,
                             check=False)  # fmt: skip
        assert checked.returncode == 7, checked.stderr
        report = json.loads(checked.stdout)
        assert report["pages_recomputed"] == bool(args)
        named = [p for p in report["problems"] if "data page checksum failures" in p]
        assert len(named) == 2, report["problems"]
        assert any(f"{plain_rel}: data page checksum failures in block(s) 3" in p for p in named)
        assert any(f"{other_rel}: data page checksum failures in block(s) 1" in p for p in named)
