"""The storage contract, run against every backend (restic's way): what the repository relies on.

The S3 backend runs against a real SeaweedFS (the session's, one prefix of its bucket per test).
"""

from __future__ import annotations

import errno
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgkura.errors import ObjectNotFound, StorageError
from pgkura.storage.base import Storage
from pgkura.storage.posix import PosixStorage


@pytest.fixture(params=["posix", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "posix":
        yield PosixStorage(tmp_path / "store")
    else:
        from seaweed import S3Repo

        server = request.getfixturevalue("seaweedfs")
        name = "".join(c if c.isalnum() else "-" for c in request.node.name)
        yield S3Repo(
            server, tmp_path / "s3", f"contract/{name}-{time.time_ns()}", owner=None
        ).store()


def test_put_if_absent_writes_once_and_never_overwrites(storage: Storage) -> None:
    assert storage.put_if_absent("a/b/c", b"first")
    assert not storage.put_if_absent("a/b/c", b"second")
    assert storage.get("a/b/c") == b"first"


def test_put_replaces_atomically(storage: Storage) -> None:
    storage.put("k", b"one")
    storage.put("k", b"two two")
    assert storage.get("k") == b"two two"
    assert storage.size("k") == 7


def test_get_byte_ranges(storage: Storage) -> None:
    storage.put("r", bytes(range(100)))
    assert storage.get("r", 10, 5) == bytes(range(10, 15))
    assert storage.get("r", 95) == bytes(range(95, 100))
    assert storage.get("r", 0, 0) == b""


def test_missing_objects(storage: Storage) -> None:
    """Absence is reported one way by every backend: ObjectNotFound from get (a StorageError,
    and a KeyError for older callers), None from size, nothing from delete and list."""
    with pytest.raises(ObjectNotFound, match="nope") as caught:
        storage.get("nope")
    assert isinstance(caught.value, StorageError) and isinstance(caught.value, KeyError)
    assert storage.location in str(caught.value)
    with pytest.raises(ObjectNotFound):
        storage.get("dir/nope", 3, 10)
    assert storage.size("nope") is None
    assert not storage.exists("nope")
    storage.delete("nope")  # absent is not an error
    storage.delete_many(["nope", "dir/nope"])
    assert list(storage.list("nope")) == []


def test_list_by_prefix(storage: Storage) -> None:
    for key in ["snap/main/1", "snap/main/2", "snap/other/1", "snapshot", "x/y"]:
        storage.put(key, key.encode())
    assert sorted(o.key for o in storage.list("snap/main/")) == ["snap/main/1", "snap/main/2"]
    assert sorted(o.key for o in storage.list("snap")) == [
        "snap/main/1",
        "snap/main/2",
        "snap/other/1",
        "snapshot",
    ]
    assert {o.key: o.size for o in storage.list("x/")} == {"x/y": 3}
    assert list(storage.list("absent/")) == []


def test_delete(storage: Storage) -> None:
    storage.put("d", b"x")
    storage.delete("d")
    assert not storage.exists("d")


def test_keys_cannot_escape(storage: Storage) -> None:
    for bad in ["../x", "/etc/passwd", "a/../../b"]:
        with pytest.raises(ValueError):
            storage.put(bad, b"x")
        with pytest.raises(ValueError):
            storage.get(bad)


def test_concurrent_put_if_absent_has_exactly_one_winner(storage: Storage) -> None:
    """Locks and immutable objects rely on it: of writers racing for one key, one wins and
    the object is the winner's, whole."""
    writers = 8
    barrier = threading.Barrier(writers)
    won: list[int] = []

    def write(n: int) -> None:
        barrier.wait()
        if storage.put_if_absent("locks/race", f"writer {n} ".encode() * 1000):
            won.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert storage.get("locks/race") == f"writer {won[0]} ".encode() * 1000


def test_batch_delete_removes_what_it_names_and_ignores_the_absent(storage: Storage) -> None:
    for n in range(5):
        storage.put(f"packs/{n}", b"x")
    storage.delete_many(["packs/0", "packs/1", "packs/3", "packs/never-there"])
    assert sorted(o.key for o in storage.list("packs/")) == ["packs/2", "packs/4"]
    storage.delete_many([])


def test_listing_more_than_a_page_gives_every_key_with_size_and_time(storage: Storage) -> None:
    """S3 lists at most 1000 keys a request: the listing must follow the continuation; and
    a batch delete of more than 1000 keys must send several requests."""
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"many/{n:05d}" for n in range(1100)]
    before = time.time()
    with ThreadPoolExecutor(storage.workers_for(16)) as pool:
        list(pool.map(lambda k: storage.put(k, k.encode()), keys))
    listed = {o.key: o for o in storage.list("many/")}
    assert sorted(listed) == keys
    assert all(o.size == 10 for o in listed.values())
    assert all(
        o.mtime is not None and before - 5 < o.mtime < time.time() + 5 for o in listed.values()
    )
    assert sorted(o.key for o in storage.list("many/0109")) == [f"many/0109{n}" for n in range(10)]
    storage.delete_many(keys)
    assert list(storage.list("many/")) == []


def test_ranged_reads_at_the_end_of_an_object(storage: Storage) -> None:
    """A pack's trailer is read from its end: ranges that reach or pass it are cut short."""
    storage.put("p", bytes(range(50)))
    assert storage.get("p", 47, 3) == bytes([47, 48, 49])
    assert storage.get("p", 45, 100) == bytes(range(45, 50))
    assert storage.get("p", 50) == b""
    assert storage.get("p", 50, 10) == b""
    with pytest.raises(ObjectNotFound):
        storage.get("absent", 10, 5)


def test_objects_from_memoryviews_and_empty_objects(storage: Storage) -> None:
    storage.put("e", b"")
    assert storage.get("e") == b"" and storage.size("e") == 0
    assert storage.put_if_absent("m", memoryview(b"from a view"))  # type: ignore[arg-type]
    assert storage.get("m") == b"from a view"


def test_the_store_says_how_many_requests_it_takes_at_once(storage: Storage) -> None:
    """Engines size their pools with workers_for: never above the store's limit, never zero."""
    limit = storage.max_connections
    assert limit is None or 1 <= limit <= 64
    assert storage.workers_for(1) == 1
    assert storage.workers_for(0) == 1
    assert storage.workers_for(8) == (8 if limit is None else min(8, limit))
    assert storage.workers_for(10_000) == (10_000 if limit is None else limit)


def test_the_connection_limit_of_s3_is_a_setting(tmp_path: Path) -> None:
    from pgkura.config import load_config
    from pgkura.errors import ConfigError
    from pgkura.storage.s3_config import S3Options

    assert S3Options().max_connections == 16
    config = tmp_path / "pgkura.toml"
    config.write_text("s3-max-connections = 3\n")
    assert S3Options.from_config(load_config({}, str(config), environ={})).max_connections == 3
    with pytest.raises(ConfigError, match="at least 1"):
        S3Options(max_connections=0)


def test_every_other_failure_is_a_storage_error_that_names_the_key(
    broken: Storage,
) -> None:
    """A store that cannot be used (posix: its root is a file; S3: wrong credentials) fails
    every operation with StorageError, never with ObjectNotFound and never with the backend's
    own exception (an OSError, an obstore error)."""
    operations = {
        "get": lambda: broken.get("wal/x"),
        "ranged get": lambda: broken.get("wal/x", 1, 2),
        "put": lambda: broken.put("wal/x", b"x"),
        "put_if_absent": lambda: broken.put_if_absent("wal/x", b"x"),
        "size": lambda: broken.size("wal/x"),
        "list": lambda: list(broken.list("wal/")),
    }
    for what, operation in operations.items():
        with pytest.raises(StorageError) as caught:
            operation()
        assert not isinstance(caught.value, ObjectNotFound), what
        assert not isinstance(caught.value, OSError), what
        assert broken.location in caught.value.message, what
        assert caught.value.hint, what
    with pytest.raises(StorageError, match="wal/x"):
        broken.get("wal/x")


@pytest.fixture(params=["posix", "s3"])
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "posix":
        root = tmp_path / "a-file"
        root.write_bytes(b"not a directory")
        return PosixStorage(root)
    from pgkura.storage.s3 import S3Storage
    from pgkura.storage.s3_config import S3Options
    from seaweed import S3Repo

    server = request.getfixturevalue("seaweedfs")
    repo = S3Repo(server, tmp_path / "s3", "contract/broken", owner=None)
    repo.credentials.write_text(
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n"
    )
    options = S3Options(
        endpoint=server.endpoint, credentials_file=str(repo.credentials), retry_seconds=2
    )
    return S3Storage(repo.url, options)


def test_posix_leaves_no_temporary_files(tmp_path: Path) -> None:
    storage = PosixStorage(tmp_path / "s")
    storage.put("a/b", b"1")
    storage.put_if_absent("a/b", b"2")
    storage.put_if_absent("a/c", b"3")
    names = sorted(p.name for p in (tmp_path / "s" / "a").iterdir())
    assert names == ["b", "c"]


def test_a_repository_behind_a_link_stays_the_same_while_the_link_moves(tmp_path: Path) -> None:
    from pgkura.storage import open_storage

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "current"
    link.symlink_to(first)
    store = open_storage(str(link))
    link.unlink()
    link.symlink_to(second)  # re-pointed while a command runs
    assert store.put_if_absent("wal/x", b"data")
    assert (first / "wal" / "x").read_bytes() == b"data"
    assert not (second / "wal").exists()


def test_a_posix_repository_that_is_gone_is_not_made_anew(tmp_path: Path) -> None:
    """A new repository's directory is made by its first write; one that existed and is gone
    (an unmounted file system, a removed directory) is not recreated, empty, by a later write,
    such as a background archive pusher's."""
    fresh = PosixStorage(tmp_path / "new" / "repo")
    assert fresh.put_if_absent("wal/a/b", b"x")
    assert (tmp_path / "new" / "repo" / "wal" / "a" / "b").read_bytes() == b"x"

    root = tmp_path / "repo"
    root.mkdir()
    storage = PosixStorage(root)
    storage.put("a/b", b"y")
    shutil.rmtree(root)
    with pytest.raises(StorageError, match="gone") as caught:
        storage.put_if_absent("wal/c", b"z")
    assert caught.value.errno == errno.ENOENT and not isinstance(caught.value, ObjectNotFound)
    assert not root.exists()


def test_a_posix_location_that_is_a_file_is_not_a_repository(tmp_path: Path) -> None:
    """The file system's refusal (ENOTDIR) reaches the repository as a StorageError with its
    errno, which it reports as "not a repository" (exit code 4), as before the contract."""
    from pgkura.errors import NotARepositoryError
    from pgkura.repository.repo import Repository

    location = tmp_path / "a-file"
    location.write_bytes(b"not a repository")
    with pytest.raises(NotARepositoryError, match="cannot read the repository") as caught:
        Repository.open(PosixStorage(location))
    assert caught.value.exit_code == 4


def test_a_listed_time_plus_the_stores_resolution_is_never_before_the_write(
    storage: Storage,
) -> None:
    """S3 keeps Last-Modified to the second: a restore's check that a --to-time is not past
    the end of the archived WAL must not take the truncated time for the time of the write."""
    while time.time() % 1 < 0.3 or time.time() % 1 > 0.7:  # mid-second: truncation shows
        time.sleep(0.05)
    before = time.time()
    storage.put("timed", b"x")
    (listed,) = storage.list("timed")
    assert listed.mtime is not None
    assert listed.mtime + storage.mtime_resolution >= before, (listed.mtime, before)
    assert listed.mtime <= time.time() + 1  # the same clock, not a day off
