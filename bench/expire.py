"""Expiry at the end of a month: a repository with 30 backups of a changing pgbench cluster and
its WAL, expired to the newest 7, by pgkura (`--keep-last 7 expire`, which ends with gc and its
repacking) and by pgBackRest (`expire` with `repo1-retention-full=7`) on the same backups.

For each tool: the seconds expire took, the bytes it reclaimed (the repository's size on disk
before and after) and the bytes it wrote (the kernel's count of the process tree's writes,
wait4's ru_oublock), so that the cost per byte reclaimed can be compared. Run through bench.py
(it builds the cluster):

    .venv/bin/python bench/bench.py --only expire --expire-backups 30 --expire-keep 7

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench import Bench


@dataclass
class Expiry:
    seconds: float
    before: int
    after: int
    written: int

    @property
    def reclaimed(self) -> int:
        return self.before - self.after


def disk_bytes(path: Path) -> int:
    """Bytes the tree takes on disk (allocated blocks, as du counts them)."""
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def measured(
    bench: Bench, cmd: list[str], extra_env: dict[str, str] | None = None
) -> tuple[float, int]:
    """Wall seconds and bytes written by the command's process tree."""
    from bench import as_user, settle

    settle()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            as_user(cmd),
            env={**os.environ, **bench.env, **(extra_env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
    return elapsed, int(usage.ru_oublock) * 512


def repo_cache(repo: Path) -> Path:
    """The local cache directory of ``repo`` for the user the benchmark's commands run as."""
    import json
    import pwd

    from bench import USER

    home = Path(pwd.getpwnam(USER).pw_dir) if USER else Path.home()
    repo_id = json.loads((repo / "pgkura.json").read_text())["id"]
    return home / ".cache" / "pgkura" / repo_id


def copy_cache(repo: Path, root: Path) -> None:
    """A copy of ``repo``'s local cache under the cache root ``root`` (owners kept)."""
    from bench import own

    source = repo_cache(repo)
    own(root)
    if source.is_dir():
        subprocess.run(["cp", "-a", str(source), str(root / source.name)], check=True)


def save_state(repo: Path, saved: Path, cmd: list[str]) -> None:
    """``BENCH_EXPIRE_SAVE=DIR``: the repository and its cache as they are before expire, in
    DIR/repo and DIR/cache, with the expire command, for bench/expire_replay.py."""
    import json
    import shutil

    shutil.rmtree(saved, ignore_errors=True)
    saved.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(repo), str(saved / "repo")], check=True)
    copy_cache(repo, saved / "cache")
    argv = [c if c != str(repo) else "{repo}" for c in cmd[1:]]
    (saved / "command.json").write_text(json.dumps(argv))
    print(f"  saved the state before expire in {saved}", flush=True)


