"""Logical dumps through the repository and their restores (issue 5), against real servers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgkura.repository.manifest import read_manifest
from pgkura.repository.repo import Repository
from pgkura.storage import open_storage
from pgversions import bin_of
from runner import Result, run_pgkura

SCHEMA = """
CREATE SCHEMA sales AUTHORIZATION app_owner;
SET ROLE app_owner;
CREATE TABLE sales.customers (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE sales.orders (
    id serial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES sales.customers (id),
    amount numeric(10, 2) NOT NULL,
    note text
);
CREATE INDEX orders_customer_idx ON sales.orders (customer_id);
CREATE SEQUENCE sales.invoice_no START 1000;
CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE amount > 50;
CREATE TABLE public.notes (id int PRIMARY KEY, body text);
INSERT INTO sales.customers (name) SELECT 'customer ' || g FROM generate_series(1, 200) g;
INSERT INTO sales.orders (customer_id, amount, note)
    SELECT 1 + g % 200, (g % 997) / 10.0, repeat(md5(g::text), g % 5)
    FROM generate_series(1, 5000) g;
INSERT INTO public.notes SELECT g, 'note ' || g FROM generate_series(1, 50) g;
SELECT nextval('sales.invoice_no') FROM generate_series(1, 7);
RESET ROLE;
"""
TABLES = ("sales.customers", "sales.orders", "public.notes")


def build_shop(server: Any, dbname: str = "shop") -> None:
    """A database owned by a non-default role, with every kind of object the tests compare."""
    if not server.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app_owner'"):
        server.sql("CREATE ROLE app_owner LOGIN CREATEDB")
    server.sql(f"CREATE DATABASE {dbname} OWNER app_owner")
    server.sql(SCHEMA, dbname=dbname)


def table_digest(server: Any, dbname: str, table: str) -> tuple[Any, ...]:
    query = (
        "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
        f"FROM {table} t"
    )
    return tuple(server.sql(query, dbname=dbname)[0])


def catalog(server: Any, dbname: str) -> dict[str, Any]:
    """Relations with their kind and owner, constraints, indexes, sequences, the view."""
    user_schemas = "SELECT oid FROM pg_namespace WHERE nspname IN ('sales', 'public')"
    return {
        "relations": server.sql(
            "SELECT n.nspname || '.' || c.relname, c.relkind, pg_get_userbyid(c.relowner) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('sales', 'public') ORDER BY 1",
            dbname=dbname,
        ),
        "not_null": server.sql(
            "SELECT attrelid::regclass::text, attname FROM pg_attribute WHERE attnotnull "
            "AND attnum > 0 AND attrelid IN (SELECT oid FROM pg_class WHERE relkind = 'r' "
            f"AND relnamespace IN ({user_schemas})) ORDER BY 1, 2",
            dbname=dbname,
        ),
        "constraints": server.sql(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            # 18 records NOT NULL as constraints too (contype 'n'): that is compared below, as
            # every version has it.
            f"FROM pg_constraint WHERE connamespace IN ({user_schemas}) AND contype <> 'n' "
            "ORDER BY 1, 2",
            dbname=dbname,
        ),
        "indexes": server.sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname IN ('sales', 'public') "
            "ORDER BY 1",
            dbname=dbname,
        ),
        "sequences": server.sql(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences "
            "WHERE schemaname IN ('sales', 'public') ORDER BY 1, 2",
            dbname=dbname,
        ),
        "views": server.sql(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = 'sales'", dbname=dbname
        ),
        "schema_owner": server.sql(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'sales'",
            dbname=dbname,
        ),
    }


def assert_same_database(
    src: Any, src_db: str, dst: Any, dst_db: str, *, same_version: bool = True
) -> None:
    for table in (*TABLES, "sales.big_orders"):
        assert table_digest(dst, dst_db, table) == table_digest(src, src_db, table), table
    want, got = catalog(src, src_db), catalog(dst, dst_db)
    if not same_version:
        # pg_get_viewdef's spelling changes between versions (16 drops the table prefixes).
        del want["views"], got["views"]
    assert got == want


def assert_refused(result: Result, *words: str) -> None:
    """A one-line error with a hint and a non-zero exit."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("pgkura: error:")]
    assert len(errors) == 1, result.stderr
    assert any(line.startswith("hint:") for line in lines), result.stderr
    for word in words:
        assert word in errors[0], result.stderr


def dump(repo: str, server: Any, *args: str) -> str:
    out = run_pgkura("--repo", repo, "dump", *args, "--output", "json", env=server.libpq_env())
    return str(json.loads(out.stdout)["id"])


def backups(repo: str) -> list[dict[str, Any]]:
    out = run_pgkura("--repo", repo, "info", "--output", "json")
    return list(json.loads(out.stdout)["backups"])


@pytest.mark.matrix
def test_each_format_round_trips_schema_data_and_owners(
    make_server: Any, repo: str, pg_major: int
) -> None:
    server = make_server("src")
    build_shop(server)
    env = server.libpq_env()
    ids = {}
    for fmt in ("custom", "directory", "tar", "plain"):
        # Directory format dumps in parallel; custom and directory restore in parallel from a
        # staged copy; tar and plain stream from the repository into pg_restore / psql.
        jobs = "2" if fmt in ("custom", "directory") else "1"
        dump_jobs = ("--jobs", "2") if fmt == "directory" else ()
        ids[fmt] = dump(repo, server, "--dbname", "shop", "--format", fmt, *dump_jobs)
        run_pgkura(
            "--repo", repo, "restore", ids[fmt], "--dbname", f"shop_{fmt}", "--create",
            "--jobs", jobs, env=env,
        )  # fmt: skip
        assert_same_database(server, "shop", server, f"shop_{fmt}")
        owner = server.sql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [f"shop_{fmt}"]
        )
        assert owner == [("app_owner",)]
        # The sequences go on from where they were.
        next_invoice = server.sql("SELECT nextval('sales.invoice_no')", dbname=f"shop_{fmt}")
        assert next_invoice == [(1007,)]

    listed = backups(repo)
    assert [b["id"] for b in listed] == sorted(ids.values())
    assert all(b["kind"] == "logical" and b["method"] == "pg_dump" for b in listed)
    assert all(b["pg_version"] == pg_major and b["size_bytes"] > 0 for b in listed)
    detail = json.loads(
        run_pgkura("--repo", repo, "info", ids["custom"], "--output", "json").stdout
    )
    assert detail["backups"][0]["kind"] == "logical"
    text = run_pgkura("--repo", repo, "info").stdout
    assert "logical" in text

    # The dump records what it came from: versions, databases and their sizes.
    facts = read_manifest(Repository.open(open_storage(repo)), "main", ids["custom"]).extra
    # The server's own pg_dump, among the installed majors.
    assert facts["server_version"].startswith(f"{pg_major}.")
    assert facts["pg_dump_version"].startswith(f"{pg_major}.")
    assert [(d["name"], d["owner"]) for d in facts["databases"]] == [("shop", "app_owner")]
    assert facts["databases"][0]["size_bytes"] > 1_000_000

    toc = run_pgkura("--repo", repo, "restore", ids["custom"], "--list", env=env).stdout
    assert "TABLE sales orders app_owner" in toc and "VIEW sales big_orders app_owner" in toc

    # The same data dumped again shares its blocks with the first dump.
    again = dump(repo, server, "--dbname", "shop")
    entry = next(b for b in backups(repo) if b["id"] == again)
    assert entry["new_bytes"] < entry["stored_bytes"] / 2


