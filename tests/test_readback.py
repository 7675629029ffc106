"""Reading back stored files without PostgreSQL: the work split into units across worker
processes, per-range CRC-32Cs joined, a block shared by several files read once, and damage
named in every file that holds it."""

from __future__ import annotations

from pathlib import Path

import google_crc32c
import pytest

from pgkura.physical import readback
from pgkura.physical.readback import FileToCheck, check_files
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, BlockReader, PackWriter
from pgkura.repository.repo import Repository
from pgkura.storage.posix import PosixStorage

BLOCK = 65536


def _store(repo: Repository, files: dict[str, list[bytes]]) -> list[FileToCheck]:
    index = BlockIndex(repo).load()
    writer = PackWriter(index)
    out = []
    for path, blocks in files.items():
        ids = tuple(writer.add(b)[0].hex() for b in blocks)
        crc = f"{google_crc32c.value(b''.join(blocks)):08x}"
        out.append(FileToCheck(path, sum(map(len, blocks)), crc, ids))
    writer.flush()
    return out


def _content(n: int) -> bytes:
    return bytes([n % 251]) * 17 + n.to_bytes(8, "little") * (BLOCK // 8 - 3)


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Repository, list[FileToCheck]]:
    monkeypatch.setattr(readback, "UNIT_BYTES", 3 * BLOCK)  # big files span several units
    repo = Repository.create(PosixStorage(tmp_path / "repo"))
    x, y, z = _content(1), _content(2), b"tail"
    files = _store(
        repo,
        {
            "a": [x, y, x, z],  # x twice in one file
            "b": [y, _content(3), z],  # y and z shared with a
            "empty": [],
            "big": [_content(10 + n) for n in range(8)] + [b"short end"],
            "again": [x],  # only a shared block
        },
    )
    return repo, files


@pytest.mark.parametrize("jobs", [1, 2])
def test_files_sharing_blocks_are_read_back_whole(
    stored: tuple[Repository, list[FileToCheck]], jobs: int
) -> None:
    repo, files = stored
    results = check_files(BlockReader(BlockIndex(repo).load()), files, jobs)
    for f, result in zip(files, results, strict=True):
        assert result.problems(f) == []
        assert result.size == f.size and f"{result.crc32c:08x}" == f.crc32c


def test_a_damaged_shared_block_is_named_in_every_file_that_holds_it(
    stored: tuple[Repository, list[FileToCheck]], tmp_path: Path
) -> None:
    repo, files = stored
    index = BlockIndex(repo).load()
    shared = bytes.fromhex(files[1].blocks[0])  # y: in a and in b
    loc = index.get(shared)
    assert loc is not None
    pack = tmp_path / "repo" / layout.pack_key(loc.pack_id)
    data = bytearray(pack.read_bytes())
    data[loc.offset + loc.length - 1] ^= 0xFF
    pack.write_bytes(bytes(data))
    problems = {
        f.path: result.problems(f)
        for f, result in zip(files, check_files(BlockReader(index), files, 2), strict=True)
    }
    assert problems["a"] and problems["b"]
    assert all(p == [] for path, p in problems.items() if path not in ("a", "b"))
    assert any(f"block {shared.hex()[:16]}" in p for p in problems["a"] + problems["b"])
    assert any("shared with another file" in p for p in problems["a"] + problems["b"])
