"""Progress as a person sees it: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

log = logging.getLogger("pgkura")


class RichProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True, no_color="NO_COLOR" in os.environ),
            transient=True,
        )
        self._task: Any = None

    def start(self, description: str, total_bytes: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)

    def finish(self) -> None:
        self._progress.stop()


class LogProgress:
    """One line every ten seconds, so logs of long runs show that work goes on."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._start = self._last = time.monotonic()
        self._what = ""

    def start(self, description: str, total_bytes: int) -> None:
        self._what, self._total = description, total_bytes
        self._done = 0
        self._start = self._last = time.monotonic()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
        self._report(now)

    def _report(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-6)
        pct = 100.0 * self._done / self._total if self._total else 100.0
        log.warning(
            "%s: %.0f%% (%d of %d MiB, %.1f MiB/s)",
            self._what,
            pct,
            self._done >> 20,
            self._total >> 20,
            self._done / elapsed / 2**20,
        )

    def finish(self) -> None:
        pass


def make_progress() -> RichProgress | LogProgress:
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        return RichProgress()
    return LogProgress()
