"""`pgkura verify --quick` (issue 17, point 3): every stored object checked as it is stored,
without decompressing (the AES-GCM tag in an encrypted repository, the digest of the stored
bytes its pack's index records in an unencrypted one), every block a backup references in
the index and intact in its pack, every WAL segment it needs archived. Each kind of damage is
made in a copy of a real repository, found, named, and exits 7; a clean repository's backup
restores and holds the rows that were committed."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runner
from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from pgutil import chown, switch_and_wait_archived
from pgversions import DEFAULT_MAJOR, bin_of
from runner import PGKURA, Result, os_user, run_pgkura
from test_json_output import validator

KINDS = ("plain", "encrypted")
ROWS = "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM notes"


def chown_tree(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{os_user()}:{os_user()}", str(path)], check=True)


@pytest.fixture(scope="module")
def pristine() -> Iterator[dict[str, Any]]:
    """An unencrypted and an encrypted repository, each with an online backup of the same
    cluster (pgbench and a table of notes) whose WAL archive_command pushed into both."""
    base = Path(tempfile.mkdtemp(prefix="pgkura-quick-"))
    make_owned_dir(base, os_user(), 0o755)
    key = base / "raw.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    chown(key)
    key.chmod(0o600)
    repos = {"plain": ["--repo", str(base / "plain")],
             "encrypted": ["--repo", str(base / "encrypted"), "--key-file", str(key)]}  # fmt: skip
    run_pgkura(*repos["plain"], "init")
    run_pgkura(*repos["encrypted"], "init", "--encrypt", "--raw-key")
    pushes = [shlex.join([PGKURA, *args, "archive-push"]) + " %p" for args in repos.values()]
    push = " && ".join(pushes)
    conf = {"wal_level": "replica", "archive_mode": "on", "archive_command": push}
    server = LocalServer(base / "src", free_port(), base, bin_of(DEFAULT_MAJOR), os_user())
    server.initdb(extra_conf=conf)
    server.start()
    backups = {}
    try:
        server.pgbench_init(2)
        server.sql("CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS note "
                   "FROM generate_series(1, 30000) g")  # fmt: skip
        env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        for kind, args in repos.items():
            out = run_pgkura(*args, "backup", "--jobs", "2", "--output", "json", env=env)
            backups[kind] = json.loads(out.stdout)["id"]
        switch_and_wait_archived(server)
        rows = server.sql(ROWS)
    finally:
        server.stop()
    yield {"base": base, "repos": repos, "backups": backups, "rows": rows}
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=KINDS)
def repo(request: pytest.FixtureRequest, pristine: dict[str, Any], work_dir: Path) -> Any:
    """A copy of one pristine repository for one test to damage."""
    kind = request.param
    copy = work_dir / kind
    shutil.copytree(pristine["base"] / kind, copy)
    chown_tree(copy)
    args = [*pristine["repos"][kind]]
    args[1] = str(copy)
    return {"kind": kind, "path": copy, "args": args, "backup": pristine["backups"][kind],
            "rows": pristine["rows"]}  # fmt: skip


def quick(repo: dict[str, Any], *args: str) -> tuple[int, dict[str, Any]]:
    result = run_pgkura(*repo["args"], "verify", "--quick", *args, "--output", "json", check=False)
    assert result.returncode in (0, 7), result.stderr
    return result.returncode, json.loads(result.stdout)


def biggest_pack(repo: dict[str, Any]) -> Path:
    return max((p for p in (repo["path"] / "packs").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)  # fmt: skip


def pack_key(path: Path) -> str:
    return f"packs/{path.parent.name}/{path.name}"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def needed_segment(repo: dict[str, Any]) -> Path:
    """The archived segment the backup starts in (it needs it to become consistent)."""
    info = run_pgkura(*repo["args"], "info", repo["backup"], "--output", "json").stdout
    name = json.loads(info)["backups"][0]["start_wal"]
    return next((repo["path"] / "wal").rglob(name))


def test_a_clean_repository_passes_without_decompressing_and_its_backup_restores(
    repo: dict[str, Any], make_server: Any, work_dir: Path
) -> None:
    code, report = quick(repo)
    assert code == 0 and report["ok"] and report["problems"] == [], report
    assert report["mode"] == "quick" and [b["ok"] for b in report["backups"]] == [True]
    errors = [e.message for e in validator("verify.schema.json").iter_errors(report)]
    assert errors == []  # docs/json/verify.schema.json, closed as tests/test_json_output.py does
    packs = [p for p in (repo["path"] / "packs").rglob("*") if p.is_file()]
    assert report["stored_bytes_read"] == sum(p.stat().st_size for p in packs)  # whole packs
    assert report["blocks_checked"] > 100 and report["blocks_checked_in_full"] == 0
    assert report["wal_files_checked"] >= 2
    # Unencrypted WAL ends with the digest of its stored bytes, encrypted WAL has its tag:
    # none is decompressed.
    assert report["wal_files_checked_in_full"] == 0
    one = run_pgkura(*repo["args"], "verify", "--quick", repo["backup"], "--output", "json")
    assert json.loads(one.stdout)["ok"]

    target = work_dir / "restored"
    run_pgkura(*repo["args"], "restore", "--target-dir", str(target), "--archive-mode", "off")
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql(ROWS) == repo["rows"]


def test_a_flipped_byte_in_a_pack_is_named_with_the_file_that_needs_it(
    repo: dict[str, Any],
) -> None:
    pack = biggest_pack(repo)
    flip(pack, pack.stat().st_size // 3)  # inside a block, far from the trailer
    code, report = quick(repo)
    assert code == 7 and not report["ok"] and [b["ok"] for b in report["backups"]] == [False]
    damaged = [p for p in report["problems"] if p.startswith("block ")]
    assert len(damaged) == 1 and f"in pack {pack_key(pack)} is damaged" in damaged[0], report
    why = "authentication failed" if repo["kind"] == "encrypted" else "recorded digest"
    assert why in damaged[0]
    block = damaged[0].split()[1]
    named = [p for p in report["problems"] if p.startswith(f"backup {repo['backup']}: ")]
    assert len(named) == 1 and f"block {block} in pack {pack_key(pack)}" in named[0]
    # The full verify agrees on the block, and so does the check of that backup alone.
    full = run_pgkura(*repo["args"], "verify", "--output", "json", check=False)
    assert full.returncode == 7 and block in full.stdout
    code, one = quick(repo, repo["backup"])
    assert code == 7 and any(f"block {block}" in p for p in one["problems"])
    assert one["stored_bytes_read"] > 0


def test_a_truncated_pack_is_named(repo: dict[str, Any]) -> None:
    pack = biggest_pack(repo)
    size = pack.stat().st_size
    os.truncate(pack, size // 2)
    code, report = quick(repo)
    assert code == 7 and [b["ok"] for b in report["backups"]] == [False]
    key = pack_key(pack)
    assert (
        f"pack {key} does not end with its trailer: it was truncated or extended"
        in (report["problems"])
    )
    assert any(f"in pack {key} is damaged: it is cut off" in p for p in report["problems"])
    # Unencrypted, the blocks before the cut are checked in full: the digests of their stored
    # bytes were in the copy of the index at the pack's end, which is gone. Encrypted, each
    # block's tag still checks it.
    in_full = report["blocks_checked_in_full"]
    if repo["kind"] == "plain":
        assert 0 < in_full < report["blocks_checked"]
    else:
        assert in_full == 0


def test_a_missing_wal_segment_the_backup_needs_is_named(repo: dict[str, Any]) -> None:
    segment = needed_segment(repo)
    segment.unlink()
    code, report = quick(repo)
    assert code == 7 and [b["ok"] for b in report["backups"]] == [False]
    assert (
        f"backup {repo['backup']}: WAL segment {segment.name}, needed to make it consistent, "
        "is missing from the archive"
    ) in report["problems"]
    code, one = quick(repo, repo["backup"])
    assert code == 7 and len(one["problems"]) == 1 and segment.name in one["problems"][0]


def test_a_damaged_wal_segment_is_named(repo: dict[str, Any]) -> None:
    segment = needed_segment(repo)
    flip(segment, segment.stat().st_size - 1)
    code, report = quick(repo)
    assert code == 7
    assert any(p.startswith(f"archived WAL file {segment.name} is damaged") for p in
               report["problems"]), report  # fmt: skip


def test_a_flipped_byte_inside_a_wal_segment_is_found_without_decompressing(
    repo: dict[str, Any],
) -> None:
    segment = needed_segment(repo)
    flip(segment, segment.stat().st_size // 2)  # in its compressed payload
    code, report = quick(repo)
    assert code == 7 and report["wal_files_checked_in_full"] == 0
    damaged = [p for p in report["problems"]
               if p.startswith(f"archived WAL file {segment.name} is damaged")]  # fmt: skip
    assert len(damaged) == 1, report
    why = "authentication failed" if repo["kind"] == "encrypted" else "recorded digest"
    assert why in damaged[0]
    full = run_pgkura(*repo["args"], "verify", "--output", "json", check=False)
    assert full.returncode == 7 and segment.name in full.stdout


def strip_wal_digest(path: Path) -> bytes:
    """Rewrite the unencrypted WAL object at ``path`` as pgkura wrote it before WAL objects
    ended with the digest of their stored bytes (a zstd skippable frame of 28 bytes, which
    the header's payload length counts); the object as it was."""
    data = path.read_bytes()
    assert data[-28:-24] == struct.pack("<I", 0x184D2A5B) and data[-20:-16] == b"PGKD"
    header = bytearray(data[:56])
    (payload,) = struct.unpack_from("<Q", header, 16)
    struct.pack_into("<Q", header, 16, payload - 28)
    path.write_bytes(bytes(header) + data[56:-28])
    return data


def test_wal_archived_before_stored_digests_is_unsealed_in_full(
    pristine: dict[str, Any], work_dir: Path
) -> None:
    import zstandard

    path = work_dir / "old-wal"
    shutil.copytree(pristine["base"] / "plain", path)
    chown_tree(path)
    old = {"kind": "plain", "path": path, "args": ["--repo", str(path)],
           "backup": pristine["backups"]["plain"]}  # fmt: skip
    segment = needed_segment(old)
    with_digest = strip_wal_digest(segment)
    # Any zstd reader skips the frame: the payload with it holds the same content.
    plain = zstandard.ZstdDecompressor().stream_reader(segment.read_bytes()[56:],
                                                       read_across_frames=True)  # fmt: skip
    framed = zstandard.ZstdDecompressor().stream_reader(with_digest[56:], read_across_frames=True)
    assert plain.read(32 << 20) == framed.read(32 << 20)
    code, report = quick(old)
    assert code == 0 and report["ok"] and report["wal_files_checked_in_full"] == 1, report
    flip(segment, segment.stat().st_size // 2)
    code, report = quick(old)
    assert code == 7
    assert any(p.startswith(f"archived WAL file {segment.name} is damaged") for p in
               report["problems"]), report  # fmt: skip


def test_quick_is_refused_with_pages_or_a_drill(repo: dict[str, Any]) -> None:
    before = sorted(str(p) for p in repo["path"].rglob("*"))
    for other in ("--pages", "--restore"):
        result = run_pgkura(*repo["args"], "verify", "--quick", other, check=False)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 3 and len(lines) == 2, result.stderr
        assert f"not with {other}" in lines[0] and lines[1].startswith("hint:")
    assert sorted(str(p) for p in repo["path"].rglob("*")) == before


def through_click(work_dir: Path) -> str:
    """A ``pgkura`` that always goes through the full CLI (click), never entry.py's fast
    paths."""
    script = work_dir / "pgkura-click"
    script.write_text(f"#!{sys.executable}\nfrom pgkura.cli.app import main\nmain()\n")
    script.chmod(0o755)
    return str(script)


def both_ways(
    monkeypatch: pytest.MonkeyPatch,
    click_pgkura: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``pgkura ARGS`` by the console script and through click: the same exit status,
    stdout and stderr, byte for byte; and the console script took its fast path (with
    ``--quick`` and nothing it does not know) without importing click."""
    fast = run_pgkura(*args, env=env, check=False)
    with monkeypatch.context() as m:
        m.setattr(runner, "PGKURA", click_pgkura)
        full = run_pgkura(*args, env=env, check=False)
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        full.returncode, full.stdout, full.stderr), args  # fmt: skip
    return fast


def imports_click(*args: str, env: dict[str, str] | None = None) -> bool:
    traced = run_pgkura(*args, env={**(env or {}), "PYTHONPROFILEIMPORTTIME": "1"}, check=False)
    modules = [line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines()]
    assert "pgkura.entry" in modules, traced.stderr  # the tracing saw the imports
    return "click" in modules


def test_the_fast_path_of_quick_prints_and_exits_as_click_does(
    repo: dict[str, Any], work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    click_pgkura = through_click(work_dir)
    args, backup = repo["args"], repo["backup"]
    runs = {
        "text": ([*args, "verify", "--quick"], 0),
        "json": ([*args, "verify", "--quick", "--output", "json"], 0),
        "one backup, -j1": ([*args, "verify", "--output=json", "-j1", "--quick", backup], 0),
        "--jobs=2, --": ([*args, "verify", "--jobs=2", "--quick", "--", backup], 0),
        "jobs twice": ([*args, "verify", "--jobs=2", "--quick", "-j", "2"], 3),  # click's
        "stanza": ([*args, "--stanza", "main", "verify", "--quick", "--jobs", "1"], 0),
        "no such backup": ([*args, "verify", "--quick", "20200101T000000000Z"], 3),
        "no such stanza": ([*args, "--stanza", "other", "verify", "--quick"], None),
    }
    for what, (line, code) in runs.items():
        result = both_ways(monkeypatch, click_pgkura, *line)
        assert code is None or result.returncode == code, (what, result)
        assert imports_click(*line) == (what == "jobs twice"), what
    report = json.loads(both_ways(monkeypatch, click_pgkura, *runs["json"][0]).stdout)
    assert report["ok"] and report["blocks_checked"] > 100
    # What click explains goes through click: the same message both ways.
    for bad in (["--jobs", "0"], ["--output", "yaml"], ["--pages"], ["--no-such-option"]):
        result = both_ways(monkeypatch, click_pgkura, *args, "verify", "--quick", *bad)
        assert result.returncode == 3 and "hint:" in result.stderr, (bad, result)
        assert imports_click(*args, "verify", "--quick", *bad), bad  # click said it
    bad_level = both_ways(monkeypatch, click_pgkura, *args, "--log-level", "loud", "verify",
                          "--quick")  # fmt: skip
    assert bad_level.returncode != 0 and "unknown log level" in bad_level.stderr
    # The settings from a config file, and from the environment (the key file too).
    config = work_dir / "pgkura.toml"
    config.write_text("".join(f'{k.lstrip("-").replace("-", "_")} = "{v}"\n'
                              for k, v in zip(args[::2], args[1::2], strict=True)))  # fmt: skip
    chown(config)
    from_file = both_ways(monkeypatch, click_pgkura, "--config", str(config), *runs["json"][0][2:])
    assert json.loads(from_file.stdout) == report
    env = {"PGKURA_CONFIG": str(config)}
    assert (
        json.loads(both_ways(monkeypatch, click_pgkura, *runs["json"][0][2:], env=env).stdout)
        == report
    )
    env = {
        f"PGKURA_{k.lstrip('-').replace('-', '_').upper()}": v
        for k, v in zip(args[::2], args[1::2], strict=True)
    }
    assert (
        json.loads(both_ways(monkeypatch, click_pgkura, *runs["json"][0][2:], env=env).stdout)
        == report
    )
    assert not imports_click(*runs["json"][0][2:], env=env)
    # Damage: exit 7 and the same problems both ways, in text and in JSON.
    pack = biggest_pack(repo)
    flip(pack, pack.stat().st_size // 3)
    for line in (runs["text"][0], runs["json"][0]):
        damaged = both_ways(monkeypatch, click_pgkura, *line)
        assert damaged.returncode == 7 and "verify found" in damaged.stderr, damaged
        assert f"in pack {pack_key(pack)} is damaged" in damaged.stdout


def strip_stored_digests(path: Path) -> int:
    """Rewrite every pack of the unencrypted repository at ``path``, and its index object, as
    pgkura wrote them before packs recorded the digests of their stored bytes (the blocks
    are the same bytes); the number of blocks."""
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    repo = Repository.open(PosixStorage(str(path)))
    blocks = 0
    for pack in (p for p in (path / "packs").rglob("*") if p.is_file()):
        data = pack.read_bytes()
        (index_offset,) = struct.unpack_from("<Q", data, len(data) - 16)
        key = f"index/{pack.name}"
        doc = json.loads(repo.unseal(data[index_offset:-16], name=key))
        del doc["digests"], doc["blocks_digest"]
        blocks += len(doc["blocks"])
        copy = repo.seal(json.dumps(doc).encode(), name=key).data
        pack.write_bytes(data[:index_offset] + copy + data[-16:])
        (path / "index" / pack.name).write_bytes(copy)  # few packs: no merged index objects
    return blocks


def test_packs_written_before_stored_digests_are_checked_in_full(
    pristine: dict[str, Any], work_dir: Path
) -> None:
    path = work_dir / "old"
    shutil.copytree(pristine["base"] / "plain", path)
    blocks = strip_stored_digests(path)
    chown_tree(path)
    old = {"kind": "plain", "path": path, "args": ["--repo", str(path)],
           "backup": pristine["backups"]["plain"]}  # fmt: skip
    code, report = quick(old)
    assert code == 0 and report["blocks_checked"] == report["blocks_checked_in_full"] == blocks
    text = run_pgkura("--repo", str(path), "verify", "--quick").stdout
    assert f"of which {blocks} unsealed in full" in text
    pack = biggest_pack(old)
    flip(pack, pack.stat().st_size // 3)
    code, report = quick(old)
    assert code == 7 and [b["ok"] for b in report["backups"]] == [False]
    assert any(f"in pack {pack_key(pack)} is damaged" in p for p in report["problems"]), report


def test_a_pack_whose_copy_is_its_index_object_skips_the_second_parse_and_a_differing_one_is_named(
    pristine: dict[str, Any], work_dir: Path
) -> None:
    from pgkura.repository import stored_check
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    path = work_dir / "copied"
    shutil.copytree(pristine["base"] / "plain", path)
    chown_tree(path)
    repo = Repository.open(PosixStorage(str(path)))
    pack = biggest_pack({"path": path})
    pid, size = pack.name, pack.stat().st_size
    # As written, a pack's copy of its index is its index object, byte for byte: the copy's
    # blocks digest is read from its end, and matches the blocks.
    read = stored_check.read_whole(repo, pid, index_object=True)
    whole = stored_check.PackToCheck(pid, size, [])
    assert read.blocks_digest is not None and read.index_object == read.copy_bytes
    assert stored_check._is_index_object(whole, read)
    assert stored_check._blocks_digest(repo, whole, read) == read.blocks_digest
    # An index object (sealed soundly) that places one block otherwise than the pack's copy
    # does: no longer the same bytes, so compared entry by entry, named, and exit 7.
    key = f"index/{pid}"
    doc = json.loads(repo.unseal((path / "index" / pid).read_bytes(), name=key))
    doc["blocks"][0][3] += 1  # its raw length
    (path / "index" / pid).write_bytes(repo.seal(json.dumps(doc).encode(), name=key).data)
    read = stored_check.read_whole(repo, pid, index_object=True)
    assert not stored_check._is_index_object(whole, read)
    code, report = quick({"args": ["--repo", str(path)]})
    assert code == 7 and not report["ok"], report
    assert f"pack {pack_key(pack)}: the index copy at its end differs from its index object" in (
        report["problems"]), report  # fmt: skip
    assert any("its pack's own index does not list it" in p for p in report["problems"]), report


@pytest.mark.parametrize("kind", KINDS)
def test_quick_on_s3_finds_a_flipped_byte_and_a_missing_segment(
    kind: str, make_server: Any, work_dir: Path, s3_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*s3_repo.args]
    if kind == "encrypted":
        key = work_dir / "raw.key"
        key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        chown(key)
        key.chmod(0o600)
        args += ["--key-file", str(key)]
        run_pgkura(*args, "init", "--encrypt", "--raw-key")
    else:
        run_pgkura(*args, "init")
    conf = {"wal_level": "replica", "archive_mode": "on",
            "archive_command": shlex.join([PGKURA, *args, "archive-push"]) + " %p"}  # fmt: skip
    src = make_server("src", extra_conf=conf)
    src.sql("CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS note "
            "FROM generate_series(1, 50000) g")  # fmt: skip
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    backup = json.loads(run_pgkura(*args, "backup", "--output", "json", env=env).stdout)["id"]
    switch_and_wait_archived(src)
    repo = {"args": args, "backup": backup}

    code, report = quick(repo)
    store = s3_repo.store()
    packs = {o.key: o.size for o in store.list("packs/")}
    assert code == 0 and report["ok"] and report["stored_bytes_read"] == sum(packs.values())
    assert report["blocks_checked"] > 0 and report["blocks_checked_in_full"] == 0

    pack = max(packs, key=lambda k: packs[k])
    data = bytearray(store.get(pack))
    data[len(data) // 3] ^= 0x40
    store.put(pack, bytes(data))
    info = json.loads(run_pgkura(*args, "info", backup, "--output", "json").stdout)
    segment = info["backups"][0]["start_wal"]
    store.delete(f"wal/main/{segment[:16]}/{segment}")
    code, report = quick(repo)
    # S3 through the fast path and through click: the same report, the same exit 7.
    line = [*args, "verify", "--quick", "--output", "json"]
    assert json.loads(both_ways(monkeypatch, through_click(work_dir), *line).stdout) == report
    assert code == 7 and [b["ok"] for b in report["backups"]] == [False]
    assert any(p.startswith("block ") and f"in pack {pack} is damaged" in p
               for p in report["problems"]), report  # fmt: skip
    assert (
        f"backup {backup}: WAL segment {segment}, needed to make it consistent, is missing "
        "from the archive"
    ) in report["problems"]


def test_the_tag_check_of_a_block_refuses_what_authenticate_refuses() -> None:
    """verify --quick's per-block check (sealed.Cipher.check_tag) against the full one."""
    from pgkura.codec.compression import parse_codec
    from pgkura.repository import sealed

    cipher = sealed.Cipher(os.urandom(32))
    block_id = os.urandom(32)
    good = sealed.frame(os.urandom(3000) * 3, parse_codec("zstd:3"), block_id, cipher, b"block")
    assert cipher.check_tag(good, block_id, b"block")
    sealed.authenticate(good, block_id, cipher, b"block")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    header = bytearray(good)
    header[10] ^= 1  # the raw length: covered by the tag
    damaged = {
        "another id": (good, os.urandom(32), b"block"),
        "another identity": (good, block_id, b"object index/x"),
        "a flipped byte": (bytes(flipped), block_id, b"block"),
        "a changed header": (bytes(header), block_id, b"block"),
        "truncated": (good[:-1], block_id, b"block"),
        "cut to its header": (good[: sealed.HEADER_SIZE + 8], block_id, b"block"),
    }
    for what, (data, digest, identity) in damaged.items():
        assert not cipher.check_tag(data, digest, identity), what
        with pytest.raises(sealed.SealError):
            sealed.authenticate(data, digest, cipher, identity)
    # A pack's blocks in one loop (failed_tags): the flipped one fails, and so does the last,
    # cut off by the end of what was read; the others hold, from any base offset.
    other_id = os.urandom(32)
    other = sealed.frame(os.urandom(5000), parse_codec("none"), other_id, cipher, b"block")
    pack = good + bytes(flipped) + other + good
    view = memoryview(pack)[:-1]
    spans = [(0, len(good)), (len(good), len(good)), (2 * len(good), len(other)),
             (2 * len(good) + len(other), len(good))]  # fmt: skip
    ids = [block_id, block_id, other_id, block_id]
    objects = [(i, ("p", at, n, 0)) for i, (at, n) in zip(ids, spans, strict=True)]
    assert cipher.failed_tags(view, 0, objects, b"block") == [block_id, block_id]
    assert cipher.failed_tags(view, 0, [objects[0], objects[2]], b"block") == []
    assert cipher.failed_tags(view[len(good) :], len(good), objects[1:3], b"block") == [block_id]
    assert cipher.failed_tags(view, 0, [(other_id, ("p", 0, len(good), 0))], b"block") == [other_id]
    assert cipher.failed_tags(view, 0, objects[2:3], b"object index/x") == [other_id]


def test_a_mapped_read_is_what_a_read_is(tmp_path: Path) -> None:
    """storage.posix's get_mapped (verify --quick maps whole packs): the same bytes as get,
    the same error for an absent object, and nothing for an empty one."""
    from pgkura.errors import ObjectNotFound
    from pgkura.storage.posix import PosixStorage

    store = PosixStorage(str(tmp_path))
    data = os.urandom(3 * 4096 + 17)
    store.put("packs/ab/one", data)
    store.put("packs/ab/empty", b"")
    mapped = store.get_mapped("packs/ab/one")
    assert bytes(mapped) == data == store.get("packs/ab/one") and len(mapped) == len(data)
    assert store.get_mapped("packs/ab/empty") == b""
    with pytest.raises(ObjectNotFound):
        store.get_mapped("packs/ab/none")


def test_packs_beyond_the_read_ahead_are_compared_by_their_bytes_too(
    pristine: dict[str, Any], work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a read-ahead of one pack, every other pack is read by its check, its own index
    object with it: each is still found to be its index object's very bytes."""
    from pgkura.physical.quick_verify import verify_quick
    from pgkura.repository import stored_check
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    path = work_dir / "copied"
    shutil.copytree(pristine["base"] / "plain", path)
    packs = [p for p in (path / "packs").rglob("*") if p.is_file()]
    assert len(packs) >= 2, packs
    seen: list[str] = []
    real = stored_check._blocks_digest

    def spy(repo: Any, pack: Any, read: Any) -> bytes | None:
        seen.append(pack.pack_id)
        return real(repo, pack, read)

    monkeypatch.setattr(stored_check, "READ_AHEAD_BYTES", 1)
    monkeypatch.setattr(stored_check, "_blocks_digest", spy)
    report = verify_quick(Repository.open(PosixStorage(str(path))), "main", None, 2)
    assert report.problems == [] and report.blocks_checked > 100
    assert sorted(seen) == sorted(p.name for p in packs)


def test_the_scratch_of_a_dead_run_is_still_swept(repo: dict[str, Any]) -> None:
    """The fast path (and the full CLI) skip importing the sweep when the scratch parent
    holds nothing named as scratch is; a dead run's directory is still removed."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = Path(tempfile.gettempdir()) / f"pgkura-dump-{gone.pid}-quickswept"
    left.mkdir()
    (left / "part").write_text("left by a run that was killed")
    chown_tree(left)
    try:
        run_pgkura(*repo["args"], "verify", "--quick")
        assert not left.exists()
    finally:
        shutil.rmtree(left, ignore_errors=True)
