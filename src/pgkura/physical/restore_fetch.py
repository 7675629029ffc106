"""Restore's worker processes on a store they may not use themselves (S3).

A forked process cannot use the parent's S3 client (obstore's I/O threads are not in the
child, and its runtime is not made again there: a request would hang), and threads in one
process restored at one core's worth of CPU (the Python around each block holds the GIL:
docs/benchmarks.md, run J a third time). So here the parent fetches and the forked workers
write: threads of the parent read each unit's blocks in as few ranged GETs as the packs
allow (repository/prefetched.py), a few units ahead, and hand the bytes to a worker with the
unit; the worker unseals, verifies, decompresses and writes them as on a posix repository.
A worker holds IN_FLIGHT units at once, each in a thread of its own, so that it decodes one
while the last O_DIRECT write of the other goes to the device (waited for before that
unit's answer: an answered unit is on disk). The parent holds at most ``(IN_FLIGHT + 1) *
jobs`` fetched units not yet sent, the workers ``IN_FLIGHT * jobs`` more (a unit is at most
FETCHED_RANGE_BYTES of file content, less once compressed), so memory stays flat.

Each worker has a pipe of its own rather than a ProcessPoolExecutor's shared queue: a unit
here carries megabytes, and CPython 3.11's pool hangs for good when a worker dies while its
feeder thread is writing a large item into the queue (the parent holds the pipe's read end
too, so the write never fails). A worker's own pipe breaks when it dies, and the restore
says so (units.worker_result's message).
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn

from pgkura.durable import write_all
from pgkura.physical.units import become_worker, worker_result
from pgkura.repository.prefetched import Spans, fetch_spans

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from pgkura.repository.reader import BlockReader

#: what a restore that stopped half-way says, and what to do then
INCOMPLETE = "the restore is incomplete"
AGAIN = "run the restore again with --delta, which keeps what was written"
#: big files are cut into ranges of this much for fetched units (RANGE_BYTES elsewhere):
#: a unit's bytes are held in the parent until a worker takes them.
FETCHED_RANGE_BYTES = 16 * 1024 * 1024
#: units a worker holds at once. With one, a worker waited for each unit's last write (a
#: few ms per 16 MiB unit, 0.4 s of 1.6 s per worker in a restore measured under load).
IN_FLIGHT = 2

Done = list[tuple[int, int, bool]]
Unit = list[tuple[int, int, int]]
Work = Callable[[Unit, Spans], Done]


class FetchingWorkers:
    """``count`` forked workers that hold ``state`` (units.worker_state) and run the work
    :meth:`run` gives them, on blocks this process fetches through ``reader``."""

    def __init__(
        self, count: int, state: object, reader: BlockReader, blocks: Callable[[Unit], list[bytes]]
    ) -> None:
        self.count, self.state = count, state
        self.reader, self.blocks = reader, blocks
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []

    def __enter__(self) -> FetchingWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        """Workers finish the unit they are in and exit: no unit is given out after this."""
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            proc.join()

    def run(self, units: list[Unit], work: Work) -> Iterator[Done]:
        """``work(unit, spans)`` in the workers for each of ``units``; results as they come.
        The workers are forked here, before this process starts the fetching threads."""
        self._fork()
        return self._results(units, work)

    def _fork(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        for _ in range(self.count):
            ours, theirs = context.Pipe()
            # The child closes its copies of this process's ends, its own and the earlier
            # workers': a worker's pipe ends when this process closes its end, or the worker dies.
            ends = [*self._conns, ours]
            proc = context.Process(target=_serve, args=(theirs, self.state, ends), daemon=True)
            proc.start()
            theirs.close()  # the worker's end: gone when it dies, which our end then sees
            self._conns.append(ours)
            self._procs.append(proc)

    def _results(self, units: list[Unit], work: Work) -> Iterator[Done]:
        from multiprocessing.connection import wait

        fetcher = ThreadPoolExecutor(self.count, thread_name_prefix="pgkura-fetch")

        def fetch(unit: Unit) -> Future[Shipment]:
            return fetcher.submit(_fetch, self.reader, self.blocks(unit))

        fetches = deque(fetch(unit) for unit in units[: (IN_FLIGHT + 1) * self.count])
        try:
            fetched = len(fetches)  # units whose fetch has started
            # A free place in a worker, once per unit it can take: the workers in turn.
            free = [conn for _ in range(IN_FLIGHT) for conn in reversed(self._conns)]
            held: Counter[Any] = Counter()  # connection -> units sent, not answered yet
            sent = 0
            while sent < len(units) or held:
                while free and sent < len(units):
                    fd, *shipment = fetches.popleft().result()
                    if fetched < len(units):
                        fetches.append(fetch(units[fetched]))
                        fetched += 1
                    conn = free.pop()
                    try:
                        _send(conn, (work, units[sent], *shipment), fd)
                    finally:
                        os.close(fd)
                    held[conn] += 1
                    sent += 1
                for ready in wait(list(held)):
                    ok, value = _receive(ready)  # type: ignore[arg-type]
                    held[ready] -= 1
                    if not held[ready]:
                        del held[ready]
                    free.append(ready)
                    if not ok:
                        raise value
                    yield value
        finally:
            fetcher.shutdown(cancel_futures=True)
            for future in fetches:  # fetched, never sent: their memory goes with the fd
                if future.done() and not future.cancelled() and future.exception() is None:
                    os.close(future.result()[0])


#: (memfd, its size, where each range of each pack is in it, the packs that were missing)
Shipment = tuple[int, int, dict[str, tuple[list[int], list[tuple[int, int]]]], set[str]]


def _fetch(reader: BlockReader, block_ids: list[bytes]) -> Shipment:
    """The unit's blocks fetched (prefetched.fetch_spans) and written into a memfd, which
    the worker maps: the bytes are copied once on their way to it, not pickled, sent
    through a pipe and unpickled (five copies of a unit's megabytes)."""
    spans = fetch_spans(reader, block_ids)
    fd = os.memfd_create("pgkura-restore-unit", os.MFD_CLOEXEC)
    places: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
    size = 0
    try:
        for key, (offsets, pieces) in spans.ranges.items():
            places[key] = (offsets, [])
            for piece in pieces:
                write_all(fd, piece)
                places[key][1].append((size, len(piece)))
                size += len(piece)
    except BaseException:
        os.close(fd)
        raise
    return fd, size, places, spans.missing


def _received(fd: int, size: int, places: dict[str, Any], missing: set[str]) -> Spans:
    """In the worker: the Spans of a unit, views of the memfd the parent wrote them into."""
    import mmap

    try:
        view = memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b"")
    finally:
        os.close(fd)
    spans = Spans()
    spans.missing = missing
    for key, (offsets, at) in places.items():
        spans.ranges[key] = (offsets, [view[start : start + length] for start, length in at])
    return spans


