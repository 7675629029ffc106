"""gc's set-based judgement of what each pack must keep (repository/live_share.py) counts
exactly what the per-block Python loops it replaced counted: the same live bytes per pack,
the same chosen copy of each duplicated block, and no block a manifest references is ever
judged unneeded (issue 15, point 7). Ids are 32-byte ids, some ending in NUL bytes and some
differing only in their last byte, shared by several packs."""

from __future__ import annotations

import gc as collector
import os
import random
from array import array
from pathlib import Path

import pytest

from pgkura.errors import PgkuraError
from pgkura.repository.blocks import BlockLocation
from pgkura.repository.index_parsed import PackEntries
from pgkura.repository.live_share import LiveShares
from pgkura.repository.prune import PruneReport, _plan, _totals, prune
from pgkura.repository.repo import Repository
from pgkura.storage.posix import PosixStorage

Entries = list[tuple[bytes, BlockLocation]]


def reference_owners(
    referenced: set[bytes], entries: dict[str, Entries], candidates: set[str]
) -> tuple[dict[str, int], dict[bytes, BlockLocation]]:
    """The loops gc used before (prune._canonical and the live count of _plan)."""
    score = {p: sum(b in referenced for b, _ in entries[p]) for p in candidates}
    owner: dict[bytes, BlockLocation] = {}
    for pack_id in sorted(candidates, key=lambda p: (-score[p], p)):
        for block_id, loc in entries[pack_id]:
            if block_id in referenced:
                owner.setdefault(block_id, loc)
    live = dict.fromkeys(candidates, 0)
    for loc in owner.values():
        live[loc.pack_id] += loc.length
    return live, owner


