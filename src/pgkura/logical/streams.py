"""Dump streams in the block store: cut by content-defined chunking (cdc.py), read back in order.

A stored stream is a FileEntry whose blocks, concatenated, are the stream; its CRC-32C covers
the whole stream, so a restore can tell a damaged or truncated stream from a good one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import google_crc32c

from pgkura.errors import CorruptionError
from pgkura.logical.cdc import cdc_chunks
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockReader, PackWriter
from pgkura.repository.manifest import FileEntry

#: Blocks fetched per storage request when a stream is read back (~2 MiB of dump).
READ_BATCH = 32


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
    """The content of a stored file, block by block, each verified against its id; the whole
    is checked against the entry's size and CRC-32C after the last block."""
    ids = [bytes.fromhex(b) for b in entry.blocks]
    crc = 0
    size = 0
    for i in range(0, len(ids), READ_BATCH):
        for data in reader.read_many(ids[i : i + READ_BATCH], entry.path):
            crc = google_crc32c.extend(crc, data)
            size += len(data)
            yield data
    if size != entry.size or (entry.crc32c is not None and f"{crc:08x}" != entry.crc32c):
        raise CorruptionError(
            f"{entry.path} read back from the repository does not match its checksum",
            hint="run pgkura verify; restore another dump",
        )


def write_entry(reader: BlockReader, entry: FileEntry, out: IO[bytes]) -> int:
    """Write a stored file to ``out``; return its size."""
    total = 0
    for data in entry_blocks(reader, entry):
        out.write(data)
        total += len(data)
    return total
