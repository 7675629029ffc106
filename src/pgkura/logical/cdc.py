"""Content-defined chunking of byte streams, vectorised with numpy.

pg_dump's output has no page structure, and a row inserted early in a table shifts every byte
after it; fixed-size blocks would then share nothing with the previous dump. Cutting where the
content says makes the same bytes cut the same way wherever they sit, so an unchanged table
dedups between dumps.

The rolling hash at position ``i`` is the sum (mod 2**64) of a per-byte table value over the
``WINDOW`` bytes ending at ``i``: one ``cumsum`` gives it for a whole buffer, so the chunker runs
at numpy speed rather than one Python step per byte. A position is a cut candidate when the
hash's ``MASK`` bits are zero (one in ``AVG_CHUNK`` positions on random data). A chunk starting
at ``s`` ends at the first candidate at or after ``s + MIN_CHUNK``, or at ``s + MAX_CHUNK``.

A chunk's end depends only on the bytes from its start to at most ``MAX_CHUNK`` later (the
window never reaches back before the start, since ``WINDOW < MIN_CHUNK``), so the stream is read
through a bounded buffer and a chunk is emitted only once the buffer holds that whole span (or
the stream has ended): the cuts are exactly those of chunking the stream in one piece.

The table and the constants are part of the repository's dedup behaviour, not of its format:
changing them only makes new dumps share fewer blocks with old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import IO

import numpy as np

MIN_CHUNK = 16 * 1024
AVG_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
READ_SIZE = 4 * 1024 * 1024
WINDOW = 64
#: 16 bits (AVG_CHUNK = 2**16) taken from the middle of the hash, away from the low bits that
#: carry least mixing in a sum.
MASK = np.uint64((AVG_CHUNK - 1) << 20)


def _table() -> np.ndarray:
    values = [
        int.from_bytes(hashlib.sha256(b"pgkura-cdc-" + bytes([i])).digest()[:8], "little")
        for i in range(256)
    ]
    return np.array(values, dtype=np.uint64)


_TABLE = _table()


def cut_candidates(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Positions ``i`` (as chunk ends ``i + 1``) where the rolling hash says "cut", ascending."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if len(arr) <= WINDOW:
        return np.empty(0, dtype=np.int64)
    with np.errstate(over="ignore"):
        sums = np.cumsum(_TABLE[arr], dtype=np.uint64)
        window = sums[WINDOW:] - sums[:-WINDOW]  # hash of bytes (i - WINDOW, i]
    hits = np.flatnonzero((window & MASK) == 0)
    return hits + WINDOW + 1  # index into window → end offset of a chunk cut there


def cdc_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The content-defined chunks of ``stream``, in order, read ``READ_SIZE`` at a time."""
    buf = bytearray()
    eof = False
    while True:
        while not eof and len(buf) < READ_SIZE:
            data = stream.read(READ_SIZE - len(buf))
            if not data:
                eof = True
            else:
                buf += data
        if not buf:
            return
        ends = cut_candidates(buf)
        start = 0
        while start < len(buf):
            if not eof and start + MAX_CHUNK > len(buf):
                break  # its cut could depend on bytes not read yet
            lo = start + MIN_CHUNK
            k = int(np.searchsorted(ends, lo))
            end = int(ends[k]) if k < len(ends) else len(buf)
            end = min(end, start + MAX_CHUNK, len(buf))
            yield bytes(buf[start:end])
            start = end
        del buf[:start]
        if eof and not buf:
            return
