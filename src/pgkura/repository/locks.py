"""Repository locks: one backup per stanza at a time, one maintenance (gc, expire) at a time,
and the shared locks that tell gc which commands may still use what it wants to delete.

A lock is an object created with put-if-absent, holding who took it and until when its lease
runs (docs/repository-format.md, "Locks"). While a command holds locks, a background thread
(repository.lease) renews their leases. A lock is judged dead, and taken over by the next
command that wants it (which says so), when its holder is a process of this host that is gone,
or when its holder is on another host and its lease ran out; a live lease of another host is
honoured. A lock written by a pgkura without leases, on another host, is honoured until removed
by hand, as before.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from pgkura.errors import LockedError, ObjectNotFound, StorageError
from pgkura.pg.procs import pid_alive
from pgkura.repository import layout
from pgkura.repository.lease import RENEWER, HeldLock, LockRecord
from pgkura.repository.repo import Repository, utc_now

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
HOST = os.uname().nodename  # gethostname(2)'s answer, without importing socket


def set_command(name: str) -> None:
    COMMAND["name"] = name


def _record() -> LockRecord:
    command = COMMAND["name"] or os.path.basename(sys.argv[0])
    return LockRecord.taken_now(HOST, os.getpid(), command, LEASE_SECONDS)


def _is_live(record: LockRecord) -> bool:
    if record.host == HOST:
        return pid_alive(record.pid)  # this host: the process itself answers
    expires = record.expiry
    if expires is None:
        return True  # another host's, without a lease: we cannot tell, so it holds the lock
    return utc_now() < expires + timedelta(seconds=CLOCK_SKEW_SECONDS)


def _why_dead(record: LockRecord | None) -> str:
    if record is None:
        return "it is not a lock record (damaged?)"
    if record.host == HOST:
        return f"pid {record.pid} is gone from this host"
    return f"its lease ran out at {str(record.expires).replace('T', ' ')[:19]} UTC"


def _read(repo: Repository, key: str) -> bytes | None:
    """The stored lock at ``key``, or None when there is none."""
    try:
        return repo.storage.get(key)
    except ObjectNotFound:
        return None


def _describe(record: LockRecord | None) -> str:
    if record is None:
        return "an unreadable lock"
    since = record.created.replace("T", " ")[:19]
    return (
        f"'pgkura {record.command or '?'}' (pid {record.pid} on {record.host}, since {since} UTC)"
    )


def _wait_hint(record: LockRecord, key: str) -> str:
    wait = f"wait for that {record.command or 'command'} to finish, then run this again"
    if record.host != HOST and record.expiry is not None:
        return (
            f"{wait}; if {record.host} is down, its lock is taken over once its lease runs "
            f"out, {record.lease_seconds or LEASE_SECONDS:g} s after its last renewal"
        )
    return (
        f"{wait}; if pid {record.pid} is gone from {record.host}, delete {key} from the "
        "repository (on this host a dead holder's lock is taken over by itself)"
    )


def _live(raw: bytes | None) -> LockRecord | None:
    """The record of ``raw`` when it is a live lock's."""
    record = None if raw is None else LockRecord.from_json(raw)
    return record if record is not None and _is_live(record) else None


def _remove_dead(repo: Repository, key: str, raw: bytes) -> None:
    """Delete the dead lock ``raw`` at ``key``, unless it changed since it was judged (its
    holder renewed it, or another taker replaced it). Between that read and the delete, one
    request apart, a faster taker could still have written its own lock, which this deletes:
    both would then think they hold it. Only takers of one dead lock race so, within that
    window; docs/repository-format.md says so."""
    if _read(repo, key) != raw:
        return
    record = LockRecord.from_json(raw)
    log.warning("taking over the lock %s of %s: %s", key, _describe(record), _why_dead(record))
    repo.storage.delete(key)


def _take(repo: Repository, key: str) -> HeldLock | LockRecord:
    """Take the lock at ``key``: the held lock, or the record of its live holder."""
    for _attempt in range(3):
        record = _record()
        if repo.storage.put_if_absent(key, record.to_json()):
            return _hold(repo, key, record)
        raw = _read(repo, key)
        if raw is None:
            continue
        holder = _live(raw)
        if holder is not None:
            return holder
        _remove_dead(repo, key, raw)
    raise LockedError(f"could not take the lock {key}: others take and release it meanwhile")


