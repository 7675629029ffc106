"""Keeping held locks alive: one background thread per process renews the lease of every lock
the process holds, so that another host can tell a live holder (its lease keeps moving) from a
dead one (its lease runs out). The rules that judge a lease are in :mod:`repository.locks`.

A forked child (a backup's or restore's worker process) inherits the registry of held locks
but not the thread, and must never renew or release its parent's locks: an at-fork hook empties
the registry in the child, and every renewal checks that it runs in the process that took the
lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from pgkura.errors import ObjectNotFound, PgkuraError
from pgkura.storage.base import Storage

log = logging.getLogger("pgkura")


class HeldLock:
    """A lock this process holds: where it is, the record it wrote, how to make the next one."""

    __slots__ = ("key", "lost", "pid", "record", "renew_record", "storage")

    def __init__(
        self,
        storage: Storage,
        key: str,
        record: dict[str, Any],
        renew_record: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.storage, self.key, self.record = storage, key, record
        self.renew_record = renew_record
        self.pid = os.getpid()
        self.lost = False

    def still_ours(self) -> bool:
        """Whether the stored lock is still the one this process wrote (same token)."""
        try:
            stored = json.loads(self.storage.get(self.key))
        except (ObjectNotFound, ValueError):
            return False
        return isinstance(stored, dict) and stored.get("token") == self.record["token"]

    def mark_lost(self) -> None:
        """Note, once, that another process took this lock while this one held it."""
        if self.lost:
            return
        self.lost = True
        log.error(
            "the lock %s in %s was taken over by another process while this one held it (its "
            "lease ran out: was this process stopped?); what this command wrote meanwhile "
            "should be verified (pgkura verify)",
            self.key,
            self.storage.location,
        )

    def renew(self) -> None:
        """Write the record again with a new expiry, unless another process took the lock.

        Read, then write: were the lease to run out and another host take the lock between
        the two, this write would overwrite the taker's. That needs this process to have been
        stalled past its whole lease, then to wake exactly between a read and a write one
        request apart; the taker's own renewal then finds the lock not its own and says so."""
        if os.getpid() != self.pid or self.lost:
            return
        if not self.still_ours():
            self.mark_lost()
            return
        record = self.renew_record(self.record)
        self.storage.put(self.key, json.dumps(record).encode())
        self.record = record


class Renewer:
    """The one thread of a process that renews its held locks every ``interval`` seconds."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[int, HeldLock] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, lock: HeldLock, interval: float) -> None:
        with self._mutex:
            self._held[id(lock)] = lock
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._wake = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(interval, self._wake), name="pgkura-lease", daemon=True
                )
                self._thread.start()

    def release(self, lock: HeldLock) -> None:
        """Stop renewing ``lock``; the thread ends with the last one."""
        with self._mutex:
            self._held.pop(id(lock), None)
            if not self._held:
                self._wake.set()
                self._thread = None

    def _run(self, interval: float, wake: threading.Event) -> None:
        while not wake.wait(interval):
            with self._mutex:
                held = [lock for lock in self._held.values() if lock.pid == os.getpid()]
            for lock in held:
                try:
                    lock.renew()
                except PgkuraError as exc:
                    # One failed renewal is no loss: the lease outlasts several intervals.
                    log.warning("could not renew the lock %s: %s", lock.key, exc.message)

    def forget_in_child(self) -> None:
        """After fork(2), in the child: the parent's locks and thread are not this process's."""
        self._mutex = threading.Lock()
        self._held = {}
        self._thread = None
        self._wake = threading.Event()
        self._pid = os.getpid()


RENEWER = Renewer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RENEWER.forget_in_child)
