"""PostgreSQL's data page checksum, computed with numpy over many pages at once: the reference
the C kernel (_pagesum.c) is tested against, and what :mod:`pgkura.pg.checksum` falls back to
where that kernel was not built.

The algorithm is not a CRC: it is the FNV-1a-derived 16-bit checksum of
src/include/storage/checksum_impl.h. A page is read as 64 rows of 32 native uint32 words; each of
32 lanes starts from a fixed offset and mixes in its column of words (``tmp = lane ^ word; lane =
tmp * FNV_PRIME ^ (tmp >> 17)``), then two extra rounds of zeros. The lanes are xor-folded, the
block number xored in, and the result reduced to ``% 65535 + 1`` so that 0 never appears.

Because the 32 lanes are independent, the natural vectorisation is across pages *and* lanes: the
state is an ``(npages, 32)`` uint32 array and the 64 rows of every page are mixed in lock step.
This keeps the Python loop at 66 iterations per chunk, whatever the number of pages.

Words are read in native byte order, as PostgreSQL does, so checksums computed here match the
server's on the same architecture (pages are not portable across endianness anyway).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pgkura.pg.checksum import PageFailure
from pgkura.pg.relfile import BLCKSZ

_N_SUMS = 32
_ROWS = BLCKSZ // (4 * _N_SUMS)
_FNV_PRIME = np.uint32(16777619)
_SHIFT = np.uint32(17)
# Pages processed per step: 1024 pages = 8 MiB of input, 128 KiB of lane state.
_CHUNK_PAGES = 1024

_BASE_OFFSETS = np.array(
    [
        0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
        0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
        0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
        0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
        0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
        0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
        0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
        0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
    ],
    dtype=np.uint32,
)  # fmt: skip

# pd_checksum (bytes 8-9 of the header) counts as zero while computing. It lives in word 2 of
# row 0; which half of that word depends on byte order, so build the mask from bytes.
_CHECKSUM_WORD = 2
_CHECKSUM_MASK = np.frombuffer(b"\x00\x00\xff\xff", dtype=np.uint32)[0]

# Page header layout (src/include/storage/bufpage.h): pd_lsn {xlogid, xrecoff} at 0 and 4,
# pd_checksum at 8, pd_flags at 10, pd_lower at 12, pd_upper at 14.
_PD_CHECKSUM = 8
_PD_UPPER = 14

Buffer = bytes | bytearray | memoryview
U16Array = npt.NDArray[np.uint16]


def _pages(buf: Buffer) -> npt.NDArray[np.uint32]:
    """View ``buf`` as ``(npages, 64, 32)`` native uint32 words, without copying."""
    nbytes = memoryview(buf).nbytes
    if nbytes % BLCKSZ:
        raise ValueError(f"buffer of {nbytes} bytes is not a whole number of {BLCKSZ}-byte pages")
    words = np.frombuffer(buf, dtype=np.uint32)
    return words.reshape(-1, _ROWS, _N_SUMS)


def _block_sums(rows: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """The xor-folded 32-lane FNV state of each page (pg_checksum_block), pd_checksum as 0.

    ``rows`` is ``(64, npages, 32)``: ``rows[r]`` holds row ``r`` of every page, gathered from a
    buffer of whole pages (a strided view). Four ufunc passes per row over an ``(npages, 32)``
    state, updated in place: every extra pass or temporary costs as much as the arithmetic,
    which is memory-bound at this size.
    """
    state: npt.NDArray[np.uint32] = np.bitwise_xor(_BASE_OFFSETS, rows[0])
    state[:, _CHECKSUM_WORD] ^= rows[0][:, _CHECKSUM_WORD] & ~_CHECKSUM_MASK
    high = np.empty_like(state)
    for row in range(1, _ROWS + 3):
        np.right_shift(state, _SHIFT, out=high)
        np.multiply(state, _FNV_PRIME, out=state)
        np.bitwise_xor(state, high, out=state)
        if row < _ROWS:  # the two closing rounds mix in zeros
            np.bitwise_xor(state, rows[row], out=state)
    # Fold the lanes by halves: xor.reduce along a 32-wide axis loops per page.
    width = _N_SUMS // 2
    while width:
        np.bitwise_xor(state[:, :width], state[:, width : 2 * width], out=state[:, :width])
        width //= 2
    return state[:, 0]


def _finish(folded: npt.NDArray[np.uint32], blknos: npt.NDArray[np.uint32], out: U16Array) -> None:
    """pg_checksum_page's last steps: mix in the block number, reduce to 1..65535."""
    folded ^= blknos
    folded %= np.uint32(65535)
    np.add(folded, np.uint32(1), out=out, casting="unsafe")


