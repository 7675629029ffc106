"""Key rotation, rewriting what retired data keys sealed, and replayed snapshots (issue 17),
against real servers: every restore is started and its rows compared."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

from pgkura.pg.server import LocalServer
from pgutil import switch_and_wait_archived
from runner import PGKURA, os_user, run_pgkura
from test_encryption import MARKER, PASSPHRASE_A, key_file, only_line, repo_files

HEADER = struct.Struct("<4sBBHQQ32s")  # docs/repository-format.md, "Sealed objects"
TRAILER = struct.Struct("<Q8s")
QUERY = "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM secrets"


def sealed_generations(repo: str) -> dict[str, set[int]]:
    """For each sealed object in the repository's files, the data key generations its headers
    name (a pack: each block's and its index copy's), read from the raw bytes."""
    files = {str(Path(p).relative_to(repo)): data for p, data in repo_files(repo).items()}
    return generations_of(files)


def generations_of(objects: dict[str, bytes]) -> dict[str, set[int]]:
    """:func:`sealed_generations` of objects given as key -> stored bytes."""
    out: dict[str, set[int]] = {}
    for rel, data in objects.items():
        if not data.startswith(b"PGK1"):
            continue
        if rel.startswith("packs/"):
            end, magic = TRAILER.unpack(data[-TRAILER.size :])
            assert magic == b"PGKPACK1", rel
            offsets, at = [end], 0
            while at < end:  # the blocks are sealed objects one after another
                offsets.append(at)
                at += HEADER.size + HEADER.unpack_from(data, at)[5]
        else:
            offsets = [0]
        gens = set()
        for at in offsets:
            _magic, _codec, flags, field, *_ = HEADER.unpack_from(data, at)
            assert flags == 1, rel
            gens.add(field or 1)
        out[rel] = gens
    return out


def opens_with(repo: str, key: str, generation_key: int) -> list[str]:
    """The stored objects whose tag verifies under data key ``generation_key`` alone, tried
    whatever generation their header names (the raw files, through the envelope's cipher)."""
    from pgkura.repository import sealed
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    repo_obj = Repository.open(PosixStorage(repo), key)
    assert repo_obj.master_key is not None
    from pgkura.repository.keys import open_data_keys

    keys = {1: repo_obj.master_key[:32]}
    keys.update(open_data_keys(repo_obj.master_key, repo_obj.config.repo_id,
                               repo_obj.config.data_keys))  # fmt: skip
    if generation_key not in keys:
        return []
    only = keys[generation_key]
    cipher = sealed.Cipher(only, dict.fromkeys(range(2, 64), only))  # every generation: one key
    opened = []
    for obj in repo_obj.storage.list(""):
        data = repo_obj.storage.get(obj.key)
        if not data.startswith(b"PGK1"):
            continue
        pieces = [(data, b"object " + obj.key.encode())]
        if obj.key.startswith("packs/"):  # each block, and the index copy at the end
            end = TRAILER.unpack(data[-TRAILER.size :])[0]
            index_name = "index/" + obj.key.rsplit("/")[-1]
            pieces = [(data[end : -TRAILER.size], b"object " + index_name.encode())]
            at = 0
            while at < end:
                size = HEADER.size + HEADER.unpack_from(data, at)[5]
                pieces.append((data[at : at + size], b"block"))
                at += size
        for piece, identity in pieces:
            try:
                sealed.unseal(piece, repo_obj.key, None, cipher, identity)
                opened.append(obj.key)
            except sealed.SealError:
                pass
    return opened


def owned(path: str | Path) -> None:
    """Files a test put into the repository belong to the user pgkura runs as."""
    if os.geteuid() == 0 and os_user():
        subprocess.run(["chown", "-R", f"{os_user()}:{os_user()}", str(path)], check=True)


def backup_then_copy_then_rows(
    make_server: Any, work_dir: Path, pgk: tuple[str, ...], rows_before: int
) -> tuple[dict[str, str], str, Path, Any]:
    """A new encrypted repository (``pgk``), an offline backup of a cluster holding
    ``rows_before`` rows of ``secrets`` (0: no table), a copy of the repository as it is then
    (``work_dir/old-copy``), and the table grown to 1000 rows; (env, first backup's id, the
    copy, the rows' QUERY result)."""
    repo = pgk[pgk.index("--repo") + 1]
    run_pgkura(*pgk, "init", "--encrypt")
    src = make_server("src", extra_conf={"wal_level": "replica"})
    if rows_before:
        src.sql("CREATE TABLE secrets AS SELECT g AS id, md5(g::text) AS note "
                f"FROM generate_series(1, {rows_before}) g")  # fmt: skip
    src.stop()
    env = {"PGKURA_PGDATA": str(src.pgdata)}
    first = json.loads(run_pgkura(*pgk, "backup", "--output", "json", env=env).stdout)["id"]
    old = work_dir / "old-copy"
    shutil.copytree(repo, old)
    src.start()
    src.sql("CREATE TABLE IF NOT EXISTS secrets (id int, note text)")
    src.sql("INSERT INTO secrets SELECT g, md5(g::text) "
            f"FROM generate_series({rows_before + 1}, 1000) g")  # fmt: skip
    rows = src.sql(QUERY)
    src.stop()
    return env, first, old, rows


def start_restored(make_server: Any, name: str, target: Path) -> LocalServer:
    server: LocalServer = make_server(name, pgdata=target, init=False)
    server.wait_for_promotion()
    return server


def test_backups_before_and_after_rotate_restore_and_rewrite_keys_retires_the_old_key(
    make_server: Any, work_dir: Path
) -> None:
    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    pgk = ("--repo", repo, "--key-file", key)
    run_pgkura(*pgk, "init", "--encrypt")
    push = shlex.join([PGKURA, *pgk, "archive-push"]) + " %p"
    src = make_server("src", extra_conf={"wal_level": "replica", "archive_mode": "on",
                                          "archive_command": push})  # fmt: skip
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql(f"CREATE TABLE secrets AS SELECT g AS id, '{MARKER}' || md5(g::text) AS note "
            "FROM generate_series(1, 20000) g")  # fmt: skip
    before = json.loads(run_pgkura(*pgk, "backup", "--output", "json", env=env).stdout)["id"]
    rows_before = src.sql(QUERY)
    segment_before = switch_and_wait_archived(src)
    wal_bytes = {segment_before: (src.pgdata / "pg_wal" / segment_before).read_bytes()}

    rotated = json.loads(run_pgkura(*pgk, "key", "rotate", "--output", "json").stdout)
    assert rotated["changed"] == "2"
    states = [(k["generation"], k["current"]) for k in rotated["data_keys"]]
    assert states == [(1, False), (2, True)]
    assert json.loads(Path(repo, "pgkura.json").read_text())["version"] == 5
    src.sql(f"INSERT INTO secrets SELECT g, 'after rotate {MARKER}' || g "
            "FROM generate_series(20001, 30000) g")  # fmt: skip
    after = json.loads(run_pgkura(*pgk, "backup", "--output", "json", env=env).stdout)["id"]
    src.sql("INSERT INTO secrets VALUES (0, 'before the restore point')")
    src.sql("SELECT pg_create_restore_point('after_rotate')")
    rows_point = src.sql(QUERY)
    src.sql("INSERT INTO secrets VALUES (-1, 'after the restore point')")
    segment_after = switch_and_wait_archived(src)
    wal_bytes[segment_after] = (src.pgdata / "pg_wal" / segment_after).read_bytes()
    src.stop()

    gens = sealed_generations(repo)
    assert gens[f"snapshots/main/{before}"] == {1} and gens[f"snapshots/main/{after}"] == {2}
    wal = {Path(k).name: g for k, g in gens.items() if k.startswith("wal/")}
    assert wal[segment_before] == {1} and wal[segment_after] == {2}
    # archive-get after the rotation hands back segments sealed under either key.
    for name, content in wal_bytes.items():
        run_pgkura(*pgk, "archive-get", name, str(work_dir / name))
        assert (work_dir / name).read_bytes() == content
    # The backup taken before the rotation restores (data key 1) while data key 2 is current.
    run_pgkura(*pgk, "restore", before, "--target-dir", str(work_dir / "r1"), "--to-immediate",
               "--archive-mode", "off")  # fmt: skip
    assert start_restored(make_server, "r1", work_dir / "r1").sql(QUERY) == rows_before

    # verify --quick checks each object's tag under the key its header names.
    assert run_pgkura(*pgk, "verify", "--quick").returncode == 0
    # The first gc --rewrite-keys reseals everything and keeps data key 1 (it found some).
    out = json.loads(run_pgkura(*pgk, "gc", "--rewrite-keys", "--output", "json").stdout)
    rekey = out["rekey"]
    assert rekey["retired"] == [1] and rekey["objects_rewritten"] > 0
    assert rekey["packs_rewritten"] > 0 and rekey["dropped"] == [] and rekey["unreadable"] == []
    assert all(g == {2} for g in sealed_generations(repo).values()), sealed_generations(repo)
    assert opens_with(repo, key, 1) == []
    opened = opens_with(repo, key, 2)
    assert f"snapshots/main/{after}" in opened and any(k.startswith("packs/") for k in opened)
    # The second finds nothing under data key 1 and drops it from pgkura.json.
    out = json.loads(run_pgkura(*pgk, "gc", "--rewrite-keys", "--output", "json").stdout)
    assert out["rekey"]["dropped"] == [1] and out["rekey"]["objects_rewritten"] == 0
    config = json.loads(Path(repo, "pgkura.json").read_text())
    assert [k["generation"] for k in config["data_keys"]] == [2]
    assert config["dropped_data_keys"] == [1]
    listed = json.loads(run_pgkura(*pgk, "key", "list", "--output", "json").stdout)
    assert [k["generation"] for k in listed["data_keys"]] == [2]
    assert not [p for p, data in repo_files(repo).items() if MARKER.encode() in data]
    assert run_pgkura(*pgk, "verify").returncode == 0
    assert run_pgkura(*pgk, "verify", "--quick").returncode == 0

    # Both backups restore after the rewrite, and so does a point in time after the rotation.
    run_pgkura(*pgk, "restore", before, "--target-dir", str(work_dir / "r2"), "--to-immediate",
               "--archive-mode", "off")  # fmt: skip
    assert start_restored(make_server, "r2", work_dir / "r2").sql(QUERY) == rows_before
    run_pgkura(*pgk, "restore", after, "--target-dir", str(work_dir / "r3"), "--to-name",
               "after_rotate", "--archive-mode", "off")  # fmt: skip
    assert start_restored(make_server, "r3", work_dir / "r3").sql(QUERY) == rows_point
    for name, content in wal_bytes.items():  # resealed WAL: archive-get hands back the same
        (work_dir / name).unlink()
        run_pgkura(*pgk, "archive-get", name, str(work_dir / name))
        assert (work_dir / name).read_bytes() == content


def test_a_wrong_key_after_rotate_is_refused_in_one_line_and_writes_nothing(
    work_dir: Path,
) -> None:
    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    run_pgkura("--repo", repo, "--key-file", key, "init", "--encrypt")
    assert json.loads(Path(repo, "pgkura.json").read_text())["version"] == 4
    run_pgkura("--repo", repo, "--key-file", key, "key", "rotate")
    assert json.loads(Path(repo, "pgkura.json").read_text())["version"] == 5
    before = repo_files(repo)
    wrong = key_file(work_dir / "wrong.key", "not the passphrase at all")
    for command in (("info",), ("key", "rotate"), ("gc", "--rewrite-keys"), ("verify",)):
        result = run_pgkura("--repo", repo, "--key-file", wrong, *command, check=False)
        error, hint = only_line(result.stderr)
        assert result.returncode != 0 and "does not open the repository" in error, command
        assert "not the passphrase" not in result.stderr + result.stdout
        assert "key list" in hint
    assert repo_files(repo) == before

    # A rotated data key altered in pgkura.json (or moved to another generation) is refused.
    config_path = Path(repo, "pgkura.json")
    config = json.loads(config_path.read_text())
    config["data_keys"][0]["generation"] = 3
    config_path.write_text(json.dumps(config))
    result = run_pgkura("--repo", repo, "--key-file", key, "info", check=False)
    error, hint = only_line(result.stderr)
    assert result.returncode != 0 and "data key 3 in pgkura.json does not open" in error
    assert "from a copy" in hint
    # Its version lowered to 4 (which would turn the catalogs' checks off): refused too.
    config["data_keys"][0]["generation"], config["version"] = 2, 4
    config_path.write_text(json.dumps(config))
    result = run_pgkura("--repo", repo, "--key-file", key, "info", check=False)
    error, hint = only_line(result.stderr)
    assert result.returncode != 0 and "format version 4" in error and "from a copy" in hint

    # An unencrypted repository has no data key to rotate or rewrite.
    plain = str(work_dir / "plain")
    run_pgkura("--repo", plain, "init")
    before = repo_files(plain)
    for command in (("key", "rotate"), ("gc", "--rewrite-keys")):
        result = run_pgkura("--repo", plain, *command, check=False)
        error, hint = only_line(result.stderr)
        assert result.returncode != 0 and "is not encrypted" in error, command
    assert repo_files(plain) == before


def test_a_snapshot_replayed_from_an_older_copy_is_named_by_verify_and_restore(
    make_server: Any, work_dir: Path
) -> None:
    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    pgk = ("--repo", repo, "--key-file", key)
    env, first, old, rows = backup_then_copy_then_rows(make_server, work_dir, pgk, 0)
    second = json.loads(run_pgkura(*pgk, "backup", "--output", "json", env=env).stdout)["id"]
    run_pgkura(*pgk, "delete", first, "--force")
    catalogs = sorted(p.name for p in Path(repo, "catalogs", "main").iterdir())
    assert len(catalogs) == 3  # one epoch per commit or deletion

    # The deleted backup's manifest, put back from the older copy: sealed soundly, but the
    # catalog no longer lists it.
    manifest = Path("snapshots", "main", first)
    shutil.copy(old / manifest, Path(repo, manifest))
    owned(Path(repo, manifest))
    result = run_pgkura(*pgk, "verify", check=False)
    assert result.returncode == 7 and f"snapshots/main/{first}" in result.stdout
    assert "replayed from an older copy" in result.stdout
    restore = run_pgkura(*pgk, "restore", first, "--target-dir", str(work_dir / "t1"),
                         check=False)  # fmt: skip
    assert restore.returncode == 7 and f"snapshots/main/{first}" in restore.stderr
    assert "replayed from an older copy" in restore.stderr
    assert not (work_dir / "t1").exists() or not any((work_dir / "t1").iterdir())
    Path(repo, manifest).unlink()

    # The whole older catalog put back (the newer epochs gone): the newer backup is not in it.
    shutil.copytree(Path(repo, "catalogs"), work_dir / "newer-catalogs")
    shutil.rmtree(Path(repo, "catalogs"))
    shutil.copytree(old / "catalogs", Path(repo, "catalogs"))
    owned(Path(repo, "catalogs"))
    result = run_pgkura(*pgk, "verify", check=False)
    assert result.returncode == 7 and f"snapshots/main/{second}" in result.stdout
    assert "replayed from an older copy" in result.stdout
    restore = run_pgkura(*pgk, "restore", "--target-dir", str(work_dir / "t2"), check=False)
    assert restore.returncode == 7 and f"snapshots/main/{second}" in restore.stderr

    # No catalog at all: in a repository of version 5 every stanza with backups has one.
    shutil.rmtree(Path(repo, "catalogs"))
    result = run_pgkura(*pgk, "verify", check=False)
    assert result.returncode == 7 and f"snapshots/main/{second}" in result.stdout
    assert "has no catalog" in result.stdout

    # With the newest catalog back, the repository verifies and the backup restores.
    shutil.copytree(work_dir / "newer-catalogs", Path(repo, "catalogs"))
    owned(Path(repo, "catalogs"))
    assert run_pgkura(*pgk, "verify").returncode == 0

    # A repository as a pgkura before catalogs left it (version 4, none): read unchecked,
    # and the next key rotate (or backup) gives the stanza its first epoch, listing its
    # manifests, before the version goes to 5.
    # This host saw epoch 3, so it takes no such repository for an old one (catalog_mark);
    # a host that never read this repository does.
    shutil.rmtree(Path(repo, "catalogs"))
    config = json.loads(Path(repo, "pgkura.json").read_text())
    Path(repo, "pgkura.json").write_text(json.dumps({**config, "version": 4}))
    result = run_pgkura(*pgk, "verify", check=False)
    assert result.returncode == 7 and "this host has seen epoch 3" in result.stdout
    pgk = (*pgk, "--cache-dir", "off")
    assert run_pgkura(*pgk, "verify").returncode == 0
    run_pgkura(*pgk, "key", "rotate")
    assert json.loads(Path(repo, "pgkura.json").read_text())["version"] == 5
    assert [p.name for p in Path(repo, "catalogs", "main").iterdir()] == ["0" * 15 + "1"]
    assert run_pgkura(*pgk, "verify").returncode == 0
    run_pgkura(*pgk, "restore", "--target-dir", str(work_dir / "t3"), "--archive-mode", "off")
    assert start_restored(make_server, "t3", work_dir / "t3").sql(QUERY) == rows


class Stopped(Exception):
    """Raised in place of the n-th write of a gc --rewrite-keys: it stops there."""


def rewrite_stopped_at(repo: str, key: str, writes: int | None) -> int:
    """Run gc --rewrite-keys's steps in this process on ``repo``, stopped in place of its
    ``writes``-th change to the store (None: to the end); the changes it made."""
    from pgkura.repository.locks import maintenance_lock
    from pgkura.repository.prune import prune
    from pgkura.repository.rekey import drop_retired, rewrite_keys
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    storage = PosixStorage(repo)
    done = [0]

    def counted(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not isinstance(args[0], str):
                args = (list(args[0]), *args[1:])
            first = args[0] if isinstance(args[0], str) else next(iter(args[0]), "")
            if first.startswith("locks/"):  # its own lock: a killed process's would be dead
                return method(*args, **kwargs)
            if writes is not None and done[0] >= writes:
                raise Stopped
            done[0] += 1
            return method(*args, **kwargs)

        return call

    for name in ("put", "put_if_absent", "delete", "delete_many"):
        setattr(storage, name, counted(getattr(storage, name)))
    target = Repository.open(storage, key)
    try:
        with maintenance_lock(target):
            report = rewrite_keys(target)
            prune(target, max_unused=5.0)
            drop_retired(target, report)
    except Stopped:
        pass
    owned(repo)
    return done[0]


def test_a_rewrite_stopped_at_any_write_leaves_every_backup_restorable(
    make_server: Any, work_dir: Path
) -> None:
    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    pgk = ("--repo", repo, "--key-file", key)
    run_pgkura(*pgk, "init", "--encrypt")
    src = make_server("src")
    src.sql("CREATE TABLE secrets AS SELECT g AS id, md5(g::text) AS note "
            "FROM generate_series(1, 5000) g")  # fmt: skip
    src.stop()
    env = {"PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura(*pgk, "backup", env=env)
    run_pgkura(*pgk, "key", "rotate")
    src.start()
    src.sql("UPDATE secrets SET note = note || 'x' WHERE id % 3 = 0")
    rows = src.sql(QUERY)
    src.stop()
    run_pgkura(*pgk, "backup", env=env)

    trial = work_dir / "trial"
    shutil.copytree(repo, trial)
    total = rewrite_stopped_at(str(trial), key, None)
    assert total > 8
    for writes in sorted({1, 2, total // 4, total // 2, total - 3, total - 1}):
        copy = work_dir / f"stopped-{writes}"
        shutil.copytree(repo, copy)
        owned(copy)
        rewrite_stopped_at(str(copy), key, writes)
        check = ("--repo", str(copy), "--key-file", key)
        result = run_pgkura(*check, "verify", check=False)
        assert result.returncode == 0, (writes, result.stdout)
        # The next runs finish the work: the old key goes, and both backups still verify.
        run_pgkura(*check, "gc", "--rewrite-keys")
        run_pgkura(*check, "gc", "--rewrite-keys")
        config = json.loads(Path(copy, "pgkura.json").read_text())
        assert config["dropped_data_keys"] == [1], writes
        assert run_pgkura(*check, "verify").returncode == 0
        assert all(g == {2} for g in sealed_generations(str(copy)).values())
    run_pgkura("--repo", str(copy), "--key-file", key, "restore", "--target-dir",
               str(work_dir / "restored"))  # fmt: skip
    assert start_restored(make_server, "restored", work_dir / "restored").sql(QUERY) == rows


def test_a_retired_key_is_kept_while_a_command_older_than_the_rotation_runs(
    work_dir: Path,
) -> None:
    import socket

    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    pgk = ("--repo", repo, "--key-file", key)
    run_pgkura(*pgk, "init", "--encrypt")
    # A backup of this host that took its shared lock before the rotation and still runs
    # (this test's own process stands in for it: its pid is alive).
    lock = Path(repo, "locks", "shared-0123456789abcdef.lock")
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "command": "backup", "created": "2026-01-01T00:00:00.000Z",
                                "token": "feedfacefeedface"}))  # fmt: skip
    owned(Path(repo, "locks"))
    run_pgkura(*pgk, "key", "rotate")
    for _ in range(2):
        out = json.loads(run_pgkura(*pgk, "gc", "--rewrite-keys", "--output", "json").stdout)
        assert out["rekey"]["dropped"] == [] and "backup (pid" in out["rekey"]["kept"][0]
        text = run_pgkura(*pgk, "gc", "--rewrite-keys").stdout
        assert "kept data key 1" in text and "since before the rotation" in text
    assert [k["generation"] for k in json.loads(Path(repo, "pgkura.json").read_text())
            ["data_keys"]] == [2]  # fmt: skip
    lock.unlink()  # it ended: the next run drops the key
    out = json.loads(run_pgkura(*pgk, "gc", "--rewrite-keys", "--output", "json").stdout)
    assert out["rekey"]["dropped"] == [1]
    assert json.loads(Path(repo, "pgkura.json").read_text())["dropped_data_keys"] == [1]


def test_rotate_and_rewrite_keys_on_s3_keep_both_backups_restorable(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    pgk = (*s3_repo.args, "--key-file", key)
    run_pgkura(*pgk, "init", "--encrypt")
    src = make_server("src")
    src.sql("CREATE TABLE secrets AS SELECT g AS id, md5(g::text) AS note "
            "FROM generate_series(1, 20000) g")  # fmt: skip
    rows_first = src.sql(QUERY)
    src.stop()
    env = {"PGKURA_PGDATA": str(src.pgdata)}
    first = run_pgkura(*pgk, "backup", env=env).stdout.strip()
    run_pgkura(*pgk, "key", "rotate")
    src.start()
    src.sql("DELETE FROM secrets WHERE id % 5 = 0")
    rows_second = src.sql(QUERY)
    src.stop()
    second = run_pgkura(*pgk, "backup", env=env).stdout.strip()
    run_pgkura(*pgk, "gc", "--rewrite-keys")
    out = json.loads(run_pgkura(*pgk, "gc", "--rewrite-keys", "--output", "json").stdout)
    assert out["rekey"]["dropped"] == [1]
    store = s3_repo.store()
    stored = {o.key: store.get(o.key) for o in store.list("")}
    gens = generations_of(stored)
    assert any(k.startswith("packs/") for k in gens) and f"snapshots/main/{first}" in gens
    assert all(g == {2} for g in gens.values()), gens
    assert json.loads(stored["pgkura.json"])["dropped_data_keys"] == [1]
    assert run_pgkura(*pgk, "verify").returncode == 0
    for backup_id, rows in ((first, rows_first), (second, rows_second)):
        target = work_dir / f"r-{backup_id}"
        run_pgkura(*pgk, "restore", backup_id, "--target-dir", str(target))
        assert start_restored(make_server, f"r-{backup_id}", target).sql(QUERY) == rows


def test_kill_9_at_random_points_of_gc_rewrite_keys_loses_nothing(
    make_server: Any, work_dir: Path
) -> None:
    import random
    import signal
    import time

    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    pgk = ("--repo", repo, "--key-file", key)
    run_pgkura(*pgk, "init", "--encrypt")
    src = make_server("src")
    src.pgbench_init(5)
    src.stop()
    env = {"PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura(*pgk, "backup", env=env)
    run_pgkura(*pgk, "key", "rotate")
    src.start()
    src.sql("UPDATE pgbench_accounts SET abalance = aid % 97 WHERE aid % 4 = 0")
    balance = "SELECT count(*), sum(abalance) FROM pgbench_accounts"
    expected = src.sql(balance)
    src.stop()
    run_pgkura(*pgk, "backup", env=env)
    # Kill points spread over a whole run, timed on a copy.
    trial = work_dir / "trial"
    shutil.copytree(repo, trial)
    owned(trial)
    began = time.monotonic()
    run_pgkura("--repo", str(trial), "--key-file", key, "gc", "--rewrite-keys")
    whole = time.monotonic() - began
    rng = random.Random(17)
    mixed = []
    for attempt in range(4):
        command = [PGKURA, *pgk, "gc", "--rewrite-keys"]
        if os_user():
            command = ["runuser", "-u", os_user() or "", "--", *command]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        if attempt == 0:  # the first once its first new pack is stored
            packs = set(Path(repo, "packs").rglob("*"))
            deadline = time.monotonic() + 60
            while not set(Path(repo, "packs").rglob("*")) - packs and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            time.sleep(whole * rng.uniform(0.2, 0.9))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        check = run_pgkura(*pgk, "verify", "--no-pages", "--output", "json", check=False)
        report = json.loads(check.stdout)
        assert all(b["ok"] for b in report["backups"]), (attempt, report)
        # The one finding a kill may leave: a new pack stored, its index object not yet
        # (read from the pack's own copy; the next gc writes the object back).
        left = [p for p in report["problems"] if "index object" not in p or "missing" not in p]
        assert left == [], (attempt, report["problems"])
        found = set().union(*sealed_generations(repo).values())
        mixed.append(found == {1, 2})
    # The first kill landed while objects under both keys were stored.
    assert mixed[0], (whole, mixed)
    run_pgkura(*pgk, "gc", "--rewrite-keys")
    run_pgkura(*pgk, "gc", "--rewrite-keys")
    assert json.loads(Path(repo, "pgkura.json").read_text())["dropped_data_keys"] == [1]
    assert all(g == {2} for g in sealed_generations(repo).values())
    assert run_pgkura(*pgk, "verify").returncode == 0
    target = work_dir / "restored"
    run_pgkura(*pgk, "restore", "--target-dir", str(target))
    assert start_restored(make_server, "restored", target).sql(balance) == expected


def test_a_stanza_rolled_back_as_a_whole_is_refused_by_a_host_that_saw_it_newer(
    make_server: Any, work_dir: Path
) -> None:
    """The store alone cannot tell an older copy of the whole stanza (older epochs with older
    manifests) from a stanza that never went further; the host that saw the newer epoch can."""
    repo = str(work_dir / "repo")
    key = key_file(work_dir / "a.key", PASSPHRASE_A)
    cache = work_dir / "cache"
    cache.mkdir()
    owned(cache)
    pgk = ("--repo", repo, "--key-file", key, "--cache-dir", str(cache))
    env, first, old, rows = backup_then_copy_then_rows(make_server, work_dir, pgk, 100)
    second = json.loads(run_pgkura(*pgk, "backup", "--output", "json", env=env).stdout)["id"]

    # The whole repository put back as it was after the first backup: every object in it
    # is sound and consistent with its catalog.
    shutil.rmtree(repo)
    shutil.copytree(old, repo)
    owned(repo)
    result = run_pgkura(*pgk, "verify", check=False)
    assert result.returncode == 7 and f"snapshots/main/{first}" in result.stdout
    assert "rolled back to an older copy" in result.stdout and "seen epoch 2" in result.stdout
    restore = run_pgkura(*pgk, "restore", "--target-dir", str(work_dir / "t1"), check=False)
    error, hint = only_line(restore.stderr)
    assert restore.returncode == 7 and "rolled back to an older copy" in error
    assert not (work_dir / "t1").exists() or not any((work_dir / "t1").iterdir())
    before = repo_files(repo)  # verify left its run record
    backup = run_pgkura(*pgk, "backup", env=env, check=False)
    error, hint = only_line(backup.stderr)
    assert backup.returncode != 0 and "rolled back" in error, backup.stderr
    assert repo_files(repo) == before  # nothing written on top of the rolled-back stanza

    # Another host (a cache of its own) has not seen the newer epoch: it reads the older
    # stanza as it is, and so does this one once told the rollback was on purpose.
    other = ("--repo", repo, "--key-file", key, "--cache-dir", "off")
    assert run_pgkura(*other, "verify").returncode == 0
    mark = hint.rpartition("delete ")[2].split(" and run")[0]
    assert Path(mark).is_relative_to(cache), hint
    Path(mark).unlink()
    target = work_dir / "t2"
    run_pgkura(*pgk, "restore", "--target-dir", str(target))
    restored = start_restored(make_server, "restored", target)
    assert restored.sql("SELECT count(*) FROM secrets")[0][0] == 100
    assert second not in run_pgkura(*pgk, "info").stdout
    assert rows[0][0] == 1000
