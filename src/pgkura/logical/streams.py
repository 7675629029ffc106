"""Dump streams in the block store: cut by content-defined chunking, read back block by block.

pg_dump's output has no page structure, and a row inserted early in a table shifts every byte
after it; fixed-size blocks would then share nothing with the previous dump. FastCDC cuts where
the content says (a rolling hash), so the same bytes are cut the same way wherever they sit,
and an unchanged table dedups between dumps.

The stream is read through a bounded buffer: a chunk is emitted only when the buffer holds its
whole ``MAX_CHUNK`` window (or the stream has ended), so the cuts are exactly those of chunking
the stream in one piece, and memory stays at a few MiB whatever the dump's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import google_crc32c
from fastcdc import fastcdc

from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockReader, PackWriter
from pgkura.repository.manifest import FileEntry

MIN_CHUNK = 16 * 1024
AVG_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
READ_SIZE = 4 * 1024 * 1024


def cdc_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The content-defined chunks of ``stream``, in order, read ``READ_SIZE`` at a time."""
    buf = bytearray()
    eof = False
    while not eof or buf:
        while not eof and len(buf) < READ_SIZE:
            data = stream.read(READ_SIZE)
            if not data:
                eof = True
            else:
                buf += data
        if not buf:
            break
        view = memoryview(buf)
        used = 0
        cuts = fastcdc(view, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        try:
            for chunk in cuts:
                if not eof and chunk.offset + MAX_CHUNK > len(buf):
                    break  # its cut could depend on bytes not read yet
                yield bytes(view[chunk.offset : chunk.offset + chunk.length])
                used = chunk.offset + chunk.length
        finally:
            cuts.close()  # drops its slices of the buffer, so the buffer may be resized
            view.release()
        del buf[:used]


def store_stream(
    writer: PackWriter,
    stream: IO[bytes],
    path: str,
    *,
    mode: int = 0o600,
    mtime: float = 0.0,
    progress: Progress | None = None,
) -> FileEntry:
    """Store everything ``stream`` yields as the file ``path`` of a dump."""
    progress = progress or NoProgress()
    blocks: list[str] = []
    size = 0
    crc = 0
    for chunk in cdc_chunks(stream):
        block_id, _added = writer.add(chunk)
        blocks.append(block_id.hex())
        crc = google_crc32c.extend(crc, chunk)
        size += len(chunk)
        progress.advance(len(chunk))
    return FileEntry(path, "file", mode, size, mtime, tuple(blocks), f"{crc:08x}")


def entry_blocks(reader: BlockReader, entry: FileEntry) -> Iterator[bytes]:
    """The content of a stored file, block by block, each verified against its id."""
    for b in entry.blocks:
        yield reader.read(bytes.fromhex(b), entry.path)


def write_entry(reader: BlockReader, entry: FileEntry, out: IO[bytes]) -> int:
    total = 0
    for data in entry_blocks(reader, entry):
        out.write(data)
        total += len(data)
    return total