def _take_or_refuse(repo: Repository, key: str, what: str) -> HeldLock:
    held = _take(repo, key)
    if isinstance(held, LockRecord):
        raise LockedError(f"{what} is locked by {_describe(held)}", hint=_wait_hint(held, key))
    return held


def _hold(repo: Repository, key: str, record: LockRecord) -> HeldLock:
    held = HeldLock(repo.storage, key, record)
    RENEWER.hold(held, LEASE_SECONDS / RENEWALS_PER_LEASE)
    return held


def _release(held: HeldLock) -> None:
    """Stop renewing, and delete the lock if it is still this process's. A store that fails
    now (an S3 server gone) must not turn the command's own outcome, or the error that ended
    it, into a lock's: the lock left is a dead holder's, taken over as such."""
    RENEWER.release(held)
    try:
        held.release()
    except StorageError as exc:
        log.warning(
            "could not remove the lock %s: %s; the next command takes it over once this "
            "process has ended",
            held.key,
            exc.message,
        )


def confirm_locks_held(repo: Repository, what: str) -> None:
    """Before ``what`` is committed: refuse when a lock this process holds on ``repo`` was
    taken over meanwhile (its lease ran out while the process was stopped). A cleanup may
    then have deleted what this process stored and no manifest referenced yet, so a commit
    would record a backup that cannot restore."""
    for held in RENEWER.held_locks():
        if held.storage is not repo.storage:
            continue
        if held.lost or not held.still_ours():
            held.mark_lost()
            raise LockedError(
                f"{what} is not recorded: the lock {held.key} was taken over by another "
                "process while this one held it (its lease ran out: was this process "
                "stopped?), and what it stored may have been cleaned up meanwhile",
                hint="run it again; pgkura gc removes what this run left",
            )


@contextmanager
def backup_lock(repo: Repository, stanza: str) -> Iterator[None]:
    """Held while a backup or dump writes: one per stanza."""
    with shared_lock(repo):
        held = _take_or_refuse(repo, layout.lock_key(f"backup-{stanza}"), f"stanza {stanza!r}")
        try:
            yield
        finally:
            _release(held)


@contextmanager
def shared_lock(repo: Repository) -> Iterator[None]:
    """Held by every command that reads or writes blocks (backup, dump, restore, verify): gc
    deletes no pack such a command may use until it has finished (repository.prune). It is
    never refused: maintenance does not stop the world."""
    key = layout.lock_key(f"shared-{os.urandom(16).hex()}")
    record = _record()
    try:
        repo.storage.put(key, record.to_json())
    except StorageError as exc:
        if exc.errno is None:
            raise
        # A read-only repository (a mounted copy, a restore-only user) cannot be cleaned up
        # either: reading it needs no lock.
        yield
        return
    held = _hold(repo, key, record)
    try:
        yield
    finally:
        _release(held)


#: The maintenance lock keeps the name of the exclusive lock of versions before two-phase
#: deletion, whose backups and restores refuse to start while it is live: they load the index
#: without knowing which packs gc is about to delete.
MAINTENANCE_LOCK = "exclusive"


@contextmanager
def maintenance_lock(repo: Repository) -> Iterator[None]:
    """Held by expire, delete, pin, unpin and gc: one of them at a time. Backups, dumps,
    restores and the WAL archive go on meanwhile."""
    held = _take_or_refuse(
        repo, layout.lock_key(MAINTENANCE_LOCK), "the repository's maintenance (gc, expire)"
    )
    try:
        yield
    finally:
        _release(held)


def live_shared_locks(repo: Repository) -> list[tuple[str, str]]:
    """(key, token) of each shared lock that is live now: the commands that may still use
    what they found in the repository. Dead ones are removed."""
    out = []
    for info in repo.storage.list("locks/shared-"):
        raw = _read(repo, info.key)
        holder = _live(raw)
        if holder is not None:
            out.append((info.key, holder.token or holder.created))
        elif raw is not None:
            _remove_dead(repo, info.key, raw)
    return out


def lock_ended(repo: Repository, key: str, token: str) -> bool:
    """Whether the taking ``token`` of the lock at ``key`` is over: released, taken over, or
    dead."""
    raw = _read(repo, key)
    holder = _live(raw)
    return holder is None or (holder.token or holder.created) != token
