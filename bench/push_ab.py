"""Encrypted against unencrypted archive-push, for two source trees, interleaved (issue 17,
point 4: an encrypted archive-push at most 1.15x the unencrypted one).

    .venv/bin/python bench/push_ab.py SEGMENTS --src OLD_SRC --src NEW_SRC [--pg-bin DIR]

Run as root. Makes a PostgreSQL cluster (as postgres) that writes SEGMENTS WAL segments of
md5-text rows (they compress as the bench's pgbench segments do), keeps copies of them, and
stops it. Then, per source tree, an unencrypted repository and one encrypted with a raw key
file (no Argon2id: a passphrase's slot costs about 0.25 s by design); every segment is pushed
into each of the four repositories by one `pgkura archive-push` process, the four in a new
random order per segment, and wait4's rusage gives each process's CPU. Prints the medians of
wall and CPU per variant and the encrypted / unencrypted ratios per tree. Each tree's src/
must be readable by postgres, its bytecode compiled and its pgkura/pg/_pagesum*.so in place
(as for bench/interleaved.py). Timings are for docs/benchmarks.md, never a test.
"""

from __future__ import annotations

import argparse
import base64
import os
import pwd
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER = "postgres"
MAIN = "import sys; from pgkura.entry import main; sys.argv[0] = 'pgkura'; main()"


def as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *cmd]


def own(path: Path) -> Path:
    shutil.chown(path, USER, USER)
    return path


def make_segments(base: Path, pg_bin: Path, count: int) -> list[Path]:
    """``count`` finished WAL segments of a fresh cluster, copied out of its pg_wal."""
    pgdata, sock = base / "pgdata", own_dir(base / "sock")
    subprocess.run(as_user([str(pg_bin / "initdb"), "-D", str(pgdata), "-A", "trust",
                            "-U", "postgres"]), check=True, capture_output=True)  # fmt: skip
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write(f"port = 54993\nunix_socket_directories = '{sock}'\nlisten_addresses = ''\n")
        conf.write("wal_keep_size = 4GB\nmax_wal_size = 4GB\n")
    start = [str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(base / "log"), "start"]
    subprocess.run(as_user(start), check=True, capture_output=True)

    def sql(query: str) -> str:
        out = subprocess.run(as_user([str(pg_bin / "psql"), "-h", str(sock), "-p", "54993",
                                      "-U", "postgres", "-Atqc", query, "postgres"]),
                             check=True, capture_output=True, text=True)  # fmt: skip
        return out.stdout.strip()

    sql("CREATE TABLE t (a int, b text)")
    names = []
    for n in range(count):
        sql(f"INSERT INTO t SELECT g, md5((g * {n + 1})::text) FROM generate_series(1, 90000) g")
        names.append(sql("SELECT pg_walfile_name(pg_current_wal_lsn())"))
        sql("SELECT pg_switch_wal()")
    sql("CHECKPOINT")
    kept = own_dir(base / "segments")
    out = []
    for name in names:
        copy = kept / name
        shutil.copy2(pgdata / "pg_wal" / name, copy)
        out.append(own(copy))
    subprocess.run(as_user([str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast",
                            "stop"]), check=True, capture_output=True)  # fmt: skip
    return out


def own_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return own(path)


def pgkura(src: str, *args: str) -> list[str]:
    return as_user(["env", f"PYTHONPATH={src}", sys.executable, "-c", MAIN, *args])


def become_postgres() -> None:
    """The timed pushes run as postgres without runuser (its PAM session would be timed too)."""
    user = pwd.getpwnam(USER)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("segments", type=int)
    parser.add_argument("--src", action="append", required=True, help="source trees (src/)")
    parser.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the cluster and pgkura run as postgres")
    pwd.getpwnam(USER)
    base = Path(tempfile.mkdtemp(prefix="pgkura-push-ab-", dir="/var/tmp"))
    own(base)
    try:
        segments = make_segments(base, args.pg_bin, args.segments)
        key = base / "raw.key"
        key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        own(key).chmod(0o600)
        variants: dict[str, list[str]] = {}
        for n, src in enumerate(args.src):
            for kind in ("plain", "encrypted"):
                repo = own_dir(base / f"repo-{n}-{kind}")
                init = [*(["--key-file", str(key)] if kind == "encrypted" else []), "init"]
                init += ["--encrypt", "--raw-key"] if kind == "encrypted" else []
                subprocess.run(pgkura(src, "--repo", str(repo), *init), check=True,
                               capture_output=True)  # fmt: skip
                extra = ["--key-file", str(key)] if kind == "encrypted" else []
                variants[f"{src} {kind}"] = ["--repo", str(repo), *extra]
        srcs = {label: label.rsplit(" ", 1)[0] for label in variants}
        results: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
        for segment in segments:
            order = list(variants)
            random.shuffle(order)
            for label in order:
                cmd = [sys.executable, "-c", MAIN, *variants[label], "archive-push", str(segment)]
                env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": srcs[label]}
                time.sleep(0.2)
                start = time.perf_counter()
                proc = subprocess.Popen(
                    cmd, env=env, cwd="/", preexec_fn=become_postgres,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )  # fmt: skip
                _pid, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - start
                if os.waitstatus_to_exitcode(status) != 0:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"{label}: archive-push failed\n{err}")
                results[label].append((wall, usage.ru_utime + usage.ru_stime))
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"{len(segments)} segments, load average {' '.join(load)} at the end")
        medians = {}
        for label, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            medians[label] = (wall, cpu)
            print(f"  {label:60s} wall {wall * 1000:6.1f} ms  CPU {cpu * 1000:6.1f} ms")
        for src in args.src:
            plain, crypt = medians[f"{src} plain"], medians[f"{src} encrypted"]
            print(f"  {src}: encrypted / unencrypted: wall {crypt[0] / plain[0]:.2f}, "
                  f"CPU {crypt[1] / plain[1]:.2f}")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
