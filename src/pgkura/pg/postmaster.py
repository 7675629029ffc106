"""Is a postmaster running on a data directory?

postmaster.pid survives a crash, so its presence proves nothing: the pid on its first line must
name a live process whose command line is a postgres server. A process of another user may exist
without us being allowed to signal it, which still means "alive".
"""

from __future__ import annotations

import os
from pathlib import Path


def _is_postgres(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # No /proc (not Linux) or the process is gone: fall back to "does it exist".
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    program = cmdline.split(b"\0", 1)[0]
    return program.endswith((b"postgres", b"postmaster")) or b"postgres" in program


def running_postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the live postmaster that owns ``pgdata``, or None."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (OSError, IndexError, ValueError):
        return None
    if pid <= 0 or not _is_postgres(pid):
        return None
    return pid