def test_single_table_restore_brings_only_that_table(make_server: Any, repo: str) -> None:
    server = make_server("src")
    build_shop(server)
    env = server.libpq_env()
    dump_id = dump(repo, server, "--dbname", "shop")
    run_pgkura(
        "--repo", repo, "restore", dump_id, "--dbname", "one", "--create", "--table", "notes",
        env=env,
    )  # fmt: skip
    relations = server.sql(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        dbname="one",
    )
    assert relations == [("public.notes",)]
    assert table_digest(server, "one", "public.notes") == table_digest(server, "shop", "notes")

    # A table dropped by mistake comes back into the live database; the others are untouched.
    before = table_digest(server, "shop", "sales.orders")
    server.sql("DROP TABLE notes", dbname="shop")
    server.sql("DELETE FROM sales.orders WHERE id > 4000", dbname="shop")
    run_pgkura(
        "--repo", repo, "restore", dump_id, "--dbname", "shop", "--clean", "-t", "notes", env=env
    )
    assert table_digest(server, "shop", "notes") == table_digest(server, "one", "notes")
    assert table_digest(server, "shop", "sales.orders") != before
    assert server.sql("SELECT count(*) FROM sales.orders", dbname="shop") == [(4000,)]


def test_whole_cluster_dump_recreates_roles_owners_and_databases(
    make_server: Any, repo: str
) -> None:
    src = make_server("src")
    build_shop(src)
    src.sql("CREATE ROLE reporter LOGIN CONNECTION LIMIT 7")
    src.sql("CREATE ROLE analysts NOLOGIN")
    src.sql("GRANT analysts TO reporter")
    src.sql("CREATE DATABASE ledger OWNER reporter")
    src.sql(
        "SET ROLE reporter; CREATE TABLE entries AS SELECT g AS id, g * 3 AS amount "
        "FROM generate_series(1, 300) g; RESET ROLE; GRANT SELECT ON entries TO analysts",
        dbname="ledger",
    )
    src.sql("CREATE TABLE in_postgres AS SELECT 42 AS answer")
    dump_id = dump(repo, src, "--all")
    assert backups(repo)[0]["method"] == "pg_dumpall"

    dst = make_server("dst")
    run_pgkura("--repo", repo, "restore", dump_id, "--dbname", "postgres", env=dst.libpq_env())

    roles = (
        "SELECT rolname, rolcanlogin, rolcreatedb, rolconnlimit FROM pg_roles "
        "WHERE rolname IN ('app_owner', 'reporter', 'analysts') ORDER BY 1"
    )
    assert dst.sql(roles) == src.sql(roles)
    members = "SELECT pg_has_role('reporter', 'analysts', 'MEMBER')"
    assert dst.sql(members) == [(True,)]
    owners = (
        "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding) "
        "FROM pg_database WHERE NOT datistemplate ORDER BY 1"
    )
    assert dst.sql(owners) == src.sql(owners)
    assert_same_database(src, "shop", dst, "shop")
    assert table_digest(dst, "ledger", "entries") == table_digest(src, "ledger", "entries")
    acl = "SELECT pg_get_userbyid(relowner), relacl::text FROM pg_class WHERE relname = 'entries'"
    assert dst.sql(acl, dbname="ledger") == src.sql(acl, dbname="ledger")
    assert dst.sql("SELECT answer FROM in_postgres") == [(42,)]


