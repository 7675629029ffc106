"""Lock leases, with real processes holding the locks: a live holder on another host keeps its
lock by renewing the lease, a holder that stops renewing loses it once the lease runs out (the
taker says so, and the old holder neither renews nor deletes the taker's lock), a process of
this host is judged by its pid, and forked workers never renew or release their parent's lock.

"Another host" is a child process that writes another host name into its records (the
module's HOST), which is all a reader on this host can see of a host."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgkura.errors import LockedError
from pgkura.repository import layout, lease, locks
from pgkura.repository.repo import Repository
from pgkura.storage.posix import PosixStorage

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pgkura.config import load_config
    from pgkura.repository import locks
    from pgkura.repository.repo import Repository
    from pgkura.storage import open_storage

    location, config, host, lease, hold = sys.argv[1:]
    locks.HOST, locks.LEASE_SECONDS = host, float(lease)
    cfg = load_config({"repo": location}, config or None, environ={})
    repo = Repository.open(open_storage(location, cfg))
    locks.set_command("backup")
    with locks.backup_lock(repo, "main"):
        print("held", flush=True)
        time.sleep(float(hold))
    print("released", flush=True)
    """
)


class Place:
    """A repository location and the config file a child process opens it with."""

    def __init__(self, location: str, config: str, repo: Repository) -> None:
        self.location, self.config, self.repo = location, config, repo

    def hold(self, host: str, lease_seconds: float, seconds: float) -> subprocess.Popen[str]:
        """A process that holds stanza main's backup lock for ``seconds``, as ``host``."""
        args = [self.location, self.config, host, str(lease_seconds), str(seconds)]
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "held\n", proc.stderr.read() if proc.stderr else ""
        return proc

    def record(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.repo.storage.get(layout.lock_key("backup-main"))))
        except KeyError:
            return None


