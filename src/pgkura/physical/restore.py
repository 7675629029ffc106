"""Writing a physical backup back into a data directory (and its tablespaces).

Nothing is written outside the target directory and the tablespace locations: every path from
the manifest is checked, because a manifest is data, and data can be hostile or damaged.
Every block is verified against its id before it is written; a damaged block stops the restore
with the name of the file that needed it.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pgkura.durable import fsync_dir, write_file
from pgkura.physical.restore_direct import DIRECT_DEPTH, DirectWriter
from pgkura.physical.restore_fetch import (
    AGAIN,
    FETCHED_RANGE_BYTES,
    INCOMPLETE,
    FetchingWorkers,
)
from pgkura.physical.restore_io import (
    RangedFile,
    fsync_and_close,
    fsync_path,
    preallocate,
    prefetch_small_files,
    pwrite_all,
    rewrite_changed,
    write_pieces,
)
from pgkura.physical.restore_io import set_direct as _set_direct
from pgkura.physical.restore_plan import IN_PROGRESS, Destinations
from pgkura.physical.restore_plan import RestorePlan as RestorePlan
from pgkura.physical.units import (
    cancelling,
    forked_workers,
    gather,
    worker_result,
    worker_state,
)
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockIndex, BlockReader
from pgkura.repository.manifest import FileEntry, Manifest
from pgkura.repository.prefetched import SpanReader, Spans


@dataclass
class RestoreStats:
    files: int = 0
    bytes_written: int = 0
    files_unchanged: int = 0
    files_removed: int = 0


WRITE_BYTES = 1024 * 1024
# Files from this size on are written with O_DIRECT (physical/restore_direct.py).
DIRECT_MIN = 1024 * 1024
# Big files are written in ranges of this size by all workers at once.
RANGE_BYTES = 64 * 1024 * 1024
#: blocks a unit of small files read at once (restore_io.prefetch_small_files), by id
Got = dict[bytes, bytes] | None
# Workers get small files in units of about this much content.
UNIT_BYTES = 16 * 1024 * 1024
# (file number, first block, block past the last): one range of one file; a unit is a list.
Range = tuple[int, int, int]
# Written by every restore itself, so a --delta restore does not count them as removed.
REWRITTEN = frozenset({"backup_manifest"})
# Written last, once everything else is durable: a directory without it does not start, so a
# restore killed half-way can never be mistaken for a cluster (pgBackRest does the same).
CONTROL_FILE = "global/pg_control"
# fsync waits on the disk, not the CPU: several in flight keep the device queue full.
SYNC_THREADS = 8


class PhysicalRestorer:
    def __init__(
        self,
        index: BlockIndex,
        manifest: Manifest,
        plan: RestorePlan,
        *,
        jobs: int,
        delta: bool,
        progress: Progress | None = None,
        only: frozenset[str] | None = None,
        direct: bool = False,
        durable: bool = True,
    ) -> None:
        self.reader = BlockReader(index)
        self.digest = index.repo.digest
        self.block_size = index.repo.config.block_size
        self.manifest = manifest
        self.plan = plan
        # Each worker reads from the store: never more of them than it takes at once.
        self.jobs = index.repo.workers_for(jobs)
        self.delta = delta
        self.progress = progress or NoProgress()
        self.only = only  # a sparse restore: write only these files (directories all)
        self.direct = direct and hasattr(os, "O_DIRECT")
        # A sandbox is thrown away after use: its files need not survive a crash.
        self.durable = durable
        self._stats_lock = threading.Lock()
        self._destinations = Destinations(plan)
        self._targets: list[RangedFile] = []
        self._control: FileEntry | None = None
        self.stats = RestoreStats()
        self._syncs: list[Future[None]] = []
        self._sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="pgkura-fsync")
        self._io_pool = ThreadPoolExecutor(
            self.jobs * DIRECT_DEPTH, thread_name_prefix="pgkura-write"
        )
        self._direct = DirectWriter(self._io_pool, self.block_size)

    # -- where things go ---------------------------------------------------------------------

    def destination(self, path: str) -> Path:
        """Map a manifest path to the file system, never outside the allowed roots."""
        return self._destinations.of(path)

    # -- the work -----------------------------------------------------------------------------

    def run(self) -> RestoreStats:
        """Write every file but global/pg_control (see :meth:`finish`)."""
        target = self.plan.target
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, int(self.manifest.extra.get("pgdata_mode", 0o700)))
        self._mark_in_progress()
        for loc in self.plan.tablespaces.values():
            loc.mkdir(parents=True, exist_ok=True)
            os.chmod(loc, 0o700)
        wanted = {f.path for f in self.manifest.files} | {IN_PROGRESS}
        if self.delta:
            self._remove_unlisted(wanted)
        dirs = [f for f in self.manifest.files if f.type == "dir"]
        for d in dirs:
            dest = self.destination(d.path)
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                self._remove(dest)
            dest.mkdir(exist_ok=True)
        for t in (f for f in self.manifest.files if f.type == "tablespace"):
            oid = int(t.path.split("/")[1])
            link = self.destination(t.path)
            location = str(self.plan.tablespaces[oid])
            if link.is_symlink() and os.readlink(link) == location:
                continue
            if link.exists() or link.is_symlink():
                self._remove(link)
            os.symlink(location, link)
        files = [
            f
            for f in self.manifest.files
            if f.type == "file"
            and (self.only is None or f.path in self.only)
            and f.path != CONTROL_FILE
        ]
        self._control = next((f for f in self.manifest.files if f.path == CONTROL_FILE), None)
        self._destinations.settle()  # directories and links are in place from here on
        # --delta compares the files that are there block by block; the rest are written anew.
        existing: list[FileEntry] = []
        if self.delta:
            fresh = []
            for f in files:
                dest = self.destination(f.path)
                if dest.is_file() and not dest.is_symlink():
                    existing.append(f)
                else:
                    if dest.is_symlink() or dest.exists():
                        self._remove(dest)
                    fresh.append(f)
            files = fresh
        self._write_all(files, existing)
        for d in sorted(dirs, key=lambda d: -d.path.count("/")):
            dest = self.destination(d.path)
            os.chmod(dest, d.mode)
            if self.durable:
                fsync_dir(dest)
        if self.durable:
            fsync_dir(target)
        return self.stats

    def _mark_in_progress(self) -> None:
        """Before anything else: mark the directory as being restored, and take away a
        pg_control a --delta target has, so that no moment of the restore leaves a directory
        that starts."""
        target = self.plan.target
        with open(target / IN_PROGRESS, "w") as f:
            f.write(f"{self.manifest.id}\n")
        control = target / CONTROL_FILE
        if control.is_file() and not control.is_symlink():
            control.unlink()
            if self.durable:
                fsync_dir(control.parent)
        if self.durable:
            fsync_dir(target)

    def finish(self) -> None:
        """Write global/pg_control, durably, and drop the in-progress mark. Call it last, once
        every other file of the directory (backup_label, recovery settings...) is written."""
        entry = self._control
        target = self.plan.target
        if entry is not None:
            dest = self.destination(entry.path)
            ids = [bytes.fromhex(b) for b in entry.blocks]
            # Whole or not at all: the file that makes the directory start appears complete.
            write_file(
                dest,
                lambda fd: write_pieces(fd, self.reader.read_many(ids, entry.path)),
                durable=self.durable,
            )
            os.chmod(dest, entry.mode)
            os.utime(dest, (entry.mtime, entry.mtime))
            self.stats.files += 1
            self.stats.bytes_written += entry.size
        (target / IN_PROGRESS).unlink(missing_ok=True)
        if self.durable:
            fsync_dir(target)

    def _write_all(self, files: list[FileEntry], existing: list[FileEntry]) -> None:
        """Write ``files`` in units of ranges (see _units), and compare ``existing`` ones.

        With --jobs 2 or more (and no --delta) the units go to forked worker processes:
        decompressing, hashing and copying 64 KiB blocks is mostly Python-level work under the
        GIL, and threads restored no faster than one (1.03-1.08 s with --jobs 1, 0.93-1.10 s
        with 2 and 4, scale-50 bench repository; processes 0.72-1.03 s). The workers are forked
        before this process starts any thread; on a store they cannot use (S3) this process
        fetches their blocks (physical/restore_fetch.py). Either way this process syncs each
        file once all its ranges are written, and writes again, in order, a file whose blocks
        are not all full-sized but the last (a relation that shrank and grew while an online
        backup read it): such a file cannot be cut into ranges by offset."""
        from concurrent.futures import Executor

        forkable = self.reader.repo.fork_safe
        forks = self.jobs > 1 and not self.delta and hasattr(os, "fork")
        forks = forks and (forkable or hasattr(os, "memfd_create"))  # Linux: restore_fetch.py
        fetched = forks and not forkable
        units = self._units(files, FETCHED_RANGE_BYTES if fetched else RANGE_BYTES)
        workers = min(self.jobs, max(1, len(units)))
        pool: Executor | FetchingWorkers
        if fetched:
            pool = FetchingWorkers(workers, self, self.reader, self._unit_blocks)
        elif forks:
            pool = forked_workers(workers, self)
        else:
            pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="pgkura-restore")
        stopping = pool if isinstance(pool, FetchingWorkers) else cancelling(pool)
        with self._sync_pool, self._io_pool, stopping:
            try:
                results: Iterator[list[tuple[int, int, bool]]]
                if isinstance(pool, FetchingWorkers):
                    results = pool.run(units, _restore_unit)
                else:
                    work = _restore_unit if forks else self._write_unit
                    futures = [pool.submit(work, unit) for unit in units]
                    results = (worker_result(f, INCOMPLETE, AGAIN) for f in futures)
                self.progress.start("restore", sum(f.size for f in files + existing))
                for done in results:
                    for number, written, irregular in done:
                        self._piece_done(self._targets[number], written, irregular)
                redo = existing + [t.entry for t in self._targets if t.irregular]
                if isinstance(pool, ThreadPoolExecutor):
                    for _ in pool.map(self._restore_file, redo):
                        pass
                else:
                    for entry in redo:  # irregular files only: rare
                        self._restore_file(entry)
            finally:
                self.progress.finish()
            for sync in self._syncs:
                sync.result()  # an fsync error fails the restore

    def _units(self, files: list[FileEntry], range_bytes: int) -> list[list[Range]]:
        """Work for the workers: (file number, first block, block past the last),
        big files cut into ranges of ``range_bytes``, small files gathered up to UNIT_BYTES a unit,
        so that the cost of handing a unit over is paid per few MiB, not per file."""
        per = max(1, range_bytes // self.block_size)
        self._targets = []
        ranges: list[Range] = []
        for entry in sorted(files, key=lambda f: -f.size):
            starts = range(0, len(entry.blocks), per) or range(1)
            self._targets.append(RangedFile(entry, self.destination(entry.path), len(starts)))
            for start in starts:
                ranges.append((len(self._targets) - 1, start, min(len(entry.blocks), start + per)))
        return gather(ranges, lambda r: (r[2] - r[1]) * self.block_size, UNIT_BYTES)

    def _unit_blocks(self, unit: list[Range]) -> list[bytes]:
        return [bytes.fromhex(b) for n, s, e in unit for b in self._targets[n].entry.blocks[s:e]]

    def _write_unit(self, unit: list[Range]) -> list[tuple[int, int, bool]]:
        """Write each (file number, first block, past the last) of ``unit``; (file number,
        bytes, irregular) for each."""
        small = [
            entry.blocks[start:end]
            for number, start, end in unit
            if (entry := self._targets[number].entry).size < DIRECT_MIN
        ]
        got = prefetch_small_files(self.reader, small)
        return [
            (number, *self._write_piece(self._targets[number], start, end, got))
            for number, start, end in unit
        ]

    def _write_piece(self, target: RangedFile, start: int, end: int, got: Got) -> tuple[int, bool]:
        """Write blocks [start, end) of a file, creating it if need be; (bytes, irregular)."""
        entry = target.entry
        fd = os.open(target.dest, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            target.direct = self.direct and entry.size >= DIRECT_MIN and _set_direct(fd, True)
            if target.direct:
                offset = start * self.block_size
                preallocate(fd, offset, min(entry.size, end * self.block_size) - offset)
            self._write_blocks(target, fd, start, end, got)
        finally:
            os.close(fd)
        written = min(entry.size, end * self.block_size) - start * self.block_size
        return max(0, written), target.irregular

    def _piece_done(self, target: RangedFile, written: int, irregular: bool) -> None:
        self.progress.advance(written)
        target.irregular = target.irregular or irregular
        target.done += 1
        if target.done < target.parts or target.irregular:
            return  # an irregular file is written again, in order, by _restore_file
        if self.durable:
            self._syncs.append(self._sync_pool.submit(fsync_path, target.dest))
        os.chmod(target.dest, target.entry.mode)
        os.utime(target.dest, (target.entry.mtime, target.entry.mtime))
        self.stats.bytes_written += target.entry.size
        self.stats.files += 1

    def _write_blocks(self, target: RangedFile, fd: int, start: int, end: int, got: Got) -> None:
        if target.direct:
            self._direct.write(self.reader, target, fd, start, end)
            return
        entry, size = target.entry, self.block_size
        step = max(1, WRITE_BYTES // size)
        last = len(entry.blocks) - 1
        for i in range(start, end, step):
            ids = [bytes.fromhex(b) for b in entry.blocks[i : min(end, i + step)]]
            if got is not None and all(b in got for b in ids):
                pieces = [got[b] for b in ids]
            else:
                pieces = self.reader.read_many(ids, entry.path)
            if any(len(p) != size for k, p in enumerate(pieces) if i + k != last):
                target.irregular = True
                return
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pwrite_all(fd, data, i * size)

    def _remove(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        self.stats.files_removed += 1

    def _remove_unlisted(self, wanted: set[str]) -> None:
        """--delta: whatever the target holds that the backup does not list goes away."""
        for path in self._destinations.unlisted(wanted, REWRITTEN):
            self._remove(path)

    def _restore_file(self, entry: FileEntry) -> None:
        dest = self.destination(entry.path)
        if self.delta and dest.is_file() and not dest.is_symlink():
            self._rewrite_changed(entry, dest)
        else:
            if dest.is_symlink() or dest.exists():
                self._remove(dest)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                self._write_buffered(fd, entry)
            except BaseException:
                os.close(fd)
                raise
            # The sync runs in its own pool: writers go on while the disk catches up.
            if self.durable:
                self._syncs.append(self._sync_pool.submit(fsync_and_close, fd))
            else:
                os.close(fd)
            with self._stats_lock:
                self.stats.bytes_written += entry.size
        os.chmod(dest, entry.mode)
        os.utime(dest, (entry.mtime, entry.mtime))
        with self._stats_lock:
            self.stats.files += 1

    def _write_buffered(self, fd: int, entry: FileEntry) -> None:
        # Batches of about 1 MiB: one ranged read of the pack, one write syscall.
        step = max(1, WRITE_BYTES // self.block_size)
        for i in range(0, len(entry.blocks), step):
            ids = [bytes.fromhex(b) for b in entry.blocks[i : i + step]]
            pieces = self.reader.read_many(ids, entry.path)
            write_pieces(fd, pieces)
            self.progress.advance(sum(len(p) for p in pieces))

    def _rewrite_changed(self, entry: FileEntry, dest: Path) -> None:
        """--delta on an existing file: rewrite only blocks whose content differs."""
        written, changed = rewrite_changed(
            dest,
            entry.blocks,
            entry.size,
            self.block_size,
            self.digest,
            lambda block_id: self.reader.read(block_id, entry.path),
            self.progress.advance,
        )
        self.stats.bytes_written += written
        if not changed:
            self.stats.files_unchanged += 1


def _restore_unit(unit: list[Range], spans: Spans | None = None) -> list[tuple[int, int, bool]]:
    """In a worker process: write each (file number, first block, past the last) of ``unit``
    for the restorer its pool was handed, from the blocks in ``spans`` if given (fetched by
    the parent: physical/restore_fetch.py); (file number, bytes, irregular) for each."""
    restorer = worker_state(PhysicalRestorer)
    if spans is not None:  # units run in threads of the worker: a reader for this one
        restorer = copy.copy(restorer)
        restorer.reader = SpanReader(restorer.reader.index, spans)
    return restorer._write_unit(unit)
