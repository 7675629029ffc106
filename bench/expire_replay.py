"""Replay a saved expire (bench/expire.py, ``BENCH_EXPIRE_SAVE=DIR``) on fresh copies of the
repository and its cache, and print the CPU seconds (user + system of the process tree, from
wait4) and wall seconds of each run and their medians. ``--src`` runs pgkura from another
source tree (PYTHONPATH), so that two commits can be compared alternately on the same state:

    .venv/bin/python bench/expire_replay.py SAVED --runs 5 --src /path/a/src --src /path/b/src

Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PGKURA = str(Path(sys.executable).with_name("pgkura"))


_WARM = """
import sys
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.repo import Repository
from pgkura.storage.posix import PosixStorage
repo = Repository.open(PosixStorage(sys.argv[1]))
repo.cache_setting = sys.argv[2]
BlockIndex(repo).load()
"""


def replay(
    saved: Path, src: str | None, profile: Path | None = None, warm: bool = False
) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, bytes the process tree wrote) of one expire on a fresh
    copy of ``saved``. ``warm``: load the index once first, untimed, as a backup of that
    source tree would have, so that its cache holds what such a backup leaves there (the
    parsed forms of index objects)."""
    argv = json.loads((saved / "command.json").read_text())
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="pgkura-replay-") as tmp:
        os.chmod(tmp, 0o755)  # pgkura runs as the saved repository's owner (as root: postgres)
        repo = Path(tmp) / "repo"
        cache = Path(tmp) / "cache"
        subprocess.run(["cp", "-a", str(saved / "repo"), str(repo)], check=True)
        subprocess.run(["cp", "-a", str(saved / "cache"), str(cache)], check=True)
        subprocess.run(["sync"], check=True)
        env = {**os.environ, "PGKURA_CACHE_DIR": str(cache)}
        if src:
            env["PYTHONPATH"] = src
        owner = _owner(saved / "repo")
        if warm:
            subprocess.run(
                [*owner, sys.executable, "-c", _WARM, str(repo), str(cache)], env=env, check=True
            )
        cmd = [PGKURA, *(a.replace("{repo}", str(repo)) for a in argv)]
        if profile is not None:
            cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), *cmd]
            if owner:  # the profile is written by the command's user
                profile.touch()
                os.chown(profile, (saved / "repo").stat().st_uid, -1)
        cmd = [*owner, *cmd]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"expire failed:\n{err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, int(usage.ru_oublock) * 512


def _owner(repo: Path) -> list[str]:
    """``runuser -u OWNER --`` when root and another user owns ``repo`` (pgkura, run as
    root, writes into no one else's repository), else nothing."""
    import pwd

    uid = repo.stat().st_uid
    if os.geteuid() != 0 or uid == 0:
        return []
    return ["runuser", "-u", pwd.getpwuid(uid).pw_name, "--"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("saved", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", action="append", default=[], help="source trees to alternate")
    parser.add_argument("--profile", type=Path, help="one cProfile run into this file")
    parser.add_argument("--warm", action="store_true", help="load the index once, untimed")
    args = parser.parse_args()
    if args.profile:
        replay(args.saved, args.src[0] if args.src else None, args.profile, args.warm)
        import pstats

        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(30)
        return
    sources = args.src or [None]
    results: dict[str | None, list[tuple[float, float, int]]] = {s: [] for s in sources}
    for n in range(args.runs):
        for src in sources:
            cpu, wall, written = replay(args.saved, src, warm=args.warm)
            results[src].append((cpu, wall, written))
            load = Path("/proc/loadavg").read_text().split()[0]
            print(
                f"run {n + 1} {src or 'installed'}: cpu {cpu:.3f} s wall {wall:.3f} s "
                f"wrote {written / 2**20:.1f} MiB load {load}"
            )
    for src, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        mib = statistics.median(r[2] for r in runs) / 2**20
        print(
            f"median {src or 'installed'}: cpu {cpu:.3f} s wall {wall:.3f} s "
            f"wrote {mib:.1f} MiB ({len(runs)} runs)"
        )


if __name__ == "__main__":
    main()
