"""A lock's record and its lease, and keeping held locks alive: one background thread per
process renews the lease of every lock the process holds, so that another host can tell a live
holder (its lease keeps moving) from a dead one (its lease runs out). The rules that judge a
record are in :mod:`repository.locks`; the format is in docs/repository-format.md, "Locks".

A forked child (a backup's or restore's worker process) inherits the registry of held locks
but not the thread, and must never renew or release its parent's locks: an at-fork hook empties
the registry in the child, and every renewal checks that it runs in the process that took the
lock. Workers are forked while this thread runs: it holds no lock a child could need (its own
mutexes are made anew in the child; logging re-creates its locks at fork), and it sleeps
between renewals, which take a few milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

from pgkura.errors import ObjectNotFound, PgkuraError
from pgkura.repository.repo import iso, utc_now
from pgkura.storage.base import Storage

log = logging.getLogger("pgkura")


@dataclass(frozen=True)
class LockRecord:
    """What a lock object holds. The lease fields are None in a record written by a pgkura
    without leases."""

    host: str
    pid: int
    command: str
    created: str
    token: str | None = None
    lease_seconds: float | None = None
    renewed: str | None = None
    expires: str | None = None

    @classmethod
    def taken_now(cls, host: str, pid: int, command: str, lease_seconds: float) -> LockRecord:
        now = utc_now()
        return cls(
            host=host,
            pid=pid,
            command=command,
            created=iso(now),
            token=os.urandom(8).hex(),
            lease_seconds=lease_seconds,
            renewed=iso(now),
            expires=iso(now + timedelta(seconds=lease_seconds)),
        )

    def renewed_now(self) -> LockRecord:
        now = utc_now()
        lease = timedelta(seconds=self.lease_seconds or 0.0)
        return replace(self, renewed=iso(now), expires=iso(now + lease))

    @property
    def expiry(self) -> datetime | None:
        """When the lease runs out, on the holder's clock; None without a lease."""
        if self.expires is None:
            return None
        try:
            return datetime.fromisoformat(self.expires.replace("Z", "+00:00"))
        except ValueError:
            return None

    def to_json(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LockRecord | None:
        """The record in ``raw``; None when it is not one (damaged, cut short)."""
        try:
            data = json.loads(raw)
            lease = data.get("lease_seconds")
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                command=str(data.get("command") or ""),
                created=str(data.get("created") or "?"),
                token=_text_or_none(data.get("token")),
                lease_seconds=None if lease is None else float(lease),
                renewed=_text_or_none(data.get("renewed")),
                expires=_text_or_none(data.get("expires")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


class HeldLock:
    """A lock this process holds: where it is and the record it last wrote."""

    __slots__ = ("_mutex", "key", "lost", "pid", "record", "released", "storage")

    def __init__(self, storage: Storage, key: str, record: LockRecord) -> None:
        self.storage, self.key, self.record = storage, key, record
        self.pid = os.getpid()
        self.lost = False
        self.released = False
        # A renewal and the release never interleave: a renewal that read the lock before the
        # release deleted it would write it back after, a lock of nobody.
        self._mutex = threading.Lock()

    def still_ours(self) -> bool:
        """Whether the stored lock is still the one this process wrote (same token)."""
        try:
            stored = LockRecord.from_json(self.storage.get(self.key))
        except ObjectNotFound:
            return False
        return stored is not None and stored.token == self.record.token

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
        if os.getpid() != self.pid:
            return
        with self._mutex:
            if self.lost or self.released:
                return
            if not self.still_ours():
                self.mark_lost()
                return
            record = self.record.renewed_now()
            self.storage.put(self.key, record.to_json())
            self.record = record

    def release(self) -> None:
        """Delete the lock if it is still this process's; renew it no more."""
        if os.getpid() != self.pid:
            return  # a forked child's copy of its parent's lock
        with self._mutex:
            self.released = True
            if self.still_ours():
                self.storage.delete(self.key)
            else:
                self.mark_lost()  # taken over: the taker's lock is not ours to delete


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

    def held_locks(self) -> list[HeldLock]:
        """The locks this process holds (never a forked child's copy of its parent's)."""
        with self._mutex:
            return [lock for lock in self._held.values() if lock.pid == os.getpid()]

    def _run(self, interval: float, wake: threading.Event) -> None:
        while not wake.wait(interval):
            for lock in self.held_locks():
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
