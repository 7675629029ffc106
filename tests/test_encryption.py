"""Encrypted repositories (issue 17): every stored object sealed with AES-256-GCM bound to its
name, the master key in key slots opened by passphrases, against real servers."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from pgutil import chown, switch_and_wait_archived
from pgversions import DEFAULT_MAJOR, bin_of
from runner import PGKURA, os_user, run_pgkura

MARKER = "pgkura-secret-marker-5d1f"
PASSPHRASE_A = "correct horse battery staple A"
PASSPHRASE_B = "a second passphrase for slot B"


def key_file(where: Path, secret: str, mode: int = 0o600) -> str:
    where.write_text(secret + "\n")
    chown(where)
    where.chmod(mode)
    return str(where)


def only_line(stderr: str) -> tuple[str, str]:
    """(the error line, the hint line) of a refused command."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[1].startswith("hint:"), stderr
    return lines[0], lines[1]


def repo_files(repo: str) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in Path(repo).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pristine() -> Iterator[dict[str, Any]]:
    """An encrypted repository with an online backup whose WAL is archived (rows inserted
    after the backup too) and a logical dump; and a plain repository with the same dump."""
    base = Path(tempfile.mkdtemp(prefix="pgkura-crypt-"))
    make_owned_dir(base, os_user(), 0o755)
    repo, plain = str(base / "repo"), str(base / "plain")
    key_a = key_file(base / "a.key", PASSPHRASE_A)
    run_pgkura("--repo", repo, "--key-file", key_a, "init", "--encrypt")
    run_pgkura("--repo", plain, "init", "--compress", "none")
    push = shlex.join([PGKURA, "--repo", repo, "--key-file", key_a, "archive-push"]) + " %p"
    conf = {"wal_level": "replica", "archive_mode": "on", "archive_command": push}
    server = LocalServer(base / "src", free_port(), base, bin_of(DEFAULT_MAJOR), os_user())
    server.initdb(extra_conf=conf)
    server.start()
    try:
        server.sql(
            f"CREATE TABLE secrets AS SELECT g AS id, '{MARKER}' || md5(g::text) AS note "
            "FROM generate_series(1, 20000) g"
        )
        env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        out = run_pgkura("--repo", repo, "--key-file", key_a, "backup", "--output", "json", env=env)
        backup_id = json.loads(out.stdout)["id"]
        server.sql(f"INSERT INTO secrets VALUES (0, '{MARKER} after the backup')")
        dump_cmd = ("dump", "--dbname", "postgres", "--output", "json")
        out = run_pgkura("--repo", repo, "--key-file", key_a, *dump_cmd, env=env)
        dump_id = json.loads(out.stdout)["id"]
        run_pgkura("--repo", plain, *dump_cmd, "--format", "plain", env=env)
        switch_and_wait_archived(server)
        rows = server.sql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM secrets")
    finally:
        server.stop()
    yield {"base": base, "repo": repo, "plain": plain, "key_a": key_a, "backup": backup_id,
           "dump": dump_id, "rows": rows}  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def crypt(pristine: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """A copy of the pristine encrypted repository for one test to change."""
    copy = work_dir / "crypt"
    shutil.copytree(pristine["repo"], copy)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{os_user()}:{os_user()}", str(copy)], check=True)
    return {**pristine, "repo": str(copy)}


def pgk(c: dict[str, Any], *args: str, key: str | None = None, **kw: Any) -> Any:
    return run_pgkura("--repo", c["repo"], "--key-file", key or c["key_a"], *args, **kw)


def test_no_stored_byte_reveals_the_data_or_the_hash_key(pristine: dict[str, Any]) -> None:
    marker = MARKER.encode()
    files = repo_files(pristine["repo"])
    kinds = {Path(p).relative_to(pristine["repo"]).parts[0] for p in files}
    assert {"packs", "index", "snapshots", "wal", "stanzas"} <= kinds
    assert [p for p, data in files.items() if marker in data] == []
    config = json.loads(Path(pristine["repo"], "pgkura.json").read_text())
    assert "hash_key" not in config and config["encryption"] == "aes-256-gcm"
    # 5: its first backup wrote a stanza catalog (docs/repository-format.md, "Catalogs").
    assert config["version"] == 5 and len(config["key_slots"]) == 1
    # The same dump in an uncompressed plain repository holds the marker: the grep above
    # would see it.
    assert any(marker in data for data in repo_files(pristine["plain"]).values())
    assert "hash_key" in json.loads(Path(pristine["plain"], "pgkura.json").read_text())


def test_added_key_restores_and_removed_key_is_refused(
    crypt: dict[str, Any], make_server: Any, work_dir: Path
) -> None:
    key_b = key_file(work_dir / "b.key", PASSPHRASE_B)
    added = json.loads(pgk(crypt, "key", "add", "--new-key-file", key_b, "--output", "json").stdout)
    slots = json.loads(pgk(crypt, "key", "list", "--output", "json", key=key_b).stdout)["slots"]
    assert len(slots) == 2 and added["changed"] in [s["id"] for s in slots]
    first = next(s["id"] for s in slots if s["id"] != added["changed"])
    pgk(crypt, "key", "remove", first, key=key_b)
    refused = pgk(crypt, "info", check=False)
    error, _ = only_line(refused.stderr)
    assert refused.returncode != 0 and "does not open the repository" in error
    assert PASSPHRASE_A not in refused.stderr + refused.stdout

    # Restored with the new key: the restore_command it writes passes --key-file on.
    target = work_dir / "restored"
    pgk(crypt, "restore", "--target-dir", str(target), key=key_b)
    assert "--key-file" in (target / "postgresql.auto.conf").read_text()
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    query = "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM secrets"
    assert restored.sql(query) == crypt["rows"]
    assert restored.sql("SELECT note FROM secrets WHERE id = 0")[0][0].startswith(MARKER)
    assert pgk(crypt, "verify", key=key_b).returncode == 0


def test_a_dump_restores_from_the_encrypted_repository(
    crypt: dict[str, Any], make_server: Any
) -> None:
    dst = make_server("dst")
    pgk(crypt, "restore", crypt["dump"], "--dbname", "copy", "--create", env=dst.libpq_env())
    query = "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM secrets"
    got = dst.sql(query, dbname="copy")
    assert got[0][0] == crypt["rows"][0][0]  # the dump was taken after the extra row too
    assert got == crypt["rows"]


def test_bad_keys_are_refused_in_one_line_and_change_nothing(
    crypt: dict[str, Any], work_dir: Path
) -> None:
    before = repo_files(crypt["repo"])
    wrong = key_file(work_dir / "wrong.key", "not the passphrase at all")
    result = pgk(crypt, "info", key=wrong, check=False)
    error, _ = only_line(result.stderr)
    assert result.returncode != 0 and "does not open the repository" in error
    assert "not the passphrase" not in result.stderr

    result = run_pgkura("--repo", crypt["repo"], "info", check=False)
    error, hint = only_line(result.stderr)
    assert result.returncode != 0 and "is encrypted" in error and "--key-file" in hint

    loose = key_file(work_dir / "loose.key", PASSPHRASE_A, mode=0o644)
    result = pgk(crypt, "info", key=loose, check=False)
    error, hint = only_line(result.stderr)
    assert result.returncode != 0 and "is open to other users" in error and "chmod 600" in hint

    # The key file may come from the environment or the config file instead of the flag.
    run_pgkura("--repo", crypt["repo"], "info", env={"PGKURA_KEY_FILE": crypt["key_a"]})
    config = work_dir / "pgkura.toml"
    config.write_text(f'repo = "{crypt["repo"]}"\nkey-file = "{crypt["key_a"]}"\n')
    chown(config)
    run_pgkura("--config", str(config), "info")

    only = json.loads(pgk(crypt, "key", "list", "--output", "json").stdout)["slots"][0]["id"]
    result = pgk(crypt, "key", "remove", only, check=False)
    error, _ = only_line(result.stderr)
    assert result.returncode != 0 and "only one" in error
    assert repo_files(crypt["repo"]) == before


def test_a_flipped_byte_in_a_pack_is_named(crypt: dict[str, Any], work_dir: Path) -> None:
    pack = max(Path(crypt["repo"], "packs").rglob("*"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x01
    pack.write_bytes(bytes(data))
    result = pgk(crypt, "verify", check=False)
    assert result.returncode == 7 and f"packs/{pack.parent.name}/{pack.name}" in result.stdout
    assert "authentication failed" in result.stdout
    restore = pgk(crypt, "restore", "--target-dir", str(work_dir / "t"), check=False)
    assert restore.returncode == 7 and f"{pack.name} is damaged" in restore.stderr


def test_objects_swapped_by_name_or_truncated_are_named(
    crypt: dict[str, Any], work_dir: Path
) -> None:
    segments = sorted(p for p in Path(crypt["repo"], "wal").rglob("0*") if len(p.name) == 24)
    first, second, cut = segments[-2], segments[-1], segments[-3]
    cut.write_bytes(cut.read_bytes()[:-100])
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    snapshots = Path(crypt["repo"], "snapshots", "main")
    backup, dump = snapshots / crypt["backup"], snapshots / crypt["dump"]
    a, b = backup.read_bytes(), dump.read_bytes()
    backup.write_bytes(b)
    dump.write_bytes(a)
    result = pgk(crypt, "verify", check=False)
    assert result.returncode == 7, result.stdout
    assert f"archived WAL file {first.name} is damaged" in result.stdout
    assert f"archived WAL file {second.name} is damaged" in result.stdout
    assert f"archived WAL file {cut.name} is damaged" in result.stdout
    assert f"the manifest of backup {crypt['backup']}" in result.stdout
    restore = pgk(crypt, "restore", "--target-dir", str(work_dir / "t"), check=False)
    assert restore.returncode == 7 and f"snapshots/main/{crypt['backup']}" in restore.stderr
    # archive-get refuses to hand PostgreSQL a segment stored under another's name.
    dest = work_dir / "got"
    got = pgk(crypt, "archive-get", first.name, str(dest), check=False)
    assert got.returncode == 255 and first.name in got.stderr and not dest.exists()


def test_archive_push_shows_no_secret_and_imports_cryptography_only_when_encrypted(
    crypt: dict[str, Any], make_server: Any, work_dir: Path, repo: str
) -> None:
    from test_archive import modules_after, one_segment

    src = make_server("src", extra_conf={"wal_level": "replica"})
    run_pgkura("--repo", repo, "archive-push", str(one_segment(src)))
    plain = modules_after(work_dir, "--repo", repo, "archive-push", str(one_segment(src)))
    assert "pgkura.wal.archive" in plain and not any(m.startswith("cryptography") for m in plain)
    args = ("--repo", crypt["repo"], "--key-file", crypt["key_a"], "--stanza", "other")
    encrypted = modules_after(work_dir, *args, "archive-push", str(one_segment(src)))
    assert "cryptography.hazmat.bindings._rust" in encrypted

    # While archive-push runs, no process's command line carries the passphrase.
    segment = one_segment(src)
    cmd = [PGKURA, *args, "archive-push", str(segment)]
    if os_user() is not None:
        cmd = ["runuser", "-u", os_user() or "", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    ps = ["ps", "-ww", "-eo", "args"]  # -ww: whole command lines, not cut at 80 columns
    while proc.poll() is None:
        seen.append(subprocess.run(ps, capture_output=True, text=True).stdout)
        time.sleep(0.01)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert any("archive-push" in s for s in seen)
    assert not any(PASSPHRASE_A in s for s in seen) and PASSPHRASE_A not in out + err


def test_a_raw_key_slot_opens_without_argon2_and_archives(
    crypt: dict[str, Any], make_server: Any, work_dir: Path
) -> None:
    raw = key_file(work_dir / "raw.key", "9f" * 24)
    short = key_file(work_dir / "short.key", "too short a raw key")
    result = pgk(crypt, "key", "add", "--raw-key", "--new-key-file", short, check=False)
    error, hint = only_line(result.stderr)
    assert result.returncode != 0 and "fewer than 32" in error and "/dev/urandom" in hint
    pgk(crypt, "key", "add", "--raw-key", "--new-key-file", raw)
    listed = pgk(crypt, "key", "list", key=raw).stdout
    assert "raw key" in listed and "argon2id" in listed

    src = make_server("src", extra_conf={"wal_level": "replica"})
    from test_archive import HEAVY_MODULES, modules_after, one_segment

    imported = {}
    for name, key in (("passphrase", crypt["key_a"]), ("raw", raw)):
        segment = one_segment(src)
        args = ("--repo", crypt["repo"], "--key-file", key, "--stanza", "other")
        imported[name] = modules_after(work_dir, *args, "archive-push", str(segment))
        dest = work_dir / f"{name}.wal"
        run_pgkura("--repo", crypt["repo"], "--key-file", raw, "--stanza", "other",
                   "archive-get", segment.name, str(dest))  # fmt: skip
        assert dest.read_bytes() == segment.read_bytes()
    # A passphrase's slot opens through Argon2id (64 MiB, 3 passes, about 0.25 s); a raw
    # key's in microseconds, and its push imports of cryptography only the Rust binding the
    # AEAD comes from (sealed.aesgcm): neither Argon2id nor the public modules, with typing.
    assert "cryptography.hazmat.primitives.kdf.argon2" in imported["passphrase"]
    raw_push = imported["raw"]
    assert "cryptography.hazmat.bindings._rust" in raw_push
    assert not any(m.startswith("cryptography.hazmat.primitives") for m in raw_push), raw_push
    assert raw_push & HEAVY_MODULES == set()


def test_the_aead_is_cryptographys_public_class_and_a_failed_tag_raises_its_invalid_tag() -> None:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from pgkura.repository.sealed import aesgcm, invalid_tag

    assert aesgcm() is AESGCM and invalid_tag() is InvalidTag
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = aesgcm()(key).encrypt(nonce, b"content", b"name")
    with pytest.raises(invalid_tag()):
        aesgcm()(key).decrypt(nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"name")


def test_the_async_pusher_and_prefetcher_read_the_key_file(
    make_server: Any, work_dir: Path
) -> None:
    raw = key_file(work_dir / "raw.key", "5a" * 24)
    repo = str(work_dir / "async-repo")
    run_pgkura("--repo", repo, "--key-file", raw, "init", "--encrypt", "--raw-key")
    flags = ["--repo", repo, "--key-file", raw, "--archive-async", "on",
             "--spool-path", str(work_dir / "spool")]  # fmt: skip
    push = shlex.join([PGKURA, *flags, "archive-push"]) + " %p"
    src = make_server("src", extra_conf={"wal_level": "replica", "archive_mode": "on",
                                          "archive_command": push})  # fmt: skip
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql(f"CREATE TABLE secrets AS SELECT g AS id, '{MARKER}' AS note "
            "FROM generate_series(1, 5000) g")  # fmt: skip
    backup_id = run_pgkura(*flags, "backup", env=env).stdout.strip()
    src.sql("UPDATE secrets SET id = -id WHERE id % 2 = 0")
    expected = src.sql("SELECT sum(id) FROM secrets")[0][0]
    switch_and_wait_archived(src)
    # check reads the archive_command's settings, --key-file included, and pushes through it.
    assert "reached the archive" in run_pgkura(*flags, "check", env=env).stdout
    src.stop()
    assert not [p for p, data in repo_files(repo).items() if MARKER.encode() in data]

    target = work_dir / "restored"
    run_pgkura(*flags, "restore", "--backup", backup_id, "--target-dir", str(target),
               "--archive-mode", "off")  # fmt: skip
    auto = (target / "postgresql.auto.conf").read_text()
    assert "--archive-async on" in auto and f"--key-file {raw}" in auto
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT sum(id) FROM secrets")[0][0] == expected


def test_every_small_record_is_sealed_and_bound_to_its_name(tmp_path: Path) -> None:
    """Pins, drill and expire records, doomed lists and stanza records: plain JSON in an
    unencrypted repository, sealed objects here; one moved to another name does not read."""
    from pgkura.repository import doomed, expiry, pins
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    key = key_file(tmp_path / "k.key", PASSPHRASE_A)
    Repository.create(PosixStorage(str(tmp_path / "r")), secret=PASSPHRASE_A.encode())
    repo = Repository.open(PosixStorage(str(tmp_path / "r")), key)
    repo.ensure_stanza("main", "7000000000000000001", 17)
    pins.pin(repo, "main", "B1-rec", pitr=False)
    repo.drills.record("main", "B1-rec", {"backup": "B1-rec", "passed": True, "finished": MARKER})
    expiry.record_pending(repo, "main", {"7000000000000000001"})
    doomed.write_doomed(repo, doomed.new_doomed_list(["ab" * 16]))
    stored = {o.key: repo.storage.get(o.key) for o in repo.storage.list("")}
    records = [
        k for k in stored if k.split("/")[0] in ("stanzas", "pins", "drills", "expire", "gc")
    ]
    assert len(records) == 5
    assert all(stored[k].startswith(b"PGK1") and b"B1-rec" not in stored[k] for k in records)
    assert MARKER.encode() not in b"".join(stored.values())
    stanza = repo.stanza("main")
    assert stanza is not None and stanza.system_identifier == "7000000000000000001"
    assert pins.pins(repo, "main")["B1-rec"].pitr is False
    assert (repo.drills.latest("main", "B1-rec") or {}).get("finished") == MARKER
    assert expiry.pending_generations(repo, "main") == {"7000000000000000001"}
    assert doomed.doomed_packs(repo) == {"ab" * 16}

    # A pin copied to another backup's name does not unseal: it still pins, as a damaged one.
    repo.storage.put("pins/main/B2.json", stored["pins/main/B1-rec.json"])
    assert pins.pins(repo, "main")["B2"].pinned == "?"
    # A drill record moved under another backup is not that backup's.
    repo.storage.put("drills/main/B2.json", stored["drills/main/B1-rec.json"])
    assert repo.drills.latest("main", "B2") is None
    # A plain JSON record put in place of a sealed one is not read either.
    repo.storage.put("expire/main.json", b'{"system_identifiers": ["1"]}')
    assert expiry.pending_generations(repo, "main") == set()


def test_pin_delete_and_gc_keep_an_encrypted_repository_sound(crypt: dict[str, Any]) -> None:
    def packs() -> int:
        return sum(1 for p in Path(crypt["repo"], "packs").rglob("*") if p.is_file())

    before = packs()
    pgk(crypt, "pin", crypt["backup"])
    pgk(crypt, "delete", crypt["dump"], "--force")  # and gc, through sealed doomed lists
    pgk(crypt, "gc")
    assert packs() < before
    info = json.loads(pgk(crypt, "info", "--output", "json").stdout)
    assert [b["id"] for b in info["backups"]] == [crypt["backup"]]
    assert list(Path(crypt["repo"], "pins", "main").iterdir())
    result = pgk(crypt, "verify", "--output", "json")
    assert json.loads(result.stdout)["ok"] is True


def test_an_encrypted_repository_copies_only_into_an_encrypted_one(
    crypt: dict[str, Any], work_dir: Path
) -> None:
    clear = str(work_dir / "clear-copy")
    result = pgk(crypt, "copy", "--to", clear, "--all", check=False)
    error, hint = only_line(result.stderr)
    assert result.returncode != 0 and "in the clear" in error and "init --encrypt" in hint
    assert not Path(clear).exists() or not any(Path(clear).iterdir())

    sealed = str(work_dir / "sealed-copy")
    run_pgkura("--repo", sealed, "--key-file", crypt["key_a"], "init", "--encrypt")
    pgk(crypt, "copy", "--to", sealed, "--all", "--wal")
    copied = json.loads(run_pgkura("--repo", sealed, "--key-file", crypt["key_a"], "info",
                                   "--output", "json").stdout)  # fmt: skip
    assert {b["id"] for b in copied["backups"]} == {crypt["backup"], crypt["dump"]}
    assert not [p for p, data in repo_files(sealed).items() if MARKER.encode() in data]
    verify = run_pgkura("--repo", sealed, "--key-file", crypt["key_a"], "verify")
    assert verify.returncode == 0


def test_a_drill_of_an_encrypted_backup_passes_and_its_record_is_sealed(
    crypt: dict[str, Any], work_dir: Path
) -> None:
    out = pgk(crypt, "verify", "--restore", crypt["backup"], "--output", "json",
              env={"TMPDIR": str(work_dir)})  # fmt: skip
    (result,) = json.loads(out.stdout)["drills"]
    assert result["passed"], result["problems"]
    # The drill recovers to the backup's end: the row inserted after it is not there.
    assert result["row_counts"]["postgres"]["public.secrets"] == crypt["rows"][0][0] - 1
    info = json.loads(pgk(crypt, "info", "--output", "json").stdout)
    assert info["backups"][0]["last_drill"]["passed"] is True
    record = Path(crypt["repo"], "drills", "main", f"{crypt['backup']}.json").read_bytes()
    assert record.startswith(b"PGK1") and b"secrets" not in record


def test_init_refuses_a_key_without_encrypt_and_a_refused_init_leaves_nothing(
    work_dir: Path,
) -> None:
    """A key file or --raw-key given to init without --encrypt would make an unencrypted
    repository its user believes encrypted; a refused init (a bad setting, a short key)
    leaves no directory behind."""
    raw = key_file(work_dir / "raw.key", "9f" * 24)
    short = key_file(work_dir / "short.key", "abcde")
    new = work_dir / "parent" / "repo"
    for args, wanted in (
        (("--key-file", raw, "init"), "without --encrypt: the repository would not be encrypted"),
        (("init", "--raw-key"), "--raw-key was given without --encrypt"),
        (("init", "--compress", "gzip"), "unknown compression 'gzip'"),
        (("init", "--compress", "none:3"), "none takes no level"),
        (("init", "--block-size", "100"), "block size 100 is not a multiple of 8192"),
        (("--key-file", short, "init", "--encrypt", "--raw-key"), "holds 5 bytes: fewer than 32"),
        (("--key-file", short, "init", "--encrypt"), "too short for a passphrase"),
    ):
        result = run_pgkura("--repo", str(new), *args, check=False)
        error, _hint = only_line(result.stderr)
        assert result.returncode == 3 and wanted in error, (args, result.stderr)
        assert not (work_dir / "parent").exists(), args
    env = {"PGKURA_KEY_FILE": raw}
    result = run_pgkura("--repo", str(new), "init", env=env, check=False)
    assert result.returncode == 3 and "without --encrypt" in result.stderr
    run_pgkura("--repo", str(new), "--key-file", raw, "init", "--encrypt", "--raw-key")
    assert json.loads((new / "pgkura.json").read_text())["key_slots"]
