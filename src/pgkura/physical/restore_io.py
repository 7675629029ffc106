"""The system calls a restore writes files with: positioned and direct writes, preallocation,
fsync. Short writes are finished, never ignored."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgkura.durable import write_all
from pgkura.errors import CorruptionError
from pgkura.repository.manifest import FileEntry
from pgkura.repository.reader import BlockReader


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def pwrite_direct(fd: int, data: memoryview, offset: int) -> None:
    """An O_DIRECT write; a file system that took the flag but refuses the write (an alignment
    larger than DIRECT_ALIGN) gets the same write through the page cache instead."""
    try:
        pwrite_all(fd, data, offset)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        set_direct(fd, False)
        pwrite_all(fd, data, offset)


def write_pieces(fd: int, pieces: list[bytes]) -> None:
    """Write ``pieces`` in order with as few syscalls as the kernel allows (no joined copy)."""
    written = os.writev(fd, pieces)
    total = sum(len(p) for p in pieces)
    if written < total:  # a short write: finish the rest piece by piece
        rest = b"".join(pieces)[written:]
        write_all(fd, rest)


def set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for ``fd``; False when the file system does not take it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | os.O_DIRECT if on else flags & ~os.O_DIRECT
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
    except OSError:
        return False
    return True


def preallocate(fd: int, offset: int, length: int) -> None:
    if length <= 0:
        return
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise  # a full disk, say: better now than half-way through
        # not supported here: the writes allocate as they go


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    fsync_and_close(fd)


def fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_mode_group_readable(mode: int) -> bool:
    return bool(mode & stat.S_IRGRP)


def rewrite_changed(
    dest: Path,
    blocks: Sequence[str],
    size: int,
    block_size: int,
    digest: Callable[[bytes], bytes],
    read: Callable[[bytes], bytes],
    advance: Callable[[int], None],
) -> tuple[int, bool]:
    """--delta on an existing file: rewrite only the blocks (ids in hex) whose content
    differs, reading each from ``read``; (bytes written, whether the file changed)."""
    written = 0
    changed = False
    fd = os.open(dest, os.O_RDWR)
    try:
        offset = 0
        for block_id in blocks:
            wanted = bytes.fromhex(block_id)
            current = os.pread(fd, block_size, offset)
            if digest(current) != wanted:
                data = read(wanted)
                pwrite_all(fd, data, offset)
                written += len(data)
                changed = True
                offset += len(data)
            else:
                offset += len(current)
            advance(len(current))
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
            changed = True
        if changed:
            os.fsync(fd)
    finally:
        os.close(fd)
    return written, changed


@dataclass
class RangedFile:
    """A file being written in ranges by several workers; ``done`` counts the ranges written."""

    entry: FileEntry
    dest: Path
    parts: int
    direct: bool = False
    irregular: bool = False
    done: int = 0


def prefetch_small_files(
    reader: BlockReader, files: Sequence[Sequence[str]]
) -> dict[bytes, bytes] | None:
    """The blocks (hex ids, per file) of a unit of many small files, read at once in as few
    requests as the packs allow (BlockReader.read_scattered): one request per file would make
    a cluster's thousand small files a thousand S3 requests. None for fewer than two files, or
    when a block cannot be read: then each file reads its own, and the error names the file."""
    if len(files) < 2:
        return None
    try:
        return reader.read_scattered((bytes.fromhex(b) for f in files for b in f), "the restore")
    except CorruptionError:
        return None
