"""The restore writer without PostgreSQL: big files cut into ranges written by several workers
at their offsets, O_DIRECT from aligned buffers with the unaligned tail through the page cache,
and a file whose blocks are not all full-sized (a relation that shrank and grew while an online
backup read it) written again in order. Each way must give back the very bytes stored."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pgkura.physical import restore as writer
from pgkura.physical import restore_direct, restore_io
from pgkura.physical.restore import PhysicalRestorer, RestorePlan
from pgkura.repository.blocks import BlockIndex, PackWriter
from pgkura.repository.manifest import FileEntry, Manifest
from pgkura.repository.repo import Repository
from pgkura.storage.posix import PosixStorage

BLOCK = 64 * 1024


def block(n: int, size: int = BLOCK) -> bytes:
    """Distinct, compressible content: a block's number repeated."""
    return (struct.pack("<Q", n) * (size // 8 + 1))[:size]


def stored(writer_: PackWriter, name: str, pieces: list[bytes]) -> tuple[FileEntry, bytes]:
    ids = [writer_.add(p)[0].hex() for p in pieces]
    content = b"".join(pieces)
    return FileEntry(name, "file", 0o600, len(content), 1.7e9, tuple(ids)), content


class UnforkableStorage(PosixStorage):
    """A store that worker processes may not use, as S3's: restore's parent fetches for them
    (physical/restore_fetch.py)."""

    fork_safe = False


@pytest.mark.parametrize(
    ("jobs", "forkable"),
    [(1, True), (3, True), (3, False)],
    ids=["threads", "processes", "processes-fetched"],
)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_ranges_direct_tails_and_irregular_files_restore_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool, jobs: int, forkable: bool
) -> None:
    # Small thresholds, so that files of a few MiB take every path.
    monkeypatch.setattr(writer, "RANGE_BYTES", 4 * BLOCK)
    monkeypatch.setattr(writer, "FETCHED_RANGE_BYTES", 4 * BLOCK)
    monkeypatch.setattr(writer, "DIRECT_MIN", 2 * BLOCK)
    monkeypatch.setattr(restore_direct, "DIRECT_BYTES", 2 * BLOCK)
    monkeypatch.setattr(writer, "UNIT_BYTES", 3 * BLOCK)  # several units for the processes
    store = (PosixStorage if forkable else UnforkableStorage)(tmp_path / "repo")
    repo = Repository.create(store, block_size=BLOCK)
    pack = PackWriter(BlockIndex(repo).load())
    files = [
        # 37 full blocks: ten ranges, each written by whichever worker is free
        stored(pack, "base/1/16384", [block(n) for n in range(37)]),
        # a tail that is no multiple of 4096: through the page cache when O_DIRECT is on
        stored(pack, "base/1/16385", [block(n) for n in range(9)] + [block(99, 1000)]),
        # a short block in the middle: cannot be placed by offset
        stored(pack, "base/1/16386", [block(1), block(2, 100), *(block(n) for n in range(8))]),
        stored(pack, "base/1/PG_VERSION", [b"15\n"]),
        stored(pack, "base/1/empty", []),
    ]
    pack.flush()
    manifest = Manifest(
        id="t", stanza="main", kind="physical", method="offline", started="", finished="",
        pg_version=15, system_identifier="1",
        files=(FileEntry("base", "dir", 0o700), FileEntry("base/1", "dir", 0o700),
               *(entry for entry, _ in files)),
    )  # fmt: skip
    target = tmp_path / "target"
    restorer = PhysicalRestorer(
        BlockIndex(repo).load(), manifest, RestorePlan(target, {}), jobs=jobs, delta=False,
        direct=direct,
    )  # fmt: skip
    stats = restorer.run()
    for entry, content in files:
        assert (target / entry.path).read_bytes() == content, entry.path
    assert stats.files == len(files)
    assert stats.bytes_written == sum(len(c) for _, c in files)
    irregular = [t.entry.path for t in restorer._targets if t.irregular]
    assert irregular == ["base/1/16386"]
    if jobs == 1:
        # O_DIRECT was taken where asked for (this file system supports it: ext4, tmpfs from
        # Linux 6.6); worker processes decide it in their own copies of the targets.
        assert {t.entry.path for t in restorer._targets if t.direct} == (
            {"base/1/16384", "base/1/16385", "base/1/16386"} if direct else set()
        )


def test_a_direct_write_the_file_system_refuses_goes_through_the_page_cache(
    tmp_path: Path,
) -> None:
    """A file system may take O_DIRECT and then refuse a write whose alignment does not suit
    it (EINVAL): the write is done through the page cache instead, not failed."""
    import os

    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert writer._set_direct(fd, True)
        data = bytearray(b"x" * 8193)  # no length multiple of any sector: EINVAL under O_DIRECT
        with pytest.raises(OSError):
            os.pwrite(fd, data, 0)
        restore_io.pwrite_direct(fd, memoryview(data), 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(data)
