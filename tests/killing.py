"""Killing one of pgkura's worker processes as the OOM killer would, for the tests that check
what a command does then: find its processes, kill a worker that holds work, and wait for
the command while keeping ``runuser`` going."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def pgkura_processes(pattern: str) -> dict[int, int]:
    """pid -> parent pid of the processes whose command line holds ``pattern`` (runuser,
    which runs pgkura as postgres under root, left out)."""
    found: dict[int, int] = {}
    out = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True,
                         text=True).stdout.split()  # fmt: skip
    for pid in out:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"runuser"):
                continue
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        found[int(pid)] = int(stat[1])
    return found


def kill_a_busy_worker(pattern: str, busy_under: Path) -> None:
    """Wait for a worker of the command matching ``pattern`` to hold a file under
    ``busy_under`` open (a worker that has taken no work yet dies without loss: the others do
    its share), and SIGKILL it. Its parent is stopped meanwhile, so that its workers cannot
    have been told to exit; then it goes on and finds one gone."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = pgkura_processes(pattern)
        main = next((pid for pid, parent in pids.items() if parent not in pids), 0)
        busy = [p for p, parent in pids.items() if parent == main and holds(p, busy_under)]
        if busy:
            os.kill(main, signal.SIGSTOP)
            os.kill(busy[0], signal.SIGKILL)
            os.kill(main, signal.SIGCONT)
            return
        time.sleep(0.002)
    raise AssertionError(f"no pgkura worker process opened a file under {busy_under}")


def holds(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` has a file under ``directory`` open."""
    prefix = f"{directory}/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
    return False


def wait_out(proc: subprocess.Popen[str], seconds: float = 120) -> str:
    """The stderr of ``proc`` once it ended (within ``seconds``). runuser stops itself when it
    sees its child stopped (util-linux su-common) and nothing would continue it: it is kept
    going until the command ends."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        try:
            _out, err = proc.communicate(timeout=1)
            return err
        except subprocess.TimeoutExpired:
            assert time.monotonic() < deadline, "pgkura did not end after its worker was killed"
