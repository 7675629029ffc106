"""Issue 15, point 7: expire decides on the cached heads of manifests and its gc counts each
kept backup's blocks from a compact cached copy (repository/manifest_heads.py,
repository/manifest_refs.py), and neither is ever trusted when it was not made from the
manifest the listing shows: a copy that does not match is read again from the manifest, so
no block a kept backup needs is deleted and no decision is taken on another manifest's facts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgkura.repository import layout
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.manifest import listed_backups, read_sealed_manifest
from pgkura.repository.manifest_heads import manifest_head, remember_head
from pgkura.repository.manifest_refs import (
    PackedIds,
    blocks_of,
    referenced_blocks,
    referenced_ids,
    remember_refs,
)
from pgkura.repository.prune import _References
from pgkura.repository.repo import Repository
from pgkura.storage.base import Storage
from pgkura.storage.posix import PosixStorage
from runner import os_user, run_pgkura

Pgkura = Callable[..., Any]


@pytest.fixture(params=["posix", "s3"])
def where(request: pytest.FixtureRequest, work_dir: Path) -> tuple[tuple[str, ...], Storage]:
    """The arguments naming a repository (made with init) on posix or on SeaweedFS, and its
    store, for this process to open."""
    if request.param == "posix":
        path = work_dir / "repo"
        run_pgkura("--repo", str(path), "init")
        return ("--repo", str(path)), PosixStorage(path)
    s3_repo = request.getfixturevalue("s3_repo")
    run_pgkura(*s3_repo.args, "init")
    return tuple(s3_repo.args), s3_repo.store()


def opened(store: Storage, cache: Path) -> Repository:
    repo = Repository.open(store)
    repo.cache_setting = str(cache)
    return repo


def give_back(cache: Path) -> None:
    """The cache files this process wrote, to the user pgkura runs as."""
    import shutil

    if os_user():
        for p in [cache, *cache.rglob("*")]:
            shutil.chown(p, "postgres", "postgres")


def take_backups(make_server: Any, pgkura: Pgkura, count: int) -> tuple[Any, dict[str, int]]:
    """``count`` offline backups of a cluster whose table changes before each: {id: rows}."""
    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 5000) g")
    rows = {}
    for n in range(count):
        src.sql(f"INSERT INTO t SELECT g, md5((g * {n + 7})::text) FROM generate_series(1, 3000) g")
        src.sql("UPDATE t SET b = md5(b) WHERE a % 3 = 0")
        total = int(src.sql("SELECT count(*) FROM t")[0][0])
        src.stop()
        pgkura("--pgdata", str(src.pgdata), "backup", "--type", "offline")
        src.start()
        info = json.loads(pgkura("info", "--output", "json").stdout)
        rows[info["backups"][-1]["id"]] = total
    src.stop()
    return src, rows


def restored_rows(make_server: Any, pgkura: Pgkura, work_dir: Path, backup_id: str) -> int:
    target = work_dir / f"restored-{backup_id}"
    pgkura("restore", "--target-dir", str(target), "--backup", backup_id)
    server = make_server(f"r-{backup_id}", pgdata=target, init=False)
    count = int(server.sql("SELECT count(*) FROM t")[0][0])
    server.stop()
    return count


def test_gc_never_counts_a_kept_backups_blocks_from_a_copy_not_made_from_its_manifest(
    make_server: Any, work_dir: Path, where: tuple[tuple[str, ...], Storage]
) -> None:
    args, store = where
    cache = work_dir / "cache"

    def pgkura(*more: str) -> Any:
        env = {"PGKURA_CACHE_DIR": str(cache)}
        return run_pgkura(*args, *more, env=env)

    _src, rows = take_backups(make_server, pgkura, 4)
    ids = sorted(rows)
    repo = opened(store, cache)
    listed = listed_backups(repo, "main", prune_cache=False)
    whole = {i: read_sealed_manifest(repo, "main", i, listed_size=listed[i]) for i in ids}
    truth = {i: blocks_of(m) for i, (m, _sealed) in whole.items()}
    assert all(truth[i] - truth[j] for i in ids for j in ids if i != j)  # each has its own
    # Each backup cached its copy when it was written; it is what gc reads.
    refs = {i: next(cache.rglob(f"refs/main/{i}")) for i in ids}
    assert {i: referenced_blocks(repo, "main", i, listed[i]) for i in ids} == truth
    # ...read from those copies, packed as they are stored, and gc's one set of them all is
    # the union of the manifests' own blocks.
    assert all(isinstance(referenced_ids(repo, "main", i, listed[i]), PackedIds) for i in ids)
    assert _References(repo).read() == set().union(*truth.values())

    first, second, third, fourth = ids
    good_first = refs[first].read_bytes()
    damaged = bytearray(good_first)
    damaged[len(damaged) // 2] ^= 0xFF
    refs[first].write_bytes(bytes(damaged))  # same size, wrong bytes
    refs[second].write_bytes(good_first)  # another backup's copy in its place
    # A copy claiming the first backup's blocks for the third, made from the first's manifest.
    m1, sealed1 = whole[first]
    remember_refs(repo, dataclasses.replace(m1, id=third), sealed1)
    refs[fourth].unlink()  # missing
    give_back(cache)
    for i in ids:  # none of them is taken: each is read from its manifest
        assert referenced_blocks(opened(store, cache), "main", i, listed[i]) == truth[i]

    # The same damage again, then gc with almost no unused space allowed: a block it missed
    # would be deleted or left out of a repack.
    refs[first].write_bytes(bytes(damaged))
    refs[second].write_bytes(good_first)
    remember_refs(opened(store, cache), dataclasses.replace(m1, id=third), sealed1)
    refs[fourth].unlink(missing_ok=True)
    give_back(cache)
    out = json.loads(pgkura("--max-unused", "0.1", "gc", "--output", "json").stdout)
    assert out["referenced_bytes"] > 0
    assert pgkura("verify").returncode == 0
    for i in ids:
        assert restored_rows(make_server, pgkura, work_dir, i) == rows[i]
    # gc wrote each copy again from its manifest.
    fresh = opened(store, cache)
    assert {i: referenced_blocks(fresh, "main", i, listed[i]) for i in ids} == truth
    assert refs[second].read_bytes() != good_first


def test_a_head_gives_no_block_copy_and_a_stale_head_is_not_decided_on(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """expire keeps by the backups' times: a cached head of another manifest claiming the
    oldest backup is the newest would make it keep the wrong one. It is not taken; and a head
    (no files) never becomes the copy gc counts blocks from."""
    cache = work_dir / "cache"

    def pgkura(*more: str) -> Any:
        env = {"PGKURA_CACHE_DIR": str(cache)}
        return run_pgkura("--repo", repo, *more, env=env)

    _src, rows = take_backups(make_server, pgkura, 3)
    ids = sorted(rows)
    store = PosixStorage(Path(repo))
    db = opened(store, cache)
    listed = listed_backups(db, "main", prune_cache=False)
    heads = {i: manifest_head(db, "main", i, listed[i]) for i in ids}
    assert all(not h.files for h in heads.values())
    newest, (_m, sealed_newest) = heads[ids[-1]], read_sealed_manifest(db, "main", ids[-1])

    # A head of the oldest backup made from the newest's manifest: its time, its digest.
    remember_head(db, dataclasses.replace(newest, id=ids[0], files=()), sealed_newest)
    # A head handed to the block copy: no copy is made (gc would count no blocks).
    m0, sealed0 = read_sealed_manifest(db, "main", ids[0])
    before = next(cache.rglob(f"refs/main/{ids[0]}")).read_bytes()
    remember_refs(db, m0.with_changes(files=()), sealed0)
    assert next(cache.rglob(f"refs/main/{ids[0]}")).read_bytes() == before
    give_back(cache)
    assert manifest_head(opened(store, cache), "main", ids[0], listed[ids[0]]) == heads[ids[0]]

    remember_head(db, dataclasses.replace(newest, id=ids[0], files=()), sealed_newest)
    give_back(cache)
    out = json.loads(pgkura("--keep-last", "1", "expire", "--output", "json").stdout)
    assert out["expired"] == ids[:-1]
    assert [b["id"] for b in json.loads(pgkura("info", "--output", "json").stdout)["backups"]] == [
        ids[-1]
    ]
    assert pgkura("verify").returncode == 0
    assert restored_rows(make_server, pgkura, work_dir, ids[-1]) == rows[ids[-1]]
    cached = {p.name for p in cache.rglob("*/main/*") if p.parent.parent.name != "snapshots"}
    assert cached == {ids[-1]}  # the heads and block copies of deleted backups are gone


def test_each_backup_caches_its_head_and_block_copy(make_server: Any, work_dir: Path) -> None:
    """What expire and gc read of a kept backup is there from the backup itself: its cached
    head and block copy, both made from the manifest the backup stored."""
    repo_dir = work_dir / "repo"
    run_pgkura("--repo", str(repo_dir), "init")
    cache = work_dir / "cache"

    def pgkura(*more: str) -> Any:
        env = {"PGKURA_CACHE_DIR": str(cache)}
        return run_pgkura("--repo", str(repo_dir), *more, env=env)

    _src, rows = take_backups(make_server, pgkura, 2)
    db = opened(PosixStorage(repo_dir), cache)
    listed = listed_backups(db, "main", prune_cache=False)
    cache_dir = IndexCache.of(db).directory
    assert cache_dir is not None
    for backup_id in rows:
        m, _sealed = read_sealed_manifest(db, "main", backup_id, listed_size=listed[backup_id])
        assert Path(cache_dir, layout.snapshot_key("main", backup_id)).exists()
        assert Path(cache_dir, "heads", "main", backup_id).exists()
        assert Path(cache_dir, "refs", "main", backup_id).exists()
        assert manifest_head(db, "main", backup_id, listed[backup_id]) == m.with_changes(files=())
        assert referenced_blocks(db, "main", backup_id, listed[backup_id]) == blocks_of(m)


def test_without_a_cache_expire_and_its_gc_fetch_each_manifest_once(
    make_server: Any, work_dir: Path, where: tuple[tuple[str, ...], Storage]
) -> None:
    """With the cache off, expire reads each manifest whole for its head, and its gc takes the
    blocks it read then instead of fetching the kept manifests again."""
    args, _store = where
    stats = work_dir / "stats.json"

    def pgkura(*more: str) -> Any:
        env = {"PGKURA_CACHE_DIR": "off", "PGKURA_REQUEST_STATS": str(stats)}
        return run_pgkura(*args, *more, env=env)

    _src, rows = take_backups(make_server, pgkura, 4)
    ids = sorted(rows)
    out = json.loads(pgkura("--keep-last", "2", "expire", "--output", "json").stdout)
    assert out["expired"] == ids[:2]
    by_area = json.loads(stats.read_text())["by_area"]
    assert by_area["snapshots"]["get"] == 4  # once each, for expire; none again for its gc
    assert pgkura("verify").returncode == 0
    for i in ids[2:]:
        assert restored_rows(make_server, pgkura, work_dir, i) == rows[i]


def test_gc_reads_the_union_once_while_nothing_is_committed_and_again_when_a_backup_is(
    make_server: Any, work_dir: Path
) -> None:
    """gc counts the referenced blocks twice in a run (before planning, and before deleting
    a list that is ready at once, for writers that committed since). While the listing shows
    the very manifests of the first count, their union is given again as it is; a backup
    committed in between, or one taken away, is counted as it is (a block only it references
    must not be judged unreferenced)."""
    repo_dir = work_dir / "repo"
    run_pgkura("--repo", str(repo_dir), "init")
    cache = work_dir / "cache"

    def pgkura(*more: str) -> Any:
        return run_pgkura("--repo", str(repo_dir), *more, env={"PGKURA_CACHE_DIR": str(cache)})

    src, _rows = take_backups(make_server, pgkura, 2)
    store = PosixStorage(repo_dir)
    refs = _References(opened(store, cache))

    def truth() -> set[bytes]:
        repo = opened(store, cache)
        listed = listed_backups(repo, "main", prune_cache=False)
        return set().union(
            *(
                blocks_of(read_sealed_manifest(repo, "main", i, listed_size=n)[0])
                for i, n in listed.items()
            )
        )

    first = refs.read()
    assert first == truth()
    assert refs.read() is first  # nothing committed: not counted again
    # A backup of changed data commits between the two counts.
    src.start()
    src.sql("INSERT INTO t SELECT g, md5((g * 101)::text) FROM generate_series(1, 4000) g")
    src.stop()
    pgkura("--pgdata", str(src.pgdata), "backup", "--type", "offline")
    give_back(cache)
    after = refs.read()
    assert after == truth() and after - first  # its own blocks are counted
    assert refs.read() is after
    # A manifest gone between counts is not counted any more.
    newest = max(listed_backups(opened(store, cache), "main", prune_cache=False))
    pgkura("delete", newest, "--force")
    assert refs.read() == truth() == first
