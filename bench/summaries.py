"""The ``summaries`` stage (PostgreSQL 17+): a backup after 1 % of pgbench_accounts changed,
by five tools from the same base state, in one run:

  pgkura guided           pgkura backup --type online --jobs 2, summary-guided (summarize_wal on)
  pgkura unguided         the same with PGKURA_WAL_SUMMARIES=off: every changed file read whole
  pg_basebackup           pg_basebackup --incremental=<full's backup_manifest> -Fp (PostgreSQL's
                          own), then the pg_combinebackup its restore needs, timed apart
  pgbackrest incr         pgbackrest backup --type=incr --repo=1 (process-max 2, zst 3)
  pgbackrest incr, block  the same into repo2, which has repo2-bundle=y and repo2-block=y

Each round takes new full backups with each tool (pgkura's two in copies of one repository, so
that both have the same base), updates one contiguous 1 % of pgbench_accounts, checkpoints,
then times one backup of each, the order rotated every round so that each tool goes first once.
Bytes read: pgkura's own count (the manifest's read_bytes), pg_basebackup's output size (it
sends what it reads: the changed blocks and every non-relation file), pgBackRest's delta (the
files it copied, read whole; block incremental then stores only the changed blocks).

    .venv/bin/python bench/bench.py --pg-bin /opt/pgkura/pg/17.11.0/bin --scale 100 \
        --only summaries --rounds 5 --pgbackrest /opt/pgbackrest-2.55/bin/pgbackrest
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

TOOLS = (
    "pgkura guided",
    "pgkura unguided",
    "pg_basebackup --incremental",
    "pgbackrest incr",
    "pgbackrest incr, block",
)
# Not a backup: what a restore of pg_basebackup's incremental backup needs first.
COMBINE = "pg_combinebackup"


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    #: what the backup added to its repository (or wrote, for pg_basebackup), compressed
    stored: list[int] = field(default_factory=list)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class SummaryStage:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.results: dict[str, Measure] = {t: Measure() for t in (*TOOLS, COMBINE)}
        self.cluster_bytes = 0
        self.notes: list[str] = []

    def sql(self, query: str) -> str:
        from bench import run

        b = self.bench
        return run([b.tool("psql"), "-Atqc", query], b.env).strip()

    def run(self, rounds: int) -> None:
        from bench import own, run

        print("== summaries: backups after updating 1 % of pgbench_accounts", flush=True)
        self.notes.append(f"load average at the start: {os.getloadavg()}")
        self.sql("ALTER SYSTEM SET summarize_wal = on")
        self.sql("SELECT pg_reload_conf()")
        b = self.bench
        if b.with_pgbackrest:
            # repo2: the same stanza with block incremental (it needs bundling); archive-push
            # sends every segment to both repositories.
            block_repo = own(b.base / "pgbackrest-block-repo")
            b.pgbr_conf.write_text(b.pgbr_conf.read_text().replace(
                "[bench]\n", f"repo2-path={block_repo}\nrepo2-bundle=y\nrepo2-block=y\n[bench]\n"
            ))  # fmt: skip
            run(b.pgbackrest("stanza-create"))
            self.notes.append(run([b.pgbr_bin, "version"]).strip())
        for n in range(1, rounds + 1):
            self.round(n)
        self.notes.append(f"load average at the end: {os.getloadavg()}")

    def round(self, n: int) -> None:
        from bench import run

        b = self.bench
        guided_repo, plain_repo = b.base / f"sum-guided-{n}", b.base / f"sum-plain-{n}"
        b.point_repo(guided_repo)
        env = {**b.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        full = run(b.pgkura(b.pgkura_repo, "backup", "--type", "online", "--jobs", "2"), env)
        self.cluster_bytes = self._manifest(guided_repo, full.strip())["size_bytes"]
        subprocess.run(["cp", "-a", str(guided_repo), str(plain_repo)], check=True)  # owners kept
        dirs = {k: b.base / f"pgbb-{k}-{n}" for k in ("full", "incr", "combined")}
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        run([*self._pgbb(), "-D", str(dirs["full"])], b.env)
        if b.with_pgbackrest:
            run(b.pgbackrest("backup", "--type=full", "--repo=1"))
            run(b.pgbackrest("backup", "--type=full", "--repo=2"))
        rows = b.scale * 1000
        self.sql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {rows}")
        # The update's dirty pages are written now, not by whichever tool's checkpoint is first.
        self.sql("CHECKPOINT")
        print(f"-- round {n}: updated {rows} rows (aid <= {rows})", flush=True)
        steps = {
            "pgkura guided": lambda: self._pgkura(guided_repo, {}),
            "pgkura unguided": lambda: self._pgkura(plain_repo, {"PGKURA_WAL_SUMMARIES": "off"}),
            "pg_basebackup --incremental": lambda: self._pg_basebackup(dirs),
            "pgbackrest incr": lambda: self._pgbackrest(1),
            "pgbackrest incr, block": lambda: self._pgbackrest(2),
        }
        tools = [t for t in TOOLS if b.with_pgbackrest or not t.startswith("pgbackrest")]
        shift = (n - 1) % len(tools)  # each tool goes first in some round
        for tool in tools[shift:] + tools[:shift]:
            self._record(tool, *steps[tool]())
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)

    def _pgbb(self) -> list[str]:
        return [self.bench.tool("pg_basebackup"), "-Fp", "-X", "none", "-c", "fast", "--no-sync"]

    def _pgkura(self, repo: Path, extra: dict[str, str]) -> tuple[float, int, int]:
        from bench import timed

        b = self.bench
        b.point_repo(repo, init=False)  # archive_command follows the link
        env = {**b.env, "PGKURA_ARCHIVE_TIMEOUT": "600", **extra}
        seconds, _rss = timed(
            b.pgkura(b.pgkura_repo, "backup", "--type", "online", "--jobs", "2"), env
        )
        manifest = self._latest(repo)
        summaries = manifest["extra"].get("summaries", {})
        assert bool(summaries.get("guided")) == (not extra), summaries
        return seconds, manifest["extra"]["read_bytes"], manifest["new_bytes"]

    def _pg_basebackup(self, dirs: dict[str, Path]) -> tuple[float, int, int]:
        from bench import timed

        b = self.bench
        incremental = f"--incremental={dirs['full'] / 'backup_manifest'}"
        seconds, _rss = timed([*self._pgbb(), incremental, "-D", str(dirs["incr"])], b.env)
        combine = [b.tool("pg_combinebackup"), "--no-sync", str(dirs["full"]), str(dirs["incr"]),
                   "-o", str(dirs["combined"])]  # fmt: skip
        combined, _rss = timed(combine, b.env)
        read = tree_bytes(dirs["full"]) + tree_bytes(dirs["incr"])
        self._record(COMBINE, combined, read, tree_bytes(dirs["combined"]))
        return seconds, tree_bytes(dirs["incr"]), tree_bytes(dirs["incr"])

    def _pgbackrest(self, repo: int) -> tuple[float, int, int]:
        from bench import run, timed

        b = self.bench
        seconds, _rss = timed(b.pgbackrest("backup", "--type=incr", f"--repo={repo}"))
        info = json.loads(run(b.pgbackrest("info", f"--repo={repo}", "--output=json")))
        last = info[0]["backup"][-1]
        assert last["type"] == "incr", last
        return seconds, int(last["info"]["delta"]), int(last["info"]["repository"]["delta"])

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

    def _record(self, tool: str, seconds: float, read: int, stored: int) -> None:
        m = self.results[tool]
        m.seconds.append(seconds)
        m.read.append(read)
        m.stored.append(stored)
        print(
            f"  {tool:<30} {seconds:8.2f} s   read {read / 2**20:9.1f} MiB"
            f"   stored {stored / 2**20:9.1f} MiB",
            flush=True,
        )

    def report(self) -> None:
        if not self.results["pgkura guided"].seconds:
            return
        base = statistics.median(self.results["pg_basebackup --incremental"].seconds)
        brs = self.results["pgbackrest incr"].seconds
        size = self.cluster_bytes
        print(f"== summaries (cluster {size / 2**20:.0f} MiB), medians", flush=True)
        for tool, m in self.results.items():
            if not m.seconds:
                print(f"  {tool:<30} not run (--without-pgbackrest)")
                continue
            secs, read = statistics.median(m.seconds), statistics.median(m.read)
            stored = statistics.median(m.stored)
            versus_br = f"  {secs / statistics.median(brs):5.2f}x pgbackrest incr" if brs else ""
            print(
                f"  {tool:<30} {secs:8.2f} s  {secs / base:5.2f}x pg_basebackup --incremental"
                f"{versus_br}   read {read / 2**20:7.1f} MiB ({100 * read / size:5.2f} %)"
                f"   stored {stored / 2**20:7.1f} MiB"
            )
        pgbb, combine = self.results["pg_basebackup --incremental"], self.results[COMBINE]
        both = statistics.median(a + c for a, c in zip(pgbb.seconds, combine.seconds, strict=True))
        print(f"  pg_basebackup --incremental + pg_combinebackup: {both:.2f} s (median of sums)")
        for tool, m in self.results.items():
            if m.seconds:
                print(f"  per round, {tool}: " + ", ".join(f"{s:.2f}" for s in m.seconds))
        for note in self.notes:
            print(f"  {note}")
