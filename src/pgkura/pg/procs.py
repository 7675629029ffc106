"""Is a process alive? Shared by lock takeover and the postmaster check."""

from __future__ import annotations

import os

# Plain open(), not pathlib: archive-push sweeps dead writers' temporary files with this once
# per WAL segment, and pathlib costs it about 5 ms to import.


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. A process of another user counts (we may not signal it); a
    zombie does not: a killed process whose parent died lingers until init reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc (not Linux): kill said it exists
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def program_of(pid: int) -> bytes | None:
    """The first word of the process's command line, when /proc tells it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0]
    except OSError:
        return None
