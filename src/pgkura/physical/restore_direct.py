"""Writing ranges of big files with O_DIRECT, from page-aligned buffers.

On the machines measured (docs/benchmarks.md) writing past the page cache and then fsyncing
is 2-4 times faster than writing through it, where fsync then has to write back. An O_DIRECT
write returns when the device has the data: each is handed to an I/O pool so that the worker
decodes the next batch meanwhile, into its other buffer.
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from pgkura.physical.restore_io import RangedFile, pwrite_all, pwrite_direct
from pgkura.repository.reader import BlockReader

# Batches of this much are decoded into one buffer and written with one call.
DIRECT_BYTES = 4 * 1024 * 1024
DIRECT_ALIGN = 4096
# Buffers per worker: one being filled while the others are being written.
DIRECT_DEPTH = 2


class DirectWriter:
    """Each thread's (or worker process's) DIRECT_DEPTH buffers, and the pool that writes
    them."""

    def __init__(self, io_pool: ThreadPoolExecutor, block_size: int) -> None:
        self.io_pool = io_pool
        self.block_size = block_size
        self._buffers = threading.local()

    def write(self, reader: BlockReader, target: RangedFile, fd: int, start: int, end: int) -> None:
        """Blocks [start, end) of ``target`` into ``fd`` (opened with O_DIRECT). A block that
        is short but not the file's last marks the file irregular and stops."""
        entry, size = target.entry, self.block_size
        step = max(1, DIRECT_BYTES // size)
        buffers = self._thread_buffers()
        pending: list[Future[None] | None] = [None] * len(buffers)
        last = len(entry.blocks) - 1
        try:
            for n, i in enumerate(range(start, end, step)):
                ids = [bytes.fromhex(b) for b in entry.blocks[i : min(end, i + step)]]
                slot = n % len(buffers)
                if (previous := pending[slot]) is not None:
                    previous.result()
                # Each block goes into the buffer as it is decompressed and is dropped: the
                # allocator reuses its memory instead of faulting in fresh pages.
                buffer, total = buffers[slot], 0
                for k, piece in enumerate(reader.iter_many(ids, entry.path)):
                    if len(piece) != size and i + k != last:
                        target.irregular = True
                        return
                    buffer[total : total + len(piece)] = piece
                    total += len(piece)
                view = memoryview(buffer)[:total]
                if total % DIRECT_ALIGN == 0:
                    pending[slot] = self.io_pool.submit(pwrite_direct, fd, view, i * size)
                else:
                    # O_DIRECT wants the length aligned: the file's tail goes through the page
                    # cache, on a descriptor of its own.
                    tail = os.open(target.dest, os.O_WRONLY)
                    try:
                        pwrite_all(tail, view, i * size)
                    finally:
                        os.close(tail)
        finally:
            for future in pending:
                if future is not None:
                    future.result()  # a write error fails the restore

    def _thread_buffers(self) -> list[mmap.mmap]:
        buffers = getattr(self._buffers, "buffers", None)
        if buffers is None:
            # A repository's blocks may be larger than a batch (up to 16 MiB): one fits.
            length = max(DIRECT_BYTES, self.block_size)
            buffers = self._buffers.buffers = [mmap.mmap(-1, length) for _ in range(DIRECT_DEPTH)]
        return buffers
