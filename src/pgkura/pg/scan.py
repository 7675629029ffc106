"""``python -m pgkura.pg.scan PGDATA [JOBS]``: check the data page checksums of a stopped
cluster the way a physical backup does while it reads (the benchmark compares this with
``pg_checksums --check``). Prints pages checked and failures; exits 1 on any failure."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

from pgkura.pg.checksum import failing_pages
from pgkura.pg.relfile import BLCKSZ, RELSEG_BLOCKS, is_relation_file

# A thread takes this much at a time: small files are gathered into batches, so that taking work
# is paid per few MiB rather than per file.
BATCH_BYTES = 8 * 1024 * 1024
# Pages are read this much at a time, and checked while still in cache.
READ_BYTES = 512 * 1024


@dataclass(frozen=True)
class Piece:
    """Bytes [offset, offset + length) of a relation file, whose first page is block
    ``first_blkno`` of its relation fork."""

    path: str
    relpath: str
    offset: int
    length: int
    first_blkno: int


def plan(pgdata: str | os.PathLike[str]) -> list[list[Piece]]:
    """The relation files of ``pgdata`` as batches of at most BATCH_BYTES: big files cut into
    pieces, small files packed together. Most files of a cluster are one or a few pages (catalogs,
    free space and visibility maps)."""
    top = os.fspath(pgdata)
    prefix = os.path.join(top, "")  # every path os.walk gives starts with this
    batches: list[list[Piece]] = []
    small: list[Piece] = []
    small_bytes = 0
    for root, _dirs, names in os.walk(top, followlinks=True):
        for name in names:
            path = os.path.join(root, name)
            relpath = path[len(prefix) :]
            found = is_relation_file(relpath)
            if found is None:
                continue
            size = os.stat(path).st_size // BLCKSZ * BLCKSZ  # a torn last page is not checked
            first = found[1] * RELSEG_BLOCKS
            for start in range(0, size, BATCH_BYTES):
                length = min(BATCH_BYTES, size - start)
                piece = Piece(path, relpath, start, length, first + start // BLCKSZ)
                if length == BATCH_BYTES:
                    batches.append([piece])
                    continue
                if small_bytes + length > BATCH_BYTES:
                    batches.append(small)
                    small, small_bytes = [], 0
                small.append(piece)
                small_bytes += length
    if small:
        batches.append(small)
    return batches


class _Worker(threading.local):
    """Each thread's read buffer, allocated once (reused memory costs no page faults)."""

    def __init__(self) -> None:
        self.buf = memoryview(bytearray(READ_BYTES))


_worker = _Worker()


def check_batch(batch: list[Piece]) -> tuple[int, list[str]]:
    """Read a batch of pieces and check their pages: (pages checked, failures)."""
    buf = _worker.buf
    pages = 0
    failures = []
    for piece in batch:
        fd = os.open(piece.path, os.O_RDONLY)
        try:
            done = 0
            while done < piece.length:
                want = min(READ_BYTES, piece.length - done)
                got = os.preadv(fd, [buf[:want]], piece.offset + done)
                whole = got // BLCKSZ * BLCKSZ
                first = piece.first_blkno + done // BLCKSZ
                for index in failing_pages(buf[:whole], first):
                    failures.append(f"{piece.relpath} block {first + index}")
                pages += whole // BLCKSZ
                done += whole
                if got < want:
                    break  # the file shrank since plan() looked
        finally:
            os.close(fd)
    return pages, failures


def scan(pgdata: str | os.PathLike[str], jobs: int) -> tuple[int, list[str]]:
    """Check every relation page of the stopped cluster at ``pgdata`` with ``jobs`` threads:
    (pages checked, failures as "relpath block N")."""
    batches = plan(pgdata)
    results: list[tuple[int, list[str]]] = [(0, [])] * len(batches)
    todo = iter(range(len(batches)))
    todo_lock = threading.Lock()
    errors: list[BaseException] = []

    # Plain threads rather than concurrent.futures, whose import (logging included) costs
    # ~10 ms of this command's ~0.3 s.
    def work() -> None:
        try:
            while not errors:
                with todo_lock:
                    i = next(todo, None)
                if i is None:
                    return
                results[i] = check_batch(batches[i])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, name="pgkura-scan") for _ in range(max(1, jobs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    total, failures = 0, []
    for pages, bad in results:
        total += pages
        failures += bad
    return total, failures


if __name__ == "__main__":
    pages, failures = scan(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(f"{pages} pages checked, {len(failures)} checksum failures")
    for line in failures[:20]:
        print(line)
    sys.exit(1 if failures else 0)