def page_checksums(buf: Buffer, first_blkno: int) -> U16Array:
    """The checksum PostgreSQL would store in each page of ``buf``.

    ``first_blkno`` is the block number of the first page within its relation fork (segment
    number * RELSEG_BLOCKS + page index), because the block number is mixed in to catch pages
    written at the wrong place. Processes chunks of pages so memory stays flat.
    """
    npages = _pages(buf).shape[0]
    return _checksums(buf, np.arange(first_blkno, first_blkno + npages, dtype=np.uint64))


def _checksums(buf: Buffer, blknos: npt.NDArray[np.uint64]) -> U16Array:
    pages = _pages(buf)
    if blknos.shape != (pages.shape[0],):
        raise ValueError(f"{blknos.shape[0]} block numbers for {pages.shape[0]} pages")
    out = np.empty(pages.shape[0], dtype=np.uint16)
    for start in range(0, pages.shape[0], _CHUNK_PAGES):
        stop = min(start + _CHUNK_PAGES, pages.shape[0])
        rows = pages[start:stop].transpose(1, 0, 2)
        # BlockNumber is uint32: wrap like C would.
        _finish(_block_sums(rows), blknos[start:stop].astype(np.uint32), out[start:stop])
    return out


def _header_u16(buf: Buffer, offset: int) -> U16Array:
    """A uint16 header field of every page."""
    return _pages(buf).view(np.uint16).reshape(-1, BLCKSZ // 2)[:, offset // 2]


def page_lsn(buf: Buffer, index: int) -> int:
    """pd_lsn of page ``index`` of ``buf`` as a 64-bit LSN (xlogid << 32 | xrecoff)."""
    words = _pages(buf)[index, 0]
    return (int(words[0]) << 32) | int(words[1])


def verify_pages(buf: Buffer, first_blkno: int) -> list[PageFailure]:
    """Pages of ``buf`` whose checksum does not match, as pg_checksums judges them.

    Pages with ``pd_upper == 0`` are skipped: PageIsNew pages (zeroed by relation extension, or
    never initialised) carry no checksum yet, and pg_checksums skips them
    (src/bin/pg_checksums/pg_checksums.c, scan_file). All-zero pages are such pages.
    """
    npages = _pages(buf).shape[0]
    return verify_pages_at(buf, np.arange(first_blkno, first_blkno + npages, dtype=np.uint64))


def verify_pages_at(buf: Buffer, blknos: npt.NDArray[np.uint64]) -> list[PageFailure]:
    """:func:`verify_pages` for pages of several relations or places at once: ``blknos[i]`` is
    the block number of page ``i`` of ``buf``. One call over many small files costs what one
    call over one file of their total size does."""
    pages = _pages(buf)
    if pages.shape[0] == 0:
        return []
    computed = _checksums(buf, blknos)
    stored = _header_u16(buf, _PD_CHECKSUM)
    bad = np.nonzero((computed != stored) & (_header_u16(buf, _PD_UPPER) != 0))[0]
    return [
        PageFailure(
            blkno=int(blknos[i]),
            expected=int(computed[i]),
            found=int(stored[i]),
            lsn=page_lsn(buf, int(i)),
            index=int(i),
        )
        for i in bad
    ]
