"""The full-backup curve: pgkura, pgBackRest and pg_basebackup at several sizes of one cluster,
each tool's fixed cost and marginal seconds per GB (a least-squares line through the points),
on pgbench data (compresses about 10x) and on random bytes (does not compress), with pgkura's
per-stage CPU time per GB (bench/stages.py) and every command's peak RSS at each point.

Run through bench.py (it builds the cluster):

    .venv/bin/python bench/bench.py --only curve --curve-scales 30,100,300 --curve-random-gb 1,3

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench import Bench

TOOLS = ("pgkura", "pgbackrest", "pg_basebackup")
STAGES = Path(__file__).with_name("stages.py")


@dataclass
class Point:
    label: str
    gb: float
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)

    def median(self, tool: str) -> float:
        return statistics.median(self.seconds[tool])


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = fixed + marginal * x: (fixed, marginal)."""
    if len(xs) < 2:
        return float("nan"), float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    marginal = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - marginal * mx, marginal


def data_gb(pgdata: Path) -> float:
    """What a full backup copies: every file of PGDATA but the WAL."""
    total = 0
    for root, dirs, names in os.walk(pgdata):
        if root == str(pgdata):
            dirs[:] = [d for d in dirs if d != "pg_wal"]
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total / 1e9


def uptime() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Curve:
    def __init__(self, bench: Bench, rounds: int) -> None:
        self.bench = bench
        self.rounds = rounds
        self.points: list[Point] = []

    def psql(self, sql: str) -> str:
        from bench import run

        return run([self.bench.tool("psql"), "-Atqc", sql], self.bench.env)

    def pgbench(self, scale: int) -> Point:
        from bench import run

        print(f"== curve: pgbench -i -s {scale}", flush=True)
        self.psql("DROP TABLE IF EXISTS random_bytes")
        run([self.bench.tool("pgbench"), "-i", "-q", "-s", str(scale)], self.bench.env)
        return self.measure(f"pgbench scale {scale}")

    def random(self, gb: float) -> Point:
        """A table of random bytes: rows of 1990 bytes stored as they are (STORAGE PLAIN: no
        compression, no TOAST), four to a page, loaded by a binary COPY."""
        print(f"== curve: {gb:g} GB of random bytes", flush=True)
        self.psql("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, "
                  "pgbench_history, random_bytes")  # fmt: skip
        self.psql("CREATE TABLE random_bytes (b bytea); "
                  "ALTER TABLE random_bytes ALTER b SET STORAGE PLAIN")  # fmt: skip
        from bench import as_user

        sql = "COPY random_bytes FROM STDIN (FORMAT binary)"
        copy = subprocess.Popen(
            as_user([self.bench.tool("psql"), "-qc", sql]),
            stdin=subprocess.PIPE,
            env={**os.environ, **self.bench.env},
            cwd="/",
        )  # fmt: skip
        assert copy.stdin is not None
        copy.stdin.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
        row, per_write = 1990, 512
        head = struct.pack("!hi", 1, row)
        for _ in range(int(gb * 1e9 / 8192 * 4 / per_write)):
            noise = os.urandom(row * per_write)
            copy.stdin.write(b"".join(head + noise[i * row : (i + 1) * row]
                                      for i in range(per_write)))  # fmt: skip
        copy.stdin.write(struct.pack("!h", -1))
        copy.stdin.close()
        if copy.wait() != 0:
            raise SystemExit("COPY of random bytes failed")
        return self.measure(f"random {gb:g} GB")

    def measure(self, label: str) -> Point:
        from bench import own, run, timed_cpu

        b = self.bench
        self.psql("VACUUM ANALYZE")
        self.psql("CHECKPOINT")
        self.wait_archived()
        point = Point(label, data_gb(b.pgdata))
        print(f"   {point.gb:.2f} GB to copy; load {uptime()}", flush=True)
        env = {**b.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        for n in range(1, self.rounds + 1):
            point.load.append(uptime())
            fresh = b.base / f"curve-pgkura-{len(self.points)}-{n}"
            b.point_repo(fresh)
            runs = {
                "pgkura": (b.pgkura(b.pgkura_repo, "backup", "--type", "online", "--jobs", "2"),
                           env),
                "pgbackrest": (b.pgbackrest("backup", "--type=full"), b.env),
                "pg_basebackup": ([b.tool("pg_basebackup"), "-D", str(b.base / "curve-bb"),
                                   "-Ft", "-X", "stream", "--compress=client-zstd", "-c", "fast"],
                                  b.env),
            }  # fmt: skip
            for tool, (cmd, cmd_env) in runs.items():
                seconds, rss, cpu = timed_cpu(cmd, cmd_env)
                point.seconds.setdefault(tool, []).append(seconds)
                point.rss_mib.setdefault(tool, []).append(rss / 1024)
                point.cpu.setdefault(tool, []).append(cpu)
                print(f"  {label} round {n}: {tool:<14} {seconds:7.2f} s   CPU {cpu:7.2f} s   "
                      f"peak RSS {rss / 1024:7.1f} MiB", flush=True)  # fmt: skip
            shutil.rmtree(b.base / "curve-bb", ignore_errors=True)
            b.point_repo(b.base / "pgkura-setup", init=False)  # archive_command goes on there
            shutil.rmtree(fresh, ignore_errors=True)
        run(b.pgbackrest("expire", "--repo1-retention-full=1"), b.env)
        out = own(b.base / "curve-stages") / "stages.json"
        subprocess.run([sys.executable, str(STAGES), str(b.pgdata), "--json", str(out)],
                       check=True)  # fmt: skip
        point.stages = json.loads(out.read_text())
        self.points.append(point)
        return point

    def wait_archived(self) -> None:
        """Until the archiver has caught up with the WAL that loading the data wrote: no
        tool's time should include the archiving of that WAL."""
        import time

        self.psql("SELECT pg_switch_wal()")
        while int(self.psql("SELECT count(*) FROM pg_ls_archive_statusdir() "
                            "WHERE name LIKE '%.ready'")):  # fmt: skip
            time.sleep(0.5)

    def report(self) -> None:
        print("\n== curve: medians per point (ratios: pgkura / other)")
        for p in self.points:
            cells = "  ".join(f"{t} {p.median(t):6.2f} s" for t in TOOLS)
            ratios = "  ".join(f"/{t} {p.median('pgkura') / p.median(t):.2f}" for t in TOOLS[1:])
            rss = max(p.rss_mib["pgkura"])
            print(f"  {p.label:<20} {p.gb:5.2f} GB  {cells}  {ratios}  pgkura peak RSS "
                  f"{rss:.1f} MiB  load {' | '.join(p.load)}")  # fmt: skip
            if p.cpu:
                cpu = "  ".join(f"{t} {statistics.median(p.cpu[t]):6.2f} s" for t in TOOLS)
                ratio = statistics.median(p.cpu["pgkura"]) / statistics.median(p.cpu["pgbackrest"])
                print(f"  {'':<20} CPU of the command's processes: {cpu}  "
                      f"pgkura/pgbackrest {ratio:.2f}")  # fmt: skip
        for kind in ("pgbench", "random"):
            points = [p for p in self.points if p.label.startswith(kind)]
            if len(points) < 2:
                continue
            print(f"\n== curve: least-squares line through the {kind} points (seconds = fixed "
                  "+ marginal x GB)")  # fmt: skip
            lines = {}
            for t in TOOLS:
                lines[t] = fit([p.gb for p in points], [p.median(t) for p in points])
                print(f"  {t:<14} fixed {lines[t][0]:6.2f} s   marginal {lines[t][1]:6.3f} s/GB")
            for t in TOOLS[1:]:
                print(f"  marginal pgkura / {t}: {lines['pgkura'][1] / lines[t][1]:.2f}")
            for t in TOOLS[:2]:
                cpu = fit([p.gb for p in points], [statistics.median(p.cpu[t]) for p in points])
                print(f"  {t:<14} CPU: fixed {cpu[0]:6.2f} s   marginal {cpu[1]:6.3f} s/GB")
            # The stage no backup can skip: zstd at the repository's level, on each core.
            zstd = statistics.median(p.stages["compress (zstd:3)"] / p.stages["gb"] for p in points)
            times = lines["pgkura"][1] / (zstd / 2)
            print(f"  limit: zstd:3 alone on two cores {zstd / 2:.3f} s/GB ({2 / zstd:.2f} "
                  f"GB/s); pgkura's marginal is {times:.2f} times that")  # fmt: skip
        print("\n== curve: pgkura's stages on one core, CPU seconds per GB")
        names = [k for k in self.points[0].stages if k not in ("gb", "peak rss mib")]
        print("  " + " " * 34 + "".join(f"{p.label[-12:]:>13}" for p in self.points))
        for name in names:
            cells = "".join(
                f"{p.stages.get(name, float('nan')) / p.stages['gb']:13.3f}" for p in self.points
            )
            print(f"  {name:<34}{cells}")
