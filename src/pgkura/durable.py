"""The one local durable writer: what pgkura writes into a file system outside the repository
(a restored data directory, recovery settings, the PostgreSQL-format backup_manifest, a WAL
file for restore_command, the async spool) is written through here.

A file is written under a temporary name in its own directory (so that the rename stays on one
file system), every byte of it (os.write may take only part: a full pipe, a signal, NFS), then
fsynced, renamed over the name, and the directory fsynced: after a crash the name holds either
the old content or the new, never a torn file, and the rename itself survives.

Plain ``os`` only: archive-get and archive-push import this once per WAL segment.
"""

from __future__ import annotations

import os

from pgkura.errors import PgkuraError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class RawWriter(Protocol):
        def write(self, data: memoryview, /) -> int | None: ...


TMP_SUFFIX = ".tmp-pgkura"


def write_all(out: int | RawWriter, data: bytes | memoryview) -> None:
    """Write all of ``data`` to a file descriptor or an unbuffered file object, looping over
    short writes (each write may take only part of what it is given)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(out, view) if isinstance(out, int) else out.write(view)
        if not written:  # None: a non-blocking file that took nothing; 0 would loop forever
            raise OSError(f"a write of {len(view)} bytes wrote nothing")
        view = view[written:]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that the names created, renamed or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(
    path: str | os.PathLike[str],
    data: bytes | Callable[[int], None],
    *,
    mode: int = 0o600,
    durable: bool = True,
) -> None:
    """Write ``path`` crash-safely in its existing directory: temporary name beside it, all of
    ``data``, fsync, rename over ``path``, fsync of the directory.

    ``data`` is the content, or a function that streams it to the file descriptor it is given
    (with :func:`write_all`); if that raises, nothing is left behind and ``path`` is untouched.
    ``durable=False`` keeps the atomic rename but skips both fsyncs, for a file whose reader
    asks again after a crash (restore_command's destination). The directory is never created:
    a missing one is the caller's error to explain. Failures of the file system raise
    PgkuraError naming the file and what the operating system said.
    """
    dest = os.fspath(path)
    parent, name = os.path.split(dest)
    tmp = os.path.join(parent, f".{name}.{os.urandom(6).hex()}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise PgkuraError(
            f"cannot write {dest}: {exc.strerror or exc}",
            hint="the destination directory must exist and be writable by this OS user",
        ) from None
    try:
        try:
            if callable(data):
                data(fd)
            else:
                write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        if durable:
            fsync_dir(parent or ".")
    except OSError as exc:
        _unlink_quietly(tmp)
        raise PgkuraError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:  # noqa: SIM105 - contextlib is one more import on the per-segment path
        os.unlink(path)
    except FileNotFoundError:
        pass
