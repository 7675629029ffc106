"""Storing a set of files into the block store, in parallel: read → check → hash → seal → pack.

The work is cut into units of whole files or ranges of big ones. With ``jobs`` above one, forked
worker processes take the units; each has its own pack writer, so memory is bounded by
``jobs × (read size + pack size)`` whatever the cluster's size. Processes, not threads: BLAKE3,
zstd, CRC-32C and numpy release the GIL, but the Python work around each 64 KiB block does not,
and two threads stored a pgbench cluster little faster than one.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import google_crc32c

from pgkura.codec.crc import crc32c_combine
from pgkura.errors import PgkuraError
from pgkura.pg.relfile import BLCKSZ, RELSEG_BLOCKS, is_relation_file
from pgkura.physical.source import SourceFile
from pgkura.physical.units import cancelling, forked_workers, gather, worker_result
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockIndex, BlockLocation, PackWriter
from pgkura.repository.manifest import FileEntry

if TYPE_CHECKING:
    from pgkura.pg.checksum import PageBatch, PageFailure

MAX_REPORTED_BLOCKS = 5  # per file, as pg_basebackup reports them
READ_BYTES = 1024 * 1024
# Pages of small relation files (one read each) are checked together, this many at a time: a
# numpy pass costs ~0.15 ms however few pages it has, and most of a cluster's relation files
# are small (967 of 969 in a pgbench cluster).
BATCH_PAGES = 1024
# Files larger than this are stored as several ranges in parallel.
RANGE_BYTES = 64 * 1024 * 1024
# A worker process is handed about this much file content at a time: whole small files are
# gathered up to it, so that handing work over is paid per few MiB, not per file.
UNIT_BYTES = 32 * 1024 * 1024

Task = tuple[SourceFile, int, "int | None"]  # a file, where its range starts, its length or None


@dataclass
class StoreResult:
    files: list[FileEntry]
    size_bytes: int = 0
    new_bytes: int = 0
    checksum_failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PageCheck:
    """How data page checksums are judged during the copy."""

    enabled: bool
    #: Pages at or past this LSN may be torn by concurrent writes (online backups); None offline.
    start_lsn: int | None = None


@dataclass
class _UnitResult:
    """What a worker process did with one unit, for the parent to take in."""

    pieces: list[FileEntry]
    failures: list[dict[str, Any]]
    published: list[tuple[str, list[tuple[bytes, BlockLocation]]]]
    new_bytes: int
    read_bytes: int


@dataclass
class _SmallPages:
    """A thread's pages of small relation files waiting for one checksum pass, with where each
    file's pages start in it: (index of the first page, the file, its first block number)."""

    pages: PageBatch
    files: list[tuple[int, SourceFile, int]] = field(default_factory=list)


def _join(head: FileEntry, tail: FileEntry) -> FileEntry:
    """Two consecutive ranges of one file as one entry (CRC-32C combined)."""
    assert head.crc32c is not None and tail.crc32c is not None
    crc = crc32c_combine(int(head.crc32c, 16), int(tail.crc32c, 16), tail.size)
    return replace(
        head, size=head.size + tail.size, blocks=head.blocks + tail.blocks, crc32c=f"{crc:08x}"
    )


