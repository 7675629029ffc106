"""Work for worker processes: cut into units of consecutive pieces, about so many bytes each
(so that handing a unit over is paid per few MiB, not per file), the one pool of forked
workers, and its results taken back.

State reaches the workers explicitly: the caller hands it to :func:`forked_workers`, the
pool's initializer receives it in each forked worker (inherited through fork, not pickled:
an index of millions of entries would cost more to pickle than to use), and the worker's
functions ask for it with :func:`worker_state`. The caller's process never stores it in a
module global."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

from pgkura.errors import PgkuraError

T = TypeVar("T")


def gather(pieces: Iterable[T], size: Callable[[T], int], limit: int) -> list[list[T]]:
    """``pieces`` in order, in units that each end with the piece that brings them to
    ``limit`` bytes or more (the last unit may be smaller)."""
    units: list[list[T]] = []
    unit: list[T] = []
    unit_bytes = 0
    for piece in pieces:
        unit.append(piece)
        unit_bytes += size(piece)
        if unit_bytes >= limit:
            units.append(unit)
            unit, unit_bytes = [], 0
    if unit:
        units.append(unit)
    return units


def worker_result(future: Future[T], what: str, hint: str) -> T:
    """``future.result()``, where a worker process that died (killed, out of memory) is an
    error that says so instead of a traceback. ``what`` ends the message ("no backup was
    recorded"); ``hint`` says what to do."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool:
        raise PgkuraError(
            f"a worker process ended abruptly (killed, or out of memory?): {what}",
            hint=f"{hint}; the kernel log (dmesg) names the OOM killer if it was that",
        ) from None


def forked_workers(count: int, state: object = None) -> ProcessPoolExecutor:
    """``count`` worker processes, forked at the first submit (submit before starting any
    thread), that ignore Ctrl-C and hold ``state`` for :func:`worker_state`. Each worker has
    its own copy (copy-on-write), so what a worker changes in it stays in that worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(
        count, mp_context=context, initializer=_start_worker, initargs=(state,)
    )


class _Worker:
    """This process's part in a pool: set by the initializer, in forked workers only."""

    state: object = None
    started = False


def _start_worker(state: object) -> None:
    """Ctrl-C reaches the whole process group: the parent cancels the work and reports it;
    the workers finish the unit they are in instead of each printing a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Worker.state, _Worker.started = state, True


def worker_state(kind: type[T]) -> T:
    """In a worker of :func:`forked_workers`: the state its pool was given, of type ``kind``."""
    state = _Worker.state
    if not _Worker.started or not isinstance(state, kind):
        raise RuntimeError(
            f"no {kind.__name__} for this process: worker_state is for workers of forked_workers"
        )
    return state


@contextlib.contextmanager
def cancelling(pool: Executor) -> Iterator[Executor]:
    """``with pool``, except that an error or Ctrl-C cancels the units not yet started instead
    of waiting for them."""
    with pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def become_worker(state: object) -> None:
    """In a worker process forked by a pool other than :func:`forked_workers`
    (physical/restore_fetch.py): what its initializer does, so that :func:`worker_state`
    finds ``state``."""
    _start_worker(state)
