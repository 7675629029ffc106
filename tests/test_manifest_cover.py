"""The cover records of `verify --quick` (repository/manifest_cover.py): a whole check that
found everything sound records, per manifest, what it proved, and the next one takes the
record instead of parsing the manifest only while the manifest's stored bytes and the index
objects that list its blocks are the very ones it was proved with, and every pack is sound.
Whatever breaks one of those, the check finds and names exactly what a check without any
record (the cache off) does. Each case is a copy of a real repository
(tests/test_verify_quick.py's fixtures: an online backup of a real cluster, unencrypted and
encrypted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgkura.commands import open_repository
from pgkura.config import load_config
from pgkura.physical import quick_verify
from pgkura.physical.verdicts import VerifyReport
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.repo import Repository
from test_verify_quick import biggest_pack, flip, pristine, quick, repo

__all__ = ["pristine", "repo"]  # fixtures, used by name


def opened(repo: dict[str, Any], cache: Path | str) -> Repository:
    settings = {"repo": str(repo["path"]), "cache_dir": str(cache)}
    if repo["kind"] == "encrypted":
        settings["key_file"] = repo["args"][repo["args"].index("--key-file") + 1]
    return open_repository(load_config(settings, None))


def summary(report: VerifyReport) -> tuple[Any, ...]:
    return (
        report.problems,
        [(b.id, b.files, b.ok) for b in report.backups],
        report.blocks_checked,
        report.stored_bytes_read,
        report.wal_checked,
    )


class Checks:
    """Whole checks of one repository copy with its own cache, counting the manifests they
    parse; each compared with a check with the cache off."""

    def __init__(self, repo: dict[str, Any], cache: Path, monkeypatch: pytest.MonkeyPatch):
        self.repo, self.cache, self.parsed = repo, cache, 0
        parse = quick_verify.parse_manifest

        def counted(*args: Any) -> Any:
            self.parsed += 1
            return parse(*args)

        monkeypatch.setattr(quick_verify, "parse_manifest", counted)

    def run(self) -> tuple[Any, ...]:
        """The check's summary (asserted equal to the one without records), and how many
        manifests it parsed."""
        self.parsed = 0
        found = summary(quick_verify.verify_quick(opened(self.repo, self.cache), "main", None, 2))
        parsed = self.parsed
        without = summary(quick_verify.verify_quick(opened(self.repo, "off"), "main", None, 2))
        assert found == without, (found, without)
        self.parsed = parsed
        return found

    def record(self) -> Path:
        directory = IndexCache.of(opened(self.repo, self.cache)).directory
        assert directory is not None
        return Path(directory, "cover", "main", self.repo["backup"])


def test_a_second_whole_check_takes_the_manifest_from_its_record_and_reports_the_same(
    repo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks(repo, tmp_path / "cache", monkeypatch)
    first = checks.run()
    assert checks.parsed == 1 and checks.record().is_file()
    assert first[0] == [] and first[1] == [(repo["backup"], first[1][0][1], True)]
    assert first[1][0][1] > 100  # files, as the manifest counts them
    again = checks.run()
    assert checks.parsed == 0 and again == first
    # A record does not unseal (damaged): discarded, the manifest parsed, the record made again.
    data = bytearray(checks.record().read_bytes())
    data[len(data) // 2] ^= 0x01
    checks.record().write_bytes(bytes(data))
    assert checks.run() == first and checks.parsed == 1
    assert checks.record().read_bytes() != bytes(data)
    assert checks.run() == first and checks.parsed == 0


def test_a_damaged_or_missing_pack_is_named_for_the_backup_although_its_record_holds(
    repo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks(repo, tmp_path / "cache", monkeypatch)
    clean = checks.run()
    pack = biggest_pack(repo)
    sound = pack.read_bytes()
    flip(pack, len(sound) // 3)  # the record's index objects are unchanged: only the pack
    damaged = checks.run()
    assert checks.parsed == 1, "a record must not stand in for the manifest beside damage"
    named = [p for p in damaged[0] if p.startswith(f"backup {repo['backup']}: ")]
    assert len(named) == 1 and "is damaged" in named[0] and not damaged[1][0][2], damaged
    pack.unlink()  # the pack gone, its index object still listing its blocks
    gone = checks.run()
    assert checks.parsed == 1 and any(p.startswith(f"backup {repo['backup']}: ") for p in gone[0])
    pack.write_bytes(sound)
    assert checks.run() == clean
    code, report = quick(repo)
    assert code == 0 and report["ok"]


def test_an_index_object_gone_or_rewritten_or_another_manifest_is_not_covered_by_the_record(
    repo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks(repo, tmp_path / "cache", monkeypatch)
    clean = checks.run()
    r = opened(repo, "off")
    pack = biggest_pack(repo)
    index_object = repo["path"] / "index" / pack.name
    key = f"index/{pack.name}"
    sound = index_object.read_bytes()
    # The same entries under other bytes (as a rewrite would store them): not the object the
    # record was proved with, so the manifest is parsed and its blocks looked up again.
    doc = json.loads(r.unseal(sound, name=key))
    index_object.write_bytes(r.seal(json.dumps(doc, indent=1).encode(), name=key).data)
    rewritten = checks.run()
    assert checks.parsed == 1 and rewritten[1] == clean[1]
    index_object.write_bytes(sound)
    checks.run()
    # The pack and its index object gone: the blocks they held are missing, and named so.
    pack_bytes = pack.read_bytes()
    pack.unlink()
    index_object.unlink()
    gone = checks.run()
    assert checks.parsed == 1
    missing = [p for p in gone[0] if "is missing from the repository" in p]
    assert missing and all(p.startswith(f"backup {repo['backup']}: ") for p in missing), gone
    pack.write_bytes(pack_bytes)
    index_object.write_bytes(sound)
    assert checks.run() == clean
    # Another manifest under the backup's key (one file fewer): its own count, not the
    # record's; in an encrypted repository its catalog refuses it as replayed.
    manifest = next((repo["path"] / "snapshots").rglob(repo["backup"]))
    mkey = f"snapshots/main/{repo['backup']}"
    doc = json.loads(r.unseal(manifest.read_bytes(), name=mkey))
    manifest.write_bytes(
        r.seal(json.dumps({**doc, "files": doc["files"][1:]}).encode(), name=mkey).data
    )
    other = checks.run()
    assert checks.parsed == 1
    if repo["kind"] == "encrypted":
        assert other[1] == [(repo["backup"], 0, False)]
        assert any("is not the version its catalog lists" in p for p in other[0]), other
    else:
        assert other[0] == [] and other[1] == [(repo["backup"], clean[1][0][1] - 1, True)]