def _serve(conn: Connection, state: object, parent_ends: list[Connection]) -> None:
    """A worker: units from ``conn`` until it closes, up to IN_FLIGHT at once in threads of
    its own, each answered (True, result) or (False, the exception) once it is written."""
    from multiprocessing.reduction import recv_handle

    for end in parent_ends:
        end.close()
    become_worker(state)
    answering = threading.Lock()  # one answer at a time on the pipe
    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="pgkura-unit") as units:
        while True:
            try:
                work, unit, size, places, missing = conn.recv()
                spans = _received(recv_handle(conn), size, places, missing)
            except (EOFError, OSError, RuntimeError):  # RuntimeError: recv_handle met the end
                return  # the parent closed our pipe (done, or failed), or is gone
            units.submit(_answer, conn, answering, work, unit, spans)


def _answer(
    conn: Connection, answering: threading.Lock, work: Work, unit: Unit, spans: Spans
) -> None:
    """In a worker's thread: ``work`` on one unit, and its answer to the parent."""
    try:
        reply: tuple[bool, Any] = (True, work(unit, spans))
    except Exception as exc:
        reply = (False, exc)
    del spans
    with answering:
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return  # the parent is gone, or closed our pipe after a failure
        except Exception as exc:  # an exception that does not pickle
            try:
                conn.send((False, RuntimeError(f"{type(exc).__name__}: {reply[1]}")))
            except OSError:
                return


def _send(conn: Connection, item: object, fd: int) -> None:
    """``item``, then the descriptor ``fd`` (SCM_RIGHTS) to the worker at ``conn``."""
    from multiprocessing.reduction import send_handle

    try:
        conn.send(item)
        send_handle(conn, fd, 0)  # the pid is Windows's business
    except (BrokenPipeError, ConnectionResetError, EOFError):
        _worker_died()


def _receive(conn: Connection) -> tuple[bool, Any]:
    try:
        reply: tuple[bool, Any] = conn.recv()
    except (EOFError, ConnectionResetError):
        _worker_died()
    return reply


def _worker_died() -> NoReturn:
    """Raise units.worker_result's error for a worker process that is gone."""
    from concurrent.futures.process import BrokenProcessPool

    failed: Future[None] = Future()
    failed.set_exception(BrokenProcessPool("a worker process ended"))
    worker_result(failed, INCOMPLETE, AGAIN)
    raise AssertionError("worker_result raises for a broken pool")
