"""The repository layer without PostgreSQL: sealing, packs, index, manifests, locks, config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pgkura.codec import compression
from pgkura.codec.compression import parse_codec
from pgkura.config import load_config
from pgkura.errors import (
    BackupNotFoundError,
    ConfigError,
    CorruptionError,
    LockedError,
    NotARepositoryError,
    RepositoryError,
)
from pgkura.repository.blocks import BlockIndex, BlockReader, PackWriter
from pgkura.repository.locks import backup_lock, maintenance_lock
from pgkura.repository.manifest import (
    FileEntry,
    Manifest,
    read_manifest,
    resolve_backup_id,
    write_manifest,
)
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import HEADER, HEADER_SIZE, SealError, seal, unseal, unseal_to
from pgkura.storage.posix import PosixStorage


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.create(PosixStorage(tmp_path / "repo"))


def test_seal_round_trip_and_damage_detection() -> None:
    key = os.urandom(32)
    raw = b"postgres page " * 1000
    for spec in ["zstd:3", "lz4", "none"]:
        sealed = seal(raw, parse_codec(spec), key)
        assert unseal(sealed.data, key) == raw
        damaged = bytearray(sealed.data)
        damaged[-1] ^= 0xFF
        with pytest.raises(SealError):
            unseal(bytes(damaged), key)
        with pytest.raises(SealError):
            unseal(sealed.data[:-1], key)
    with pytest.raises(SealError):
        unseal(seal(raw, parse_codec("zstd"), key).data, os.urandom(32))


def test_a_large_object_is_several_frames_and_reads_back_either_way() -> None:
    """A WAL segment is compressed as independent frames by two threads; unseal and the
    piecewise unseal_to read it, and objects of one frame (written before) still read."""
    key = os.urandom(32)
    raw = b"".join(os.urandom(64) * 512 for _ in range(160)) + b"tail"  # 5 MiB and a bit
    sealed = seal(raw, parse_codec("zstd:3"), key)
    payload = memoryview(sealed.data)[HEADER_SIZE:]
    assert compression.zstd().frame_content_size(payload) == compression.FRAME_BYTES
    assert unseal(sealed.data, key) == raw
    pieces: list[bytes] = []
    unseal_to(sealed.data, key, lambda piece: pieces.append(bytes(piece)))
    assert b"".join(pieces) == raw

    one_frame = compression.zstd().ZstdCompressor(level=3).compress(raw)
    header = HEADER.pack(b"PGK1", compression.ZSTD, 0, 0, len(raw), len(one_frame),
                         sealed.digest)  # fmt: skip
    assert unseal(header + one_frame, key) == raw
    unseal_to(header + one_frame, key, lambda piece: None)

    for damage in (len(payload) // 3, -5):  # in a middle frame; in the last one
        damaged = bytearray(sealed.data)
        damaged[damage] ^= 0xFF
        with pytest.raises(SealError):
            unseal(bytes(damaged), key)
        with pytest.raises(SealError):
            unseal_to(bytes(damaged), key, lambda piece: None)


def test_blocks_are_stored_once_and_read_back(repo: Repository) -> None:
    index = BlockIndex(repo).load()
    writer = PackWriter(index)
    a, added_a = writer.add(b"a" * 65536)
    b, added_b = writer.add(b"b" * 100)
    again, added_again = writer.add(b"a" * 65536)
    assert again == a and added_a > 0 and added_b > 0 and added_again == 0
    writer.flush()
    reloaded = BlockIndex(repo).load()
    assert len(reloaded) == 2
    reader = BlockReader(reloaded)
    assert reader.read(a) == b"a" * 65536
    assert reader.read(b) == b"b" * 100
    # A second writer in a new session finds the blocks already known.
    _, added = PackWriter(reloaded).add(b"b" * 100)
    assert added == 0


def test_damaged_pack_is_reported_with_its_name(repo: Repository, tmp_path: Path) -> None:
    index = BlockIndex(repo).load()
    writer = PackWriter(index)
    block_id, _ = writer.add(os.urandom(5000))
    writer.flush()
    (pack,) = list((tmp_path / "repo" / "packs").rglob("*"))[-1:]
    data = bytearray(pack.read_bytes())
    data[100] ^= 1
    pack.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="damaged"):
        BlockReader(BlockIndex(repo).load()).read(block_id, "base/1/1234")


def _manifest(backup_id: str) -> Manifest:
    return Manifest(
        id=backup_id,
        stanza="main",
        kind="physical",
        method="offline",
        started="2026-01-01T00:00:00.000Z",
        finished="2026-01-01T00:00:01.000Z",
        pg_version=15,
        system_identifier="123",
        files=(FileEntry("PG_VERSION", "file", 0o600, 3, 1.0, ("ab",), "00000000"),),
    )


def test_manifests_commit_once_and_resolve_latest(repo: Repository) -> None:
    write_manifest(repo, _manifest("20260101T000000000Z"))
    write_manifest(repo, _manifest("20260102T000000000Z"))
    with pytest.raises(RepositoryError):
        write_manifest(repo, _manifest("20260102T000000000Z"))
    assert resolve_backup_id(repo, "main", "latest") == "20260102T000000000Z"
    assert read_manifest(repo, "main", "20260101T000000000Z").files[0].path == "PG_VERSION"
    with pytest.raises(BackupNotFoundError, match="no backup 'nope'"):
        resolve_backup_id(repo, "main", "nope")


def test_open_refuses_what_is_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepositoryError, match="is not a pgkura repository") as exc:
        Repository.open(PosixStorage(tmp_path / "missing"))
    assert exc.value.hint is not None and "init" in exc.value.hint
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(RepositoryError, match="not empty"):
        Repository.create(PosixStorage(tmp_path / "other"))


def test_stanza_is_bound_to_one_cluster(repo: Repository) -> None:
    repo.ensure_stanza("main", "111", 15)
    repo.ensure_stanza("main", "111", 15)
    with pytest.raises(RepositoryError, match="system identifier 111"):
        repo.ensure_stanza("main", "222", 15)


def test_stanza_generations_after_an_upgrade(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match="nothing to upgrade"):
        repo.upgrade_stanza("main", "222", 18)
    repo.ensure_stanza("main", "111", 16)
    assert repo.wal_archive("main") == "main"
    info, added = repo.upgrade_stanza("main", "222", 18)
    assert added and [(g.number, g.pg_version) for g in info.generations] == [(1, 16), (2, 18)]
    assert repo.upgrade_stanza("main", "222", 18)[1] is False  # again: nothing changes
    with pytest.raises(RepositoryError, match="never goes back"):
        repo.upgrade_stanza("main", "111", 16)
    # Only the current generation takes backups and WAL; each has its own archive.
    repo.ensure_stanza("main", "222", 18)
    with pytest.raises(RepositoryError, match=r"generation 1 .* upgraded to generation 2"):
        repo.ensure_stanza("main", "111", 16)
    with pytest.raises(RepositoryError, match="belongs to the cluster") as other:
        repo.ensure_stanza("main", "333", 18)
    assert other.value.hint is not None and "stanza upgrade" in other.value.hint
    assert (repo.wal_archive("main"), repo.wal_archive("main", "111")) == ("main@2", "main")
    with pytest.raises(RepositoryError, match="not one of stanza 'main'"):
        repo.wal_archive("main", "333")


def test_a_version_1_repository_is_read_and_becomes_version_2_at_its_first_upgrade(
    tmp_path: Path,
) -> None:
    storage = PosixStorage(tmp_path / "old")
    Repository.create(storage)
    config = json.loads((tmp_path / "old" / "pgkura.json").read_text())
    (tmp_path / "old" / "pgkura.json").write_text(json.dumps({**config, "version": 1}))
    (tmp_path / "old" / "stanzas").mkdir()
    record = {"name": "main", "system_identifier": "111", "pg_version": 15, "created": "2026"}
    (tmp_path / "old" / "stanzas" / "main.json").write_text(json.dumps(record))
    repo = Repository.open(storage)
    info = repo.stanza("main")
    assert info is not None and [g.number for g in info.generations] == [1]
    assert repo.wal_archive("main", "111") == "main"
    repo.upgrade_stanza("main", "222", 18)
    assert json.loads((tmp_path / "old" / "pgkura.json").read_text())["version"] == 2
    assert Repository.open(storage).stanza("main").pg_version == 18  # type: ignore[union-attr]


def test_backup_lock_excludes_a_second_writer_but_not_maintenance(repo: Repository) -> None:
    with backup_lock(repo, "main"):
        with pytest.raises(LockedError), backup_lock(repo, "main"):
            pass
        with maintenance_lock(repo):  # gc runs beside a backup (two-phase delete)
            with pytest.raises(LockedError), maintenance_lock(repo):
                pass
            with backup_lock(repo, "other"):  # and a backup beside gc
                pass
    assert list(repo.storage.list("locks/")) == []


def test_stale_lock_of_a_dead_process_is_taken_over(repo: Repository) -> None:
    import socket

    record = {"host": socket.gethostname(), "pid": 2**22 + 12345, "command": "x", "created": ""}
    repo.storage.put("locks/backup-main.lock", json.dumps(record).encode())
    with backup_lock(repo, "main"):
        pass


def test_config_precedence_and_unknown_keys(tmp_path: Path) -> None:
    conf = tmp_path / "pgkura.toml"
    conf.write_text('repo = "/from/file"\nstanza = "filestanza"\npgdata = "/file/pgdata"\n')
    cfg = load_config({"repo": "/from/flag"}, str(conf), {"PGKURA_STANZA": "envstanza"})
    assert (cfg.repo, cfg.stanza, cfg.pgdata) == ("/from/flag", "envstanza", "/file/pgdata")
    conf.write_text('repo = "/x"\nbogus = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_config({}, str(conf), {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, str(tmp_path / "missing.toml"), {})
    with pytest.raises(ConfigError, match="password"):
        load_config({"dbconn": "host=x password=secret"}, None, {})


def test_a_directory_with_other_unreadable_things_is_no_repository_and_says_so(
    work_dir: Path,
) -> None:
    """Only pgkura's own directories are looked into: a directory that holds other things,
    some of them unreadable to pgkura's user (as /tmp does), is simply not a repository
    (exit 4), not a listing error; one with pgkura's objects but no pgkura.json has lost it."""
    from pgutil import chown
    from runner import run_pgkura

    other = work_dir / "other"
    (other / "private").mkdir(parents=True)
    (other / "private" / "x").write_text("x")
    chown(other)
    (other / "private").chmod(0)  # root's, 0700 when root: unreadable to pgkura's user either way
    result = run_pgkura("--repo", str(other), "info", check=False)
    assert result.returncode == 4, result.stderr
    assert f"{other} is not a pgkura repository" in result.stderr
    (other / "packs" / "ab").mkdir(parents=True)
    (other / "packs" / "ab" / "cd").write_bytes(b"pack")
    chown(other / "packs")
    chown(other / "packs" / "ab")
    result = run_pgkura("--repo", str(other), "info", check=False)
    assert result.returncode == 4 and "repository's objects (packs/ab/cd)" in result.stderr
