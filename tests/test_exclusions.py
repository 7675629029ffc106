"""What an online backup leaves out, as pg_basebackup does, and tablespaces online."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgkura.repository.manifest import list_backup_ids, read_manifest
from pgkura.repository.repo import Repository
from pgkura.storage import open_storage
from pgutil import archiving_conf, chown, pg_verifybackup, switch_and_wait_archived
from runner import run_pgkura


def backed_up_paths(repo: str) -> set[str]:
    r = Repository.open(open_storage(repo))
    (backup_id,) = list_backup_ids(r, "main")
    return {f.path for f in read_manifest(r, "main", backup_id).files}


def plant(path: Path, content: bytes = b"junk") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    chown(path)
    chown(path.parent)


def test_online_backup_leaves_out_what_pg_basebackup_leaves_out(
    make_server: Any, work_dir: Path, repo: str, pg_major: int
) -> None:
    ts_dir = work_dir / "ts"
    ts_dir.mkdir()
    chown(ts_dir)
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.sql(f"CREATE TABLESPACE ts LOCATION '{ts_dir}'")
    src.sql("CREATE TABLE in_ts TABLESPACE ts AS SELECT g FROM generate_series(1, 3000) g")
    src.sql("CREATE UNLOGGED TABLE unlogged AS SELECT g FROM generate_series(1, 3000) g")
    src.sql("SELECT pg_create_physical_replication_slot('slot1', true)")
    unlogged = src.sql("SELECT pg_relation_filepath('unlogged')")[0][0]
    db_dir = unlogged.rsplit("/", 1)[0]
    # A session holds a temporary table open while the backup runs.
    holder = src.connect()
    holder.execute("CREATE TEMP TABLE tmp AS SELECT g FROM generate_series(1, 3000) g")
    temp_file = holder.execute("SELECT pg_relation_filepath('tmp')").fetchone()[0]
    plant(src.pgdata / db_dir / "pgsql_tmp" / "pgsql_tmp999.0")
    plant(src.pgdata / "pg_stat_tmp" / "junk.stat")
    plant(src.pgdata / "backup_label", b"START WAL LOCATION: stale\n")
    plant(src.pgdata / "tablespace_map", b"stale\n")

    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    holder.close()
    paths = backed_up_paths(repo)

    present = {"PG_VERSION", "global/pg_control", "pg_wal", "pg_wal/archive_status",
               "pg_replslot", "pg_stat_tmp", unlogged + "_init"}  # fmt: skip
    assert present <= paths, present - paths
    absent = {"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map",
              "pg_replslot/slot1", "pg_stat_tmp/junk.stat", unlogged, temp_file,
              f"{db_dir}/pgsql_tmp/pgsql_tmp999.0", "global/pg_internal.init"}  # fmt: skip
    assert not absent & paths, absent & paths
    assert not any(p.startswith("pg_wal/0") for p in paths)
    assert not any(p.endswith("pg_internal.init") for p in paths)
    assert any(p.startswith("pg_tblspc/") and f"/PG_{pg_major}_" in p for p in paths)

    switch_and_wait_archived(src)
    target, new_ts = work_dir / "restored", work_dir / "ts-restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target),
               "--tablespace-map", f"ts={new_ts}", "--archive-mode", "off")  # fmt: skip
    assert (target / "tablespace_map").read_text().split()[1] == str(new_ts)
    pg_verifybackup(src, target)
    src.stop()
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*), sum(g) FROM in_ts")[0] == (3000, 4501500)
    assert restored.sql("SELECT count(*) FROM unlogged")[0][0] == 0
    assert restored.sql("SELECT slot_name FROM pg_replication_slots") == []
    location = restored.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace "
                            "WHERE spcname = 'ts'")[0][0]  # fmt: skip
    assert location == str(new_ts)
