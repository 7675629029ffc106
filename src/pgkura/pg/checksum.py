"""PostgreSQL's data page checksum: which pages of a buffer fail it, as pg_checksums judges them.

The algorithm is not a CRC: it is the FNV-1a-derived 16-bit checksum of
src/include/storage/checksum_impl.h (32 parallel lanes, mixed with the block number; see
checksum_numpy.py for the details). It is computed by a small C kernel, ``_pagesum``, built when
pgkura is installed: an AVX2 loop on x86-64 processors that have it (36 GB/s on one core of this
project's machine), a scalar loop elsewhere (13 GB/s there), against 1.3-2 GB/s for the numpy
implementation. Where the kernel could not be built (no C compiler or Python headers), the
numpy implementation in :mod:`pgkura.pg.checksum_numpy` does the same work, more slowly; that
module is imported only then, so a backup does not pay numpy's import.

Words are read in native byte order, as PostgreSQL does, so checksums computed here match the
server's on the same architecture (pages are not portable across endianness anyway).
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass

# Re-exported: callers that check pages find the page layout here too.
from pgkura.pg.relfile import BLCKSZ as BLCKSZ
from pgkura.pg.relfile import RELSEG_BLOCKS as RELSEG_BLOCKS
from pgkura.pg.relfile import is_relation_file as is_relation_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    Buffer = bytes | bytearray | memoryview


def _load_kernel() -> ModuleType | None:
    import importlib

    try:
        return importlib.import_module("pgkura.pg._pagesum")
    except ImportError:  # not built where pgkura was installed: numpy does the work
        return None


_kernel = _load_kernel()

#: Which implementation computes the checksums: "c" (the kernel) or "numpy".
IMPLEMENTATION = "c" if _kernel is not None else "numpy"


def kernel_loop(name: str | None = None) -> str:
    """The C kernel's loop that sums pages: "avx2" or "scalar" ("numpy" without the kernel).
    With ``name``, that loop is used from now on, in this process (for tests that compare
    them; ValueError where it cannot run); returns the one used before."""
    if _kernel is None:
        if name not in (None, "numpy"):
            raise ValueError(f"no {name} page checksum kernel: the C kernel is not built")
        return "numpy"
    before: str = _kernel.kernel() if name is None else _kernel.kernel(name)
    return before


_PD_CHECKSUM = 8
_PD_UPPER = 14


@dataclass(frozen=True)
class PageFailure:
    """A page whose stored checksum differs from the computed one."""

    blkno: int
    expected: int  # computed from the page's content
    found: int  # stored in pd_checksum
    lsn: int  # pd_lsn as a 64-bit LSN; may itself be the corrupted part
    index: int  # the page's position in the buffer that was checked


def _u32(blknos: Sequence[int]) -> array.array[int]:
    """Block numbers as native uint32, wrapped as C's BlockNumber would be."""
    return array.array("I", (b & 0xFFFFFFFF for b in blknos))


def page_checksums(buf: Buffer, first_blkno: int) -> array.array[int]:
    """The checksum PostgreSQL would store in each page of ``buf``.

    ``first_blkno`` is the block number of the first page within its relation fork (segment
    number * RELSEG_BLOCKS + page index), because the block number is mixed in to catch pages
    written at the wrong place."""
    sums = array.array("H")
    if _kernel is None:
        from pgkura.pg import checksum_numpy

        sums.frombytes(checksum_numpy.page_checksums(buf, first_blkno).tobytes())
    else:
        sums.frombytes(_kernel.checksums(buf, first_blkno))
    return sums


def failing_pages(buf: Buffer, first_blkno: int) -> list[int]:
    """Indices of the pages of ``buf`` whose checksum does not match, as pg_checksums judges
    them; the cheapest call, for the copy's hot path (details of a failure from
    :func:`verify_pages`).

    Pages with ``pd_upper == 0`` are skipped: PageIsNew pages (zeroed by relation extension, or
    never initialised) carry no checksum yet, and pg_checksums skips them
    (src/bin/pg_checksums/pg_checksums.c, scan_file). All-zero pages are such pages."""
    if _kernel is None:
        return [f.index for f in verify_pages(buf, first_blkno)]
    bad: list[int] = _kernel.failing(buf, first_blkno)
    return bad


def verify_pages(buf: Buffer, first_blkno: int) -> list[PageFailure]:
    """Pages of ``buf`` whose checksum does not match, as pg_checksums judges them (see
    :func:`failing_pages`), with what was computed and found."""
    npages = memoryview(buf).nbytes // BLCKSZ
    return verify_pages_at(buf, range(first_blkno, first_blkno + npages))


def verify_pages_at(buf: Buffer, blknos: Sequence[int]) -> list[PageFailure]:
    """:func:`verify_pages` for pages of several relations or places at once: ``blknos[i]`` is
    the block number of page ``i`` of ``buf``."""
    if _kernel is None:
        import numpy as np

        from pgkura.pg import checksum_numpy

        return checksum_numpy.verify_pages_at(buf, np.asarray(blknos, dtype=np.uint64))
    numbers = _u32(blknos)
    bad: list[int] = _kernel.failing(buf, numbers)
    view = memoryview(buf).cast("B")
    failures = []
    for i in bad:
        page = view[i * BLCKSZ : (i + 1) * BLCKSZ]
        expected = int.from_bytes(_kernel.checksums(page, numbers[i]), sys.byteorder)
        found = int.from_bytes(page[_PD_CHECKSUM : _PD_CHECKSUM + 2], sys.byteorder)
        xlogid, xrecoff = struct.unpack_from("=II", page)  # pd_lsn
        lsn = (xlogid << 32) | xrecoff
        failures.append(PageFailure(int(blknos[i]), expected, found, lsn, i))
    return failures
