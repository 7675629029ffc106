"""The parsed form of each index object in the local cache (repository/index_parsed.py,
docs/repository-format.md "The local index cache"): a command reads the index from it
instead of parsing every block's JSON again, and a form not made from the object the listing
shows (another key's, another size's, damaged) is never used: the object is parsed from its
bytes and says what it says in the store (issue 15, point 7). posix and a real SeaweedFS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, PackWriter
from pgkura.repository.index_files import consolidate, read_index_objects
from pgkura.repository.index_parsed import cached_parsed, store_parsed
from pgkura.repository.reader import BlockReader
from pgkura.repository.repo import Repository
from pgkura.storage import requests
from pgkura.storage.base import Storage
from pgkura.storage.posix import PosixStorage


@pytest.fixture(params=["posix", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "posix":
        yield PosixStorage(tmp_path / "repo")
        return
    yield request.getfixturevalue("s3_repo").store()


def opened(store: Storage, cache: Path, *, create: bool = False) -> Repository:
    repo = Repository.create(store) if create else Repository.open(store)
    repo.cache_setting = str(cache)
    return repo


def write_packs(repo: Repository, count: int, tag: str) -> dict[bytes, bytes]:
    """``count`` packs of a few blocks each; {block id: content}."""
    writer = PackWriter(BlockIndex(repo).load(), target_size=1)
    blocks = {}
    for n in range(count * 3):
        raw = f"{tag} block {n} ".encode() * 40
        block_id, _added = writer.add(raw)
        blocks[block_id] = raw
    writer.close()
    return blocks


def form_path(cache: Path, repo: Repository, key: str) -> Path:
    return cache / repo.config.repo_id / "parsed" / key


def test_a_command_reads_the_index_from_its_parsed_form_and_it_says_what_the_store_says(
    store: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    repo = opened(store, cache, create=True)
    blocks = write_packs(repo, 4, "a")
    consolidate(repo, at_least=2)
    blocks |= write_packs(opened(store, cache), 2, "b")  # two per-pack objects beside
    keys = sorted(o.key for o in store.list(layout.INDEX_PREFIX))
    assert any(layout.MERGED_INDEX_PREFIX in k for k in keys) and len(keys) >= 3
    fresh = read_index_objects(opened(store, cache), use_cache=False)
    first = read_index_objects(opened(store, cache))  # makes the forms it lacks
    assert all(form_path(cache, repo, k).exists() for k in keys)
    requests.reset()
    again = opened(store, cache)
    found = read_index_objects(again)
    assert requests.snapshot().get(("get", "index"), 0) == 0
    assert found.packs == fresh.packs == first.packs
    assert found.covers == fresh.covers
    # Every block reads back, located through the parsed forms.
    reader = BlockReader(BlockIndex(again).load())
    assert {b: reader.read(b) for b in blocks} == blocks


def test_a_parsed_form_not_made_from_the_listed_object_is_never_used(
    store: Storage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    repo = opened(store, cache, create=True)
    write_packs(repo, 3, "c")
    listed = {o.key: o.size for o in store.list(layout.INDEX_PREFIX)}
    first, second, third = sorted(listed)[:3]  # per-pack objects, one per pack
    truth = read_index_objects(opened(store, cache), use_cache=False).packs
    read_index_objects(opened(store, cache))
    # Another object's form put in this one's place (sealed soundly, but naming its key).
    form_path(cache, repo, second).write_bytes(form_path(cache, repo, first).read_bytes())
    # A form of this key made from an object of another size (one that no longer exists).
    first_pack = first.rsplit("/", 1)[1]
    store_parsed(repo, third, listed[third] + 1, {first_pack: truth[first_pack]})
    # A damaged form.
    damaged = form_path(cache, repo, first)
    damaged.write_bytes(damaged.read_bytes()[:-5] + b"xxxxx")
    again = opened(store, cache)
    for key in (first, second, third):
        assert cached_parsed(again, key, listed[key]) is None
    requests.reset()
    found = read_index_objects(opened(store, cache))
    assert found.packs == truth
    # Each was parsed from its object's bytes (from the cached copies) and made again.
    assert requests.snapshot().get(("get", "index"), 0) == 0
    for key in (first, second, third):
        pack_id = key.rsplit("/", 1)[1]
        assert cached_parsed(again, key, listed[key]) == {pack_id: truth[pack_id]}


def test_forms_of_deleted_objects_go_with_them(store: Storage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    repo = opened(store, cache, create=True)
    write_packs(repo, 3, "d")
    small = sorted(o.key for o in store.list(layout.INDEX_PREFIX))
    read_index_objects(opened(store, cache))
    done = consolidate(opened(store, cache), at_least=2)
    assert sorted(done.deleted) == small
    assert not any(form_path(cache, repo, k).exists() for k in small)
    (merged,) = done.written
    assert form_path(cache, repo, merged).exists()  # written with the object
    # A form left by a process that died before it could drop it is pruned at the next read.
    store_parsed(repo, small[0], 10, {})
    read_index_objects(opened(store, cache))
    assert not form_path(cache, repo, small[0]).exists()


def test_a_merged_object_is_written_as_json_dumps_would_write_it(tmp_path: Path) -> None:
    """The merged object's JSON is written out directly (index_files._seal_merged): it must
    be the JSON of the same document, byte for byte, and read back to the same entries."""
    import json

    from pgkura.repository.blocks import BlockLocation
    from pgkura.repository.index_files import _seal_merged, parse_index_object

    repo = opened(PosixStorage(tmp_path / "repo"), tmp_path / "cache", create=True)
    packs = {
        os.urandom(16).hex(): [
            (os.urandom(32), BlockLocation("", n * 9000, 9000 - n, 2**40 + n)) for n in range(k)
        ]
        for k in (0, 1, 5, 300)
    }
    packs = {p: [(b, loc._replace(pack_id=p)) for b, loc in e] for p, e in packs.items()}
    merged_id = os.urandom(16).hex()
    key = layout.merged_index_key(merged_id)
    sealed = _seal_merged(repo, merged_id, packs)
    doc = {
        "id": merged_id,
        "packs": [
            {"pack": p, "blocks": [[b.hex(), x.offset, x.length, x.raw_length] for b, x in e]}
            for p, e in sorted(packs.items())
        ],
    }
    assert repo.unseal(sealed, name=key) == json.dumps(doc, separators=(",", ":")).encode()
    assert parse_index_object(repo, key, sealed) == packs


def test_a_few_new_packs_are_merged_beside_a_large_merged_object_not_into_it(
    store: Storage, tmp_path: Path
) -> None:
    """Consolidation writes a merged object again only when what joins it is at least half
    its size (index_files.TIER): a gc or backup adding a few packs does not rewrite the
    whole index, and every block is still found exactly once per pack."""
    cache = tmp_path / "cache"
    repo = opened(store, cache, create=True)
    blocks = write_packs(repo, 8, "big")  # 24 packs
    (big,) = consolidate(repo, at_least=2).written
    blocks |= write_packs(opened(store, cache), 2, "few")  # 6 packs: a quarter of it
    done = consolidate(opened(store, cache), at_least=2)
    (beside,) = done.written
    assert big not in done.deleted and len(done.deleted) == 6
    found = read_index_objects(opened(store, cache), use_cache=False)
    assert set(found.covers) == {big, beside}
    assert len(found.covers[big]) == 24 and len(found.covers[beside]) == 6
    # Enough joining it (6 new packs and the 6 beside: half of 24): all are merged in one.
    blocks |= write_packs(opened(store, cache), 2, "more")
    done = consolidate(opened(store, cache), at_least=2)
    assert big in done.deleted and beside in done.deleted and len(done.deleted) == 8
    after = read_index_objects(opened(store, cache), use_cache=False)
    assert list(after.covers) == done.written and len(after.packs) == 36
    reader = BlockReader(BlockIndex(opened(store, cache)).load())
    assert {b: reader.read(b) for b in blocks} == blocks


def test_in_an_encrypted_repository_a_parsed_form_holds_nothing_readable(tmp_path: Path) -> None:
    """The form is sealed like a stored object: encrypted, and authenticated by the key (a
    byte changed anywhere makes it unusable, and the object is parsed from its bytes)."""
    cache = tmp_path / "cache"
    store = PosixStorage(tmp_path / "repo")
    repo = Repository.create(store, secret=os.urandom(32), raw=True)
    repo.cache_setting = str(cache)
    blocks = write_packs(repo, 2, "secret")
    (merged,) = consolidate(repo, at_least=2).written
    form = form_path(cache, repo, merged).read_bytes()
    assert not any(b in form or b.hex().encode() in form for b in blocks)
    truth = read_index_objects(repo, use_cache=False).packs
    assert cached_parsed(repo, merged, store.size(merged) or 0) == truth
    flipped = bytearray(form)
    flipped[len(flipped) // 2] ^= 1
    form_path(cache, repo, merged).write_bytes(bytes(flipped))
    assert cached_parsed(repo, merged, store.size(merged) or 0) is None
    assert read_index_objects(repo).packs == truth


def test_gc_loads_the_index_as_columns_that_say_what_the_store_says(
    store: Storage, tmp_path: Path
) -> None:
    """gc's load (``columns_only``) takes each pack's blocks from the parsed forms as
    columns, with no location made per block: every block, offset and length must be the
    stored object's, and a merged object written from columns must be the bytes the pairs
    give (a column that drifted by one would make gc misjudge or rewrite a pack wrongly)."""
    from pgkura.repository.index_parsed import PackEntries, columns_of, merged_json

    cache = tmp_path / "cache"
    repo = opened(store, cache, create=True)
    write_packs(repo, 5, "g")
    consolidate(repo, at_least=2)
    write_packs(opened(store, cache), 2, "h")
    truth = read_index_objects(opened(store, cache), use_cache=False).packs
    read_index_objects(opened(store, cache))  # the forms
    index = BlockIndex(opened(store, cache)).load(columns_only=True)
    assert len(index) == 0  # no lookup by block id was made
    assert set(index.pack_columns) == set(truth)
    for pack_id, held in index.pack_columns.items():
        assert isinstance(held, PackEntries)
        ids, offsets, lengths, raws = columns_of(held)
        assert list(ids) == [b for b, _loc in truth[pack_id]]
        assert list(offsets) == [loc.offset for _b, loc in truth[pack_id]]
        assert list(lengths) == [loc.length for _b, loc in truth[pack_id]]
        assert list(raws) == [loc.raw_length for _b, loc in truth[pack_id]]
        assert held == truth[pack_id]
    assert merged_json("0" * 32, dict(index.pack_columns)) == merged_json("0" * 32, truth)
    # The lookup of every other command is unchanged: each block found where the store says.
    full = BlockIndex(opened(store, cache)).load(keep_packs=True)
    assert full.pack_entries == truth
    assert all(full.get(b) == loc for held in truth.values() for b, loc in held)
    assert all(type(e) is list for e in full.pack_entries.values())
