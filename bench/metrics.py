"""What `pgkura metrics` costs on a repository of 100 backups and 20,000 archived WAL segments
(issue 19, point 4): the wall time of the whole command (Python's start included), best and
median of several runs, for the exposition, its JSON and `check --freshness-only`.

The repository is built cheaply: one real online backup of a small cluster (pgbench scale 1,
about a thousand files, so each manifest is a real one's size), its manifest written again
under 99 older ids (what metrics reads of a backup is its manifest; the blocks are shared),
the real WAL archive extended with small sealed segments to 20,000 on timeline 1 (metrics
lists the archive and never reads a segment), a drill record on a tenth of the backups, and a
run record for verify, expire and gc. With ``--s3`` the repository is on a local SeaweedFS
(bench/s3_server.py's, which counts the requests of each command). Run as root:

    .venv/bin/python bench/metrics.py [--s3] [--backups 100] [--segments 20000] [--runs 7]

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgkura.config import load_config
from pgkura.pg.server import LocalServer
from pgkura.repository.locks import backup_lock
from pgkura.repository.manifest import list_backup_ids, read_manifest, write_manifest
from pgkura.repository.repo import iso, open_repository
from pgkura.repository.runs import RunRecord, record_run
from pgkura.wal.catalog import load_catalog
from pgkura.wal.names import segment_name_of_segno

PGKURA = str(Path(sys.executable).with_name("pgkura"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pgkura(*args: str, user: str | None = None) -> str:
    cmd = [PGKURA, *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def build(base: Path, backups: int, segments: int, where: list[str]) -> None:
    """The repository (the module's docstring) that the global options ``where`` name."""
    pgkura(*where, "init", user="postgres")
    repo = where[where.index("--repo") + 1]
    config = where[where.index("--config") + 1] if "--config" in where else None
    command = shlex.join([PGKURA, *where, "archive-push"]) + " %p"
    server = LocalServer(base / "pgdata", _free_port(), base, PG_BIN, "postgres")
    server.initdb(extra_conf={"wal_level": "replica", "archive_mode": "on",
                              "archive_command": command})  # fmt: skip
    server.start()
    try:
        server.pgbench_init(1)
        env = ["--pgdata", str(server.pgdata), "--dbconn", server.conninfo()]
        pgkura(*where, *env, "backup", user="postgres")
        server.sql("SELECT pg_switch_wal()")
        time.sleep(2)
    finally:
        server.stop()
    cfg = load_config({"repo": repo, "stanza": "main"}, config, {})
    r = open_repository(cfg)
    (real_id,) = list_backup_ids(r, "main")
    real = read_manifest(r, "main", real_id)
    started = datetime.fromisoformat(real.started.replace("Z", "+00:00"))
    with backup_lock(r, "main"):
        for n in range(1, backups):
            when = started - timedelta(hours=n)
            backup_id = when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"
            shift = real.with_changes(
                id=backup_id,
                started=iso(when),
                finished=iso(when + (_time(real.finished) - started)),
            )
            write_manifest(r, shift)
    catalog = load_catalog(r, "main")
    have = max(catalog.timelines[1].segnos)
    raw = b"not a real segment: metrics only lists the archive"
    names = [segment_name_of_segno(1, s, catalog.seg_size) for s in range(have + 1, segments + 1)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: r.wal.put_if_absent("main", name, raw, r.digest(raw)), names))
    ids = list_backup_ids(r, "main")
    for backup_id in ids[:: max(1, len(ids) // 10)]:
        r.drills.record("main", backup_id, {"backup": backup_id, "passed": True,
                        "finished": iso(datetime.now(UTC)), "timings": {"restore": 3.1,
                        "recovery": 1.2}})  # fmt: skip
    now = iso(datetime.now(UTC))
    for verb in ("verify", "expire", "gc"):
        record_run(r, RunRecord(verb, "main", now, now, True, None, {"problems": 0}))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def timed(runs: int, *args: str, cold: Path | None = None) -> tuple[float, float, float]:
    """(best, median) wall seconds and the median CPU seconds (user + system, the command's
    own) of ``pgkura ARGS`` over ``runs`` runs, after one warm-up; ``cold``: each run with a
    new, empty cache directory under it instead. On a loaded machine the CPU time is the
    steadier figure."""
    subprocess.run([PGKURA, *args], check=True, capture_output=True)
    seconds, cpu = [], []
    for n in range(runs):
        cache = ["--cache-dir", str(cold / str(n))] if cold else []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([PGKURA, *cache, *args], check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(seconds), statistics.median(seconds), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=100)
    parser.add_argument("--segments", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--s3", action="store_true", help="the repository on a local SeaweedFS")
    parser.add_argument("--keep", action="store_true", help="leave the repository (say where)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgkura-metrics-", dir="/var/tmp"))
    shutil.chown(base, "postgres")
    server = None
    try:
        where = ["--repo", str(base / "repo")]
        if args.s3:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from s3_server import MeteredSeaweedFS

            from seaweed import S3Repo

            server = MeteredSeaweedFS(base / "weed")
            server.start()
            where = list(S3Repo(server, base / "s3", "metrics", owner="postgres").args)
        started = time.perf_counter()
        build(base, args.backups, args.segments, where)
        built = time.perf_counter() - started
        facts = json.loads(pgkura(*where, "metrics", "--output", "json"))
        (stanza,) = facts["stanzas"]
        count = sum(b["count"] for b in stanza["backups"])
        wal = sum(t["segments"] for t in stanza["timelines"])
        print(f"built in {built:.0f} s: {count} backups, {wal} archived segments, "
              f"{facts['packs']} packs; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        for label, cmd in (
            ("metrics", (*where, "metrics")),
            ("metrics --output json", (*where, "metrics", "--output", "json")),
            ("check --freshness-only --max-age 1d", (*where, "check", "--freshness-only",
                                                     "--max-age", "1d")),
            ("info --output json (for comparison)", (*where, "info", "--output", "json")),
            ("--version (Python's start alone)", ("--version",)),
        ):  # fmt: skip
            best, median, cpu = timed(args.runs, *cmd)
            print(f"pgkura {label}: best {best:.3f} s, median {median:.3f} s, CPU {cpu:.3f} s")
        best, median, cpu = timed(args.runs, *where, "metrics", cold=base / "cold")
        print(f"pgkura metrics, each run with an empty cache: best {best:.3f} s, "
              f"median {median:.3f} s, CPU {cpu:.3f} s")  # fmt: skip
        if server is not None:
            before = server.requests()[0]
            pgkura(*where, "metrics")
            after = server.requests()[0]
            print(f"S3 requests of one warm metrics: {dict(after - before)}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
