"""What the first request of a process costs on S3, over TLS and over plain HTTP: a local
SeaweedFS (started here, on free ports, and stopped), then fresh interpreters that each make
one S3Storage and time four GETs of small objects in a row (wall and the process's CPU).

Over TLS the first GET carries the client's one-time start: with obstore's wheel, AWS-LC
seeding its random generator from CPU-jitter entropy on the first handshake (see
docs/benchmarks.md, "Run J a seventh time"). Every archive-push over https pays it once.

    .venv/bin/python bench/s3_first_request.py --rounds 5

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from seaweed import REGION, S3Repo, SeaweedFS

_TIMED = """
import sys, time
from pgkura.storage.s3 import S3Storage
from pgkura.storage.s3_config import S3Options
endpoint, ca, creds, url = sys.argv[1:5]
options = S3Options(endpoint=endpoint, region=REGION, credentials_file=creds,
                    ca_file=ca or None, retry_seconds=30.0)
store = S3Storage(url, options)
for key in ("first/a", "first/b", "first/a", "first/b"):
    wall, cpu = time.perf_counter(), time.process_time()
    store.get(key)
    print(f"{(time.perf_counter() - wall) * 1000:.2f} {(time.process_time() - cpu) * 1000:.2f}")
""".replace("REGION", repr(REGION))


def timed_gets(endpoint: str, ca: str, creds: Path, url: str) -> list[tuple[float, float]]:
    """(wall ms, CPU ms) of each of the four GETs of one fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMED, endpoint, ca, str(creds), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [(float(w), float(c)) for w, c in (line.split() for line in out.splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgkura-bench-s3-first-"))
    server = SeaweedFS(base / "weed")
    server.start()
    try:
        repo = S3Repo(server, base / "cfg", "bench/first", owner=None)
        store = repo.store()
        for key in ("first/a", "first/b"):
            store.put(key, os.urandom(300))
        kinds = {
            "https": (server.tls_endpoint, str(server.ca)),
            "http": (server.endpoint, ""),
        }
        results: dict[str, list[list[tuple[float, float]]]] = {k: [] for k in kinds}
        for _round in range(opts.rounds):
            for kind, (endpoint, ca) in kinds.items():  # alternated: the same machine
                results[kind].append(timed_gets(endpoint, ca, repo.credentials, repo.url))
        for kind, runs in results.items():
            first = [r[0] for r in runs]
            later = [t for r in runs for t in r[1:]]
            print(
                f"{kind:5s} first GET: wall median {statistics.median(w for w, _ in first):.1f} ms"
                f", CPU median {statistics.median(c for _, c in first):.1f} ms; later GETs: "
                f"wall median {statistics.median(w for w, _ in later):.1f} ms, CPU median "
                f"{statistics.median(c for _, c in later):.1f} ms ({len(runs)} processes)"
            )
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
