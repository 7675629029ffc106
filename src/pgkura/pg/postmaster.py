"""Is a postmaster running on a data directory?

postmaster.pid survives a crash, so its presence proves nothing: the pid on its first line must
name a live process whose command line is a postgres server. A process of another user may exist
without us being allowed to signal it, which still means "alive".
"""

from __future__ import annotations

from pathlib import Path

from pgkura.procs import pid_alive, program_of


def _is_postgres(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    program = program_of(pid)
    # No /proc to ask: a live process with the recorded pid is taken for the postmaster.
    return program is None or b"postgres" in program or program.endswith(b"postmaster")


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
