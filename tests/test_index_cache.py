"""Requests scale with data, not with objects: index objects are merged, a local cache keeps
them, and the storage layer counts every request (docs/repository-format.md, "Index
objects", "The local index cache").

The first tests run the repository layer in this process on posix and on a real SeaweedFS,
counting requests; the last ones run real backups of a real PostgreSQL and read the counts
that ``PGKURA_REQUEST_STATS`` writes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgkura.repository import index_files, layout
from pgkura.repository.blocks import BlockIndex, BlockReader, PackWriter
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.index_files import consolidate, read_index_objects
from pgkura.repository.repo import Repository
from pgkura.storage import requests
from pgkura.storage.base import Storage
from pgkura.storage.posix import PosixStorage


@pytest.fixture(params=["posix", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "posix":
        yield PosixStorage(tmp_path / "repo")
        return
    s3_repo = request.getfixturevalue("s3_repo")
    yield s3_repo.store()


def new_repo(store: Storage, cache: Path | str) -> Repository:
    repo = Repository.create(store)
    repo.cache_setting = str(cache)
    return repo


def reopen(store: Storage, cache: Path | str) -> Repository:
    """The repository as the next command sees it: a new process, a new Repository."""
    repo = Repository.open(store)
    repo.cache_setting = str(cache)
    return repo


def write_packs(repo: Repository, count: int, tag: str) -> dict[bytes, bytes]:
    """``count`` packs of one block each; {block id: content}."""
    index = BlockIndex(repo).load()
    writer = PackWriter(index, target_size=1)
    blocks = {}
    for n in range(count):
        raw = f"{tag} block {n} ".encode() * 50
        block_id, _added = writer.add(raw)
        blocks[block_id] = raw
    writer.close()
    return blocks


def index_requests(kind: str) -> int:
    return requests.snapshot().get((kind, "index"), 0)


def counted_load(repo: Repository) -> tuple[BlockIndex, int, int]:
    """A load of the index, with the index GETs and LISTs it made."""
    requests.reset()
    index = BlockIndex(repo).load()
    return index, index_requests("get"), index_requests("list")


def index_keys(store: Storage) -> list[str]:
    return sorted(o.key for o in store.list("index/"))


def test_a_warm_cache_load_gets_no_index_object_however_many_packs(
    store: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    repo = new_repo(store, cache)
    blocks = write_packs(repo, 4, "few")
    # A cold cache (another machine, a new cache dir) gets each object once: O(packs).
    _index, gets, lists = counted_load(reopen(store, tmp_path / "cold"))
    assert (gets, lists) == (4, 1)
    # The writer cached what it wrote: the next command fetches no index object.
    _index, warm_few, lists = counted_load(reopen(store, cache))
    assert (warm_few, lists) == (0, 1)

    blocks |= write_packs(reopen(store, cache), 60, "many")
    index, warm_many, lists = counted_load(reopen(store, cache))
    assert (warm_many, lists) == (0, 1)  # 16 times the packs, the same requests
    assert len(index) == 64 and not index.unindexed
    reader = BlockReader(index)
    assert all(reader.read(b) == raw for b, raw in blocks.items())

    # Consolidated, a cold command gets one index object instead of 64.
    done = consolidate(reopen(store, cache), at_least=2)
    assert len(done.written) == 1 and len(done.deleted) == 64
    assert index_keys(store) == done.written
    index, cold_gets, lists = counted_load(reopen(store, tmp_path / "cold2"))
    assert (cold_gets, lists) == (1, 1) and len(index) == 64 and not index.unindexed
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    # The cache that knew the small objects drops them and keeps the merged one.
    _index, gets, _lists = counted_load(reopen(store, cache))
    assert gets == 0
    mine = cache / repo.config.repo_id
    copies = [p for p in mine.rglob("*") if p.is_file() and p.name != ".used"]  # cache_sweep's
    # Each object's copy and its parsed form (repository/index_parsed.py).
    want = sorted([*done.written, *(f"parsed/{k}" for k in done.written)])
    assert sorted(str(p.relative_to(mine)) for p in copies) == want


def test_a_reader_between_the_merged_write_and_the_deletes_sees_each_block_once(
    store: Storage, tmp_path: Path
) -> None:
    repo = new_repo(store, "off")
    blocks = write_packs(repo, 5, "dup")
    before = index_keys(store)
    objects = read_index_objects(repo)
    # A consolidation killed after writing its merged object: every pack is named twice.
    written = index_files._write_merged(repo, objects.packs)
    assert len(index_keys(store)) == len(before) + len(written)
    index = BlockIndex(reopen(store, "off")).load()
    assert len(index) == 5 and not index.unindexed and not index.damaged
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    # The next consolidation finishes the work; no pack was ever without an index object.
    consolidate(reopen(store, "off"), at_least=2, redundant=True)
    after = read_index_objects(reopen(store, "off"))
    assert set(after.packs) == set(objects.packs) and len(after.covers) == 1


def test_a_backup_consolidates_once_32_small_objects_are_there(tmp_path: Path) -> None:
    store = PosixStorage(tmp_path / "repo")
    repo = new_repo(store, "off")
    write_packs(repo, index_files.MERGE_THRESHOLD - 1, "t")
    requests.reset()
    assert consolidate(repo).written == []  # what write_manifest runs after each commit
    assert index_requests("get") == 0 and index_requests("list") == 1  # nothing read
    write_packs(repo, 1, "one more")
    done = consolidate(repo)
    assert len(done.written) == 1 and len(done.deleted) == index_files.MERGE_THRESHOLD
    assert index_keys(store) == done.written


def test_a_corrupt_cache_entry_is_fetched_again_never_trusted(
    store: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    repo = new_repo(store, cache)
    blocks = write_packs(repo, 3, "c")
    consolidate(repo, at_least=2)
    (merged,) = index_keys(store)
    path = cache / repo.config.repo_id / merged
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF  # the same size: only unsealing can tell
    path.write_bytes(bytes(damaged))
    # Without its parsed form (tests/test_index_parsed.py), the copy itself is read.
    parsed = cache / repo.config.repo_id / "parsed"
    shutil.rmtree(parsed)
    index, gets, _lists = counted_load(reopen(store, cache))
    assert gets == 1 and len(index) == 3 and not index.damaged
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    assert path.read_bytes() == good  # replaced by the store's bytes
    # Another object's sound bytes under this name are refused too: each object names itself.
    other = index_files._write_merged(repo, read_index_objects(repo).packs)[0]
    path.write_bytes((cache / repo.config.repo_id / other).read_bytes())
    shutil.rmtree(parsed)
    index, gets, _lists = counted_load(reopen(store, cache))
    assert gets == 1 and path.read_bytes() == good and len(index) == 3


def test_an_unwritable_cache_warns_once_and_the_command_goes_on(
    store: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    repo = new_repo(store, blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="pgkura"):
        blocks = write_packs(repo, 3, "u")
        index = BlockIndex(repo).load()
    warnings = [r for r in caplog.records if "index cache" in r.getMessage()]
    assert len(warnings) == 1 and "going on without it" in warnings[0].getMessage()
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    # off: nothing is cached anywhere, and nothing is said.
    caplog.clear()
    off = reopen(store, "off")
    assert not IndexCache.of(off).enabled
    _index, gets, _lists = counted_load(off)
    assert gets == 3 and not caplog.records


def test_several_processes_share_one_cache(tmp_path: Path) -> None:
    # posix only: the S3 client cannot be used in forked processes (threads share one cache
    # the same way, through the same files).
    store = PosixStorage(tmp_path / "repo")
    cache = tmp_path / "cache"
    repo = new_repo(store, cache)
    write_packs(repo, 3, "shared")
    pids = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:  # each child writes packs and loads the index through the same cache
            try:
                write_packs(reopen(store, cache), 5, f"child {n}")
                ok = len(BlockIndex(reopen(store, cache)).load()) >= 8
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        pids.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    index, gets, _lists = counted_load(reopen(store, cache))
    assert len(index) == 23 and gets == 0  # every child cached what it wrote
    leftovers = [p for p in cache.rglob("*.tmp")]
    assert leftovers == []


def test_a_damaged_merged_object_is_reported_and_repair_writes_each_pack_its_own(
    store: Storage, tmp_path: Path
) -> None:
    repo = new_repo(store, tmp_path / "cache")
    blocks = write_packs(repo, 4, "d")
    consolidate(repo, at_least=2)
    (merged,) = index_keys(store)
    data = bytearray(store.get(merged))
    data[-10] ^= 0xFF
    store.put(merged, bytes(data))
    # A good copy in the cache keeps a command going; verify and repair read the store.
    warm = BlockIndex(reopen(store, tmp_path / "cache")).load()
    assert not warm.damaged and not warm.unindexed and len(warm) == 4
    index = BlockIndex(reopen(store, tmp_path / "cache")).load(fresh=True)
    assert len(index.unindexed) == 4
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    assert len(index.damaged) == 1 and merged in index.damaged[0]
    assert "repair index" in index.damaged[0]
    # What repair index and backups do: each pack's own object again, the damaged one gone.
    BlockIndex(reopen(store, "off")).load(write_back=True)
    assert index_keys(store) == sorted(layout.index_key(p) for p in index.unindexed)
    again = BlockIndex(reopen(store, "off")).load()
    assert not again.damaged and not again.unindexed and len(again) == 4


def test_a_version_2_repository_is_read_and_becomes_version_3_when_merged(
    tmp_path: Path,
) -> None:
    store = PosixStorage(tmp_path / "old")
    repo = new_repo(store, "off")
    blocks = write_packs(repo, 6, "v2")  # index/<pack-id> objects: the layout of version 2
    config = json.loads((tmp_path / "old" / "pgkura.json").read_text())
    (tmp_path / "old" / "pgkura.json").write_text(json.dumps({**config, "version": 2}))
    old = reopen(store, tmp_path / "cache")
    assert old.config.version == 2
    index = BlockIndex(old).load()
    assert len(index) == 6 and not index.unindexed
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    consolidate(old, at_least=2)
    # A reader of version 2 would take index/merged/<id> for the index of a pack: refused now.
    assert json.loads((tmp_path / "old" / "pgkura.json").read_text())["version"] == 3
    index = BlockIndex(reopen(store, "off")).load()
    assert len(index) == 6 and all(BlockReader(index).read(b) == r for b, r in blocks.items())


def test_consolidation_leaves_the_packs_of_doomed_lists_alone(store: Storage) -> None:
    from pgkura.repository.doomed import new_doomed_list, write_doomed

    repo = new_repo(store, "off")
    write_packs(repo, 5, "doom")
    packs = sorted(read_index_objects(repo).packs)
    write_doomed(repo, new_doomed_list(packs[:2]))
    done = consolidate(repo, at_least=2)
    merged = read_index_objects(repo)
    (key,) = done.written
    assert merged.covers[key] == set(packs[2:])
    # The doomed packs keep their own objects: gc deletes those with the packs.
    assert sorted(k for k in merged.covers if k != key) == [layout.index_key(p) for p in packs[:2]]
    # gc drops packs from every object that names them before deleting them.
    index_files.forget_packs(repo, {packs[2]})
    after = read_index_objects(repo)
    assert set(after.packs) == set(packs) - {packs[2]}
    assert all(packs[2] not in c for c in after.covers.values())


def test_the_request_counts_are_written_at_exit_and_by_area(tmp_path: Path) -> None:
    from runner import run_pgkura

    out = tmp_path / "stats.json"
    run_pgkura("--repo", str(tmp_path / "r"), "init", user=None)
    run_pgkura("--repo", str(tmp_path / "r"), "info", user=None,
               env={"PGKURA_REQUEST_STATS": str(out)})  # fmt: skip
    stats = json.loads(out.read_text())
    assert stats["total"]["get"] >= 1 and stats["by_area"]["pgkura.json"]["get"] == 1
    assert set(stats["total"]) == {"get", "put", "head", "list", "delete"}


# -- real backups ------------------------------------------------------------------------


def _stats(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def index_gets(path: Path) -> int:
    return int(_stats(path)["by_area"].get("index", {}).get("get", 0))


@pytest.fixture(params=["posix", "s3"])
def backup_repo(request: pytest.FixtureRequest, work_dir: Path) -> tuple[str, ...]:
    """The arguments that name a repository (made with init) on posix or on SeaweedFS."""
    from runner import run_pgkura

    if request.param == "posix":
        args: tuple[str, ...] = ("--repo", str(work_dir / "repo"))
    else:
        args = tuple(request.getfixturevalue("s3_repo").args)
    run_pgkura(*args, "init")
    return args


def test_backups_make_a_constant_number_of_index_requests_as_the_repository_grows(
    make_server: Any, work_dir: Path, backup_repo: tuple[str, ...]
) -> None:
    from runner import run_pgkura

    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 20000) g")
    src.stop()
    cache = work_dir / "cache"
    stats = work_dir / "stats.json"

    def backup(cache_dir: Path) -> int:
        env = {"PGKURA_PGDATA": str(src.pgdata), "PGKURA_CACHE_DIR": str(cache_dir),
               "PGKURA_REQUEST_STATS": str(stats)}  # fmt: skip
        run_pgkura(*backup_repo, "backup", "--type", "offline", env=env)
        return index_gets(stats)

    backup(cache)
    few = len(index_objects(backup_repo))
    warm_small = backup(cache)
    src.start()
    src.sql("CREATE TABLE big AS SELECT g AS a, md5(g::text) || md5((g + 1)::text) AS b "
            "FROM generate_series(1, 1500000) g")  # fmt: skip
    src.stop()
    backup(cache)
    many = len(index_objects(backup_repo))
    assert many >= few + 5, (few, many)
    warm_large = backup(cache)
    assert warm_small == warm_large == 0  # not one index GET, whatever the pack count
    cold = backup(work_dir / "cold")
    assert cold == many  # without the cache and before consolidation: one per pack

    run_pgkura(*backup_repo, "gc", env={"PGKURA_CACHE_DIR": str(cache)})
    assert len(index_objects(backup_repo)) <= 2
    assert backup(work_dir / "cold-after-gc") <= 2  # a handful, not one per pack

    target = work_dir / "restored"
    run_pgkura(*backup_repo, "restore", "--target-dir", str(target),
               env={"PGKURA_CACHE_DIR": str(work_dir / "cold-restore"),
                    "PGKURA_REQUEST_STATS": str(stats)})  # fmt: skip
    assert index_gets(stats) <= 2
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*), sum(a) FROM big")[0] == (1500000, 1125000750000)
    assert restored.sql("SELECT count(*) FROM t")[0][0] == 20000
    assert run_pgkura(*backup_repo, "verify").returncode == 0


def index_objects(args: tuple[str, ...]) -> list[str]:
    """The keys under index/ of the repository ``args`` name."""
    repo = args[args.index("--repo") + 1]
    if not repo.startswith("s3://"):
        found = Path(repo, "index").rglob("*")
        return sorted(str(p.relative_to(repo)) for p in found if p.is_file())
    from pgkura.config import load_config
    from pgkura.storage import open_storage

    config = args[args.index("--config") + 1]
    cfg = load_config({"repo": repo}, config, environ={})
    return sorted(o.key for o in open_storage(repo, cfg).list("index/"))


def test_gc_keeps_the_merged_index_true_to_the_packs_it_deletes(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    from runner import run_pgkura

    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 300000) g")
    src.stop()
    env = {"PGKURA_PGDATA": str(src.pgdata), "PGKURA_CACHE_DIR": str(work_dir / "cache")}
    first = run_pgkura("--repo", repo, "backup", "--type", "offline", env=env).stdout.strip()
    src.start()
    src.sql("DROP TABLE t; CREATE TABLE u AS SELECT g AS a FROM generate_series(1, 200000) g")
    src.stop()
    run_pgkura("--repo", repo, "backup", "--type", "offline", env=env)
    run_pgkura("--repo", repo, "gc", env=env)  # consolidates: merged objects name every pack
    merged_before = index_objects(("--repo", repo))
    assert merged_before and all(k.startswith("index/merged/") for k in merged_before)

    storage = PosixStorage(repo)
    packs_before = {o.key.rsplit("/", 1)[1] for o in storage.list("packs/")}
    run_pgkura("--repo", repo, "delete", first, env=env)
    run_pgkura("--repo", repo, "gc", env=env)
    present = {o.key.rsplit("/", 1)[1] for o in storage.list("packs/")}
    assert packs_before - present  # gc deleted (or repacked) the first backup's packs
    objects = read_index_objects(Repository.open(storage))
    named = {p for packs in objects.covers.values() for p in packs}
    assert named == present  # no merged object names a pack gc deleted; none is left out
    shutil.rmtree(work_dir / "cache")
    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), env=env)
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*), sum(a) FROM u")[0] == (200000, 20000100000)
    assert run_pgkura("--repo", repo, "verify", env=env).returncode == 0

    # Damage to a stored merged object is found by verify although the cache holds a good
    # copy (verify reads what is stored), and repair index mends it.
    victim = Path(repo, index_objects(("--repo", repo))[0])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    found = run_pgkura("--repo", repo, "verify", env=env, check=False)
    assert found.returncode == 7 and str(victim.relative_to(repo)) in found.stdout
    assert "repair index" in found.stdout
    repaired = json.loads(
        run_pgkura("--repo", repo, "repair", "index", "--output", "json", env=env).stdout
    )
    assert sorted(repaired["rebuilt"]) == sorted(present) and not victim.exists()
    assert run_pgkura("--repo", repo, "verify", env=env).returncode == 0


def test_a_restore_from_s3_reads_many_small_files_in_few_requests(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    """A fresh cluster is about a thousand small files: a restore gathers them into units
    and reads each unit's blocks in as few ranged GETs as the packs allow, not one per file
    (issue: object storage, "requests scale with data, not with objects")."""
    from runner import run_pgkura

    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 50000) g")
    src.stop()
    files = sum(1 for p in src.pgdata.rglob("*") if p.is_file())
    run_pgkura(*s3_repo.args, "init")
    env = {"PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura(*s3_repo.args, "backup", "--type", "offline", env=env)
    stats = work_dir / "stats.json"
    target = work_dir / "restored"
    run_pgkura(*s3_repo.args, "restore", "--target-dir", str(target), "--jobs", "2",
               env={"PGKURA_REQUEST_STATS": str(stats)})  # fmt: skip
    pack_gets = int(_stats(stats)["by_area"]["packs"]["get"])
    assert files > 500, files
    assert pack_gets * 10 < files, (pack_gets, files)
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*), sum(a) FROM t")[0] == (50000, 1250025000)


def snapshot_gets(path: Path) -> int:
    return int(_stats(path)["by_area"].get("snapshots", {}).get("get", 0))


def test_expire_gc_and_info_read_each_manifest_once_then_from_the_cache(
    make_server: Any, work_dir: Path, backup_repo: tuple[str, ...]
) -> None:
    """Issue retention, point 7: the manifests expire, its gc and info read do not grow with
    the backups on a warm cache; a damaged cached copy is fetched again; verify reads the
    store."""
    from runner import run_pgkura

    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 1000) g")
    src.stop()
    cache, stats = work_dir / "cache", work_dir / "stats.json"

    def pgkura(*args: str, cache_dir: Path = cache) -> Any:
        env = {"PGKURA_PGDATA": str(src.pgdata), "PGKURA_CACHE_DIR": str(cache_dir),
               "PGKURA_REQUEST_STATS": str(stats)}  # fmt: skip
        return run_pgkura(*backup_repo, *args, env=env)

    for n in range(6):
        src.start()
        src.sql(f"INSERT INTO t VALUES ({-n})")
        src.stop()
        pgkura("backup", "--type", "offline")
    ids = [b["id"] for b in json.loads(pgkura("info", "--output", "json").stdout)["backups"]]
    assert len(ids) == 6 and snapshot_gets(stats) == 0  # each backup cached its manifest

    out = json.loads(pgkura("--keep-last", "4", "expire", "--output", "json").stdout)
    assert out["expired"] == ids[:2]
    assert snapshot_gets(stats) == 0  # six manifests, for expire and its gc: not one GET
    cached = sorted(p.name for p in cache.rglob("snapshots/*/*"))
    assert cached == ids[2:]  # the copies of deleted backups are gone with them

    cold = work_dir / "cold"
    pgkura("--keep-last", "4", "expire", cache_dir=cold)
    assert snapshot_gets(stats) == 4  # once each; its gc was handed them
    pgkura("gc", cache_dir=cold)
    assert snapshot_gets(stats) == 0

    victim = next(cold.rglob(f"snapshots/*/{ids[3]}"))
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, wrong bytes: never trusted
    victim.write_bytes(bytes(raw))
    info = json.loads(pgkura("info", "--output", "json", cache_dir=cold).stdout)
    assert [b["id"] for b in info["backups"]] == ids[2:] and snapshot_gets(stats) == 1
    assert victim.read_bytes() != bytes(raw)  # the good copy replaced it

    assert pgkura("verify", cache_dir=cold).returncode == 0
    assert snapshot_gets(stats) >= 4  # verify reads every manifest from the store
    target = work_dir / "restored"
    pgkura("restore", "--target-dir", str(target), cache_dir=cold)
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*), min(a) FROM t")[0] == (1006, -5)


def test_caches_of_repositories_unused_for_30_days_are_removed_once_a_day(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    day = 86400
    gone, recent, legacy = cache / "aa11", cache / "bb22", cache / "cc33"
    for directory in (gone, recent, legacy):
        (directory / "index").mkdir(parents=True)
        (directory / "index" / "x").write_bytes(b"cached")
    (gone / ".used").touch()
    os.utime(gone / ".used", (time.time() - 31 * day,) * 2)
    (recent / ".used").touch()
    os.utime(recent / ".used", (time.time() - 29 * day,) * 2)
    os.utime(legacy, (time.time() - 40 * day,) * 2)  # no .used: an older pgkura's cache
    not_ours = cache / "not-a-repository-id"
    not_ours.mkdir()
    os.utime(not_ours, (time.time() - 400 * day,) * 2)

    repo = new_repo(PosixStorage(tmp_path / "repo"), cache)
    blocks = write_packs(repo, 2, "s")  # opens this repository's cache: the sweep runs
    mine = cache / repo.config.repo_id
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [".swept", mine.name, recent.name, not_ours.name]
    )
    assert (mine / ".used").exists() and (recent / "index" / "x").read_bytes() == b"cached"

    # Swept today: a second sweep waits a day, even with a stale cache back in place.
    shutil.copytree(recent, gone)
    os.utime(gone / ".used", (time.time() - 31 * day,) * 2)
    index = BlockIndex(reopen(PosixStorage(tmp_path / "repo"), cache)).load()
    assert gone.exists()
    assert all(BlockReader(index).read(b) == raw for b, raw in blocks.items())
    os.utime(cache / ".swept", (time.time() - 2 * day,) * 2)
    BlockIndex(reopen(PosixStorage(tmp_path / "repo"), cache)).load()
    assert not gone.exists() and recent.exists() and mine.exists()
