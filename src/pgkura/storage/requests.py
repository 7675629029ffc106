"""How many requests this process made of its stores, by kind and by the first part of the key.

Every backend counts what it sends: on S3 one count is one HTTP request (a listing counts
each page of 1000 keys, a batch delete each DeleteObjects of 1000 keys, a retried request
each try); on posix one count is one operation of the interface. The kinds are ``get``,
``put``, ``head``, ``list`` and ``delete``; the area is the key's first part (``index``,
``packs``, ``snapshots``, ``wal`` ...), so a benchmark can tell the index's requests from the
data's.

``PGKURA_REQUEST_STATS=FILE`` writes the counts of the command that was started with it as
JSON to FILE when it exits (``{"total": {"get": 12, ...}, "by_area": {"index": {"get": 2}}}``);
the variable is taken out of the environment, so pgkura commands the command starts (an
archive-get run by a restored server) do not overwrite the file. At debug log level the
counts are logged at exit. Worker processes forked by posix engines (``--jobs``) count their
own requests, which their parent does not see; S3 engines use threads, whose requests count.

Only ``os`` and ``_thread`` are imported: archive-push counts its requests too.
"""

from __future__ import annotations

import _thread
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KINDS = ("get", "put", "head", "list", "delete")

_lock = _thread.allocate_lock()
_counts: dict[tuple[str, str], int] = {}


def count(kind: str, key: str, n: int = 1) -> None:
    """Add ``n`` requests of ``kind`` on ``key`` (or a prefix)."""
    area = key.split("/", 1)[0] or "/"
    with _lock:
        _counts[kind, area] = _counts.get((kind, area), 0) + n


def snapshot() -> dict[tuple[str, str], int]:
    """The counts so far, by (kind, area)."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        _counts.clear()


def report(counts: dict[tuple[str, str], int] | None = None) -> dict[str, Any]:
    """The counts as the JSON of PGKURA_REQUEST_STATS shows them."""
    counts = snapshot() if counts is None else counts
    total = dict.fromkeys(KINDS, 0)
    by_area: dict[str, dict[str, int]] = {}
    for (kind, area), n in sorted(counts.items()):
        total[kind] = total.get(kind, 0) + n
        by_area.setdefault(area, {})[kind] = n
    return {"total": total, "by_area": by_area}


def _at_exit(path: str | None) -> None:
    import sys

    if not _counts:
        return
    import json

    data = report()
    if "logging" in sys.modules:
        import logging

        logging.getLogger("pgkura").debug("storage requests: %s", json.dumps(data))
    if path is None:
        return
    try:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
    except OSError as exc:
        sys.stderr.write(f"pgkura: warning: cannot write PGKURA_REQUEST_STATS {path}: {exc}\n")


def _install() -> None:
    import atexit

    path = os.environ.pop("PGKURA_REQUEST_STATS", None)
    atexit.register(_at_exit, os.path.abspath(path) if path else None)


_install()
