"""Storing a set of files into the block store, in parallel: read → check → hash → seal → pack.

The work is cut into units of whole files or ranges of big ones. With ``jobs`` above one, forked
worker processes take the units; each has its own pack writer, so memory is bounded by
``jobs × (read size + pack size)`` whatever the cluster's size. Processes, not threads: BLAKE3,
zstd, CRC-32C and numpy release the GIL, but the Python work around each 64 KiB block does not,
and two threads stored a pgbench cluster little faster than one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import google_crc32c

from pgkura.codec.crc import crc32c_combine
from pgkura.errors import PgkuraError
from pgkura.pg.checksum import failing_pages, verify_pages
from pgkura.pg.relfile import BLCKSZ, RELSEG_BLOCKS, is_relation_file
from pgkura.physical.guided import block_crcs_of, keeps_block_crcs
from pgkura.physical.source import SourceFile
from pgkura.physical.units import (
    cancelling,
    forked_workers,
    gather,
    worker_result,
    worker_state,
)
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockIndex, BlockLocation, PackWriter
from pgkura.repository.manifest import FileEntry

if TYPE_CHECKING:
    from pgkura.physical.guided import Guide, GuidedPlan

MAX_REPORTED_BLOCKS = 5  # per file, as pg_basebackup reports them
READ_BYTES = 1024 * 1024
# Files larger than this are stored as several ranges in parallel.
RANGE_BYTES = 64 * 1024 * 1024
# A worker process is handed about this much file content at a time: whole small files are
# gathered up to it, so that handing work over is paid per few MiB, not per file.
UNIT_BYTES = 32 * 1024 * 1024

# A file, where its range starts, its length or None; or a whole file and its guided plan.
Task = tuple[SourceFile, int, "int | None", "GuidedPlan | None"]


@dataclass
class StoreResult:
    files: list[FileEntry]
    size_bytes: int = 0
    new_bytes: int = 0
    checksum_failures: list[dict[str, Any]] = field(default_factory=list)
    #: bytes read from the cluster's files (a guided backup reads fewer than their size)
    read_bytes: int = 0
    #: guided files whose pages contradicted the summaries, so they were read whole
    mismatches: list[str] = field(default_factory=list)


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
    disk_bytes: int = 0
    mismatches: list[str] = field(default_factory=list)


def _join(head: FileEntry, tail: FileEntry) -> FileEntry:
    """Two consecutive ranges of one file as one entry (CRC-32C combined)."""
    assert head.crc32c is not None and tail.crc32c is not None
    crc = crc32c_combine(int(head.crc32c, 16), int(tail.crc32c, 16), tail.size)
    return replace(
        head, size=head.size + tail.size, blocks=head.blocks + tail.blocks, crc32c=f"{crc:08x}",
        block_crcs=head.block_crcs + tail.block_crcs,
    )  # fmt: skip


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
        guide: Guide | None = None,
    ) -> None:
        self.index = index
        self.block_size = index.repo.config.block_size
        self.range_size = self.block_size * max(1, RANGE_BYTES // self.block_size)
        # Each worker keeps its own requests to the store in flight: never more than it takes.
        self.jobs = index.repo.workers_for(jobs)
        self.page_check = page_check
        self.progress = progress or NoProgress()
        self.previous = previous or {}
        self.reuse_before = reuse_before
        self._local = threading.local()
        self._writers: list[PackWriter] = []
        self._writers_lock = threading.Lock()
        self._failures: list[dict[str, Any]] = []
        self._failures_lock = threading.Lock()
        self.guide = guide
        self._disk_bytes = 0
        self._mismatches: list[str] = []

    def _writer(self) -> PackWriter:
        writer: PackWriter | None = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = PackWriter(self.index, background=True)
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
            plan = self._plan(src)
            if plan is not None:
                tasks.append((src, 0, None, plan))
                continue
            starts = list(range(0, src.size, self.range_size)) or [0]
            for i, start in enumerate(starts):
                last = i == len(starts) - 1
                tasks.append((src, start, None if last else self.range_size, None))
        units = gather(tasks, _task_bytes, UNIT_BYTES)
        if self.page_check.enabled and any(is_relation_file(t[0].path) for t in tasks):
            import pgkura.pg.checksum  # noqa: F401 - loaded once, before workers are forked
        new_bytes = 0
        # An S3 client cannot be used in a forked child (its I/O threads are not copied).
        forkable = hasattr(os, "fork") and self.index.repo.fork_safe
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
        if self._mismatches:
            from pgkura.physical.guided import read_relations_whole

            new_bytes += read_relations_whole(self, [t for t in tasks if t[3]], by_path)
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
            read_bytes=self._disk_bytes,
            mismatches=sorted(self._mismatches),
        )

    def _store_in_threads(self, tasks: list[Task], by_path: dict[str, FileEntry]) -> None:
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="pgkura-store") as pool:
            pieces = pool.map(lambda t: self._store_task(self._writer(), t), tasks)
            for (src, *_rest), piece in zip(tasks, pieces, strict=True):
                _add_piece(by_path, src, piece)
        for writer in self._writers:
            writer.close()

    def _store_in_processes(
        self, units: list[list[Task]], by_path: dict[str, FileEntry], total: int, reused: int
    ) -> int:
        """Store ``units`` in forked worker processes; returns the sealed bytes they added.

        The workers inherit the block index and the units instead of unpickling them. Each
        keeps one pack writer for all the units it takes, whose full packs a thread stores
        while the worker goes on sealing; a unit's result holds its pieces and what the packs
        stored meanwhile hold, which this process adds to its index. After the units, one last
        task per worker stores its last pack and waits for all of them; a barrier holds each
        there until all have taken theirs, so that no worker takes two. Two workers may both
        store a block that is new in both of their units: it is then in two packs, and the
        index keeps one (gc reclaims a pack none of whose blocks the index points to). They are
        forked at the first submit, before the progress display starts a thread."""
        import multiprocessing

        workers = min(self.jobs, len(units))
        new_bytes = 0
        barrier = multiprocessing.get_context("fork").Barrier(workers)
        work = _StoreWork(self, units, barrier)
        with cancelling(forked_workers(workers, work)) as pool:
            futures = [pool.submit(_store_unit, number) for number in range(len(units))]
            last = [pool.submit(_finish_worker) for _ in range(workers)]
            self.progress.start("backup", total)
            self.progress.advance(reused)
            for unit, future in zip(units + [[]] * workers, futures + last, strict=True):
                done = worker_result(
                    future,
                    "no backup was recorded",
                    "run the backup again: the blocks already stored are reused, and "
                    "pgkura gc reclaims the rest",
                )
                for (src, *_rest), piece in zip(unit, done.pieces, strict=True):
                    _add_piece(by_path, src, piece)
                for pack_id, blocks in done.published:
                    self.index.publish(pack_id, blocks)
                self._failures += done.failures
                self._disk_bytes += done.disk_bytes
                self._mismatches += done.mismatches
                new_bytes += done.new_bytes
                self.progress.advance(done.read_bytes)
        return new_bytes

    def _store_unit(self, work: _StoreWork, unit: list[Task]) -> _UnitResult:
        """In a worker process: store one unit with the worker's pack writer."""
        if work.writer is None:
            work.writer = PackWriter(self.index, keep_published=True, background=True)
        writer = work.writer
        before = writer.bytes_written
        pieces = [self._store_task(writer, task) for task in unit]
        failures, self._failures = self._failures, []
        disk, self._disk_bytes = self._disk_bytes, 0
        mismatches, self._mismatches = self._mismatches, []
        return _UnitResult(
            pieces,
            failures,
            writer.take_published(),
            writer.bytes_written - before,
            sum(p.size for p in pieces),
            disk,
            mismatches,
        )

    def _finish_worker(self, work: _StoreWork) -> _UnitResult:
        """In a worker process, after its units: store its last pack, wait for all, and hold
        at the work's barrier until every worker has taken this task."""
        writer, barrier = work.writer, work.barrier
        published = []
        if writer is not None:
            writer.close()
            published = writer.take_published()
        try:
            barrier.wait(timeout=FINISH_TIMEOUT)
        except threading.BrokenBarrierError:
            raise PgkuraError(
                "a backup worker process did not finish its last pack in time: "
                "no backup was recorded",
                hint="run the backup again: the blocks already stored are reused",
            ) from None
        return _UnitResult([], [], published, 0, 0)

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
        return replace(prev, mode=src.mode)

    def _plan(self, src: SourceFile) -> GuidedPlan | None:
        if self.guide is None:
            return None
        return self.guide.plan(src, self.previous.get(src.path), self.index)

    def _store_task(self, writer: PackWriter, task: Task) -> FileEntry:
        src, start, length, plan = task
        if plan is None:
            return self._store_range(writer, src, start, length)
        from pgkura.physical.guided import store_planned

        return store_planned(self, writer, src, plan)

    def _count_read(self, read: int, mismatch: str | None = None) -> None:
        with self._failures_lock:
            self._disk_bytes += read
            if mismatch is not None:
                self._mismatches.append(mismatch)

    def _store_range(
        self, writer: PackWriter, src: SourceFile, start: int, length: int | None
    ) -> FileEntry:
        """Store bytes [start, start + length) of a file (to its end when length is None);
        returns a partial FileEntry that _join puts together in order."""
        relation = is_relation_file(src.path) if self.page_check.enabled else None
        per_block = self.guide is not None and keeps_block_crcs(src.path)
        block_crcs: list[str] = []
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
        # Read several blocks at once: one system call and one page check per MiB.
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
                    bad += self._failing_pages(f, chunk, offset, first)
                crc = google_crc32c.extend(crc, chunk)
                if per_block:
                    block_crcs += block_crcs_of(chunk, self.block_size)
                blocks += writer.add_blocks(memoryview(chunk), self.block_size)
                size += len(chunk)
                self.progress.advance(len(chunk))
        if bad:
            self._record_failures(src.path, bad)
        self._count_read(size)
        return FileEntry(
            src.path, "file", src.mode, size, src.mtime, tuple(blocks), f"{crc:08x}",
            block_crcs=tuple(block_crcs),
        )  # fmt: skip

    def _failing_pages(self, f: Any, chunk: bytes, offset: int, first: int) -> list[int]:
        """The block numbers of ``chunk``'s pages (read at ``offset``; its first page is block
        ``first`` of the relation) whose checksum fails, confirmed by a re-read."""
        return [
            first + index
            for index in failing_pages(chunk, first)
            if self._confirm_failure(f, offset + index * BLCKSZ, first + index)
        ]

    def _record_failures(self, path: str, bad: list[int]) -> None:
        with self._failures_lock:
            self._failures.append(
                {"path": path, "blocks": bad[:MAX_REPORTED_BLOCKS], "count": len(bad)}
            )

    def _confirm_failure(self, f: Any, page_offset: int, blkno: int) -> bool:
        """Re-read a failing page; only a failure that persists, and is not explained by a
        concurrent write (a page at or past the backup's start LSN that changed), counts."""
        page = os.pread(f.fileno(), BLCKSZ, page_offset)
        if len(page) < BLCKSZ:
            return False  # truncated meanwhile: the relation shrank, WAL replay handles it
        again = verify_pages(page, blkno)
        if not again:
            return False
        start_lsn = self.page_check.start_lsn
        if start_lsn is None:
            return True
        return again[0].lsn < start_lsn


def _task_bytes(task: Task) -> int:
    src, start, length, plan = task
    if plan is not None:
        return plan.read_bytes
    return length if length is not None else max(0, src.size - start)


def _add_piece(by_path: dict[str, FileEntry], src: SourceFile, piece: FileEntry) -> None:
    """Put a stored range in its place: ranges of one file arrive in order."""
    done = by_path.get(src.path)
    by_path[src.path] = piece if done is None else _join(done, piece)


@dataclass
class _StoreWork:
    """What the forked store workers are handed (pgkura.physical.units.worker_state): the
    storer, its units and the barrier of their last tasks; in each worker, the pack writer it
    keeps for all the units it takes (each worker changes its own copy)."""

    storer: FileStorer
    units: list[list[Task]]
    barrier: Any
    writer: PackWriter | None = None


# How long a worker that has stored its last pack waits for the others to store theirs.
FINISH_TIMEOUT = 3600.0


def _store_unit(number: int) -> _UnitResult:
    work = worker_state(_StoreWork)
    work.storer.progress = NoProgress()  # progress is the parent's to show
    return work.storer._store_unit(work, work.units[number])


def _finish_worker() -> _UnitResult:
    work = worker_state(_StoreWork)
    return work.storer._finish_worker(work)
