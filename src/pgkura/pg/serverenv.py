"""The running postmaster as an OS process: its user, its groups and its environment.

archive_command runs with the postmaster's environment, so the ``PGKURA_*`` variables set
where the server was started (a systemd unit's ``Environment=``, a shell's exports) decide
what it does. Linux shows a process's environment in ``/proc/PID/environ`` to its own user
and to root; from anyone else, or for a server on another machine, it cannot be known.
"""

from __future__ import annotations

import os


class ServerProcess:
    __slots__ = ("environ", "gids", "pid", "uid")

    def __init__(self, pid: int, uid: int, gids: set[int], environ: dict[str, str] | None):
        self.pid = pid
        self.uid = uid
        self.gids = gids
        # None: the environment could not be read (another OS user's process).
        self.environ = environ


def postmaster_process(data_directory: str) -> ServerProcess | None:
    """The postmaster of the server whose data directory is ``data_directory``, or None when
    it is not a live process on this machine."""
    try:
        with open(os.path.join(data_directory, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
        status = _status(pid)
    except (OSError, ValueError):
        return None
    uid = int(status["Uid"].split()[1])  # real, effective, saved, file system: effective
    gids = {int(g) for g in status.get("Groups", "").split()}
    gids.add(int(status["Gid"].split()[1]))
    return ServerProcess(pid, uid, gids, _environ(pid))


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    out = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            out[name.decode(errors="replace")] = value.decode(errors="replace")
    return out
