"""The SeaweedFS of bench/s3.py: tests/seaweed.py's ``weed mini`` (S3 over HTTP and TLS, a CA
made for it), with a second bucket, one per tool, and its Prometheus metrics on a port of its
own, from which the S3 requests of each command are counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from seaweed import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, free_ports, weed_binary

PGBR_BUCKET = "pgbackrest-bench"
_METRICS = ("SeaweedFS_s3_request_total", "SeaweedFS_s3_request_seconds_sum")


class MeteredSeaweedFS(SeaweedFS):  # type: ignore[misc]  # tests/ is not on mypy's path
    """tests/seaweed.py's server, with a second bucket and its metrics on a port."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.metrics_port = free_ports(1)[0]

    def start(self, timeout: float = 60) -> None:
        args = [weed_binary(), "mini", f"-dir={self.data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
                f"-bucket={BUCKET},{PGBR_BUCKET}", f"-metricsPort={self.metrics_port}",
                f"-s3.cert.file={self.cert}", f"-s3.key.file={self.key}",
                f"-filer.localSocket={self.directory}/filer.sock",
                f"-s3.localSocket={self.directory}/s3.sock"]  # fmt: skip
        args += [f"{flag}={port}" for flag, port in self.ports.items()]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=log, cwd=self.directory, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"weed mini exited at start; see {self.log}")
            if self._bucket_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"weed mini did not serve S3 within {timeout:g} s; see {self.log}")

    def requests(self) -> tuple[Counter[tuple[str, str]], dict[str, float]]:
        """S3 requests served so far, by (bucket, request type), and the seconds the server
        spent on them, by bucket (its own clock: from a request's arrival to its answer)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        counts: Counter[tuple[str, str]] = Counter()
        seconds: dict[str, float] = defaultdict(float)
        for line in text.splitlines():
            metric, brace, rest = line.partition("{")
            if not brace or metric not in _METRICS:
                continue
            labels, _, value = rest.rpartition(" ")
            fields = dict(part.split("=", 1) for part in labels.rstrip("}").split(","))
            bucket, kind = fields["bucket"].strip('"'), fields["type"].strip('"')
            if metric == "SeaweedFS_s3_request_total":
                counts[(bucket, kind)] += int(float(value))
            else:
                seconds[bucket] += float(value)
        return counts, seconds
