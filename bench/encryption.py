"""Issue 17's two benchmark stages, run through bench.py (it builds the cluster):

    .venv/bin/python bench/bench.py --only verify-modes,crypt --rounds 3

verify-modes: one full backup of the unchanged cluster in a fresh unencrypted pgkura
repository, one in a fresh encrypted one (raw key) and one in a fresh pgBackRest repository,
each with the WAL archived since; then, interleaved over the rounds, `pgkura verify --quick`,
`pgkura verify`, `pgkura verify --pages` (both repositories) and `pgbackrest verify`. It
prints each median, its ratio to pgBackRest's, and the throughput of each mode: stored MB
(what the repository holds: packs, WAL, manifests) per second, and content MB (the database
backed up) per second.

crypt: per round, a full backup into a fresh unencrypted and a fresh encrypted repository
(the order alternating), a restore from each; then archive-push of real 16 MiB segments, one
process each, into an unencrypted and an encrypted pgkura repository, and an unencrypted and
an AES-256-CBC pgBackRest repository (`repo1-cipher-type=aes-256-cbc`). Encrypted
repositories open with a raw key slot (`init --encrypt --raw-key`), as docs/repository-format.md
recommends for archive-push. Prints the encrypted/unencrypted ratios (issue 17's goal: at most
1.15) and encrypted archive-push against pgBackRest's.

Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench import Bench

CIPHER_PASS = "bench-cipher-passphrase-0123456789"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class CryptStages:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.ratios: list[tuple[str, str]] = []
        self.throughput: dict[str, tuple[float, float]] = {}  # label: (stored MB/s, content)
        self.key: Path | None = None
        self.cpu: dict[str, list[float]] = {}  # label: CPU seconds of each run

    def measure(
        self, label: str, cmd: list[str], env: dict[str, str] | None = None, cwd: str = "/"
    ) -> None:
        """Run ``cmd``; record its wall seconds and peak RSS (bench.record) and its CPU."""
        from bench import timed_cpu

        seconds, rss, cpu = timed_cpu(cmd, env, cwd)
        self.bench.record(label, seconds, rss)
        self.cpu.setdefault(label, []).append(cpu)

    # -- helpers -----------------------------------------------------------------------

    def raw_key(self) -> Path:
        if self.key is None:
            from bench import own

            self.key = own(self.bench.base / "keys") / "raw.key"
            self.key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
            from bench import USER

            if USER:
                shutil.chown(self.key, USER, USER)
            self.key.chmod(0o600)
        return self.key

    def fresh(self, name: str, encrypted: bool) -> list[str]:
        """A new pgkura repository; the arguments that open it."""
        from bench import PGKURA, own, run

        repo = own(self.bench.base / name)
        args = ["--repo", str(repo)]
        if encrypted:
            args += ["--key-file", str(self.raw_key())]
            run([PGKURA, *args, "init", "--compress", "zstd:3", "--encrypt", "--raw-key"])
        else:
            run([PGKURA, *args, "init", "--compress", "zstd:3"])
        return args

    @contextmanager
    def archiving_into(self, links: dict[str, Path]) -> Iterator[None]:
        """archive_command also pushes into the repository each link of ``links`` points at
        (by the arguments the key names: ``--key-file`` for encrypted ones), until the block
        ends."""
        from bench import PGKURA, run

        b = self.bench
        extra = " && ".join(
            f"{PGKURA} --repo {link} {opts} --stanza bench archive-push %p"
            for opts, link in links.items()
        )
        base = (
            f"{PGKURA} --repo {b.pgkura_repo} --stanza bench archive-push %p && "
            f"pgbackrest --config={b.pgbr_conf} --stanza=bench archive-push %p"
        )
        sql = f"ALTER SYSTEM SET archive_command = '{base} && {extra}'"
        run([b.tool("psql"), "-qc", sql], b.env)
        run([b.tool("psql"), "-qc", "SELECT pg_reload_conf()"], b.env)
        try:
            yield
        finally:
            run([b.tool("psql"), "-qc", "ALTER SYSTEM RESET archive_command"], b.env)
            run([b.tool("psql"), "-qc", "SELECT pg_reload_conf()"], b.env)

    def link(self, name: str, target: list[str]) -> Path:
        """A symlink ``name`` pointing at the repository of ``target`` (replaced atomically)."""
        path = self.bench.base / name
        tmp = self.bench.base / f"{name}.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target[1])
        os.replace(tmp, path)
        return path

    def backup(self, args: list[str], label: str | None = None) -> None:
        from bench import PGKURA, run

        b = self.bench
        cmd = [PGKURA, *args, "--stanza", "bench", "--pgdata", str(b.pgdata), "backup",
               "--type", "online", "--jobs", "2"]  # fmt: skip
        env = {**b.env, "PGKURA_ARCHIVE_TIMEOUT": "600"}
        if label is None:
            run(cmd, env)
        else:
            self.measure(label, cmd, env)

    # -- verify-modes ------------------------------------------------------------------

    def verify_modes(self, rounds: int) -> None:
        from bench import PGKURA, own, run

        b = self.bench
        print("== verify modes: one full backup in fresh repositories", flush=True)
        plain = self.fresh("vm-plain", False)
        crypt = self.fresh("vm-crypt", True)
        enc_link = self.link("vm-crypt-link", crypt)
        br_repo = own(b.base / "vm-pgbackrest")
        b.pgbr_conf.write_text(
            b.pgbr_conf.read_text().replace(f"repo1-path={b.pgbr_repo}", f"repo1-path={br_repo}")
        )
        b.pgbr_repo = br_repo
        run(b.pgbackrest("stanza-create"), b.env)
        b.point_repo(Path(plain[1]), init=False)
        with self.archiving_into({f"--key-file {self.raw_key()}": enc_link}):
            self.backup(plain)
            self.backup(crypt)
            run(b.pgbackrest("backup", "--type=full"), b.env)
            run([b.tool("psql"), "-qc", "SELECT pg_switch_wal()"], b.env)
            time.sleep(3)  # the switched segment reaches every repository
        size = run([b.tool("psql"), "-Atc", "SELECT pg_database_size('postgres')"], b.env)
        content_mb = int(size) / 1e6
        stored = {"plain": tree_bytes(Path(plain[1])), "crypt": tree_bytes(Path(crypt[1])),
                  "br": tree_bytes(br_repo)}  # fmt: skip
        modes = {"--quick": ["--quick"], "default": [], "--pages": ["--pages"]}
        for _ in range(rounds):
            for kind, args in (("plain", plain), ("crypt", crypt)):
                for mode, extra in modes.items():
                    label = f"verify {mode}: pgkura{' encrypted' if kind == 'crypt' else ''}"
                    cmd = [PGKURA, *args, "--stanza", "bench", "verify", "--jobs", "2", *extra]
                    self.measure(label, cmd)
                    self.throughput[label] = (stored[kind] / 1e6, content_mb)
            self.measure("verify: pgbackrest", b.pgbackrest("verify"))
        self.throughput["verify: pgbackrest"] = (stored["br"] / 1e6, content_mb)
        for label in self.throughput:
            if label.startswith("verify ") and label != "verify: pgbackrest":
                self.ratios.append((label, "verify: pgbackrest"))
        print(f"   stored: pgkura {stored['plain'] / 1e6:.1f} MB, encrypted "
              f"{stored['crypt'] / 1e6:.1f} MB, pgBackRest {stored['br'] / 1e6:.1f} MB; "
              f"database {content_mb:.0f} MB", flush=True)  # fmt: skip

    # -- crypt -------------------------------------------------------------------------

    def crypt(self, rounds: int, segments: int) -> None:
        from bench import PGKURA

        b = self.bench
        print("== encryption: backup, restore, archive-push, encrypted against not", flush=True)
        for n in range(1, rounds + 1):
            plain = self.fresh(f"cr-plain-{n}", False)
            crypt = self.fresh(f"cr-crypt-{n}", True)
            enc_link = self.link("cr-crypt-link", crypt)
            b.point_repo(Path(plain[1]), init=False)
            order = [("plain", plain), ("crypt", crypt)]
            if n % 2 == 0:
                order.reverse()
            with self.archiving_into({f"--key-file {self.raw_key()}": enc_link}):
                for kind, args in order:
                    self.backup(args, f"crypt backup: {kind}")
            for kind, args in order:
                target = b.base / f"cr-restore-{kind}-{n}"
                cmd = [PGKURA, *args, "--stanza", "bench", "restore", "--target-dir",
                       str(target), "--jobs", "2"]  # fmt: skip
                self.measure(f"crypt restore: {kind}", cmd)
                shutil.rmtree(target, ignore_errors=True)
        self.ratios += [
            ("crypt backup: crypt", "crypt backup: plain"),
            ("crypt restore: crypt", "crypt restore: plain"),
        ]
        self.archive_push(segments)

    def archive_push(self, count: int) -> None:
        from bench import PGKURA, own, run

        b = self.bench
        print(f"== encrypted archive-push: {count} segments, one process each", flush=True)
        source = b.base / "cr-segments-source"
        b.point_repo(source)
        run([b.tool("psql"), "-qc", "SELECT pg_switch_wal()"], b.env)
        run([b.tool("pgbench"), "-n", "-c", "2", "-t", str(count * 10_000)], b.env)
        names = b.last_segments(source, count)
        spool = own(b.base / "cr-segments")
        for name in names:
            run([PGKURA, "--repo", str(source), "--stanza", "bench", "archive-get", name,
                 str(spool / name)])  # fmt: skip
        from bench import USER

        for path in spool.iterdir():
            if USER:
                shutil.chown(path, USER, USER)
        plain = self.fresh("cr-push-plain", False)
        crypt = self.fresh("cr-push-crypt", True)
        confs = {}
        for kind, cipher in (("plain", ""), ("cbc", "aes-256-cbc")):
            repo = own(b.base / f"cr-push-pgbackrest-{kind}")
            conf = b.base / f"pgbackrest-cr-{kind}.conf"
            text = b.pgbr_conf.read_text()
            text = text.replace(f"repo1-path={b.pgbr_repo}", f"repo1-path={repo}")
            if cipher:
                text = text.replace("[global]\n", f"[global]\nrepo1-cipher-type={cipher}\n"
                                    f"repo1-cipher-pass={CIPHER_PASS}\n")  # fmt: skip
            conf.write_text(text)
            if USER:
                shutil.chown(conf, USER, USER)
            conf.chmod(0o600)
            confs[kind] = [b.pgbr_bin, f"--config={conf}", "--stanza=bench"]
            run([*confs[kind], "stanza-create"], b.env)
        for name in names:
            segment = str(spool / name)
            for label, cmd in (
                ("crypt archive-push: plain", [PGKURA, *plain, "--stanza", "bench"]),
                ("crypt archive-push: crypt", [PGKURA, *crypt, "--stanza", "bench"]),
            ):
                self.measure(label, [*cmd, "archive-push", segment])
            for kind, cmd in confs.items():
                self.measure(f"crypt archive-push: pgbackrest {kind}",
                             [*cmd, "archive-push", segment], cwd=str(b.pgdata))  # fmt: skip
        self.ratios += [
            ("crypt archive-push: crypt", "crypt archive-push: plain"),
            ("crypt archive-push: pgbackrest cbc", "crypt archive-push: pgbackrest plain"),
            ("crypt archive-push: crypt", "crypt archive-push: pgbackrest cbc"),
            ("crypt archive-push: plain", "crypt archive-push: pgbackrest plain"),
        ]

    # -- report ------------------------------------------------------------------------

    def report(self) -> None:
        results = self.bench.results
        if not self.ratios:
            return
        print("\n== issue 17: ratios of medians, wall and CPU (below 1.0: the first is faster)")
        cpu = {k: statistics.median(v) for k, v in self.cpu.items()}
        for a, b in self.ratios:
            if a in results and b in results:
                wall = results[a].median() / results[b].median()
                print(f"  {a} / {b}: {wall:.2f} wall, {cpu[a] / cpu[b]:.2f} CPU")
        if self.throughput:
            print("\n== verify throughput (median; stored MB/s, content MB/s)")
            for label, (stored, content) in self.throughput.items():
                seconds = results[label].median()
                print(f"  {label:<40} {seconds:6.2f} s  {stored / seconds:8.1f} stored MB/s  "
                      f"{content / seconds:8.1f} content MB/s")  # fmt: skip
        print("\n== CPU seconds (median)")
        for label, value in cpu.items():
            print(f"  {label:<40} {value:6.2f} s")
        print(json.dumps({k: statistics.median(v.seconds) for k, v in results.items()
                          if k in self.cpu}))  # fmt: skip
