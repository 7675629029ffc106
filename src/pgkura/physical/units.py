"""Work for worker processes: cut into units of consecutive pieces, about so many bytes each
(so that handing a unit over is paid per few MiB, not per file), and its results taken back."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TypeVar

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
