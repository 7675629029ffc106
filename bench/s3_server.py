"""The SeaweedFS of bench/s3.py: tests/seaweed.py's ``weed mini`` (S3 over HTTP and TLS, a CA
made for it), with a second bucket, one per tool, and its Prometheus metrics on a port of its
own, from which the S3 requests of each command are counted."""

from __future__ import annotations

import sys
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from seaweed import BUCKET, SeaweedFS, free_ports

PGBR_BUCKET = "pgbackrest-bench"
_METRICS = ("SeaweedFS_s3_request_total", "SeaweedFS_s3_request_seconds_sum")


class MeteredSeaweedFS(SeaweedFS):  # type: ignore[misc]  # tests/ is not on mypy's path
    """tests/seaweed.py's server, with a second bucket and its metrics on a port."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.metrics_port = free_ports(1)[0]

    def command(self) -> tuple[list[str], dict[str, str]]:
        args, env = super().command()
        env.pop("S3_BUCKET")  # both buckets come from -bucket
        return [*args, f"-bucket={BUCKET},{PGBR_BUCKET}", f"-metricsPort={self.metrics_port}"], env

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
