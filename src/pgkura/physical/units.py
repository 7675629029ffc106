"""Cutting work into units for worker processes: consecutive pieces, about so many bytes each,
so that handing a unit over is paid per few MiB, not per file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

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