def random_index(rng: random.Random, packs: int) -> tuple[set[bytes], dict[str, Entries]]:
    ids = [os.urandom(31) + bytes([rng.choice([0, 0, 1, 255])]) for _ in range(400)]
    ids += [i[:-1] + b"\x00" for i in ids[:20]] + [i[:-1] + b"\x01" for i in ids[:20]]
    ids = list(dict.fromkeys(ids))
    entries: dict[str, Entries] = {}
    for n in range(packs):
        pack_id = f"{n:032x}"
        chosen = rng.sample(ids, rng.randint(0, 60))  # the same id lands in several packs
        offset = 0
        held = []
        for block_id in chosen:
            length = rng.randint(1, 9000)
            held.append((block_id, BlockLocation(pack_id, offset, length, length + 7)))
            offset += length
        entries[pack_id] = held
    referenced = set(rng.sample(ids, len(ids) // 3))
    return referenced, entries


def test_live_bytes_and_chosen_copies_match_the_python_count_exactly() -> None:
    rng = random.Random(15)
    for _round in range(30):
        referenced, entries = random_index(rng, rng.randint(1, 25))
        candidates = {p for p in entries if rng.random() < 0.8}
        live, chosen = LiveShares(referenced).owners(entries, candidates)
        want_live, owner = reference_owners(referenced, entries, candidates)
        assert live == want_live
        for pack_id in candidates:
            picked = [e for e, keep in zip(entries[pack_id], chosen[pack_id], strict=True) if keep]
            assert picked == [(b, loc) for b, loc in entries[pack_id] if owner.get(b) == loc]
        # Every referenced block held by a candidate has exactly one chosen copy.
        held = {b for p in candidates for b, _loc in entries[p]}
        copies = [
            b for p in candidates for (b, _), k in zip(entries[p], chosen[p], strict=True) if k
        ]
        assert sorted(copies) == sorted(held & referenced)


def test_a_doomed_pack_is_needed_exactly_when_a_referenced_block_is_nowhere_else() -> None:
    base = os.urandom(31)
    kept_id, lookalike = base + b"\x00", base + b"\x01"
    dead_id = os.urandom(32)
    doomed: Entries = [
        (dead_id, BlockLocation("a" * 32, 0, 10, 10)),
        (kept_id, BlockLocation("a" * 32, 10, 10, 10)),
    ]
    shares = LiveShares({kept_id, os.urandom(32)})
    # Only an id that differs in its last byte (NUL against 1) is elsewhere: the pack stays.
    assert shares.needs(
        "a" * 32, doomed, shares.held_ids({"b": [(lookalike, doomed[0][1])]}, ["b"])
    )
    elsewhere = shares.held_ids({"b": [(kept_id, doomed[1][1])]}, ["b"])
    assert not shares.needs("a" * 32, doomed, elsewhere)
    # Nothing referenced in it: not needed even with nothing elsewhere.
    assert not LiveShares({lookalike}).needs("c" * 32, doomed, shares.held_ids({}, []))


def test_a_pack_with_one_live_block_is_repacked_and_an_empty_one_doomed() -> None:
    live_id = os.urandom(32)
    dead = [os.urandom(32) for _ in range(50)]
    mostly_dead = "1" * 32
    all_dead = "2" * 32
    full = "3" * 32
    entries: dict[str, Entries] = {
        mostly_dead: [
            (b, BlockLocation(mostly_dead, n * 100, 100, 100)) for n, b in enumerate(dead[40:])
        ]
        + [(live_id, BlockLocation(mostly_dead, 5000, 100, 100))],
        all_dead: [(dead[0], BlockLocation(all_dead, 0, 100, 100))],
        full: [(b, BlockLocation(full, n * 100, 100, 100)) for n, b in enumerate(dead[:40])],
    }
    # The full pack's blocks are referenced, as is the one live block of the other.
    referenced = {live_id, *dead[:40]}
    sizes = {mostly_dead: 1200, all_dead: 200, full: 4100}
    report = PruneReport()
    doom, repack, _live = _plan(LiveShares(referenced), entries, sizes, set(), 5, report)
    # dead[0] is referenced and also in the full pack, which holds more referenced blocks:
    # that copy counts, so all_dead holds nothing live.
    assert doom == [all_dead]
    assert repack == [mostly_dead]
    # The repack copies exactly the live block whose only copy is there.
    assert entries[mostly_dead] == [(live_id, BlockLocation(mostly_dead, 5000, 100, 100))]


def as_columns(entries: dict[str, Entries]) -> dict[str, PackEntries]:
    """The same packs as the parsed forms give them: columns, no location made."""
    out = {}
    for pack_id, held in entries.items():
        out[pack_id] = PackEntries(
            pack_id,
            [b for b, _loc in held],
            array("Q", [loc.offset for _b, loc in held]),
            array("Q", [loc.length for _b, loc in held]),
            array("Q", [loc.raw_length for _b, loc in held]),
        )
    return out


def test_judged_from_columns_every_pass_counts_what_the_python_loops_count() -> None:
    """gc now judges the parsed forms' columns, with each pack's referenced blocks kept
    between its passes: a pass that reused another referenced set's result, or columns that
    lost a block, would count a wrong live share (and delete or skip a needed pack)."""
    rng = random.Random(7)
    for _round in range(30):
        referenced, entries = random_index(rng, rng.randint(1, 25))
        columns = as_columns(entries)
        shares = LiveShares(referenced)
        for candidates in ({p for p in entries if rng.random() < 0.8}, set(entries)):
            live, chosen = shares.owners(dict(columns), candidates)  # twice: the kept sets
            want_live, owner = reference_owners(referenced, entries, candidates)
            assert live == want_live
            for pack_id in candidates:
                picked = [
                    e for e, keep in zip(columns[pack_id], chosen[pack_id], strict=True) if keep
                ]
                assert picked == [(b, loc) for b, loc in entries[pack_id] if owner.get(b) == loc]
        # Read again (writers committed since): the same columns, judged on the new set only.
        fewer = set(rng.sample(sorted(referenced), len(referenced) // 2))
        live, _chosen = shares.again(fewer).owners(dict(columns), set(entries))
        assert live == reference_owners(fewer, entries, set(entries))[0]
        for pack_id, held in entries.items():
            assert columns[pack_id] == held and held == columns[pack_id]
            assert shares.stored_bytes(pack_id, columns[pack_id]) == sum(
                loc.length for _b, loc in held
            )


def test_from_columns_a_pack_with_one_live_block_is_repacked_whole_ones_kept() -> None:
    """All live, none live and one live block, as columns: the no-lookup shortcuts for a
    pack all or none of whose blocks are referenced must not take in the mixed one."""
    ids = [os.urandom(32) for _ in range(30)]
    mixed, dead, whole = "4" * 32, "5" * 32, "6" * 32
    entries: dict[str, Entries] = {
        mixed: [(b, BlockLocation(mixed, n * 100, 100, 100)) for n, b in enumerate(ids[:10])],
        dead: [(b, BlockLocation(dead, n * 100, 100, 100)) for n, b in enumerate(ids[10:20])],
        whole: [(b, BlockLocation(whole, n * 100, 100, 100)) for n, b in enumerate(ids[20:])],
    }
    referenced = {ids[3], *ids[20:]}
    planned: dict[str, Entries] = dict(as_columns(entries))
    sizes = {mixed: 1100, dead: 1100, whole: 1100}
    doom, repack, _live = _plan(LiveShares(referenced), planned, sizes, set(), 5, PruneReport())
    assert doom == [dead]
    assert repack == [mixed]
    assert list(planned[mixed]) == [(ids[3], BlockLocation(mixed, 300, 100, 100))]
    live, _chosen = LiveShares(referenced).owners(planned, {whole})
    assert live == {whole: 1000}


def test_totals_from_the_plans_live_bytes_are_the_totals_counted_again() -> None:
    """When nothing was repacked and the referenced blocks are the plan's, gc reports the
    sizes of what stays from the plan's own count: the same figures as counting again over
    the packs that stay (doomed ones gone, waiting ones set aside)."""
    rng = random.Random(7)
    for _round in range(40):
        referenced, entries = random_index(rng, rng.randint(1, 25))
        sizes = {p: sum(loc.length for _b, loc in held) + 64 for p, held in entries.items()}
        waiting = {p for p in entries if rng.random() < 0.2}
        shares = LiveShares(referenced)
        doom, repack, live = _plan(shares, dict(entries), sizes, waiting, 99, PruneReport())
        assert repack == []
        going = set(doom) | waiting
        from_plan = _totals(PruneReport(), sizes, shares, entries, going, live)
        counted = _totals(PruneReport(), sizes, LiveShares(referenced), entries, going)
        assert from_plan == counted
        assert counted.referenced_bytes == sum(
            reference_owners(referenced, entries, set(sizes) - going)[0].values()
        )


def test_gc_gives_the_cyclic_collector_back_as_it_found_it(tmp_path: Path) -> None:
    """gc pauses Python's cyclic collector while it prunes (its objects have no cycles):
    no collection runs meanwhile, a caller that had it on gets it back, also when prune
    fails, and one that had it off keeps it off."""
    repo = Repository.create(PosixStorage(str(tmp_path / "repo")))
    repo.cache_setting = "off"
    assert collector.isenabled()
    runs: list[str] = []
    threshold = collector.get_threshold()
    collector.callbacks.append(lambda phase, _info: runs.append(phase))
    collector.set_threshold(1)  # a collection at every allocation, unless paused
    try:
        prune(repo, max_unused=5)
    finally:
        collector.set_threshold(*threshold)
        collector.callbacks.pop()
    assert runs == []
    assert collector.isenabled()
    (tmp_path / "repo" / "snapshots" / "main").mkdir(parents=True)
    (tmp_path / "repo" / "snapshots" / "main" / "x").write_bytes(b"not a manifest")
    with pytest.raises(PgkuraError):
        prune(repo, max_unused=5)
    assert collector.isenabled()
    collector.disable()
    try:
        prune(repo, max_unused=5, dry_run=True, gone={("main", "x")})
        assert not collector.isenabled()
    finally:
        collector.enable()
