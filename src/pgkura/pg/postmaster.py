"""Is a postmaster running on a data directory, and which directories do running servers own?

postmaster.pid survives a crash, so its presence proves nothing: the pid on its first line must
name a live process whose command line is a postgres server. A process of another user may exist
without us being allowed to signal it, which still means "alive". A server in another PID
namespace (a container sharing the directory) has a pid we cannot see: it still answers on the
socket its postmaster.pid names, so that is asked too.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pgkura.pg.procs import pid_alive, program_of

# postmaster.pid's lines (src/include/utils/pidfile.h): 1 pid, 2 data directory, 3 start time,
# 4 port, 5 first socket directory, 6 listen address, 7 shared memory key, 8 status.
_PID_LINE, _PORT_LINE, _SOCKET_LINE = 0, 3, 4
SOCKET_TIMEOUT = 1.0


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


def socket_answers(pgdata: Path) -> bool:
    """Whether a server accepts connections on the socket ``pgdata``'s postmaster.pid names."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        port = int(lines[_PORT_LINE].strip())
        directory = lines[_SOCKET_LINE].strip()
    except (OSError, IndexError, ValueError):
        return False
    if not directory:
        return False
    path = os.path.join(directory, f".s.PGSQL.{port}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class LiveServer:
    """A running server: its postmaster's pid, its data directory, and the directories it
    writes outside it (tablespace locations, a linked pg_wal)."""

    pid: int
    pgdata: Path
    elsewhere: tuple[Path, ...]

    def roots(self) -> tuple[Path, ...]:
        return (self.pgdata, *self.elsewhere)


def _linked_dirs(pgdata: Path) -> tuple[Path, ...]:
    out = []
    tblspc = pgdata / "pg_tblspc"
    try:
        for entry in os.scandir(tblspc):
            if entry.is_symlink():
                out.append(Path(os.path.realpath(entry.path)))
    except OSError:
        pass
    wal = pgdata / "pg_wal"
    if wal.is_symlink():
        out.append(Path(os.path.realpath(wal)))
    return tuple(out)


def _is_server_program(program: bytes | None) -> bool:
    # Backends rewrite their command line ("postgres: checkpointer"): only the postmaster's
    # first word is still the program's path.
    return program is not None and program.endswith((b"postgres", b"postmaster"))


def live_servers() -> list[LiveServer]:
    """Every postmaster this process can see in /proc, with the directories it owns.

    A postmaster is a postgres process whose parent is not one; its working directory is its
    data directory (PostgreSQL chdirs there at start). Processes whose directory we may not
    read (another user's, when we are not root) are passed over: the caller also checks
    postmaster.pid files."""
    found: dict[Path, LiveServer] = {}
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        program = program_of(pid)
        if not _is_server_program(program):
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent = int(stat.rpartition(")")[2].split()[1])
            if _is_server_program(program_of(parent)):
                continue  # a backend or auxiliary process of that postmaster
            pgdata = Path(os.path.realpath(os.readlink(f"/proc/{pid}/cwd")))
        except (OSError, ValueError, IndexError):
            continue
        if (pgdata / "PG_VERSION").exists():
            found[pgdata] = LiveServer(pid, pgdata, _linked_dirs(pgdata))
    return list(found.values())


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def server_using(path: Path) -> str | None:
    """Why ``path`` belongs to a running server (it is, holds or lies in a live data directory
    or one of its tablespaces), or None. Used before anything is written into ``path``."""
    real = Path(os.path.realpath(path))
    for server in live_servers():
        for root in server.roots():
            if _overlaps(real, root):
                what = "data directory" if root == server.pgdata else "tablespace or WAL directory"
                return (
                    f"{path} overlaps {root}, the {what} of the server running with "
                    f"postmaster pid {server.pid} (data directory {server.pgdata})"
                )
    for candidate in (real, *real.parents):
        if not (candidate / "postmaster.pid").exists():
            continue
        pid = running_postmaster_pid(candidate)
        if pid is not None:
            return f"{candidate} is the data directory of the server with postmaster pid {pid}"
        if socket_answers(candidate):
            return (
                f"{candidate} is the data directory of a server that answers on the socket its "
                "postmaster.pid names"
            )
    return None
