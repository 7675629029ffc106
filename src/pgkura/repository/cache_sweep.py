"""Local caches of repositories that are gone: each repository's cache directory (named by its
id) records when a command last used it, and caches no command has used for
``STALE_DAYS`` are removed, at most one sweep a day per cache directory. A repository
deleted, moved to another host or re-created under a new id would otherwise leave its copy
of the index and manifests on this disk for ever. Nothing here can lose data: a cache only
saves requests, and a repository whose cache was removed is read from the store again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time

STALE_DAYS = 30
DAY = 86400.0
USED = ".used"  # in a repository's cache directory: touched when a command opens it
SWEPT = ".swept"  # in the cache directory: touched by each sweep


def note_use(directory: str, now: float | None = None) -> None:
    """Record that a command uses the cache ``directory`` (at most once a day), then sweep
    its siblings if nobody did today. Errors are ignored: the cache is optional."""
    now = time.time() if now is None else now
    with contextlib.suppress(OSError):
        os.makedirs(directory, exist_ok=True)
        _touch_daily(os.path.join(directory, USED), now)
        root = os.path.dirname(directory)
        if _touch_daily(os.path.join(root, SWEPT), now):
            sweep(root, now)


def sweep(root: str, now: float) -> list[str]:
    """Remove the repository caches under ``root`` unused for STALE_DAYS; their names."""
    removed = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not _is_repository_cache(name, path):
            continue
        try:
            used = os.stat(os.path.join(path, USED)).st_mtime
        except OSError:
            used = os.stat(path).st_mtime  # a cache of a version that did not record use
        if now - used > STALE_DAYS * DAY:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _is_repository_cache(name: str, path: str) -> bool:
    """Only directories named like a repository id (hex) are caches pgkura made."""
    return (
        bool(name)
        and all(c in "0123456789abcdef" for c in name)
        and os.path.isdir(path)
        and not os.path.islink(path)
    )


def _touch_daily(path: str, now: float) -> bool:
    """Set ``path``'s time to ``now`` unless it was set less than a day ago; whether it was."""
    try:
        if now - os.stat(path).st_mtime < DAY:
            return False
    except FileNotFoundError:
        with open(path, "ab"):
            pass
    os.utime(path, (now, now))
    return True
