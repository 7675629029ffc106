"""The ``summaries`` stage (PostgreSQL 17+): a backup after 1 % of pgbench_accounts changed,
by four tools from the same base state, in one run:

  pgkura guided      pgkura backup --type online --jobs 2, summary-guided (summarize_wal on)
  pgkura unguided    the same with PGKURA_WAL_SUMMARIES=off: every changed file read whole
  pg_basebackup      pg_basebackup --incremental=<full's backup_manifest> -Fp (PostgreSQL's own)
  pgBackRest         pgbackrest backup --type=incr (process-max 2, zst 3)

Each round takes new full backups of all four (pgkura's two in copies of one repository, so
that both have the same base), updates one contiguous 1 % of pgbench_accounts, then times the
four backups. Bytes read: pgkura's own count (the manifest's read_bytes), pg_basebackup's
output size (it sends what it reads: the changed blocks and every non-relation file),
pgBackRest's delta (the files it copied, read whole).

    .venv/bin/python bench/bench.py --pg-bin /opt/pgkura/pg/17.11.0/bin --scale 100 \
        --only summaries --rounds 3
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench import Bench

TOOLS = ("pgkura guided", "pgkura unguided", "pg_basebackup --incremental", "pgbackrest incr")


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    read: list[int] = field(default_factory=list)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class SummaryStage:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.results: dict[str, Measure] = {t: Measure() for t in TOOLS}
        self.cluster_bytes = 0
        self.notes: list[str] = []

    def sql(self, query: str) -> str:
        from bench import run

        b = self.bench
        return run([b.tool("psql"), "-Atqc", query], b.env).strip()

    def run(self, rounds: int) -> None:
        print("== summaries: backups after updating 1 % of pgbench_accounts", flush=True)
        self.sql("ALTER SYSTEM SET summarize_wal = on")
        self.sql("SELECT pg_reload_conf()")
        for n in range(1, rounds + 1):
            self.round(n)
        self.notes.append(f"load average at the end: {os.getloadavg()}")

    def round(self, n: int) -> None:
        from bench import run, timed

        b = self.bench
        env = {**b.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        guided_repo, plain_repo = b.base / f"sum-guided-{n}", b.base / f"sum-plain-{n}"
        b.point_repo(guided_repo)
        full = run(b.pgkura(b.pgkura_repo, "backup", "--type", "online", "--jobs", "2"), env)
        self.cluster_bytes = self._manifest(guided_repo, full.strip())["size_bytes"]
        subprocess.run(["cp", "-a", str(guided_repo), str(plain_repo)], check=True)  # owners kept
        base_dir, incr_dir = b.base / f"pgbb-full-{n}", b.base / f"pgbb-incr-{n}"
        for d in (base_dir, incr_dir):
            shutil.rmtree(d, ignore_errors=True)
        pgbb = [b.tool("pg_basebackup"), "-Fp", "-X", "none", "-c", "fast", "--no-sync"]
        run([*pgbb, "-D", str(base_dir)], b.env)
        if b.with_pgbackrest:
            run(b.pgbackrest("backup", "--type=full"))
        rows = b.scale * 1000
        self.sql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {rows}")
        print(f"-- round {n}: updated {rows} rows (aid <= {rows})", flush=True)
        seconds, _rss = timed(
            b.pgkura(b.pgkura_repo, "backup", "--type", "online", "--jobs", "2",
                     "--output", "json"), env,
        )  # fmt: skip
        guided = self._latest(guided_repo)
        assert guided["extra"]["summaries"]["guided"], guided["extra"]["summaries"]
        self._record("pgkura guided", seconds, guided["extra"]["read_bytes"])
        b.point_repo(plain_repo, init=False)
        seconds, _rss = timed(
            b.pgkura(b.pgkura_repo, "backup", "--type", "online", "--jobs", "2"),
            {**env, "PGKURA_WAL_SUMMARIES": "off"},
        )
        plain = self._latest(plain_repo)
        self._record("pgkura unguided", seconds, plain["extra"]["read_bytes"])
        incremental = f"--incremental={base_dir / 'backup_manifest'}"
        seconds, _rss = timed([*pgbb, incremental, "-D", str(incr_dir)], b.env)
        self._record("pg_basebackup --incremental", seconds, tree_bytes(incr_dir))
        if b.with_pgbackrest:
            seconds, _rss = timed(b.pgbackrest("backup", "--type=incr"))
            info = json.loads(run(b.pgbackrest("info", "--output=json")))[0]["backup"][-1]
            self._record("pgbackrest incr", seconds, int(info["info"]["delta"]))
        for d in (base_dir, incr_dir):
            shutil.rmtree(d, ignore_errors=True)

    def _manifest(self, repo: Path, backup_id: str) -> dict[str, object]:
        from pgkura.repository.manifest import read_manifest
        from pgkura.repository.repo import Repository
        from pgkura.storage import open_storage

        return read_manifest(Repository.open(open_storage(str(repo))), "bench", backup_id).to_json()

    def _latest(self, repo: Path) -> dict[str, object]:
        from pgkura.repository.manifest import list_backup_ids
        from pgkura.repository.repo import Repository
        from pgkura.storage import open_storage

        ids = list_backup_ids(Repository.open(open_storage(str(repo))), "bench")
        return self._manifest(repo, ids[-1])

    def _record(self, tool: str, seconds: float, read: int) -> None:
        m = self.results[tool]
        m.seconds.append(seconds)
        m.read.append(read)
        print(f"  {tool:<30} {seconds:8.2f} s   read {read / 2**20:9.1f} MiB", flush=True)

    def report(self) -> None:
        if not self.results["pgkura guided"].seconds:
            return
        base = statistics.median(self.results["pg_basebackup --incremental"].seconds)
        size = self.cluster_bytes
        print(f"== summaries (cluster {size / 2**20:.0f} MiB), medians", flush=True)
        for tool, m in self.results.items():
            if not m.seconds:
                print(f"  {tool:<30} not run (--without-pgbackrest)")
                continue
            secs, read = statistics.median(m.seconds), statistics.median(m.read)
            print(
                f"  {tool:<30} {secs:8.2f} s  {secs / base:5.2f}x pg_basebackup --incremental"
                f"   read {read / 2**20:9.1f} MiB ({100 * read / size:5.2f} % of the cluster)"
            )
        for note in self.notes:
            print(f"  {note}")
