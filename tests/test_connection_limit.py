"""Engines never keep more requests in flight than the store takes (``max_connections``),
whatever --jobs asks: checked on a real SeaweedFS, with a store that counts the requests it is
serving at once (each held a little longer, so that overlapping ones do overlap)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pgkura.physical.store import FileStorer, PageCheck
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.repo import Repository
from pgkura.storage.s3 import S3Storage
from pgkura.storage.s3_config import S3Options
from pgkura.wal.continuity import first_damaged
from seaweed import REGION, S3Repo


class CountingS3Storage(S3Storage):
    """The real S3 backend, counting how many reads it serves at the same time."""

    def __init__(self, location: str, options: S3Options) -> None:
        super().__init__(location, options)
        self._mutex = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        with self._mutex:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(0.05)
            return super().get(key, start, length)
        finally:
            with self._mutex:
                self.in_flight -= 1


def _store(seaweedfs: Any, tmp_path: Path, limit: int) -> CountingS3Storage:
    location = S3Repo(seaweedfs, tmp_path / "s3", f"limit/{time.time_ns()}", owner=None)
    options = S3Options(
        endpoint=seaweedfs.endpoint,
        region=REGION,
        credentials_file=str(location.credentials),
        max_connections=limit,
    )
    return CountingS3Storage(location.url, options)


@pytest.mark.parametrize("limit", [2, 16])
def test_the_archive_check_reads_no_more_segments_at_once_than_the_store_takes(
    seaweedfs: Any, tmp_path: Path, limit: int
) -> None:
    storage = _store(seaweedfs, tmp_path, limit)
    repo = Repository.create(storage)
    names = [f"00000001000000000000{n:04X}" for n in range(1, 13)]
    for name in names:
        storage.put(layout.wal_key("main", name), b"not a sealed object")
    damaged = first_damaged(repo, "main", names, jobs=8)
    assert damaged is not None and damaged[0] == 0  # each is damaged: the first is named
    assert storage.peak == min(8, limit)


def test_a_backup_to_a_store_of_few_connections_runs_that_many_workers(
    seaweedfs: Any, tmp_path: Path
) -> None:
    repo = Repository.create(_store(seaweedfs, tmp_path, 3))
    storer = FileStorer(BlockIndex(repo).load(), 8, PageCheck(enabled=False))
    assert storer.jobs == 3
    assert FileStorer(BlockIndex(repo).load(), 2, PageCheck(enabled=False)).jobs == 2
