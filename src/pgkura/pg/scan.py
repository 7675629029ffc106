"""``python -m pgkura.pg.scan PGDATA [JOBS]``: check the data page checksums of a stopped
cluster the way a physical backup does while it reads (the benchmark compares this with
``pg_checksums --check``). Prints pages checked and failures; exits 1 on any failure."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pgkura.pg.checksum import BLCKSZ, RELSEG_BLOCKS, is_relation_file, verify_pages

READ_BYTES = 8 * 1024 * 1024  # numpy amortises its per-call cost over 1024 pages


RANGE_BYTES = 64 * 1024 * 1024  # big files are split so that every worker has work


def scan_range(path: Path, relpath: str, start: int, length: int) -> tuple[int, list[str]]:
    found = is_relation_file(relpath)
    if found is None:
        return 0, []
    pages, failures = 0, []
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        offset = start
        while offset < start + length and (
            chunk := f.read(min(READ_BYTES, start + length - offset))
        ):
            usable = len(chunk) - len(chunk) % BLCKSZ
            first = found[1] * RELSEG_BLOCKS + offset // BLCKSZ
            for failure in verify_pages(memoryview(chunk)[:usable], first):
                failures.append(f"{relpath} block {failure.blkno}")
            pages += usable // BLCKSZ
            offset += len(chunk)
    return pages, failures


def scan(pgdata: Path, jobs: int) -> tuple[int, list[str]]:
    tasks: list[tuple[Path, str, int, int]] = []
    for root, _dirs, names in os.walk(pgdata, followlinks=True):
        for name in names:
            path = Path(root) / name
            relpath = path.relative_to(pgdata).as_posix()
            if is_relation_file(relpath) is None:
                continue
            size = path.stat().st_size
            for start in range(0, max(size, 1), RANGE_BYTES):
                tasks.append((path, relpath, start, RANGE_BYTES))
    total, failures = 0, []
    with ThreadPoolExecutor(jobs) as pool:
        for pages, bad in pool.map(lambda t: scan_range(*t), tasks):
            total += pages
            failures += bad
    return total, failures


if __name__ == "__main__":
    pages, failures = scan(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(f"{pages} pages checked, {len(failures)} checksum failures")
    for line in failures[:20]:
        print(line)
    sys.exit(1 if failures else 0)
