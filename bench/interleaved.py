"""Interleaved A/B: each labelled command once a round, for ROUNDS rounds, so that every one
sees the same load; the median and the minimum of each one's wall time and CPU (user +
system of its process tree, wait4's rusage). Run as root: the commands run as postgres.

    .venv/bin/python bench/interleaved.py ROUNDS [--all] [--cwd DIR] LABEL='COMMAND' ...

A checkout of another commit runs with ``env PYTHONPATH=OLD/src .venv/bin/python -c 'import
sys; from pgkura.entry import main; sys.argv[0] = "pgkura"; main()' ARGS`` as its command
(its compiled pgkura/pg/_pagesum*.so copied in, and its bytecode compiled as root first,
postgres cannot write it). Timings are for docs/benchmarks.md, never a test.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import statistics
import subprocess
import time


def load_average() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", type=int)
    parser.add_argument("commands", nargs="+", metavar="LABEL=COMMAND")
    parser.add_argument("--all", action="store_true", help="print every round's wall time")
    parser.add_argument("--cwd", default="/")
    args = parser.parse_args()
    commands = [(c.split("=", 1)[0], shlex.split(c.split("=", 1)[1])) for c in args.commands]
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def as_user() -> None:
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in commands}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    print("load average", *load_average(), time.strftime("%H:%M:%S"))
    for _ in range(args.rounds):
        for label, cmd in commands:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=args.cwd, env=env, preexec_fn=as_user,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            assert proc.stderr is not None
            err = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{label} failed: {err[-500:]}")
            runs[label].append((wall, usage.ru_utime + usage.ru_stime))
    print("load average", *load_average(), time.strftime("%H:%M:%S"))
    for label, timings in runs.items():
        walls, cpus = [t[0] * 1000 for t in timings], [t[1] * 1000 for t in timings]
        print(f"{label:<22} wall median {statistics.median(walls):7.1f} ms  min "
              f"{min(walls):7.1f}  CPU median {statistics.median(cpus):7.1f} ms  min "
              f"{min(cpus):7.1f}")  # fmt: skip
        if args.all:
            print("   ", " ".join(f"{w:.0f}" for w in walls))


if __name__ == "__main__":
    main()
