"""Repository locks: one backup per stanza at a time, and no garbage collection under a writer.

A lock is an object created with put-if-absent, holding who took it and until when its lease
runs (docs/repository-format.md, "Locks"). While a command holds locks, a background thread
(repository.lease) renews their leases. A lock is judged dead, and taken over by the next
command that wants it (which says so), when its holder is a process of this host that is gone,
or when its holder is on another host and its lease ran out; a live lease of another host is
honoured. A lock written by a pgkura without leases, on another host, is honoured until removed
by hand, as before.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from pgkura.errors import LockedError, ObjectNotFound, StorageError
from pgkura.procs import pid_alive
from pgkura.repository import layout
from pgkura.repository.lease import RENEWER, HeldLock
from pgkura.repository.repo import Repository, iso, utc_now

log = logging.getLogger("pgkura")

# The verb of the running command ("backup", "verify --restore"...), set by the CLI, so that
# a lock names what holds it and what to wait for.
COMMAND = {"name": ""}

#: How long a lock stays live without renewal: a host that stops renewing (crashed, cut off)
#: has its locks taken over this long (and CLOCK_SKEW_SECONDS) after its last renewal.
LEASE_SECONDS = 300.0
#: Renewals per lease: a lease survives several failed renewals (a storage hiccup).
RENEWALS_PER_LEASE = 5
#: How far another host's clock may be ahead of ours: its lease counts that much longer.
CLOCK_SKEW_SECONDS = 60.0
#: The host name written into records and compared with theirs (a test may set another).
HOST = socket.gethostname()


def set_command(name: str) -> None:
    COMMAND["name"] = name


def _record() -> dict[str, Any]:
    now = utc_now()
    return {
        "host": HOST,
        "pid": os.getpid(),
        "command": COMMAND["name"] or os.path.basename(sys.argv[0]),
        "created": iso(now),
        "token": os.urandom(8).hex(),
        "lease_seconds": LEASE_SECONDS,
        "renewed": iso(now),
        "expires": iso(now + timedelta(seconds=LEASE_SECONDS)),
    }


def _renewed(record: dict[str, Any]) -> dict[str, Any]:
    now = utc_now()
    lease = float(record["lease_seconds"])
    return {**record, "renewed": iso(now), "expires": iso(now + timedelta(seconds=lease))}


def _expiry(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record["expires"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def _is_live(record: dict[str, Any]) -> bool:
    if record.get("host") == HOST:
        return pid_alive(int(record["pid"]))  # this host: the process itself answers
    expires = _expiry(record)
    if expires is None:
        return True  # another host's, without a lease: we cannot tell, so it holds the lock
    return utc_now() < expires + timedelta(seconds=CLOCK_SKEW_SECONDS)


def _why_dead(record: dict[str, Any]) -> str:
    if record.get("host") == HOST:
        return f"pid {record.get('pid')} is gone from this host"
    return f"its lease ran out at {str(record.get('expires', '?')).replace('T', ' ')[:19]} UTC"


def _read(repo: Repository, key: str) -> dict[str, Any] | None:
    """The record at ``key``; None when there is none, {} when it is not a record."""
    try:
        record = json.loads(repo.storage.get(key))
    except ObjectNotFound:
        return None
    except ValueError:
        return {}
    return dict(record) if isinstance(record, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    since = str(record.get("created", "?")).replace("T", " ")[:19]
    return (
        f"'pgkura {record.get('command') or '?'}' (pid {record.get('pid')} on "
        f"{record.get('host')}, since {since} UTC)"
    )


def _wait_hint(record: dict[str, Any], key: str) -> str:
    wait = f"wait for that {record.get('command') or 'command'} to finish, then run this again"
    if record.get("host") != HOST and _expiry(record) is not None:
        return (
            f"{wait}; if {record.get('host')} is down, its lock is taken over once its lease "
            f"runs out, {float(record.get('lease_seconds', LEASE_SECONDS)):g} s after its "
            "last renewal"
        )
    return (
        f"{wait}; if pid {record.get('pid')} is gone from {record.get('host')}, delete {key} "
        "from the repository (on this host a dead holder's lock is taken over by itself)"
    )


def _remove_dead(repo: Repository, key: str, record: dict[str, Any]) -> None:
    """Delete the dead lock ``record`` at ``key``, unless it changed since it was judged (its
    holder renewed it, or another taker replaced it). Between that read and the delete, one
    request apart, a faster taker could still have written its own lock, which this deletes:
    both would then think they hold it. Only takers of one dead lock race so, within that
    window; docs/repository-format.md says so."""
    if _read(repo, key) != record:
        return
    log.warning("taking over the lock %s of %s: %s", key, _describe(record), _why_dead(record))
    repo.storage.delete(key)


def _take(repo: Repository, key: str) -> HeldLock | dict[str, Any]:
    """Take the lock at ``key``: the held lock, or the record of its live holder."""
    for _attempt in range(3):
        record = _record()
        if repo.storage.put_if_absent(key, json.dumps(record).encode()):
            return _hold(repo, key, record)
        stored = _read(repo, key)
        if stored is None:
            continue
        if stored and _is_live(stored):
            return stored
        _remove_dead(repo, key, stored)
    raise LockedError(f"could not take the lock {key}: others take and release it meanwhile")


def _take_or_refuse(repo: Repository, key: str, what: str) -> HeldLock:
    held = _take(repo, key)
    if isinstance(held, dict):
        raise LockedError(f"{what} is locked by {_describe(held)}", hint=_wait_hint(held, key))
    return held


def _hold(repo: Repository, key: str, record: dict[str, Any]) -> HeldLock:
    held = HeldLock(repo.storage, key, record, _renewed)
    RENEWER.hold(held, float(record["lease_seconds"]) / RENEWALS_PER_LEASE)
    return held


def _release(held: HeldLock) -> None:
    """Stop renewing, and delete the lock if it is still this process's."""
    RENEWER.release(held)
    if held.pid != os.getpid():
        return  # a forked child's copy of its parent's lock
    if held.still_ours():
        held.storage.delete(held.key)
    else:
        held.mark_lost()  # taken over: the taker's lock is not ours to delete


