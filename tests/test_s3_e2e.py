"""End to end on an S3 repository (a real SeaweedFS): init, offline and online backups with
archive_command pushing into the same bucket (sync and --archive-async), point-in-time
restore, table restore, drill, logical dumps and their restores, verify, gc, expire, info;
the restored servers are started and their data compared with what was committed."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from pgutil import switch_and_wait_archived
from runner import PGKURA, run_pgkura
from seaweed import ACCESS_KEY, SECRET_KEY
from test_sandbox import sandboxes_left


def s3_archiving_conf(repo: Any) -> dict[str, str]:
    command = shlex.join([PGKURA, *repo.args, "archive-push"]) + " %p"
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": command,
        "archive_timeout": "0",
    }


def count(server: Any, table: str = "t") -> int:
    return int(server.sql(f"SELECT count(*) FROM {table}")[0][0])


def test_backups_on_s3_restore_to_a_point_in_time_and_verify(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    run_pgkura(*s3_repo.args, "init")
    conf = s3_archiving_conf(s3_repo)
    # The secret lives in the credentials file, never in a command line (ps shows those).
    assert SECRET_KEY not in conf["archive_command"] and ACCESS_KEY not in conf["archive_command"]
    src = make_server("src", extra_conf=conf)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    src.sql(
        "CREATE TABLE t AS SELECT g AS a, repeat('x', 200) AS pad FROM generate_series(1, 20000) g"
    )

    src.stop()
    offline_id = run_pgkura(*s3_repo.args, "backup", "--type", "offline", env=env).stdout.strip()
    src.start()
    online_id = run_pgkura(*s3_repo.args, "backup", "--jobs", "2", env=env).stdout.strip()
    src.sql("INSERT INTO t SELECT g, 'after backup' FROM generate_series(20001, 25000) g")
    target_lsn = str(src.sql("SELECT pg_current_wal_lsn()::text")[0][0])
    src.sql("DELETE FROM t WHERE a > 100")  # the accident, after the target
    switch_and_wait_archived(src)

    # Point in time: the online backup plus the archived WAL up to the target, from S3.
    dest = work_dir / "pitr"
    run_pgkura(*s3_repo.args, "restore", "--backup", online_id, "--target-dir", str(dest),
               "--to-lsn", target_lsn, "--archive-mode", "off", "--jobs", "2")  # fmt: skip
    auto_conf = (dest / "postgresql.auto.conf").read_text()
    assert s3_repo.url in auto_conf and SECRET_KEY not in auto_conf  # restore_command
    pitr = make_server("pitr", pgdata=dest, init=False)
    pitr.wait_for_promotion()
    assert count(pitr) == 25000
    assert pitr.sql("SELECT count(*) FROM t WHERE pad = 'after backup'")[0][0] == 5000

    # The offline backup starts as it was stopped, without any WAL from the archive.
    off_dest = work_dir / "offline"
    run_pgkura(*s3_repo.args, "restore", "--backup", offline_id, "--target-dir", str(off_dest),
               "--archive-mode", "off")  # fmt: skip
    offline = make_server("offline", pgdata=off_dest, init=False)
    assert count(offline) == 20000

    verified = json.loads(run_pgkura(*s3_repo.args, "verify", "--output", "json").stdout)
    assert verified["ok"] is True, verified
    info = json.loads(run_pgkura(*s3_repo.args, "info", "--output", "json").stdout)
    assert {b["id"] for b in info["backups"]} == {offline_id, online_id}
    gc = json.loads(run_pgkura(*s3_repo.args, "gc", "--output", "json").stdout)
    assert gc["packs_deleted"] == 0  # nothing unreferenced: both backups keep their blocks
    # What gc kept still restores (a read of every block, again from the bucket).
    assert json.loads(run_pgkura(*s3_repo.args, "verify", "--output", "json").stdout)["ok"]


def test_dumps_on_s3_restore_and_expire_keeps_the_newest_restorable(
    make_server: Any, s3_repo: Any
) -> None:
    """Logical dumps into the bucket (custom, and directory with parallel pg_dump), their
    restores into new databases, then expire with a policy that deletes the oldest: its blocks
    go, and both kept dumps still verify and restore."""
    from test_logical import TABLES, assert_same_database, build_shop, table_digest

    run_pgkura(*s3_repo.args, "init")
    server = make_server("src")
    build_shop(server)
    env = server.libpq_env()

    def dump(*args: str) -> str:
        out = run_pgkura(*s3_repo.args, "dump", "--dbname", "shop", *args, "--output", "json",
                         env=env)  # fmt: skip
        return str(json.loads(out.stdout)["id"])

    def digests(dbname: str) -> dict[str, tuple[Any, ...]]:
        return {t: table_digest(server, dbname, t) for t in TABLES}

    oldest = dump()
    server.sql("INSERT INTO sales.orders (customer_id, amount) SELECT 1, g FROM "
               "generate_series(1, 3000) g", dbname="shop")  # fmt: skip
    middle = dump("--format", "directory", "--jobs", "2")
    at_middle = digests("shop")
    server.sql("DELETE FROM sales.orders WHERE id % 3 = 0", dbname="shop")
    server.sql("UPDATE public.notes SET body = body || ' (edited)'", dbname="shop")
    newest = dump()

    run_pgkura(*s3_repo.args, "restore", newest, "--dbname", "shop_newest", "--create",
               "--jobs", "2", env=env)  # fmt: skip
    assert_same_database(server, "shop", server, "shop_newest")

    out = json.loads(run_pgkura(*s3_repo.args, "--keep-last", "2", "--max-unused", "1",
                                "expire", "--output", "json").stdout)  # fmt: skip
    assert out["expired"] == [oldest], out
    assert all("offline backups and dumps" in n for n in out["notes"]), out  # no WAL deleted
    assert out["gc"]["bytes_deleted"] > 0, out  # the blocks only the oldest dump held
    info = json.loads(run_pgkura(*s3_repo.args, "info", "--output", "json").stdout)
    assert [b["id"] for b in info["backups"]] == [middle, newest]
    assert json.loads(run_pgkura(*s3_repo.args, "verify", "--output", "json").stdout)["ok"]

    # Both kept dumps restore, each with the data it was taken with.
    run_pgkura(*s3_repo.args, "restore", middle, "--dbname", "shop_middle", "--create",
               "--jobs", "2", env=env)  # fmt: skip
    assert digests("shop_middle") == at_middle
    run_pgkura(*s3_repo.args, "restore", newest, "--dbname", "shop_again", "--create", env=env)
    assert digests("shop_again") == digests("shop")
    gc = json.loads(run_pgkura(*s3_repo.args, "gc", "--output", "json").stdout)
    assert gc["packs_deleted"] == 0 and gc["packs_kept"] >= 1, gc  # expire's gc did the work


def test_async_archiving_into_s3_then_a_table_restore_a_drill_and_a_prefetching_restore(
    make_server: Any, work_dir: Path, s3_repo: Any
) -> None:
    """--archive-async on with an S3 repository: the background pusher archives into the
    bucket; a table comes back as it was before an accident (a sandbox recovered from the
    bucket), a drill proves the backup restores, and a whole restore replays WAL that the
    background prefetcher fetched from the bucket."""
    run_pgkura(*s3_repo.args, "init")
    spool = work_dir / "spool"
    flags = [*s3_repo.args, "--archive-async", "on", "--spool-path", str(spool)]
    conf = {**s3_archiving_conf(s3_repo),
            "archive_command": shlex.join([PGKURA, *flags, "archive-push"]) + " %p"}  # fmt: skip
    src = make_server("src", extra_conf=conf)
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata), "TMPDIR": str(work_dir)}
    src.sql("CREATE DATABASE shop")
    src.sql("CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL)", dbname="shop")
    src.sql("INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 2000) g", dbname="shop")
    backup_id = run_pgkura(*flags, "backup", env=env).stdout.strip()

    # Several segments of WAL after the backup, for the pusher and then the prefetcher.
    src.pgbench_init(3)
    src.sql("INSERT INTO orders VALUES (5000, 42)", dbname="shop")
    orders = "SELECT id, amount FROM orders ORDER BY id"
    before = src.sql(orders, dbname="shop")
    time.sleep(0.2)
    when = str(src.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    src.sql("DELETE FROM orders WHERE id % 2 = 0", dbname="shop")  # the accident
    balance = src.sql("SELECT sum(abalance), count(*) FROM pgbench_accounts")[0]
    after = src.sql(orders, dbname="shop")
    last = switch_and_wait_archived(src)
    assert not list((spool / "out").glob("*.error"))
    assert "reached the archive" in run_pgkura(*flags, "check", env=env).stdout
    run_pgkura(*s3_repo.args, "archive-get", last, str(work_dir / last))  # pushed in full
    assert (work_dir / last).read_bytes() == (src.pgdata / "pg_wal" / last).read_bytes()

    # The table as it was, from a sandbox restored and recovered from the bucket.
    out = run_pgkura(*s3_repo.args, "restore", "--dbname", "shop", "--to-time", when,
                     "--table", "public.orders", "--as", "orders_before", env=env)  # fmt: skip
    assert f"restored from backup {backup_id}" in out.stdout
    assert src.sql("SELECT id, amount FROM orders_before ORDER BY id", dbname="shop") == before
    assert src.sql(orders, dbname="shop") == after  # the live table is untouched
    assert sandboxes_left(work_dir) == []

    # The drill: a sandbox restore of the backup, recovered and checked.
    drill = run_pgkura(*s3_repo.args, "verify", "--restore", backup_id, "--output", "json",
                       env={"TMPDIR": str(work_dir)})  # fmt: skip
    (result,) = json.loads(drill.stdout)["drills"]
    assert result["passed"], result["problems"]
    assert result["row_counts"]["shop"]["public.orders"] == 2000
    assert sandboxes_left(work_dir) == []

    # The whole cluster to the end of the archive, replaying through the prefetcher.
    dest = work_dir / "restored"
    run_pgkura(*flags, "restore", "--backup", backup_id, "--target-dir", str(dest),
               "--archive-mode", "off")  # fmt: skip
    assert "--archive-async on" in (dest / "postgresql.auto.conf").read_text()
    src.stop()
    restored = make_server("restored", pgdata=dest, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT sum(abalance), count(*) FROM pgbench_accounts")[0] == balance
    assert restored.sql(orders, dbname="shop") == after
    sysid = restored.sql("SELECT system_identifier FROM pg_control_system()")[0][0]
    assert (spool / f"in-{sysid}" / "get.lock").exists()  # the prefetcher ran for it
    assert (spool / "push.lock").exists()
