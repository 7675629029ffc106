"""S3 figures against a local SeaweedFS (started here, on free ports, and stopped):

  small PUT latency   sequential 1 KiB puts through pgkura's S3Storage (put and put_if_absent,
                      obstore underneath), median and 95th percentile
  large PUT / GET     16 MiB (a pack) and 64 MiB objects, single PUT, whole-object GET, MB/s
  archive-push        `pgkura archive-push` of fresh 16 MiB WAL segments into an S3 repository,
                      cold start included (one process per segment, as archive_command runs
                      it), beside the same segments into a posix repository

Run as root (the cluster that makes the segments runs as postgres):

    .venv/bin/python bench/s3_latency.py --rounds 5

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from seaweed import S3Repo, SeaweedFS

PGKURA = str(Path(sys.executable).with_name("pgkura"))
USER = "postgres" if os.geteuid() == 0 else None


def as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *cmd] if USER else cmd


def small_puts(store: object, count: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name in ("put", "put_if_absent"):
        times = []
        for n in range(count):
            started = time.perf_counter()
            getattr(store, name)(f"bench/small/{name}/{n}", os.urandom(1024))
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out[name] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
    return out


def large_objects(store: object, size: int, rounds: int) -> tuple[float, float]:
    data = os.urandom(size)
    put_s, get_s = [], []
    for n in range(rounds):
        key = f"bench/large/{size}/{n}"
        started = time.perf_counter()
        store.put_if_absent(key, data)  # type: ignore[attr-defined]
        put_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert len(store.get(key)) == size  # type: ignore[attr-defined]
        get_s.append(time.perf_counter() - started)
    mb = size / 1e6
    return mb / statistics.median(put_s), mb / statistics.median(get_s)


def make_segments(base: Path, count: int) -> list[Path]:
    """``count`` finished 16 MiB WAL segments of a throwaway cluster, copied out."""
    from pgkura.pg.binaries import find_pg_bin
    from pgkura.pg.server import LocalServer, free_port, make_owned_dir

    sock = make_owned_dir(Path(tempfile.mkdtemp(prefix="pgk-")), USER, mode=0o755)
    pgdata = make_owned_dir(base / "cluster", USER, mode=0o755) / "pg"
    server = LocalServer(pgdata, free_port(), sock, find_pg_bin(None), USER)
    server.initdb(checksums=True, extra_conf={"wal_level": "replica"}, initdb_args=[])
    server.start()
    out = make_owned_dir(base / "segments", USER, mode=0o755)
    try:
        server.sql("CREATE TABLE t (a int, b text)")
        for n in range(count + 1):
            server.sql(
                f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {n + 1}000) g"
            )
            name = str(server.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
            if n:  # the first one also holds initdb's WAL; any will do, but keep them alike
                shutil.copy(server.pgdata / "pg_wal" / name, out / name)
    finally:
        server.stop(mode="immediate")
    for path in out.iterdir():
        shutil.chown(path, USER, USER) if USER else None
    return sorted(out.iterdir())


def push_times(args: list[str], segments: list[Path]) -> list[float]:
    times = []
    for segment in segments:
        started = time.perf_counter()
        subprocess.run(as_user([PGKURA, *args, "archive-push", str(segment)]), check=True, cwd="/")
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", type=int, default=200)
    opts = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgkura-bench-s3-"))
    base.chmod(0o755)
    server = SeaweedFS(base / "weed")
    server.start()
    try:
        repo = S3Repo(server, base / "cfg", "bench/repo", owner=USER)
        store = S3Repo(server, base / "raw", "bench/raw", owner=None).store()
        for name, (median, p95) in small_puts(store, opts.small).items():
            print(f"small 1 KiB {name}: median {median:.2f} ms, p95 {p95:.2f} ms")
        for size in (16 << 20, 64 << 20):
            put, get = large_objects(store, size, opts.rounds)
            print(f"{size >> 20} MiB object: PUT {put:.0f} MB/s, GET {get:.0f} MB/s")
        segments = make_segments(base, opts.rounds * 2)
        subprocess.run(as_user([PGKURA, *repo.args, "init"]), check=True, cwd="/")
        posix = base / "posix-repo"
        posix.mkdir()
        shutil.chown(posix, USER, USER) if USER else None
        subprocess.run(as_user([PGKURA, "--repo", str(posix), "init"]), check=True, cwd="/")
        # Interleaved: one segment to S3, the next to posix, so both see the same machine.
        s3_ms, posix_ms = [], []
        for n in range(0, len(segments), 2):
            s3_ms += push_times(list(repo.args), segments[n : n + 1])
            posix_ms += push_times(["--repo", str(posix)], segments[n + 1 : n + 2])
        print(f"archive-push 16 MiB into S3: median {statistics.median(s3_ms):.0f} ms "
              f"(all: {', '.join(f'{t:.0f}' for t in s3_ms)})")  # fmt: skip
        print(f"archive-push 16 MiB into posix: median {statistics.median(posix_ms):.0f} ms "
              f"(all: {', '.join(f'{t:.0f}' for t in posix_ms)})")  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