def _live_shared(repo: Repository, own: str | None = None) -> list[dict[str, Any]]:
    live = []
    for info in repo.storage.list("locks/shared-"):
        if info.key == own:
            continue
        record = _read(repo, info.key)
        if record and _is_live(record):
            live.append(record)
        elif record is not None:
            _remove_dead(repo, info.key, record)
    return live


@contextmanager
def backup_lock(repo: Repository, stanza: str) -> Iterator[None]:
    """Held while a backup or dump writes: one per stanza, and it blocks garbage collection."""
    with shared_lock(repo):
        held = _take_or_refuse(repo, layout.lock_key(f"backup-{stanza}"), f"stanza {stanza!r}")
        try:
            yield
        finally:
            _release(held)


@contextmanager
def shared_lock(repo: Repository) -> Iterator[None]:
    key = layout.lock_key(f"shared-{os.urandom(16).hex()}")
    record = _record()
    try:
        repo.storage.put(key, json.dumps(record).encode())
    except StorageError as exc:
        if exc.errno is None:
            raise
        # A read-only repository (a mounted copy, a restore-only user) cannot be cleaned up
        # either: reading it needs no lock.
        yield
        return
    held = _hold(repo, key, record)
    try:
        exclusive = _read(repo, layout.lock_key("exclusive"))
        if exclusive and _is_live(exclusive):
            raise LockedError(
                f"the repository is being cleaned up by {_describe(exclusive)}",
                hint=_wait_hint(exclusive, layout.lock_key("exclusive")),
            )
        yield
    finally:
        _release(held)


@contextmanager
def exclusive_lock(repo: Repository) -> Iterator[None]:
    """Held while unreferenced data is deleted: no writer may run at the same time."""
    key = layout.lock_key("exclusive")
    held = _take_or_refuse(repo, key, "the repository")
    try:
        live = _live_shared(repo)
        if live:
            raise LockedError(
                f"the repository is in use by {_describe(live[0])}, which must not lose what "
                "it reads or writes to a cleanup",
                hint=_wait_hint(live[0], "its lock"),
            )
        yield
    finally:
        _release(held)