@pytest.fixture(params=["posix", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "posix":
        root = tmp_path / "repo"
        return Place(str(root), "", Repository.create(PosixStorage(root)))
    from seaweed import S3Repo

    server = request.getfixturevalue("seaweedfs")
    s3 = S3Repo(server, tmp_path / "s3", f"locks/{time.time_ns()}", owner=None)
    return Place(s3.url, str(s3.config), Repository.create(s3.store()))


@pytest.fixture
def posix_place(tmp_path: Path) -> Place:
    root = tmp_path / "repo"
    return Place(str(root), "", Repository.create(PosixStorage(root)))


@pytest.fixture(autouse=True)
def no_clock_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host's clock is the other "host"'s: no allowance for skew is needed."""
    monkeypatch.setattr(locks, "CLOCK_SKEW_SECONDS", 0.0)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.communicate()


def test_a_live_lease_of_another_host_is_refused_for_as_long_as_it_is_renewed(
    place: Place, children: list[subprocess.Popen[str]]
) -> None:
    holder = place.hold("elsewhere", lease_seconds=1.5, seconds=6)
    children.append(holder)
    first = place.record()
    assert first is not None and first["host"] == "elsewhere" and first["pid"] == holder.pid
    expiries = {first["expires"]}
    deadline = time.monotonic() + 4.5  # three leases: it lives only by renewing
    while time.monotonic() < deadline:
        with (
            pytest.raises(LockedError, match="elsewhere") as refused,
            locks.backup_lock(place.repo, "main"),
        ):
            pass
        assert "lease" in (refused.value.hint or "")
        record = place.record()
        assert record is not None and record["token"] == first["token"]
        expiries.add(record["expires"])
        time.sleep(0.3)
    assert len(expiries) >= 3  # renewed, each time with a later expiry
    assert holder.stdout is not None and holder.stdout.readline() == "released\n"
    assert holder.wait(30) == 0
    assert place.record() is None  # released by its holder
    with locks.backup_lock(place.repo, "main"):
        assert place.record() is not None


def test_a_lease_that_ran_out_is_taken_over_and_its_old_holder_lets_go(
    place: Place, children: list[subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    holder = place.hold("elsewhere", lease_seconds=1.0, seconds=4)
    children.append(holder)
    holder.send_signal(signal.SIGSTOP)  # a host cut off: nothing renews its lease any more
    first = place.record()
    assert first is not None
    time.sleep(1.5)
    with caplog.at_level(logging.WARNING, logger="pgkura"), locks.backup_lock(place.repo, "main"):
        assert "taking over" in caplog.text and "lease ran out" in caplog.text
        taken = place.record()
        assert taken is not None and taken["pid"] == os.getpid()
        assert taken["token"] != first["token"]
        holder.send_signal(signal.SIGCONT)  # the old holder wakes up, finds it lost
        _out, err = holder.communicate(timeout=30)
        assert holder.returncode == 0
        assert "was taken over by another process" in err
        assert place.record() == taken  # neither renewed nor deleted by the old holder
    assert place.record() is None


def test_a_lock_of_another_host_without_a_lease_is_honoured_until_removed(
    posix_place: Place,
) -> None:
    """What a pgkura without leases wrote: nothing tells whether its holder lives."""
    old = {"host": "elsewhere", "pid": 1, "command": "backup", "created": "2026-01-01T00:00:00Z"}
    posix_place.repo.storage.put(layout.lock_key("backup-main"), json.dumps(old).encode())
    with (
        pytest.raises(LockedError, match="pid 1 on elsewhere"),
        locks.backup_lock(posix_place.repo, "main"),
    ):
        pass


def test_a_dead_process_of_this_host_loses_its_lock_at_once_whatever_its_lease(
    posix_place: Place, children: list[subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    holder = posix_place.hold(locks.HOST, lease_seconds=300, seconds=60)
    children.append(holder)
    holder.kill()
    holder.wait()
    with (
        caplog.at_level(logging.WARNING, logger="pgkura"),
        locks.backup_lock(posix_place.repo, "main"),
    ):
        assert f"pid {holder.pid} is gone from this host" in caplog.text


def test_a_live_process_of_this_host_keeps_its_lock_even_past_its_lease(
    posix_place: Place, children: list[subprocess.Popen[str]]
) -> None:
    """On this host the pid answers: a stopped process still holds what it locked."""
    holder = posix_place.hold(locks.HOST, lease_seconds=0.5, seconds=10)
    children.append(holder)
    holder.send_signal(signal.SIGSTOP)
    time.sleep(1.0)
    with (
        pytest.raises(LockedError, match=f"pid {holder.pid}"),
        locks.backup_lock(posix_place.repo, "main"),
    ):
        pass


def _in_a_forked_worker() -> tuple[int, list[str]]:
    import threading

    time.sleep(0.6)  # several of the parent's renewal intervals
    return len(lease.RENEWER._held), [t.name for t in threading.enumerate()]


def test_forked_workers_neither_renew_nor_release_their_parents_locks(
    posix_place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgkura.physical.units import forked_workers

    monkeypatch.setattr(locks, "LEASE_SECONDS", 0.5)  # renewed every 0.1 s
    with locks.backup_lock(posix_place.repo, "main"):
        held = posix_place.record()
        with forked_workers(1) as pool:
            in_child, threads = pool.submit(_in_a_forked_worker).result()
        assert in_child == 0 and "pgkura-lease" not in threads
        time.sleep(0.3)
        after = posix_place.record()
        assert after is not None and held is not None
        assert after["token"] == held["token"] and after["pid"] == os.getpid()
        assert after["expires"] > held["expires"]  # the parent still renews it
    assert posix_place.record() is None


def test_a_renewal_racing_the_release_never_writes_the_lock_back(
    posix_place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewed every 10 ms while taken and released over and over: once released, no lock of
    nobody is left behind by a renewal that read it just before the release deleted it."""
    monkeypatch.setattr(locks, "LEASE_SECONDS", 0.05)
    for _ in range(30):
        with locks.backup_lock(posix_place.repo, "main"):
            time.sleep(0.01 + 0.01 * (_ % 3))
        time.sleep(0.03)
        assert list(posix_place.repo.storage.list("locks/")) == []


def test_a_lock_record_holds_what_the_format_documents(posix_place: Place) -> None:
    with locks.backup_lock(posix_place.repo, "main"):
        record = posix_place.record()
    assert record is not None
    assert list(record) == [
        "host", "pid", "command", "created", "token", "lease_seconds", "renewed", "expires",
    ]  # fmt: skip
    assert record["host"] == locks.HOST and record["pid"] == os.getpid()
    assert record["lease_seconds"] == locks.LEASE_SECONDS
    assert record["created"] == record["renewed"] < record["expires"]


def test_a_backup_whose_lock_was_taken_over_is_not_committed(posix_place: Place) -> None:
    """A process stopped past its lease loses its lock; a cleanup may then have deleted its
    packs, so its manifest must not be written."""
    from pgkura.repository.manifest import list_backup_ids, write_manifest
    from test_repository import _manifest

    repo = posix_place.repo
    with locks.backup_lock(repo, "main"):
        write_manifest(repo, _manifest("20260101T000000000Z"))  # still ours: committed
        # Another host took the lock over (a record of its own, with its own token).
        taker = lease.LockRecord.taken_now("elsewhere", 1, "backup", 300.0)
        repo.storage.put(layout.lock_key("backup-main"), taker.to_json())
        with pytest.raises(LockedError, match=r"is not recorded: the lock .* was taken over"):
            write_manifest(repo, _manifest("20260102T000000000Z"))
    assert list_backup_ids(repo, "main") == ["20260101T000000000Z"]
    assert posix_place.record() == json.loads(taker.to_json())  # the taker's lock stays
