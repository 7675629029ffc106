"""`pgkura copy`: backups, dumps and their WAL copied from a posix repository into S3 (a real
SeaweedFS) and from there into a second posix repository; each copy restores on its own,
with the source gone: a whole restore, point-in-time recovery, a table restore and a logical
restore, each server started and its rows compared. A second copy writes nothing; a copy
killed before its manifest leaves no backup, and the next one completes it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pgutil import archiving_conf, chown, switch_and_wait_archived
from runner import run_pgkura


def copy(*args: str, check: bool = True) -> Any:
    out = run_pgkura(*args, "--output", "json", check=check)
    return json.loads(out.stdout) if check else out


def objects(path: Path) -> dict[str, int]:
    """Every object of a posix repository but its locks and temporary files, with sizes."""
    return {
        str(p.relative_to(path)): p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and not str(p.relative_to(path)).startswith(("locks/", "tmp/"))
    }


def s3_objects(s3_repo: Any) -> dict[str, int]:
    return {o.key: o.size for o in s3_repo.store().list("") if not o.key.startswith("locks/")}


def rows(server: Any, query: str, dbname: str = "shop") -> list[tuple[Any, ...]]:
    return [tuple(r) for r in server.sql(query, dbname=dbname)]


ORDERS = "SELECT id, amount FROM orders ORDER BY id"


def test_copies_to_s3_and_back_restore_on_their_own(
    make_server: Any, work_dir: Path, repo: str, s3_repo: Any
) -> None:
    live = make_server("live", extra_conf=archiving_conf(repo))
    env = {**live.libpq_env(), "PGKURA_PGDATA": str(live.pgdata)}
    live.sql("CREATE DATABASE shop")
    live.sql("CREATE TABLE orders AS SELECT g AS id, g * 10 AS amount, repeat('x', 300) AS pad "
             "FROM generate_series(1, 20000) g", dbname="shop")  # fmt: skip
    live.stop()
    offline_id = run_pgkura("--repo", repo, "backup", "--type", "offline", env=env).stdout.strip()
    live.start()
    online_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    live.sql("INSERT INTO orders SELECT g, g, 'after' FROM generate_series(20001, 20500) g",
             dbname="shop")  # fmt: skip
    before_accident = rows(live, ORDERS)
    time.sleep(0.2)
    when = str(live.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    live.sql("DELETE FROM orders WHERE id % 2 = 0", dbname="shop")  # the accident
    switch_and_wait_archived(live)
    dump_id = json.loads(run_pgkura("--repo", repo, "dump", "--dbname", "shop", "--output",
                                    "json", env=env).stdout)["id"]  # fmt: skip

    # posix -> S3: the bucket's prefix is empty, so copy makes it a repository of its own.
    to_s3 = copy("--repo", repo, *s3_repo.args[:2], "copy", "--to", s3_repo.url, "--all", "--wal")
    assert to_s3["created"] is True and to_s3["ok"] is True, to_s3
    assert {b["id"]: b["status"] for b in to_s3["backups"]} == dict.fromkeys(
        (offline_id, online_id, dump_id), "copied"
    )
    assert sorted(to_s3["verified"]) == sorted((offline_id, online_id, dump_id))
    assert to_s3["wal_files"] > 0
    s3_config = json.loads(s3_repo.store().get("pgkura.json"))
    assert s3_config["hash_key"] != json.loads(Path(repo, "pgkura.json").read_text())["hash_key"]

    # Again: nothing is sent, nothing is written.
    in_bucket = s3_objects(s3_repo)
    again = copy("--repo", repo, *s3_repo.args[:2], "copy", "--to", s3_repo.url, "--all", "--wal")
    assert {b["status"] for b in again["backups"]} == {"present"}
    assert (again["bytes_written"], again["wal_files"], again["created"]) == (0, 0, False)
    assert s3_objects(s3_repo) == in_bucket
    # WAL archived since: the next copy sends that WAL alone.
    live.sql("CREATE TABLE later AS SELECT 1 AS a", dbname="shop")
    switch_and_wait_archived(live)
    later = copy("--repo", repo, *s3_repo.args[:2], "copy", "--to", s3_repo.url, "--all", "--wal")
    assert later["wal_files"] >= 1 and later["bytes_written"] == later["wal_bytes"] > 0
    assert {b["status"] for b in later["backups"]} == {"present"}

    # S3 -> a second posix repository, which copy creates.
    second = work_dir / "second"
    back = copy(*s3_repo.args, "copy", "--to", str(second), "--all", "--wal")
    assert back["created"] is True and back["ok"] is True, back
    assert len(back["backups"]) == 3
    assert back["wal_files"] == to_s3["wal_files"] + later["wal_files"]
    in_second = objects(second)
    assert copy(*s3_repo.args, "copy", "--to", str(second), "--all", "--wal")["bytes_written"] == 0
    assert objects(second) == in_second

    # S3 -> another prefix of the bucket.
    other_prefix = s3_repo.url + "-again"
    s3_to_s3 = copy(*s3_repo.args, "copy", "--to", other_prefix, dump_id)
    assert s3_to_s3["created"] is True and s3_to_s3["ok"] is True, s3_to_s3
    assert [b["status"] for b in s3_to_s3["backups"]] == ["copied"]

    # The source is gone: every restore below reads its copy alone.
    os.rename(repo, repo + ".gone")

    # Point in time, from S3.
    pitr_dir = work_dir / "pitr"
    out = run_pgkura(*s3_repo.args, "restore", "--target-dir", str(pitr_dir), "--to-time", when,
                     "--archive-mode", "off")  # fmt: skip
    assert f"picked backup {online_id}" in out.stderr
    pitr = make_server("pitr", pgdata=pitr_dir, init=False)
    pitr.wait_for_promotion()
    assert rows(pitr, ORDERS) == before_accident
    pitr.stop()

    # The offline backup, from the second posix copy: it starts as it was stopped.
    offline_dir = work_dir / "offline"
    run_pgkura("--repo", str(second), "restore", "--backup", offline_id, "--target-dir",
               str(offline_dir), "--archive-mode", "off")  # fmt: skip
    offline = make_server("offline", pgdata=offline_dir, init=False)
    assert rows(offline, "SELECT count(*), sum(amount) FROM orders") == [(20000, 2000100000)]
    offline.stop()

    # One table as it was before the accident, into the live server, from the posix copy.
    table_env = {**live.libpq_env(), "TMPDIR": str(work_dir)}
    run_pgkura("--repo", str(second), "restore", "--dbname", "shop", "--to-time", when,
               "--table", "public.orders", "--as", "orders_before", env=table_env)  # fmt: skip
    assert rows(live, "SELECT id, amount FROM orders_before ORDER BY id") == before_accident

    # The logical dump, from the posix copy and from the second S3 copy, into new databases.
    live.sql("CREATE DATABASE shop_copy")
    run_pgkura("--repo", str(second), "restore", dump_id, "--dbname", "shop_copy", env=env)
    assert rows(live, ORDERS, "shop_copy") == rows(live, ORDERS)
    live.sql("CREATE DATABASE shop_s3")
    run_pgkura("--config", str(s3_repo.config), "--repo", other_prefix, "restore", dump_id,
               "--dbname", "shop_s3", env=env)  # fmt: skip
    assert rows(live, ORDERS, "shop_s3") == rows(live, ORDERS)
    # The copy verifies on its own, the WAL archive included.
    verified = json.loads(run_pgkura("--repo", str(second), "verify", "--no-pages", "--output",
                                     "json").stdout)  # fmt: skip
    assert verified["ok"] is True, verified


def test_a_new_backup_sends_only_the_blocks_the_copy_lacks(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    live = make_server("live", extra_conf=archiving_conf(repo))
    env = {**live.libpq_env(), "PGKURA_PGDATA": str(live.pgdata)}
    live.sql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS pad "
             "FROM generate_series(1, 200000) g")  # fmt: skip
    first = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    offsite = work_dir / "offsite"
    run_pgkura("--repo", str(offsite), "init")  # a repository made by init is taken as it is
    one = copy("--repo", repo, "copy", "--to", str(offsite), first)
    assert one["created"] is False and one["ok"] is True
    full = one["backups"][0]["bytes_stored"]
    live.sql("INSERT INTO big VALUES (0, 'changed')")
    second = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    before = objects(offsite)
    two = copy("--repo", repo, "copy", "--to", str(offsite), "latest")
    (copied,) = two["backups"]
    assert copied["id"] == second and copied["status"] == "copied"
    # Only what changed: the other blocks were known from the first backup's two manifests.
    assert 0 < copied["bytes_stored"] < full / 10
    added = sum(s for k, s in objects(offsite).items() if k not in before and k.startswith("packs"))
    assert copied["bytes_stored"] <= added < full / 10  # the blocks, their packs' indexes
    text = run_pgkura("--repo", repo, "copy", "--to", str(offsite), "--all").stdout
    assert f"physical {first} (online): already in {offsite}" in text
    assert f"0 B written to {offsite}; 0 copied backup(s) verified there: ok" in text
    # The copy restores the second backup, with the change.
    dest = work_dir / "restored"
    run_pgkura("--repo", str(offsite), "restore", "--backup", second, "--target-dir", str(dest),
               "--archive-mode", "off")  # fmt: skip
    restored = make_server("restored", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*), max(pad) FILTER (WHERE id = 0) FROM big")[0] == (
        200001, "changed")  # fmt: skip


def test_a_copy_killed_before_its_manifest_leaves_no_backup_and_the_next_completes_it(
    make_server: Any, work_dir: Path, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before its manifest: no backup, and the next copy uses the blocks it stored.
    gc in the destination beside a running copy keeps what the copy stored."""
    from pgkura.commands.copy import run_copy
    from pgkura.config import load_config
    from pgkura.physical import copy as engine

    live = make_server("live")
    live.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g")
    live.stop()
    env = {**live.libpq_env(), "PGKURA_PGDATA": str(live.pgdata)}
    backup_id = run_pgkura("--repo", repo, "backup", "--type", "offline", env=env).stdout.strip()
    offsite = work_dir / "offsite"
    cfg = load_config({"repo": repo}, None, environ={})

    def killed(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        run_copy(cfg, str(offsite), None, wal=False, jobs=2)
    left = objects(offsite)
    assert any(k.startswith("packs/") for k in left)  # its blocks were stored...
    assert not any(k.startswith("snapshots/") for k in left)  # ...but no backup exists

    # The next copy, with gc run in the destination just before it commits: the packs no
    # manifest references yet wait for the copy's lock instead of going.
    from pgkura.repository.manifest import write_manifest

    gcs: list[dict[str, Any]] = []

    def gc_then_write(dest: Any, manifest: Any) -> None:
        gc = run_pgkura("--repo", str(offsite), "gc", "--output", "json", user=None)
        gcs.append(json.loads(gc.stdout))
        write_manifest(dest, manifest)

    monkeypatch.setattr(engine, "write_manifest", gc_then_write)
    done = run_copy(cfg, str(offsite), None, wal=False, jobs=2)
    monkeypatch.undo()
    assert gcs[0]["packs_deleted"] == 0 and gcs[0]["packs_waiting"] > 0, gcs
    assert not done.problems and done.backups[0].status == "copied"
    assert done.backups[0].blocks_stored == 0  # every block was there from the killed run
    after = json.loads(run_pgkura("--repo", str(offsite), "gc", "--output", "json", user=None)
                       .stdout)  # fmt: skip
    assert after["packs_deleted"] == 0, after  # the manifest references them now

    for tree in (Path(repo), offsite):  # this process may be root; pgkura runs as postgres
        for path in (tree, *tree.rglob("*")):
            chown(path)
    dest = work_dir / "restored"
    run_pgkura("--repo", str(offsite), "restore", "--backup", backup_id, "--target-dir", str(dest),
               "--archive-mode", "off")  # fmt: skip
    restored = make_server("restored", pgdata=dest, init=False)
    assert restored.sql("SELECT count(*) FROM t")[0][0] == 5000


def refused(result: Any, code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("pgkura: error: ") and lines[1].startswith("hint: "), lines
    for word in words:
        assert word in lines[0], lines


def test_bad_inputs_are_refused_and_write_nothing(
    make_server: Any, work_dir: Path, repo: str, s3_repo: Any
) -> None:
    live = make_server("live")
    live.stop()
    env = {"PGKURA_PGDATA": str(live.pgdata)}
    s3_env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    backup_id = run_pgkura("--repo", repo, "backup", "--type", "offline", env=env).stdout.strip()
    target = work_dir / "offsite"

    def attempt(*args: str) -> Any:
        return run_pgkura("--repo", repo, "copy", *args, check=False)

    refused(attempt("--to", str(target), "20200101T000000000Z"), 3, "20200101T000000000Z")
    refused(attempt("--to", str(target)), 3, "--all")
    refused(attempt("--to", str(target), backup_id, "--all"), 3, "--all")
    refused(attempt("--to", repo, "--all"), 3, "--repo")
    refused(attempt("--to", f"{repo}/inner", "--all"), 3, "--repo")
    assert not target.exists() and not Path(repo, "inner").exists()

    stranger = work_dir / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("not a repository")
    refused(attempt("--to", str(stranger), "--all"), 4, "not a pgkura repository", "notes.txt")
    assert [p.name for p in stranger.iterdir()] == ["notes.txt"]

    # A directory pgkura's user may not enter (/root is its owner's alone).
    refused(attempt("--to", "/root/pgkura-copy/x", "--all"), 2, "the destination", "denied")

    # A bucket that does not exist: the S3 settings are --repo's, from the config file.
    missing = run_pgkura("--config", str(s3_repo.config), "--repo", repo, "copy", "--to",
                         "s3://no-such-bucket/x", "--all", check=False)  # fmt: skip
    refused(missing, 2, "the destination", "no-such-bucket")
    assert "--to s3://no-such-bucket" in missing.stderr.splitlines()[1]

    # A repository whose stanza is another cluster's.
    other_repo = str(work_dir / "other-repo")
    run_pgkura("--repo", other_repo, "init")
    other = make_server("other")
    other.stop()
    run_pgkura("--repo", other_repo, "backup", "--type", "offline",
               env={"PGKURA_PGDATA": str(other.pgdata)})  # fmt: skip
    held = objects(Path(other_repo))
    refused(attempt("--to", other_repo, "--all"), 2, "belongs to another cluster")
    assert objects(Path(other_repo)) == held

    # An endpoint that does not answer (a port nobody listens on), after a short retry.
    dead = work_dir / "dead.toml"
    dead.write_text('s3-endpoint = "http://127.0.0.1:9"\ns3-retry-seconds = 1\n')
    unreachable = run_pgkura("--config", str(dead), "--repo", repo, "copy", "--to",
                             "s3://bucket/x", "--all", check=False, env=s3_env)  # fmt: skip
    refused(unreachable, 2, "the destination")
    assert "--s3-endpoint" in unreachable.stderr.splitlines()[1]

    # A destination whose stanza is being written to (a backup or copy holds its lock).
    from pgkura.repository.locks import backup_lock
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    first = copy("--repo", repo, "copy", "--to", str(target), "--all")
    assert first["ok"] is True
    with backup_lock(Repository.open(PosixStorage(target)), "main"):
        held = objects(target)
        for path in Path(target).rglob("*"):  # the lock record this process wrote, readable
            chown(path)  # by the user pgkura runs as (as root it writes into no one else's)
        busy = run_pgkura("--repo", repo, "copy", "--to", str(target), "--all", check=False)
        refused(busy, 5, "locked")
        assert objects(target) == held


def test_the_destination_stanza_follows_the_sources_upgrades_and_refuses_another_cluster(
    tmp_path: Path,
) -> None:
    """The stanza record a copy writes: the source's generations, extended after a stanza
    upgrade of the source; a destination stanza of another cluster stays as it is."""
    from pgkura.errors import RepositoryError
    from pgkura.repository.copy import adopt_stanza
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    source = Repository.create(PosixStorage(tmp_path / "source"))
    dest = Repository.create(PosixStorage(tmp_path / "dest"))
    first = source.ensure_stanza("main", "7000000000000000001", 16)
    adopted = adopt_stanza(dest, first, {"7000000000000000001"})
    assert [g.system_identifier for g in adopted.generations] == ["7000000000000000001"]

    source.upgrade_stanza("main", "7000000000000000002", 18)  # pg_upgrade, then stanza upgrade
    info = source.stanza("main")
    assert info is not None
    adopted = adopt_stanza(dest, info, {"7000000000000000002"})
    assert [(g.number, g.system_identifier) for g in adopted.generations] == [
        (1, "7000000000000000001"), (2, "7000000000000000002")]  # fmt: skip
    mine = dest.stanza("main")
    assert mine is not None and mine.archive_for("7000000000000000002") == "main@2"

    stranger = Repository.create(PosixStorage(tmp_path / "stranger"))
    stranger.ensure_stanza("main", "7999999999999999999", 16)
    before = (tmp_path / "stranger" / "stanzas" / "main.json").read_bytes()
    with pytest.raises(RepositoryError, match="belongs to another cluster"):
        adopt_stanza(stranger, info, {"7000000000000000002"})
    assert (tmp_path / "stranger" / "stanzas" / "main.json").read_bytes() == before


def test_a_destination_with_settings_of_its_own_comes_from_to_config(
    make_server: Any, work_dir: Path, repo: str, s3_repo: Any
) -> None:
    """The off-site copy lives on another endpoint with other credentials: --to-config names
    a config file for it alone; the source's settings (here none: a posix --repo) do not
    reach it, and without that file the S3 destination cannot be reached at all."""
    live = make_server("live", extra_conf=archiving_conf(repo))
    env = {**live.libpq_env(), "PGKURA_PGDATA": str(live.pgdata)}
    live.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g")
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    live.stop()

    assert "AWS_ACCESS_KEY_ID" not in os.environ  # credentials: files only
    no_settings = run_pgkura("--repo", repo, "copy", "--to", s3_repo.url, backup_id, check=False)
    assert no_settings.returncode != 0 and "credentials" in no_settings.stderr
    missing = run_pgkura("--repo", repo, "copy", backup_id, "--to-config",
                         str(work_dir / "nowhere.toml"), check=False)  # fmt: skip
    assert missing.returncode != 0 and "nowhere.toml" in missing.stderr

    s3_repo.write_config(repo=s3_repo.url)
    done = copy("--repo", repo, "copy", backup_id, "--to-config", str(s3_repo.config))
    assert done["ok"] is True and done["destination"] == s3_repo.url
    target = work_dir / "restored"
    run_pgkura(*s3_repo.args, "restore", backup_id, "--target-dir", str(target))
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*), sum(id) FROM t")[0] == (5000, 12502500)


def test_a_copied_backup_keeps_its_pin_and_its_drill_and_an_expire_there_keeps_it(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A pin is a DBA's decision to keep a backup whatever the policy: the copy keeps it, so
    an expire of the destination does not delete what the source keeps. The drill's record
    comes too (the copy read back the same blocks), marked as copied."""
    src = make_server("cold")
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 3000) g")
    src.stop()
    ids = [run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type",
                      "offline").stdout.strip() for _ in range(3)]  # fmt: skip
    run_pgkura("--repo", repo, "pin", ids[0])
    drilled = run_pgkura("--repo", repo, "verify", "--restore", ids[0], "--output", "json",
                         env={"TMPDIR": str(work_dir)})  # fmt: skip
    assert json.loads(drilled.stdout)["drills"][0]["passed"] is True

    offsite = str(work_dir / "offsite")
    out = copy("--repo", repo, "copy", "--to", offsite, "--all")
    flags = {b["id"]: (b["pinned"], b["drill_copied"]) for b in out["backups"]}
    assert flags == {ids[0]: (True, True), ids[1]: (False, False), ids[2]: (False, False)}
    info = json.loads(run_pgkura("--repo", offsite, "info", "--output", "json").stdout)
    lines = {b["id"]: b for b in info["backups"]}
    assert lines[ids[0]]["pinned"] is not None and lines[ids[1]]["pinned"] is None
    assert lines[ids[0]]["last_drill"]["passed"] is True and lines[ids[1]]["last_drill"] is None

    expired = json.loads(run_pgkura("--repo", offsite, "--keep-last", "1", "expire", "--output",
                                    "json").stdout)  # fmt: skip
    assert expired["expired"] == [ids[1]]  # the pinned oldest stays, as in the source
    target = work_dir / "restored"
    run_pgkura("--repo", offsite, "restore", "--backup", ids[0], "--target-dir", str(target))
    restored = make_server("restored", pgdata=target, init=False)
    assert restored.sql("SELECT count(*), sum(g) FROM t")[0] == (3000, 4501500)


def test_kill_9_at_random_points_of_a_copy_loses_nothing_and_the_next_completes_it(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A copy killed by SIGKILL wherever it is (blocks, WAL, its manifest, the read-back)
    leaves the destination with only whole backups, each of which verifies; the next copy
    finishes the rest, and the copies restore with the source gone."""
    import random
    import signal
    import subprocess

    from runner import PGKURA, os_user

    src = make_server("src")
    src.pgbench_init(5)
    ids = []
    for i in range(3):
        if i:
            src.start()
            src.sql(f"UPDATE pgbench_accounts SET abalance = abalance + {i} WHERE aid <= 150000")
        src.stop()
        ids.append(run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type",
                              "offline").stdout.strip())  # fmt: skip
    src.start()
    expected = src.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts")[0]
    src.stop()
    offsite = str(work_dir / "offsite")
    run_pgkura("--repo", offsite, "init")
    began = time.monotonic()  # a whole copy into a throwaway repository times the kill points
    run_pgkura("--repo", repo, "copy", "--to", str(work_dir / "timing"), "--all")
    whole = time.monotonic() - began
    rng = random.Random(16)
    outcomes: list[tuple[int, int]] = []
    for attempt in range(5):
        command = [PGKURA, "--repo", repo, "copy", "--to", offsite, "--all"]
        if os_user():
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        time.sleep(rng.uniform(0.3, 0.3 + whole))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        present = json.loads(run_pgkura("--repo", offsite, "info", "--output", "json").stdout)
        assert {b["id"] for b in present["backups"]} <= set(ids), attempt
        outcomes.append((proc.returncode, len(present["backups"])))
        check = run_pgkura("--repo", offsite, "verify", "--no-pages", check=False)
        assert check.returncode == 0, (attempt, check.stdout, check.stderr)
    assert outcomes[0][0] == -signal.SIGKILL and outcomes[0][1] < 3, outcomes  # killed midway
    done = copy("--repo", repo, "copy", "--to", offsite, "--all")
    assert done["ok"] is True and {b["id"] for b in done["backups"]} == set(ids), done
    assert run_pgkura("--repo", offsite, "verify").returncode == 0
    gc = json.loads(run_pgkura("--repo", offsite, "gc", "--output", "json").stdout)
    assert gc["unreadable_kept"] == [], gc  # what the killed runs left is garbage, not damage
    os.rename(repo, repo + ".gone")
    for n, backup_id in enumerate((ids[0], ids[-1])):
        target = work_dir / f"restored-{n}"
        run_pgkura("--repo", offsite, "restore", "--backup", backup_id, "--target-dir",
                   str(target))  # fmt: skip
        server = make_server(f"restored-{n}", pgdata=target, init=False)
        row = server.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts")[0]
        server.stop()
        if backup_id == ids[-1]:
            assert row == expected
        else:
            assert row == (500000, 0)
