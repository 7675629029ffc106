"""The repository's typed stores without PostgreSQL: WAL objects (repo.wal) and drill records
(repo.drills), the only code that names, seals and reads them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.repo import Repository
from pgkura.repository.walstore import SealError
from pgkura.storage.posix import PosixStorage

SEGMENT = "000000010000000000000003"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.create(PosixStorage(str(tmp_path / "repo")))


def test_a_wal_file_is_stored_once_sealed_and_read_back_verified(repo: Repository) -> None:
    raw = os.urandom(8192) * 4
    digest = repo.digest(raw)
    stored = repo.wal.put_if_absent("main", SEGMENT, raw, digest)
    assert stored is not None and stored < len(raw)  # compressed: it repeats itself
    assert repo.wal.put_if_absent("main", SEGMENT, b"other", repo.digest(b"other")) is None
    assert repo.wal.exists("main", SEGMENT)
    assert not repo.wal.exists("main@2", SEGMENT)  # another generation's archive
    found = repo.wal.get("main", SEGMENT)
    assert found.key == layout.wal_key("main", SEGMENT)
    assert found.size == stored
    assert found.claims(digest) and not found.claims(repo.digest(b"other"))
    assert found.content(digest) == raw
    pieces: list[bytes] = []
    found.write_to(lambda piece: pieces.append(bytes(piece)))
    assert b"".join(pieces) == raw
    found.check()
    # What is stored is the sealed object: the envelope's header, then the content.
    assert repo.storage.get(found.key)[:4] == b"PGK1"


def test_a_missing_wal_file_is_absent_not_damaged(repo: Repository) -> None:
    assert repo.wal.find("main", SEGMENT) is None
    with pytest.raises(ObjectNotFound):
        repo.wal.get("main", SEGMENT)


def test_a_damaged_wal_object_still_claims_its_content_but_does_not_unseal(
    repo: Repository,
) -> None:
    raw = os.urandom(20000)
    digest = repo.digest(raw)
    repo.wal.put_if_absent("main", SEGMENT, raw, digest)
    key = layout.wal_key("main", SEGMENT)
    data = bytearray(repo.storage.get(key))
    data[-1] ^= 0xFF
    repo.storage.put(key, bytes(data))
    damaged = repo.wal.get("main", SEGMENT)
    assert damaged.claims(digest)
    with pytest.raises(SealError):
        damaged.content()
    with pytest.raises(SealError):
        damaged.check()
    assert repo.wal.replace("main", SEGMENT, raw, digest) > 0
    assert repo.wal.get("main", SEGMENT).content() == raw


def test_the_archive_lists_names_per_timeline(repo: Repository) -> None:
    names = [SEGMENT, "000000020000000000000004", "00000002.history"]
    for name in names:
        repo.wal.put_if_absent("main", name, name.encode(), repo.digest(name.encode()))
    assert sorted(f.name for f in repo.wal.list("main")) == sorted(names)
    assert [f.name for f in repo.wal.list("main", "00000002")] == ["000000020000000000000004"]
    assert all(f.size > 0 for f in repo.wal.list("main"))
    assert list(repo.wal.list("other")) == []


def test_a_drill_record_replaces_the_last_and_summarises(repo: Repository) -> None:
    assert repo.drills.latest("main", "B1") is None
    assert repo.drills.summary("main", "B1") is None
    repo.drills.record("main", "B1", {"backup": "B1", "passed": False, "finished": "t1"})
    repo.drills.record("main", "B1", {"backup": "B1", "passed": True, "finished": "t2"})
    assert repo.drills.latest("main", "B1") == {"backup": "B1", "passed": True, "finished": "t2"}
    assert repo.drills.summary("main", "B1") == {"when": "t2", "passed": True}
    assert repo.drills.summary("other", "B1") is None
    repo.storage.put(layout.drill_key("main", "B2"), b"not json")
    assert repo.drills.latest("main", "B2") is None
    repo.drills.delete("main", "B1")
    assert repo.drills.latest("main", "B1") is None


def test_the_envelope_is_the_repositorys(repo: Repository) -> None:
    raw = b"x" * 70000
    sealed = repo.seal(raw)
    assert sealed.digest == repo.digest(raw)
    assert repo.unseal(sealed.data, sealed.digest) == raw
    with pytest.raises(SealError):
        repo.unseal(sealed.data, repo.digest(b"y"))
    assert repo.location == repo.storage.location
    assert repo.workers_for(4) == 4


def _locks(repo: Repository) -> list[str]:
    return sorted(o.key for o in repo.storage.list("locks/"))


def test_a_command_holds_the_lock_it_declares_and_releases_it(tmp_path: Path) -> None:
    from pgkura.commands import locked_repository
    from pgkura.config import load_config
    from pgkura.errors import LockedError

    location = tmp_path / "repo"
    Repository.create(PosixStorage(str(location)))
    cfg = load_config({"repo": str(location), "stanza": "main"}, None, {})
    with locked_repository(cfg, "none") as repo:
        assert _locks(repo) == []
    with locked_repository(cfg, "shared") as repo:
        (held,) = _locks(repo)
        assert held.startswith("locks/shared-")
        # gc waits for no reader (two-phase deletion), but one maintenance at a time.
        with (
            locked_repository(cfg, "maintenance"),
            pytest.raises(LockedError),
            locked_repository(cfg, "maintenance"),
        ):
            pass
    assert _locks(repo) == []
    with pytest.raises(RuntimeError), locked_repository(cfg, "backup") as repo:
        assert "locks/backup-main.lock" in _locks(repo)
        raise RuntimeError("the command failed")
    assert _locks(repo) == []  # released on the error too
    with locked_repository(cfg, "maintenance") as repo:
        assert _locks(repo) == ["locks/exclusive.lock"]  # the old exclusive lock's key
    with pytest.raises(ValueError, match="unknown lock"):
        locked_repository(cfg, "bogus")