def test_bad_inputs_are_refused_and_record_nothing(make_server: Any, repo: str) -> None:
    server = make_server("src")
    build_shop(server)
    env = server.libpq_env()

    assert_refused(
        run_pgkura("--repo", repo, "dump", "--dbname", "nosuch", env=env, check=False),
        "nosuch",
        "does not exist",
    )
    assert_refused(
        run_pgkura("--repo", repo, "dump", "-d", "shop", "-t", "nosuch", env=env, check=False),
        "nosuch",
    )
    # pg_dump fails midway: a role that may read every table, but one of them only through a
    # row-level security policy, which pg_dump refuses after it has written the others.
    server.sql("CREATE ROLE dumper LOGIN IN ROLE pg_read_all_data, pg_monitor")
    server.sql(
        "CREATE TABLE zz_secret AS SELECT g FROM generate_series(1, 10) g;"
        "ALTER TABLE zz_secret ENABLE ROW LEVEL SECURITY",
        dbname="shop",
    )
    failed = run_pgkura(
        "--repo", repo, "--dbconn", "user=dumper", "dump", "-d", "shop", env=env, check=False
    )
    assert_refused(failed, "pg_dump", "not recorded")
    assert "row-level security" in failed.stderr
    assert backups(repo) == []
    server.sql("DROP TABLE zz_secret", dbname="shop")

    dump_id = dump(repo, server, "--dbname", "shop")
    assert_refused(
        run_pgkura("--repo", repo, "restore", dump_id, "--dbname", "shop", env=env, check=False),
        "not empty",
    )
    assert_refused(
        run_pgkura("--repo", repo, "restore", dump_id, "--dbname", "fresh", env=env, check=False),
        "does not exist",
    )
    assert_refused(
        run_pgkura(
            "--repo",
            repo,
            "restore",
            dump_id,
            "--dbname",
            "fresh",
            "--create",
            "--table",
            "nosuch",
            env=env,
            check=False,
        ),
        "nosuch",
    )
    assert server.sql("SELECT 1 FROM pg_database WHERE datname = 'fresh'") == []
    assert_refused(
        run_pgkura(
            "--repo", repo, "restore", "--backup", dump_id, "--target-dir", "/tmp/x", check=False
        ),
        "logical dump",
    )

    # A physical backup of the same cluster, given where a dump is expected.
    server.stop()
    out = run_pgkura("--repo", repo, "--pgdata", str(server.pgdata), "backup", "--type", "offline")
    physical_id = out.stdout.strip()
    assert_refused(
        run_pgkura("--repo", repo, "restore", physical_id, "--dbname", "x", check=False),
        "physical backup",
    )
    assert len(backups(repo)) == 2


def test_a_dump_of_14_restores_into_18(server_factory: Any, repo: str) -> None:
    """A dump restores into a newer major, through that major's own pg_restore (pgkura picks
    it among the installed ones); an older pg_dump never dumps a newer server."""
    bin14, bin18 = bin_of(14), bin_of(18)
    src = server_factory("src14", bin_dir=bin14)
    build_shop(src)
    dump_id = dump(repo, src, "--dbname", "shop")
    facts = read_manifest(Repository.open(open_storage(repo)), "main", dump_id).extra
    assert facts["pg_dump_version"].startswith("14.")

    new = server_factory("new18", bin_dir=bin18)
    new.sql("CREATE ROLE app_owner LOGIN")
    env = new.libpq_env()
    run_pgkura("--repo", repo, "restore", dump_id, "--dbname", "shop", "--create", env=env)
    assert new.sql("SHOW server_version_num")[0][0].startswith("18")
    assert_same_database(src, "shop", new, "shop", same_version=False)
    # pg_dump 14 cannot dump an 18 server: refused before anything is recorded.
    assert_refused(
        run_pgkura(
            "--repo", repo, "--stanza", "new", "--pg-bin", str(bin14), "dump", "--dbname", "shop",
            env=env, check=False,
        ),
        "older than PostgreSQL 18",
    )  # fmt: skip
    assert len(backups(repo)) == 1