def _merge_failures(failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per file, whichever ranges found the failures."""
    merged: dict[str, dict[str, Any]] = {}
    for f in failures:
        m = merged.setdefault(f["path"], {"path": f["path"], "blocks": [], "count": 0})
        m["blocks"] = sorted(m["blocks"] + list(f["blocks"]))[:MAX_REPORTED_BLOCKS]
        m["count"] += f["count"]
    return list(merged.values())


class FileStorer:
    def __init__(
        self,
        index: BlockIndex,
        jobs: int,
        page_check: PageCheck,
        progress: Progress | None = None,
        previous: dict[str, FileEntry] | None = None,
        reuse_before: float | None = None,
    ) -> None:
        self.index = index
        self.block_size = index.repo.config.block_size
        self.range_size = self.block_size * max(1, RANGE_BYTES // self.block_size)
        self.jobs = max(1, jobs)
        self.page_check = page_check
        self.progress = progress or NoProgress()
        self.previous = previous or {}
        self.reuse_before = reuse_before
        self._local = threading.local()
        self._writers: list[PackWriter] = []
        self._writers_lock = threading.Lock()
        self._failures: list[dict[str, Any]] = []
        self._failures_lock = threading.Lock()
        self._batches: list[_SmallPages] = []

    def _writer(self) -> PackWriter:
        writer: PackWriter | None = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = PackWriter(self.index)
            with self._writers_lock:
                self._writers.append(writer)
        return writer

    def store(self, sources: Iterable[SourceFile]) -> StoreResult:
        entries = list(sources)
        files = [s for s in entries if s.type == "file"]
        total = sum(s.size for s in files)
        by_path: dict[str, FileEntry] = {}
        reused_bytes = 0
        # Large files first, and split into ranges, so that no core is left with one big
        # relation file at the end (pgbench_accounts alone is most of a pgbench cluster).
        tasks: list[Task] = []
        for src in sorted(files, key=lambda s: -s.size):
            reused = self._reusable(src)
            if reused is not None:
                by_path[src.path] = reused
                reused_bytes += src.size
                continue
            starts = list(range(0, src.size, self.range_size)) or [0]
            for i, start in enumerate(starts):
                last = i == len(starts) - 1
                tasks.append((src, start, None if last else self.range_size))
        units = gather(tasks, _task_bytes, UNIT_BYTES)
        if self.page_check.enabled and any(is_relation_file(t[0].path) for t in tasks):
            import pgkura.pg.checksum  # noqa: F401 - numpy, once, before workers are forked
        new_bytes = 0
        # An S3 client cannot be used in a forked child (its I/O threads are not copied).
        forkable = hasattr(os, "fork") and self.index.repo.storage.fork_safe
        try:
            if self.jobs > 1 and len(units) > 1 and forkable:
                new_bytes = self._store_in_processes(units, by_path, total, reused_bytes)
            else:
                self.progress.start("backup", total)
                self.progress.advance(reused_bytes)
                self._store_in_threads(tasks, by_path)
                new_bytes = sum(w.bytes_written for w in self._writers)
        finally:
            self.progress.finish()
        with self._failures_lock:
            self._failures = _merge_failures(self._failures)
        out: list[FileEntry] = []
        for s in entries:
            if s.type == "file":
                out.append(by_path[s.path])
            else:
                out.append(FileEntry(s.path, s.type, s.mode, target=s.target))
        return StoreResult(
            files=out,
            size_bytes=sum(f.size for f in out),
            new_bytes=new_bytes,
            checksum_failures=sorted(self._failures, key=lambda f: str(f["path"])),
        )

    def _store_in_threads(self, tasks: list[Task], by_path: dict[str, FileEntry]) -> None:
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="pgkura-store") as pool:
            pieces = pool.map(lambda t: self._store_range(self._writer(), *t), tasks)
            for (src, _start, _length), piece in zip(tasks, pieces, strict=True):
                _add_piece(by_path, src, piece)
        for batch in self._batches:
            self._check_small(batch)
        for writer in self._writers:
            writer.flush()

    def _store_in_processes(
        self, units: list[list[Task]], by_path: dict[str, FileEntry], total: int, reused: int
    ) -> int:
        """Store ``units`` in forked worker processes; returns the sealed bytes they added.

        The workers inherit the block index and the units instead of unpickling them. Each
        stores a unit into packs of its own and sends back the pieces and what its packs hold,
        which this process adds to its index. Two workers may both store a block that is new in
        both of their units: it is then in two packs, and the index keeps one (gc reclaims a
        pack none of whose blocks the index points to). They are forked at the first submit,
        before the progress display starts a thread."""
        global _forked, _forked_units
        new_bytes = 0
        _forked, _forked_units = self, units
        try:
            with cancelling(forked_workers(min(self.jobs, len(units)))) as pool:
                futures = [pool.submit(_store_unit, number) for number in range(len(units))]
                self.progress.start("backup", total)
                self.progress.advance(reused)
                for unit, future in zip(units, futures, strict=True):
                    done = worker_result(
                        future,
                        "no backup was recorded",
                        "run the backup again: the blocks already stored are reused, and "
                        "pgkura gc reclaims the rest",
                    )
                    for (src, _start, _length), piece in zip(unit, done.pieces, strict=True):
                        _add_piece(by_path, src, piece)
                    for pack_id, blocks in done.published:
                        self.index.publish(pack_id, blocks)
                    self._failures += done.failures
                    new_bytes += done.new_bytes
                    self.progress.advance(done.read_bytes)
        finally:
            _forked, _forked_units = None, []
        return new_bytes

    def _store_unit(self, unit: list[Task]) -> _UnitResult:
        """In a worker process: store one unit into packs of its own and flush them."""
        writer = PackWriter(self.index, keep_published=True)
        pieces = [self._store_range(writer, *task) for task in unit]
        for batch in self._batches:
            self._check_small(batch)
        writer.flush()
        failures, self._failures = self._failures, []
        return _UnitResult(
            pieces, failures, writer.published, writer.bytes_written, sum(p.size for p in pieces)
        )

    def _reusable(self, src: SourceFile) -> FileEntry | None:
        prev = self.previous.get(src.path)
        if (
            prev is None
            or self.reuse_before is None
            or prev.size != src.size
            or prev.mtime != src.mtime
            or src.mtime >= self.reuse_before
            or not all(bytes.fromhex(b) in self.index for b in prev.blocks)
        ):
            return None
        return FileEntry(src.path, "file", src.mode, src.size, src.mtime, prev.blocks, prev.crc32c)

    def _store_range(
        self, writer: PackWriter, src: SourceFile, start: int, length: int | None
    ) -> FileEntry:
        """Store bytes [start, start + length) of a file (to its end when length is None);
        returns a partial FileEntry that _join puts together in order."""
        relation = is_relation_file(src.path) if self.page_check.enabled else None
        blocks: list[str] = []
        crc = 0
        size = 0
        bad: list[int] = []
        try:
            f = open(src.abspath, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            # Dropped while we copied (online); WAL replay recreates or removes it.
            return FileEntry(src.path, "file", src.mode, 0, src.mtime, (), "00000000")
        except PermissionError as exc:
            raise PgkuraError(
                f"cannot read {src.abspath}: permission denied",
                hint="run pgkura as the cluster's owner (usually postgres)",
            ) from exc
        # Read several blocks at once: the page checksum is vectorised over a whole read, and
        # numpy's per-call overhead on one 64 KiB block costs more than the arithmetic.
        read_size = self.block_size * max(1, READ_BYTES // self.block_size)
        with f:
            f.seek(start)
            while length is None or size < length:
                want = read_size if length is None else min(read_size, length - size)
                chunk = f.read(want)
                if not chunk:
                    break
                offset = start + size
                if relation is not None and len(chunk) % BLCKSZ == 0:
                    first = relation[1] * RELSEG_BLOCKS + offset // BLCKSZ
                    if offset == 0 and len(chunk) < read_size:  # the whole of a small file
                        self._defer_pages(src, chunk, first)
                        chunk_pages: list[PageFailure] = []
                    else:
                        chunk_pages = _verify_pages(chunk, first)
                    for failure in chunk_pages:
                        if self._confirm_failure(f, offset, first, failure):
                            bad.append(failure.blkno)
                crc = google_crc32c.extend(crc, chunk)
                view = memoryview(chunk)
                for i in range(0, len(chunk), self.block_size):
                    block_id, _added = writer.add(view[i : i + self.block_size])
                    blocks.append(block_id.hex())
                size += len(chunk)
                self.progress.advance(len(chunk))
        if bad:
            with self._failures_lock:
                self._failures.append(
                    {"path": src.path, "blocks": bad[:MAX_REPORTED_BLOCKS], "count": len(bad)}
                )
        return FileEntry(src.path, "file", src.mode, size, src.mtime, tuple(blocks), f"{crc:08x}")

    def _defer_pages(self, src: SourceFile, chunk: bytes, first: int) -> None:
        """Queue a small file's pages in this thread's batch; a full batch is checked first."""
        batch: _SmallPages | None = getattr(self._local, "batch", None)
        if batch is None:
            from pgkura.pg.checksum import PageBatch

            batch = self._local.batch = _SmallPages(PageBatch(BATCH_PAGES))
            with self._writers_lock:
                self._batches.append(batch)
        pages = len(chunk) // BLCKSZ
        if batch.pages.count + pages > batch.pages.capacity:
            self._check_small(batch)
        batch.files.append((batch.pages.count, src, first))
        batch.pages.add(chunk, first)

    def _check_small(self, batch: _SmallPages) -> None:
        """Check the queued pages; a failing page is read again from its file and counts as
        _confirm_failure judges it."""
        failing = batch.pages.failing()
        bad: dict[str, list[int]] = {}
        for index in failing.tolist():
            at = bisect.bisect_right(batch.files, index, key=lambda f: f[0]) - 1
            start, src, first = batch.files[at]
            failure = _page_failure(first + index - start, index - start)
            try:
                with open(src.abspath, "rb", buffering=0) as f:
                    if self._confirm_failure(f, 0, first, failure):
                        bad.setdefault(src.path, []).append(failure.blkno)
            except FileNotFoundError:
                continue  # dropped meanwhile (online): WAL replay removes it
        with self._failures_lock:
            for path, blocks in bad.items():
                self._failures.append(
                    {"path": path, "blocks": blocks[:MAX_REPORTED_BLOCKS], "count": len(blocks)}
                )
        batch.pages.clear()
        batch.files.clear()

    def _confirm_failure(
        self, f: Any, chunk_offset: int, first_blkno: int, failure: PageFailure
    ) -> bool:
        """Re-read a failing page; only a failure that persists, and is not explained by a
        concurrent write (a page at or past the backup's start LSN that changed), counts."""
        page_offset = chunk_offset + (failure.blkno - first_blkno) * BLCKSZ
        here = f.tell()
        try:
            f.seek(page_offset)
            page = f.read(BLCKSZ)
        finally:
            f.seek(here)
        if len(page) < BLCKSZ:
            return False  # truncated meanwhile: the relation shrank, WAL replay handles it
        again = _verify_pages(page, failure.blkno)
        if not again:
            return False
        start_lsn = self.page_check.start_lsn
        if start_lsn is None:
            return True
        return again[0].lsn < start_lsn


# The page checksum module brings numpy (50-90 ms to import), which a backup of an unchanged
# cluster may not need at all: it is imported when a relation file is read.


def _verify_pages(buf: bytes | memoryview, first_blkno: int) -> list[PageFailure]:
    from pgkura.pg.checksum import verify_pages

    return verify_pages(buf, first_blkno)


def _page_failure(blkno: int, index: int) -> PageFailure:
    from pgkura.pg.checksum import PageFailure

    return PageFailure(blkno, 0, 0, 0, index)


def _task_bytes(task: Task) -> int:
    src, start, length = task
    return length if length is not None else max(0, src.size - start)


def _add_piece(by_path: dict[str, FileEntry], src: SourceFile, piece: FileEntry) -> None:
    """Put a stored range in its place: ranges of one file arrive in order."""
    done = by_path.get(src.path)
    by_path[src.path] = piece if done is None else _join(done, piece)


# The storer and its units, while forked worker processes work for it.
_forked: FileStorer | None = None
_forked_units: list[list[Task]] = []


def _store_unit(number: int) -> _UnitResult:
    storer = _forked
    assert storer is not None, "a store worker runs only in a forked process"
    storer.progress = NoProgress()  # progress is the parent's to show
    return storer._store_unit(_forked_units[number])
