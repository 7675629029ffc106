"""Requests and time of loading the block index of a repository of N packs on a real SeaweedFS:
one index object per pack (the layout of format 2), then with a warm cache, then merged.

    .venv/bin/python bench/index_requests.py 20000

Each pack holds one small block, so that many packs are written quickly; what is measured,
the index's objects and the requests to read them, depends on the number of packs only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgkura.repository.blocks import BlockIndex, PackWriter
from pgkura.repository.index_files import consolidate
from pgkura.repository.repo import Repository
from pgkura.storage import requests
from pgkura.storage.base import Storage
from seaweed import S3Repo, SeaweedFS


def load(store: Storage, label: str, cache: Path) -> None:
    repo = Repository.open(store)
    repo.cache_setting = str(cache)
    requests.reset()
    started = time.monotonic()
    index = BlockIndex(repo).load()
    took = time.monotonic() - started
    n = requests.snapshot()
    print(
        f"{label}: {len(index)} blocks; index GET {n.get(('get', 'index'), 0)}, "
        f"index LIST {n.get(('list', 'index'), 0)}, packs LIST {n.get(('list', 'packs'), 0)}, "
        f"all requests {sum(n.values())}; {took:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packs", type=int)
    packs = parser.parse_args().packs
    base = Path(tempfile.mkdtemp(prefix="pgkura-index-bench-"))
    weed = SeaweedFS(base / "weed")
    weed.start()
    try:
        store = S3Repo(weed, base / "s3", f"index{packs}", owner=None).store()
        repo = Repository.create(store)
        repo.cache_setting = str(base / "cache-writer")
        writer = PackWriter(BlockIndex(repo).load(), target_size=1)
        started = time.monotonic()
        for n in range(packs):
            writer.add(f"block {n} ".encode() * 100)
        writer.close()
        print(f"wrote {packs} packs in {time.monotonic() - started:.1f} s")
        load(store, "cold cache, one index object per pack", base / "cold1")
        load(store, "warm cache (the writer's)", base / "cache-writer")
        repo = Repository.open(store)
        repo.cache_setting = str(base / "cache-writer")
        started = time.monotonic()
        done = consolidate(repo, at_least=2)
        print(
            f"consolidated: {len(done.written)} merged objects written, {len(done.deleted)} "
            f"deleted, in {time.monotonic() - started:.1f} s"
        )
        load(store, "cold cache, merged", base / "cold2")
        load(store, "warm cache, merged", base / "cache-writer")
    finally:
        weed.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
