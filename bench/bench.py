"""Side-by-side benchmark: pgkura against pg_basebackup and pgBackRest on the same cluster.

Builds a pgbench cluster (scale 50 by default) that archives WAL to both pgkura and pgBackRest,
then times, interleaved over several rounds in one run:
  full backup:  pgkura backup --type online --jobs 2 (zstd:3, new repository each round)
                pgbackrest backup --type=full (zst level 3, process-max 2)
                pg_basebackup -Ft -X stream --compress=client-zstd
  restore:      pgkura restore --jobs 2  vs  pgbackrest restore --process-max=2
  re-backup of the unchanged cluster: pgkura backup  vs  pgbackrest backup --type=incr
  archive:      one archive-push and one archive-get of a 16 MiB segment, cold start included
and prints medians, ratios and peak RSS. Run as root (servers run as postgres):

    .venv/bin/python bench/bench.py --scale 50 --rounds 3

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PGKURA = str(Path(sys.executable).with_name("pgkura"))
USER = "postgres" if os.geteuid() == 0 else None


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.seconds)

    def peak_rss_mb(self) -> float:
        return max(self.rss_kb) / 1024


def as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *cmd] if USER else cmd


def settle() -> None:
    """Let the previous step's dirty pages and discards (this file system is mounted with
    'discard') reach the disk, so that no tool pays for the one before it."""
    os.sync()
    time.sleep(1.0)


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: str = "/") -> tuple[float, int]:
    """Run a command as the cluster's user; wall seconds and peak RSS (KiB) of its process tree
    (wait4's ru_maxrss covers the child and the descendants it waited for)."""
    elapsed, rss, _cpu = timed_cpu(cmd, env, cwd)
    return elapsed, rss


def timed_cpu(
    cmd: list[str], env: dict[str, str] | None = None, cwd: str = "/"
) -> tuple[float, int, float]:
    """:func:`timed`, and the CPU seconds (user + system) of the process tree: what a busy
    machine inflates least (only the command's own processes count, not a server's)."""
    settle()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            as_user(cmd),
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"failed: {' '.join(cmd)}\n{tail}")
    return elapsed, int(usage.ru_maxrss), usage.ru_utime + usage.ru_stime


