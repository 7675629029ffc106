"""Repository locks: one backup per stanza at a time, and no garbage collection under a writer.

A lock is an object created with put-if-absent. A lock left by a process that died on this host
is stale and is taken over; a lock from another host is honoured until removed by hand.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pgkura.errors import LockedError, ObjectNotFound, StorageError
from pgkura.procs import pid_alive
from pgkura.repository import layout
from pgkura.repository.repo import Repository, iso, utc_now

# The verb of the running command ("backup", "verify --restore"...), set by the CLI, so that
# a lock names what holds it and what to wait for.
COMMAND = {"name": ""}


def set_command(name: str) -> None:
    COMMAND["name"] = name


def _record() -> bytes:
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": COMMAND["name"] or os.path.basename(sys.argv[0]),
            "created": iso(utc_now()),
        }
    ).encode()


def _is_live(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # another host's process: we cannot tell, so it holds the lock
    return pid_alive(int(record["pid"]))


def _read(repo: Repository, key: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(repo.storage.get(key)))
    except ObjectNotFound:
        return None
    except ValueError:
        return {}


def _describe(record: dict[str, Any]) -> str:
    since = str(record.get("created", "?")).replace("T", " ")[:19]
    return (
        f"'pgkura {record.get('command') or '?'}' (pid {record.get('pid')} on "
        f"{record.get('host')}, since {since} UTC)"
    )


def _wait_hint(record: dict[str, Any], key: str) -> str:
    return (
        f"wait for that {record.get('command') or 'command'} to finish, then run this again; "
        f"if pid {record.get('pid')} is gone from {record.get('host')}, delete {key} from the "
        "repository (on this host a dead holder's lock is taken over by itself)"
    )


def _take(repo: Repository, key: str, what: str) -> None:
    for _attempt in range(3):
        if repo.storage.put_if_absent(key, _record()):
            return
        record = _read(repo, key)
        if record is None:
            continue
        if record and _is_live(record):
            raise LockedError(
                f"{what} is locked by {_describe(record)}", hint=_wait_hint(record, key)
            )
        repo.storage.delete(key)  # stale: its process is gone
    raise LockedError(f"could not take the lock {key}")


def _live_shared(repo: Repository, own: str | None = None) -> list[dict[str, Any]]:
    live = []
    for info in repo.storage.list("locks/shared-"):
        if info.key == own:
            continue
        record = _read(repo, info.key)
        if record and _is_live(record):
            live.append(record)
        elif record is not None:
            repo.storage.delete(info.key)
    return live


@contextmanager
def backup_lock(repo: Repository, stanza: str) -> Iterator[None]:
    """Held while a backup or dump writes: one per stanza, and it blocks garbage collection."""
    with shared_lock(repo):
        key = layout.lock_key(f"backup-{stanza}")
        _take(repo, key, f"stanza {stanza!r}")
        try:
            yield
        finally:
            repo.storage.delete(key)


@contextmanager
def shared_lock(repo: Repository) -> Iterator[None]:
    key = layout.lock_key(f"shared-{os.urandom(16).hex()}")
    try:
        repo.storage.put(key, _record())
    except StorageError as exc:
        if exc.errno is None:
            raise
        # A read-only repository (a mounted copy, a restore-only user) cannot be cleaned up
        # either: reading it needs no lock.
        yield
        return
    try:
        exclusive = _read(repo, layout.lock_key("exclusive"))
        if exclusive and _is_live(exclusive):
            raise LockedError(
                f"the repository is being cleaned up by {_describe(exclusive)}",
                hint=_wait_hint(exclusive, layout.lock_key("exclusive")),
            )
        yield
    finally:
        repo.storage.delete(key)


@contextmanager
def exclusive_lock(repo: Repository) -> Iterator[None]:
    """Held while unreferenced data is deleted: no writer may run at the same time."""
    key = layout.lock_key("exclusive")
    _take(repo, key, "the repository")
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
        repo.storage.delete(key)
