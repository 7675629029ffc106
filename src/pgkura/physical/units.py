"""Work for worker processes: cut into units of consecutive pieces, about so many bytes each
(so that handing a unit over is paid per few MiB, not per file), and its results taken back."""

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


def forked_workers(count: int) -> ProcessPoolExecutor:
    """``count`` worker processes, forked at the first submit (they inherit the caller's state
    instead of unpickling it: submit before starting any thread), that ignore Ctrl-C."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(count, mp_context=context, initializer=_ignore_interrupts)


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group: the parent cancels the work and reports it;
    the workers finish the unit they are in instead of each printing a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
