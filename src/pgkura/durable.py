"""Durable writes of local files (not repository objects, which go through the storage
backend): a restored data directory, recovery settings, archive-get's destination.

A leaf every layer may use; it imports nothing of pgkura, and neither pathlib nor typing
(archive-get imports it once per WAL segment).
"""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of directory ``path`` (a file created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` in place (created or truncated) with ``data``, all of it, then fsync
    the file and its directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