def run_in(cmd: list[str], cwd: str) -> None:
    proc = subprocess.run(as_user(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        as_user(cmd), env={**os.environ, **(env or {})}, capture_output=True, text=True, cwd="/"
    )
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def own(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if USER:
        shutil.chown(path, USER, USER)
    return path


class Bench:
    def __init__(self, base: Path, scale: int, pg_bin: Path) -> None:
        self.base = own(base)
        self.scale = scale
        self.pg_bin = pg_bin
        self.pgdata = base / "pgdata"
        self.sockets = own(base / "sockets")
        self.port = 54000 + os.getpid() % 1000
        self.env = {
            "PGHOST": str(self.sockets),
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
        }
        self.pgbr_conf = base / "pgbackrest.conf"
        self.pgbr_bin = "/usr/bin/pgbackrest"  # --pgbackrest: e.g. a newer build for PostgreSQL 17
        # Off for a major the installed pgBackRest does not know (Debian's 2.45 stops at 16).
        self.with_pgbackrest = True
        self.results: dict[str, Timing] = {}
        self.dedup: dict[str, tuple[int, int]] = {}
        self.throughput: dict[str, float] = {}
        self.replay: dict[str, tuple[float, float]] = {}

    def tool(self, name: str) -> str:
        return str(self.pg_bin / name)

    def record(self, name: str, seconds: float, rss: int) -> None:
        t = self.results.setdefault(name, Timing())
        t.seconds.append(seconds)
        t.rss_kb.append(rss)
        print(f"  {name:<34} {seconds:8.2f} s   peak RSS {rss / 1024:7.1f} MiB", flush=True)

    def pgkura(self, repo: Path, *args: str) -> list[str]:
        return [
            PGKURA,
            "--repo",
            str(repo),
            "--stanza",
            "bench",
            "--pgdata",
            str(self.pgdata),
            *args,
        ]

    def pgbackrest(self, *args: str) -> list[str]:
        return [self.pgbr_bin, f"--config={self.pgbr_conf}", "--stanza=bench", *args]

    def setup(self) -> None:
        # archive_command pushes to whatever repository this link points at: each round's
        # full backup goes to a new repository (a real full copy), with its own WAL.
        self.pgkura_repo = self.base / "pgkura-current"
        self.point_repo(self.base / "pgkura-setup")
        self.pgbr_repo = own(self.base / "pgbackrest-repo")
        own(self.base / "pgbackrest-log")
        self.pgbr_conf.write_text(
            "[global]\n"
            f"repo1-path={self.pgbr_repo}\n"
            "compress-type=zst\ncompress-level=3\nprocess-max=2\nstart-fast=y\n"
            f"log-path={self.base / 'pgbackrest-log'}\nlock-path={self.base / 'pgbackrest-log'}\n"
            "log-level-console=warn\nspool-path=/tmp\n"
            "[bench]\n"
            f"pg1-path={self.pgdata}\npg1-port={self.port}\npg1-socket-path={self.sockets}\n"
        )
        os.chmod(self.pgbr_conf, 0o644)
        run(
            [
                self.tool("initdb"),
                "-D",
                str(self.pgdata),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--data-checksums",
            ]
        )
        archive = f"{PGKURA} --repo {self.pgkura_repo} --stanza bench archive-push %p"
        if self.with_pgbackrest:
            archive += f" && {self.pgbr_bin} --config={self.pgbr_conf} --stanza=bench"
            archive += " archive-push %p"
        with open(self.pgdata / "postgresql.conf", "a") as f:
            f.write(
                f"port = {self.port}\nunix_socket_directories = '{self.sockets}'\n"
                "listen_addresses = ''\nwal_level = replica\narchive_mode = on\n"
                f"archive_command = '{archive}'\nmax_wal_senders = 4\n"
                "shared_buffers = 256MB\nmax_wal_size = 4GB\n"
            )
        self.start()
        if self.with_pgbackrest:
            run(self.pgbackrest("stanza-create"))
        print(f"== pgbench -i -s {self.scale}", flush=True)
        run([self.tool("pgbench"), "-i", "-q", "-s", str(self.scale)], self.env)
        run([self.tool("psql"), "-qc", "CHECKPOINT"], self.env)
        size = run([self.tool("psql"), "-Atc", "SELECT pg_database_size('postgres')"], self.env)
        print(f"   database size {int(size) / 2**20:.0f} MiB", flush=True)

    def point_repo(self, repo: Path, init: bool = True) -> None:
        own(repo)
        if init:
            run([PGKURA, "--repo", str(repo), "init", "--compress", "zstd:3"])
        tmp = self.base / "pgkura-link.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(repo)
        os.replace(tmp, self.pgkura_repo)

    def last_segments(self, source: Path, count: int) -> list[str]:
        """Switch WAL, wait until the switched segment is in the ``source`` repository, and
        return the names of the ``count`` segments archived before it."""
        last = run([self.tool("psql"), "-Atc", "SELECT pg_walfile_name(pg_switch_wal())"],
                   self.env).strip()  # fmt: skip
        deadline = time.monotonic() + 600
        while not list(source.rglob(last)) and time.monotonic() < deadline:
            time.sleep(0.2)
        archived = sorted(p.name for p in (source / "wal").rglob("*") if len(p.name) == 24)
        return archived[-count - 1 : -1]

    def start(self) -> None:
        run(
            [
                self.tool("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-l",
                str(self.base / "server.log"),
                "start",
            ]
        )

    def stop(self) -> None:
        subprocess.run(
            as_user([self.tool("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "stop"]),
            capture_output=True,
        )

    def round(self, n: int) -> None:
        print(f"== round {n}", flush=True)
        fresh = self.base / f"pgkura-full-{n}"
        self.point_repo(fresh)
        self.record(
            "full: pgkura",
            *timed(
                self.pgkura(self.pgkura_repo, "backup", "--type", "online", "--jobs", "2"),
                {**self.env, "PGKURA_ARCHIVE_TIMEOUT": "600"},
            ),
        )
        self.record("full: pgbackrest", *timed(self.pgbackrest("backup", "--type=full"), self.env))
        bb = self.base / f"basebackup-{n}"
        self.record(
            "full: pg_basebackup",
            *timed(
                [
                    self.tool("pg_basebackup"),
                    "-D",
                    str(bb),
                    "-Ft",
                    "-X",
                    "stream",
                    "--compress=client-zstd",
                    "-c",
                    "fast",
                ],
                self.env,
            ),
        )
        shutil.rmtree(bb, ignore_errors=True)
        # Restores of what was just taken.
        target = self.base / f"restore-pgkura-{n}"
        self.record(
            "restore: pgkura",
            *timed(
                [
                    PGKURA,
                    "--repo",
                    str(fresh),
                    "--stanza",
                    "bench",
                    "restore",
                    "--target-dir",
                    str(target),
                    "--jobs",
                    "2",
                ]
            ),
        )
        shutil.rmtree(target, ignore_errors=True)
        target = self.base / f"restore-pgbackrest-{n}"
        self.record(
            "restore: pgbackrest",
            *timed(self.pgbackrest("restore", f"--pg1-path={target}", "--process-max=2")),
        )
        shutil.rmtree(target, ignore_errors=True)
        # A second backup of the unchanged cluster.
        self.record(
            "unchanged: pgkura",
            *timed(
                self.pgkura(self.pgkura_repo, "backup", "--type", "online", "--jobs", "2"),
                {**self.env, "PGKURA_ARCHIVE_TIMEOUT": "600"},
            ),
        )
        self.record(
            "unchanged: pgbackrest incr", *timed(self.pgbackrest("backup", "--type=incr"), self.env)
        )
        shutil.rmtree(fresh, ignore_errors=True)

    def archive_stage(self, count: int) -> None:
        """archive-push and archive-get of single 16 MiB segments, each a new process (cold
        start included), into repositories that do not have them yet."""
        print(f"== archive: {count} segments, one process per segment", flush=True)
        # Real pgbench WAL, taken back out of a source repository that archive_command fills:
        # listing .done files in pg_wal found only 2 segments, nearly empty ones, when a
        # checkpoint had removed the status files of the others.
        source = self.base / "pgkura-archive-source"
        self.point_repo(source)
        run([self.tool("psql"), "-qc", "SELECT pg_switch_wal()"], self.env)
        run([self.tool("pgbench"), "-n", "-c", "2", "-t", str(count * 10_000)], self.env)
        names = self.last_segments(source, count)  # complete segments written by pgbench
        print(f"  segments {names[0]} to {names[-1]}", flush=True)
        spool = own(self.base / "segments")
        for name in names:
            run([PGKURA, "--repo", str(source), "--stanza", "bench", "archive-get", name,
                 str(spool / name)])  # fmt: skip
            if USER:
                shutil.chown(spool / name, USER, USER)
        kura_repo = own(self.base / "archive-pgkura")
        run([PGKURA, "--repo", str(kura_repo), "init", "--compress", "zstd:3"])
        br_repo = own(self.base / "archive-pgbackrest")
        br_conf = self.base / "pgbackrest-archive.conf"
        br_conf.write_text(
            self.pgbr_conf.read_text().replace(
                f"repo1-path={self.pgbr_repo}", f"repo1-path={br_repo}"
            )
        )
        os.chmod(br_conf, 0o644)
        pgbr = [self.pgbr_bin, f"--config={br_conf}", "--stanza=bench"]
        run([*pgbr, "stanza-create"], self.env)
        out = own(self.base / "fetched")
        for name in names:
            self.record(
                "archive-push: pgkura",
                *timed(
                    [
                        PGKURA,
                        "--repo",
                        str(kura_repo),
                        "--stanza",
                        "bench",
                        "archive-push",
                        str(spool / name),
                    ]
                ),
            )
            self.record(
                "archive-push: pgbackrest",
                *timed([*pgbr, "archive-push", str(spool / name)], cwd=str(self.pgdata)),
            )
        for name in names:
            self.record(
                "archive-get: pgkura",
                *timed(
                    [
                        PGKURA,
                        "--repo",
                        str(kura_repo),
                        "--stanza",
                        "bench",
                        "archive-get",
                        name,
                        str(out / f"k-{name}"),
                    ]
                ),
            )
            self.record(
                "archive-get: pgbackrest",
                *timed([*pgbr, "archive-get", name, str(out / f"b-{name}")], cwd=str(self.pgdata)),
            )
        for name in names:
            assert (out / f"k-{name}").read_bytes() == (spool / name).read_bytes()

    def throughput_stage(self, count: int) -> None:
        """WAL archiving throughput as PostgreSQL's archiver drives it: archive_command once per
        segment, one after another, .ready renamed to .done on success. Sync and async modes of
        pgkura and pgBackRest push the same real segments into fresh repositories."""
        print(f"== archive throughput: {count} segments, serial archive_command", flush=True)
        # Real, consecutive segments: a bulk insert writes them quickly, archive_command puts
        # them in a source repository, and archive-get takes them out again.
        source = self.base / "pgkura-tp-source"
        self.point_repo(source)
        rows = count * 120_000
        run([self.tool("psql"), "-qc", "CREATE TABLE IF NOT EXISTS wal_filler (a int8, b text)"],
            self.env)  # fmt: skip
        run([self.tool("psql"), "-qc", f"INSERT INTO wal_filler SELECT g, md5(g::text) || "
             f"md5((g + 1)::text) FROM generate_series(1, {rows}) g"], self.env)  # fmt: skip
        names = self.last_segments(source, count)  # complete segments written by the insert
        fake = own(self.base / "fake-pgdata")
        own(fake / "pg_wal")
        own(fake / "pg_wal" / "archive_status")
        own(fake / "global")
        shutil.copy2(self.pgdata / "global" / "pg_control", fake / "global" / "pg_control")
        shutil.copy2(self.pgdata / "PG_VERSION", fake / "PG_VERSION")
        for name in names:
            run([PGKURA, "--repo", str(source), "--stanza", "bench", "archive-get", name,
                 str(fake / "pg_wal" / name)])  # fmt: skip
        run([self.tool("psql"), "-qc", "DROP TABLE wal_filler"], self.env)
        for path in fake.rglob("*"):
            if USER:
                shutil.chown(path, USER, USER)
        mb = len(names) * 16

        def drive(label: str, command: list[str]) -> None:
            for name in names:
                ready = fake / "pg_wal" / "archive_status" / f"{name}.ready"
                ready.touch()
                if USER:
                    shutil.chown(ready, USER, USER)
            start = time.perf_counter()
            for name in names:
                run_in([*command, f"pg_wal/{name}"], cwd=str(fake))
                ready = fake / "pg_wal" / "archive_status" / f"{name}.ready"
                ready.rename(ready.with_suffix(".done"))
            seconds = time.perf_counter() - start
            self.throughput[label] = mb / seconds
            print(f"  {label:<34} {mb / seconds:8.1f} MB/s ({seconds:.2f} s)", flush=True)

        for mode in ("off", "on"):
            repo = own(self.base / f"tp-pgkura-{mode}")
            run([PGKURA, "--repo", str(repo), "init"])
            drive(f"pgkura async={mode}", [PGKURA, "--repo", str(repo), "--stanza", "bench",
                  "--archive-async", mode, "--spool-path", str(own(self.base / f"spool-{mode}")),
                  "archive-push"])  # fmt: skip
        for mode in ("n", "y"):
            br_repo = own(self.base / f"tp-pgbackrest-{mode}")
            spool = own(self.base / f"br-spool-{mode}")
            conf = self.base / f"pgbackrest-tp-{mode}.conf"
            conf.write_text(
                self.pgbr_conf.read_text()
                .replace(f"repo1-path={self.pgbr_repo}", f"repo1-path={br_repo}")
                .replace("spool-path=/tmp", f"spool-path={spool}\narchive-async={mode}")
            )
            os.chmod(conf, 0o644)
            run([self.pgbr_bin, f"--config={conf}", "--stanza=bench", "stanza-create"], self.env)
            conf.write_text(conf.read_text().replace(f"pg1-path={self.pgdata}", f"pg1-path={fake}"))
            push = [self.pgbr_bin, f"--config={conf}", "--stanza=bench", "archive-push"]
            drive(f"pgbackrest archive-async={mode}", push)

    def verify_stage(self) -> None:
        """pgkura verify against pgbackrest verify, each on a fresh repository holding one full
        backup and the WAL archived since."""
        print("== verify: one full backup and its WAL in a fresh repository each", flush=True)
        self.point_repo(self.base / "pgkura-verify")
        br_repo = own(self.base / "pgbackrest-verify")
        self.pgbr_conf.write_text(
            self.pgbr_conf.read_text().replace(
                f"repo1-path={self.pgbr_repo}", f"repo1-path={br_repo}"
            )
        )
        self.pgbr_repo = br_repo
        run(self.pgbackrest("stanza-create"), self.env)
        env = {**self.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        run(self.pgkura(self.pgkura_repo, "backup", "--type", "online", "--jobs", "2"), env)
        run(self.pgbackrest("backup", "--type=full"), self.env)
        run([self.tool("psql"), "-qc", "SELECT pg_switch_wal()"], self.env)
        time.sleep(2)
        for _ in range(3):
            self.record("verify: pgkura", *timed(
                self.pgkura(self.pgkura_repo, "verify", "--jobs", "2", "--pages")))  # fmt: skip
            self.record("verify: pgkura --no-pages", *timed(
                self.pgkura(self.pgkura_repo, "verify", "--jobs", "2", "--no-pages")))  # fmt: skip
            self.record("verify: pgbackrest", *timed(self.pgbackrest("verify")))

    def table_stage(self) -> None:
        """restore --table of one table against doing it by hand: a full restore into a scratch
        directory, start and recover, pg_dump the table, stop, remove."""
        print("== one table back: restore --table against a full restore + pg_dump", flush=True)
        repo = self.base / "pgkura-table"
        self.point_repo(repo)
        env = {**self.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        run(self.pgkura(self.pgkura_repo, "backup", "--type", "online", "--jobs", "2"), env)
        for n in range(2):
            self.record("table: pgkura restore --table", *timed(
                [PGKURA, "--repo", str(repo), "--stanza", "bench", "restore", "--table",
                 "public.pgbench_branches", "--as", f"branches_{n}", "--to-immediate",
                 "--dbname", "postgres"], self.env))  # fmt: skip
            scratch = self.base / f"by-hand-{n}"
            port = str(self.port + 100 + n)
            script = (
                f"set -e; {PGKURA} --repo {repo} --stanza bench restore --target-dir {scratch} "
                f"--to-immediate --archive-mode off >/dev/null 2>&1; "
                f"{self.tool('pg_ctl')} -D {scratch} -w -t 3600 -l {scratch}.log "
                f"-o '-p {port} -k {self.sockets} -c listen_addresses=' start >/dev/null; "
                f'until [ "$({self.tool("psql")} -h {self.sockets} -p {port} -Atc '
                f"'SELECT pg_is_in_recovery()')\" = f ]; do sleep 0.1; done; "
                f"{self.tool('pg_dump')} -h {self.sockets} -p {port} -t pgbench_branches "
                f"-f {scratch}.sql postgres; "
                f"{self.tool('pg_ctl')} -D {scratch} -m fast -w stop >/dev/null; "
                f"rm -rf {scratch} {scratch}.log {scratch}.sql"
            )
            self.record("table: full restore + pg_dump", *timed(["bash", "-c", script], self.env))

    def replay_stage(self, megabytes: int) -> None:
        """A PITR that replays about ``megabytes`` of archived WAL: how long recovery takes, and
        how much of it is spent waiting on archive-get (restore_command is wrapped to time each
        call), with and without --archive-async's prefetching."""
        print(f"== replay: recovery through {megabytes} MB of archived WAL", flush=True)
        repo = self.base / "pgkura-replay"
        self.point_repo(repo)
        env = {**self.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        run(self.pgkura(self.pgkura_repo, "backup", "--type", "online", "--jobs", "2"), env)
        rows = megabytes * 8_000
        run([self.tool("psql"), "-qc", "CREATE TABLE replay_filler (a int8, b text)"], self.env)
        run([self.tool("psql"), "-qc", f"INSERT INTO replay_filler SELECT g, md5(g::text) "
             f"FROM generate_series(1, {rows}) g"], self.env)  # fmt: skip
        last = run([self.tool("psql"), "-Atc", "SELECT pg_walfile_name(pg_switch_wal())"],
                   self.env).strip()  # fmt: skip
        deadline = time.monotonic() + 1200
        while not list(repo.rglob(last)) and time.monotonic() < deadline:
            time.sleep(0.2)
        run([self.tool("psql"), "-qc", "DROP TABLE replay_filler"], self.env)
        for mode in ("off", "on"):
            target = self.base / f"replay-{mode}"
            times = self.base / f"replay-{mode}.times"
            run([PGKURA, "--repo", str(repo), "--stanza", "bench", "--archive-async", mode,
                 "--spool-path", str(own(self.base / f"replay-spool-{mode}")), "restore",
                 "--target-dir", str(target), "--archive-mode", "off"])  # fmt: skip
            auto = target / "postgresql.auto.conf"
            text = auto.read_text()
            command = next(
                line.split("=", 1)[1].strip().strip("'")
                for line in text.splitlines()
                if line.startswith("restore_command")
            ).replace("''", "'")
            wrapper = self.base / f"timed-get-{mode}.sh"
            wrapper.write_text(
                "#!/bin/bash\nstart=$(date +%s%N)\n"
                + command.replace("%f", '"$1"').replace('"%p"', '"$2"')
                + f"\nrc=$?\necho $(( $(date +%s%N) - start )) >> {times}\nexit $rc\n"
            )
            wrapper.chmod(0o755)
            auto.write_text(text + f"restore_command = '{wrapper} %f %p'\n")
            if USER:
                for path in [target, *target.rglob("*"), wrapper]:
                    shutil.chown(path, USER, USER)
                shutil.chown(self.base, USER, USER)
            port = str(self.port + 200)
            start = time.perf_counter()
            run([self.tool("pg_ctl"), "-D", str(target), "-w", "-t", "3600", "-l",
                 f"{target}.log", "-o", f"-p {port} -k {self.sockets} -c listen_addresses=",
                 "start"])  # fmt: skip
            while run([self.tool("psql"), "-h", str(self.sockets), "-p", port, "-Atc",
                       "SELECT pg_is_in_recovery()"]).strip() != "f":  # fmt: skip
                time.sleep(0.1)
            total = time.perf_counter() - start
            waited = sum(int(x) for x in times.read_text().split()) / 1e9
            subprocess.run(as_user([self.tool("pg_ctl"), "-D", str(target), "-m", "immediate",
                                    "stop"]), capture_output=True)  # fmt: skip
            shutil.rmtree(target, ignore_errors=True)
            self.replay[f"async={mode}"] = (total, waited)
            print(f"  archive-async={mode}: recovery {total:.1f} s, of which archive-get "
                  f"{waited:.1f} s ({100 * waited / total:.0f} %)", flush=True)  # fmt: skip

    def checksum_stage(self) -> None:
        """Data page checksum throughput on the stopped cluster: pgkura's numpy implementation
        (the code a backup runs while reading) against pg_checksums --check."""
        print("== page checksums of the stopped cluster", flush=True)
        self.stop()
        try:
            for _ in range(3):
                self.record("checksums: pgkura (2 threads)", *timed(
                    [sys.executable, "-m", "pgkura.pg.scan", str(self.pgdata), "2"]))  # fmt: skip
                self.record("checksums: pg_checksums --check", *timed(
                    [self.tool("pg_checksums"), "--check", "-D", str(self.pgdata)]))  # fmt: skip
        finally:
            self.start()

    def dedup_stage(self) -> None:
        """What an incremental-forever backup stores after 1 % of pgbench_accounts changed:
        once for rows spread at random (most 64 KiB blocks get touched), once for one
        contiguous range of rows."""
        print("== dedup: backups after updating 1 % of pgbench_accounts", flush=True)
        repo = self.base / "pgkura-dedup"
        self.point_repo(repo)
        env = {**self.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        backup = self.pgkura(self.pgkura_repo, "backup", "--type", "online", "--jobs", "2")
        run(backup, env)
        rows = self.scale * 1000
        updates = {
            "random 1 %": f"UPDATE pgbench_accounts SET abalance = abalance + 1 "
            f"WHERE aid IN (SELECT (random() * {self.scale * 100000})::int + 1 "
            f"FROM generate_series(1, {rows}))",
            "contiguous 1 %": f"UPDATE pgbench_accounts SET abalance = abalance + 1 "
            f"WHERE aid <= {rows}",
        }
        for label, sql in updates.items():
            run([self.tool("psql"), "-qc", sql], self.env)
            run([self.tool("psql"), "-qc", "CHECKPOINT"], self.env)
            backup_id = run(backup, env).strip()
            info = json.loads(
                run([PGKURA, "--repo", str(repo), "--stanza", "bench", "info", backup_id,
                     "--output", "json"])
            )["backups"][0]  # fmt: skip
            size, new = info["size_bytes"], info["new_bytes"]
            self.dedup[label] = (size, new)
            print(
                f"  after {label}: backup of {size / 2**20:.0f} MiB stored {new / 2**20:.1f} MiB"
                f" new ({100 * new / size:.1f} %)",
                flush=True,
            )

    def report(self) -> None:
        print("\n== medians", flush=True)
        for name, t in self.results.items():
            print(f"  {name:<34} {t.median():8.2f} s   peak RSS {t.peak_rss_mb():7.1f} MiB")
        pairs = [
            ("full: pgkura", "full: pgbackrest"),
            ("full: pgkura", "full: pg_basebackup"),
            ("restore: pgkura", "restore: pgbackrest"),
            ("unchanged: pgkura", "unchanged: pgbackrest incr"),
            ("archive-push: pgkura", "archive-push: pgbackrest"),
            ("archive-get: pgkura", "archive-get: pgbackrest"),
            ("verify: pgkura", "verify: pgbackrest"),
            ("verify: pgkura --no-pages", "verify: pgbackrest"),
            ("table: pgkura restore --table", "table: full restore + pg_dump"),
            ("checksums: pgkura (2 threads)", "checksums: pg_checksums --check"),
        ]
        print("\n== ratios (pgkura / other; below 1.0 means pgkura is faster)")
        for a, b in pairs:
            if a in self.results and b in self.results:
                ratio = self.results[a].median() / self.results[b].median()
                print(f"  {a} / {b}: {ratio:.2f}")
        if self.throughput:
            print("\n== WAL archiving throughput (serial archive_command, 16 MiB segments)")
            for label, rate in self.throughput.items():
                print(f"  {label:<34} {rate:8.1f} MB/s")
        if self.replay:
            print("\n== PITR replay: recovery time and time waiting on archive-get")
            for label, (total, waited) in self.replay.items():
                print(f"  {label:<34} {total:6.1f} s, archive-get {waited:5.1f} s")
        if self.dedup:
            print("\n== stored by a pgkura backup after changing 1 % of pgbench_accounts")
            for label, (size, new) in self.dedup.items():
                print(f"  {label}: {new / 2**20:.1f} MiB of {size / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    parser.add_argument("--segments", type=int, default=5, help="segments for the archive stage")
    parser.add_argument("--throughput-segments", type=int, default=32)
    parser.add_argument("--replay-mb", type=int, default=1024, help="WAL for the replay stage")
    parser.add_argument("--only", default=None, help="comma-separated stages (default: all)")
    parser.add_argument("--curve-scales", default="30,100,300",
                        help="pgbench scales of the curve stage")  # fmt: skip
    parser.add_argument("--curve-random-gb", default="1,3",
                        help="sizes (GB) of random bytes for the curve stage")  # fmt: skip
    parser.add_argument("--expire-backups", type=int, default=30,
                        help="backups the expire stage takes before expiring")  # fmt: skip
    parser.add_argument("--expire-keep", type=int, default=7, help="backups expire keeps")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--pgbackrest", default="/usr/bin/pgbackrest",
                        help="pgbackrest binary (bookworm: 2.45, not 17)")  # fmt: skip
    parser.add_argument("--without-pgbackrest", action="store_true",
                        help="leave pgBackRest out (a major it does not support)")  # fmt: skip
    args = parser.parse_args()
    if not args.without_pgbackrest and shutil.which(args.pgbackrest) is None:
        raise SystemExit(f"{args.pgbackrest} is not an executable: apt-get install pgbackrest")
    base = Path(tempfile.mkdtemp(prefix="pgkura-bench-", dir="/var/tmp"))
    bench = Bench(base, args.scale, Path(args.pg_bin))
    bench.with_pgbackrest = not args.without_pgbackrest
    bench.pgbr_bin = args.pgbackrest
    from curve import Curve

    curve = Curve(bench, args.rounds)
    from expire import ExpireStage

    expiry = ExpireStage(bench)
    from s3 import S3Stage

    s3 = S3Stage(bench)
    from summaries import SummaryStage

    summaries = SummaryStage(bench)
    from encryption import CryptStages

    crypt = CryptStages(bench)

    def run_curve() -> None:
        for scale in args.curve_scales.split(","):
            curve.pgbench(int(scale))
        for gb in args.curve_random_gb.split(","):
            curve.random(float(gb))
        curve.report()

    try:
        bench.setup()
        stages = {
            "rounds": lambda: [bench.round(n) for n in range(1, args.rounds + 1)],
            "archive": lambda: bench.archive_stage(args.segments),
            "throughput": lambda: bench.throughput_stage(args.throughput_segments),
            "dedup": bench.dedup_stage,
            "verify": bench.verify_stage,
            "table": bench.table_stage,
            "replay": lambda: bench.replay_stage(args.replay_mb),
            "checksums": bench.checksum_stage,
            "curve": run_curve,
            "expire": lambda: expiry.run(args.expire_backups, args.expire_keep),
            "s3": lambda: s3.run(args.rounds, args.segments, args.throughput_segments),
            "summaries": lambda: summaries.run(args.rounds),
            "verify-modes": lambda: crypt.verify_modes(args.rounds),
            "crypt": lambda: crypt.crypt(args.rounds, args.segments),
        }
        # Minutes each (s3 needs weed, summaries PostgreSQL 17+): asked for by --only.
        slow = ("curve", "expire", "s3", "summaries")
        chosen = args.only.split(",") if args.only else [s for s in stages if s not in slow]
        unknown = set(chosen) - set(stages)
        if unknown:
            raise SystemExit(f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(stages)}")
        for name in stages:
            if name in chosen:
                stages[name]()
        bench.report()
        expiry.report()
        s3.report()
        summaries.report()
        crypt.report()
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
