"""The storage contract, run against every backend (restic's way): what the repository relies on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgkura.storage.base import Storage
from pgkura.storage.posix import PosixStorage


@pytest.fixture(params=["posix"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "posix":
        yield PosixStorage(tmp_path / "store")


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
    with pytest.raises(KeyError):
        storage.get("nope")
    assert storage.size("nope") is None
    assert not storage.exists("nope")
    storage.delete("nope")  # absent is not an error


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
    with pytest.raises(FileNotFoundError, match="gone"):
        storage.put_if_absent("wal/c", b"z")
    assert not root.exists()
