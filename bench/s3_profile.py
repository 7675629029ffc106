"""Where an S3 command's wall time goes: runs one pgkura command in this process with every
S3Storage operation timed (calls, seconds summed over threads, bytes), and prints the sums
after it, with the command's wall time, the process's CPU time and the time before pgkura's
main (interpreter start and imports) to stderr. For the figures of docs/benchmarks.md, run J:

    .venv/bin/python bench/s3_profile.py --config CONF restore --target-dir DIR --jobs 2

(the arguments are pgkura's). Nothing here changes what the command does.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections import defaultdict
from typing import Any

STARTED = time.perf_counter()


def instrument() -> dict[str, list[float]]:
    from pgkura.storage.s3 import S3Storage

    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])  # calls, seconds, bytes
    lock = threading.Lock()

    def wrap(name: str) -> None:
        original = getattr(S3Storage, name)

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            start, result = time.perf_counter(), None
            try:  # a call that raises (a read of an absent key) counts too
                result = original(self, *args, **kwargs)
                if name == "list":
                    result = list(result)
                return iter(result) if name == "list" else result
            finally:
                seconds = time.perf_counter() - start
                size = len(result) if isinstance(result, bytes) else 0
                size += sum(len(a) for a in args if isinstance(a, (bytes, bytearray, memoryview)))
                with lock:
                    entry = sums[name]
                    entry[0] += 1
                    entry[1] += seconds
                    entry[2] += size

        setattr(S3Storage, name, timed)

    for name in ("get", "put", "put_if_absent", "size", "list", "delete", "delete_many"):
        wrap(name)
    return sums


def main() -> None:
    ready = time.perf_counter()
    sums = instrument()
    begun = time.perf_counter()

    def report() -> None:
        import resource

        wall = time.perf_counter() - begun
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"s3_profile: before main {ready - STARTED:.3f} s (+ interpreter start), "
              f"command {wall:.3f} s, CPU {usage.ru_utime + usage.ru_stime:.3f} s, "
              f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB", file=sys.stderr)  # fmt: skip
        for name, (calls, seconds, size) in sorted(sums.items()):
            print(f"s3_profile: {name:<14} {calls:6d} calls {seconds:8.3f} s summed "
                  f"({1000 * seconds / max(calls, 1):6.2f} ms each) {size / 2**20:8.1f} MiB",
                  file=sys.stderr)  # fmt: skip

    atexit.register(report)
    from pgkura.entry import main as pgkura_main

    sys.argv = ["pgkura", *sys.argv[1:]]
    pgkura_main()


if __name__ == "__main__":
    main()
