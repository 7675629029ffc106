"""Scratch directories (sandboxes, dump staging, pg_basebackup copies), and the removal of those
that runs killed before they could clean up.

Each is ``$TMPDIR/pgkura-<kind>-<pid>-<random>``: the pid is the run that made it, so the next
pgkura command on this machine removes the directories of runs that are gone, after stopping a
sandbox server still running in one, and never touches a live run's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pgkura.pg.procs import pid_alive

_NAME = re.compile(r"pgkura-([a-z]+)-([0-9]+)-")
# The kinds of scratch directory this module makes (and so may remove); others that look
# alike, such as the archive spool (pgkura-spool-<uid>-...), are not scratch.
KINDS = frozenset({"sandbox", "dump", "restore", "table", "basebackup", "scan", "waldump"})
STOP_SECONDS = 30.0
# A scratch directory holding this file was left on purpose (verify --restore --keep).
KEPT = "pgkura-kept"


def scratch_parent() -> Path:
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir())


def make_scratch(kind: str, parent: str | os.PathLike[str] | None = None) -> Path:
    """A new private directory for ``kind`` of work (one of KINDS), named after this
    process."""
    assert kind in KINDS, kind
    where = Path(parent) if parent is not None else scratch_parent()
    return Path(tempfile.mkdtemp(prefix=f"pgkura-{kind}-{os.getpid()}-", dir=where))


@contextlib.contextmanager
def scratch_dir(kind: str, parent: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """:func:`make_scratch`, removed when the block ends (and by the next run's sweep if this
    process is killed first)."""
    path = make_scratch(kind, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stop_servers(directory: Path) -> None:
    """Stop (immediately: the data is thrown away) any server whose data directory is in
    ``directory``, and wait for it to exit."""
    from pgkura.pg.postmaster import running_postmaster_pid

    for pid_file in directory.glob("*/postmaster.pid"):
        pid = running_postmaster_pid(pid_file.parent)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        except OSError:
            continue
        deadline = time.monotonic() + STOP_SECONDS
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def sweep_scratch(parent: Path | None = None) -> list[Path]:
    """Remove the scratch directories of pgkura runs that are gone; returns what it removed.
    Directories it may not remove (another user's) are left alone."""
    where = parent or scratch_parent()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(where))
    except OSError:
        return removed
    for entry in entries:
        m = _NAME.match(entry.name)
        if m is None or m.group(1) not in KINDS or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(m.group(2))
        path = Path(entry.path)
        if pid == os.getpid() or pid_alive(pid) or (path / KEPT).exists():
            continue
        try:
            _stop_servers(path)
            shutil.rmtree(path)
        except OSError:
            continue
        removed.append(path)
    return removed
