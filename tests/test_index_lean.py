"""The lean index of `verify --quick` (repository/index_lean.py): it lists what BlockIndex
loads, a whole check through it finds and names exactly what the check through BlockIndex
does, and any index not in its common form is left to BlockIndex. Each case is a copy of a
real repository (tests/test_verify_quick.py's fixtures: an online backup of a real cluster,
unencrypted and encrypted)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pgkura.commands import open_repository
from pgkura.config import load_config
from pgkura.physical import quick_verify
from pgkura.repository import index_lean
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.index_lean import read_lean_index
from pgkura.repository.repo import Repository
from test_verify_quick import biggest_pack, flip, pack_key, pristine, quick, repo

__all__ = ["pristine", "repo"]  # fixtures, used by name


def opened(repo: dict[str, Any]) -> Repository:
    settings = {"repo": str(repo["path"])}
    if repo["kind"] == "encrypted":
        settings["key_file"] = repo["args"][repo["args"].index("--key-file") + 1]
    return open_repository(load_config(settings, None))


def both_ways(
    repo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[str], bool]:
    """The problems a whole check finds through the lean index and through BlockIndex, and
    whether the lean one was used."""
    opened_repo = opened(repo)
    lean_used = read_lean_index(opened_repo, 2) is not None
    lean = quick_verify.verify_quick(opened_repo, "main", None, 2)
    with monkeypatch.context() as m:
        m.setattr(quick_verify, "read_lean_index", lambda *_args: None)
        full = quick_verify.verify_quick(opened(repo), "main", None, 2)
    assert lean.blocks_checked == full.blocks_checked
    assert lean.stored_bytes_read == full.stored_bytes_read
    assert [b.ok for b in lean.backups] == [b.ok for b in full.backups]
    return lean.problems, full.problems, lean_used


def test_the_lean_index_lists_every_block_blockindex_loads(repo: dict[str, Any]) -> None:
    r = opened(repo)
    lean = read_lean_index(r, 2)
    assert lean is not None
    index = BlockIndex(r).load(keep_packs=True, fresh=True)
    assert lean.ids() == {b.hex() for b, _loc in index.items()} and len(lean.ids()) > 100
    assert set(lean.packs) == index.pack_ids and lean.sizes == index.pack_sizes()
    some = {b.hex() for b, _loc in index.items()[:5]}
    assert lean.missing(some | {"ab" * 32}) == {"ab" * 32} and lean.missing(some) == set()
    for pack_id, entries in index.pack_entries.items():
        made = lean.entries(pack_id)
        assert len(made) == len(entries) and list(made) == entries and made[0] == entries[0]
        assert [(b, list(loc)) for b, loc in made.for_tags()] == [
            (b, [b.hex(), *loc[1:]]) for b, loc in entries
        ]
        assert all(lean.pack_of(b.hex()) == index.get(b).pack_id for b, _loc in entries)  # type: ignore[union-attr]


def test_a_clean_and_a_flipped_pack_are_judged_alike_both_ways(
    repo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lean, full, used = both_ways(repo, monkeypatch)
    assert used and lean == full == []
    pack = biggest_pack(repo)
    flip(pack, pack.stat().st_size // 2)
    lean, full, used = both_ways(repo, monkeypatch)
    assert used and lean == full and any(f"in pack {pack_key(pack)} is damaged" in p for p in lean)
    code, report = quick(repo)
    assert code == 7 and report["problems"] == lean


def test_a_block_missing_from_the_repository_is_named_both_ways(
    repo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pack and its index object gone: its blocks are in no index object, in no pack.
    pack = biggest_pack(repo)
    pack.unlink()
    (repo["path"] / "index" / pack.name).unlink()
    lean, full, used = both_ways(repo, monkeypatch)
    assert used and lean == full, (lean, full)
    missing = [p for p in lean if "is missing from the repository" in p]
    assert missing and all(p.startswith(f"backup {repo['backup']}: ") for p in missing), lean
    code, report = quick(repo)
    assert code == 7 and report["problems"] == lean and not report["backups"][0]["ok"]


def test_a_pack_whose_index_object_names_a_pack_that_is_gone_is_named_both_ways(
    repo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = biggest_pack(repo)
    pack.unlink()
    lean, full, used = both_ways(repo, monkeypatch)
    assert used and lean == full and f"pack {pack_key(pack)} is missing" in lean, lean


def test_an_index_not_in_its_common_form_is_left_to_blockindex(
    repo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = opened(repo)
    index_dir: Path = repo["path"] / "index"
    some = sorted(index_dir.iterdir())[0]
    sound = some.read_bytes()
    key = f"index/{some.name}"
    doc = json.loads(r.unseal(sound, name=key))
    cases = {
        "damaged": sound[:-1] + bytes([sound[-1] ^ 1]),
        "an entry of three": r.seal(
            json.dumps({**doc, "blocks": [doc["blocks"][0][:3], *doc["blocks"][1:]]}).encode(),
            name=key,
        ).data,
        "a bad hex id": r.seal(
            json.dumps(
                {**doc, "blocks": [["zz" * 32, *doc["blocks"][0][1:]], *doc["blocks"][1:]]}
            ).encode(),
            name=key,
        ).data,
        "another pack's": r.seal(json.dumps({**doc, "pack": "0" * 32}).encode(), name=key).data,
    }
    for why, data in cases.items():
        some.write_bytes(data)
        assert read_lean_index(r, 2) is None, why
        lean, full, used = both_ways(repo, monkeypatch)
        assert not used and lean == full and lean, (why, lean)
    some.write_bytes(sound)
    assert read_lean_index(r, 2) is not None
    some.unlink()  # a pack without an index object: read from its trailer by BlockIndex
    assert read_lean_index(r, 2) is None
    some.write_bytes(sound)
    merged = index_dir / "merged"
    merged.mkdir(exist_ok=True)
    (merged / ("1" * 32)).write_bytes(b"not a merged object")
    assert read_lean_index(r, 2) is None
    code, report = quick(repo)
    assert code == 7 and any("index object index/merged/" in p for p in report["problems"])


def test_entries_kept_in_the_cache_are_taken_only_for_the_content_they_were_made_from(
    repo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole check keeps what each index object lists beside the digest of its content;
    a later check takes it from there only when the object it read from the store unseals to
    that very content. The store's object is always read and unsealed first."""
    r = opened(repo)
    first = read_lean_index(r, 2)
    assert first is not None
    cache_dir = IndexCache.of(r).directory
    assert cache_dir is not None
    forms = {p.name: p for p in Path(cache_dir, "lean", "index").iterdir()}
    assert set(forms) == set(first.packs) and len(forms) >= 2

    def parses_nothing(_body: bytes) -> Any:
        raise AssertionError("an index object's JSON was parsed")

    with monkeypatch.context() as m:  # every object's entries come from the cache
        m.setattr(index_lean, "json", SimpleNamespace(loads=parses_nothing))
        kept = read_lean_index(opened(repo), 2)
    assert kept is not None and kept.packs == first.packs and kept.sizes == first.sizes

    a, b = sorted(forms)[:2]
    forms[b].write_bytes(forms[a].read_bytes())  # another object's entries under b's name
    damaged = bytearray(forms[a].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    forms[a].write_bytes(bytes(damaged))
    again = read_lean_index(opened(repo), 2)  # neither is taken: both parsed again
    assert again is not None and again.packs == first.packs

    # Other content under a's key (one entry fewer, a form BlockIndex takes too): the entries
    # kept for the old content are not taken.
    index_object = repo["path"] / "index" / a
    sound = index_object.read_bytes()
    key = f"index/{a}"
    doc = json.loads(r.unseal(sound, name=key))
    index_object.write_bytes(
        r.seal(json.dumps({**doc, "blocks": doc["blocks"][1:]}).encode(), name=key).data
    )
    fewer = read_lean_index(opened(repo), 2)
    assert fewer is not None and fewer.packs[a] == doc["blocks"][1:] != first.packs[a]

    # The store comes first: a damaged object is refused although its kept entries are sound.
    index_object.write_bytes(sound)
    assert read_lean_index(opened(repo), 2) is not None
    index_object.write_bytes(sound[:-1] + bytes([sound[-1] ^ 1]))
    assert read_lean_index(opened(repo), 2) is None
    lean, full, used = both_ways(repo, monkeypatch)
    assert not used and lean == full and any(key in p for p in lean), lean