class ExpireStage:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.results: dict[str, Expiry] = {}

    def run(self, backups: int, keep: int) -> None:
        from bench import PGKURA, own, run

        b = self.bench
        print(f"== expire: {backups} backups of a changing cluster, expired to {keep}", flush=True)
        repo = b.base / "pgkura-expire"
        b.point_repo(repo)
        # pgBackRest's archive_command reads its config at every segment: pointing repo1-path at
        # a new repository keeps the other stages' backups out of this one.
        saved = b.pgbr_conf.read_text()
        pgbr_repo = own(b.base / "pgbackrest-expire")
        b.pgbr_conf.write_text(
            saved.replace(f"repo1-path={b.pgbr_repo}", f"repo1-path={pgbr_repo}")
        )
        try:
            run(b.pgbackrest("stanza-create"))
            env = {**b.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
            for n in range(1, backups + 1):
                run([b.tool("pgbench"), "-n", "-c", "2", "-t", "1000"], b.env)
                run(b.pgkura(repo, "backup", "--type", "online", "--jobs", "2"), env)
                run(b.pgbackrest("backup", "--type=full"), b.env)
                print(f"  backup {n} of {backups}", flush=True)
            run([b.tool("psql"), "-qc", "SELECT pg_switch_wal()"], b.env)
            time.sleep(2)
            pgkura_cmd = [PGKURA, "--repo", str(repo), "--stanza", "bench",
                          "--keep-last", str(keep), "expire"]  # fmt: skip
            if os.environ.get("BENCH_EXPIRE_SAVE"):  # the state before expire, for replays
                save_state(repo, Path(os.environ["BENCH_EXPIRE_SAVE"]), pgkura_cmd)
            if os.environ.get("BENCH_EXPIRE_PROFILE"):  # where a copy's expire spends its time
                self.profile(pgkura_cmd, repo)
            self.results["pgkura expire --keep-last"] = self.measure(pgkura_cmd, repo)
            pgbr_cmd = b.pgbackrest(f"--repo1-retention-full={keep}", "expire")
            self.results["pgbackrest expire retention-full"] = self.measure(pgbr_cmd, pgbr_repo)
        finally:
            b.pgbr_conf.write_text(saved)

    def profile(self, cmd: list[str], repo: Path) -> None:
        """``BENCH_EXPIRE_PROFILE=1``: the same expire on a copy of the repository under
        cProfile, its 25 most expensive functions (cumulative) printed; not timed."""
        import pstats
        import shutil
        import sys

        from bench import own

        copy = self.bench.base / "pgkura-expire-profiled"
        shutil.rmtree(copy, ignore_errors=True)
        subprocess.run(["cp", "-a", str(repo), str(copy)], check=True)  # owners kept
        # The copy has the repository's id: with the same cache its expire would prune the
        # cache the measured expire then uses. It gets a copy of the cache of its own.
        cache = self.bench.base / "expire-profile-cache"
        shutil.rmtree(cache, ignore_errors=True)
        copy_cache(repo, cache)
        out = own(self.bench.base / "expire-profile") / "expire.prof"
        argv = [c if c != str(repo) else str(copy) for c in cmd]
        profiled = [sys.executable, "-m", "cProfile", "-o", str(out), *argv]
        measured(self.bench, profiled, {"PGKURA_CACHE_DIR": str(cache)})
        pstats.Stats(str(out)).sort_stats("cumulative").print_stats(25)

    def measure(self, cmd: list[str], repo: Path) -> Expiry:
        before = disk_bytes(repo)
        # pgkura counts its requests to the repository (storage/requests.py): what expire and
        # its gc read grows with the repository only where these counts do.
        from bench import PGKURA, own

        stats = own(self.bench.base / "expire-requests") / "stats.json"
        stats.unlink(missing_ok=True)
        extra = {"PGKURA_REQUEST_STATS": str(stats)} if cmd[0] == PGKURA else None
        seconds, written = measured(self.bench, cmd, extra)
        after = disk_bytes(repo)
        if stats.exists():
            import json

            print(f"  pgkura requests by area: {json.loads(stats.read_text())['by_area']}")
        result = Expiry(seconds, before, after, written)
        print(
            f"  {cmd[0].rsplit('/', 1)[-1]:<10} {seconds:7.2f} s, {before / 2**20:8.1f} -> "
            f"{after / 2**20:8.1f} MiB, wrote {written / 2**20:7.1f} MiB",
            flush=True,
        )
        return result

    def report(self) -> None:
        if not self.results:
            return
        print("\n== expire to the newest backups (seconds; MiB reclaimed; MiB written per GiB)")
        for label, r in self.results.items():
            per_gib = r.written / r.reclaimed * 1024 if r.reclaimed > 0 else float("nan")
            print(
                f"  {label:<34} {r.seconds:7.2f} s  reclaimed {r.reclaimed / 2**20:8.1f} MiB"
                f"  wrote {r.written / 2**20:7.1f} MiB ({per_gib:.1f} MiB per GiB reclaimed)"
            )
        kura = self.results.get("pgkura expire --keep-last")
        pgbr = self.results.get("pgbackrest expire retention-full")
        if kura and pgbr and pgbr.seconds > 0:
            print(f"  pgkura / pgbackrest expire time: {kura.seconds / pgbr.seconds:.2f}")
