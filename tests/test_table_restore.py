"""`restore --table ... --to-time ... --dbname`: one table as it was, without restoring the
cluster over production (issue: sandbox, item 3)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from pgutil import archiving_conf, chown, switch_and_wait_archived
from runner import run_pgkura
from test_sandbox import sandboxes_left


class Shop:
    """A live database with an accident: half of the orders deleted at a known time."""

    def __init__(self, server: Any, repo: str) -> None:
        self.server = server
        self.repo = repo
        server.sql("CREATE ROLE clerk")
        server.sql("CREATE DATABASE shop OWNER clerk")
        for stmt in (
            "CREATE TABLE customers (id int PRIMARY KEY, name text)",
            "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g",
            "CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, "
            "amount numeric NOT NULL)",
            "CREATE INDEX orders_customer ON orders (customer)",
            "ALTER TABLE orders OWNER TO clerk",
            "INSERT INTO orders (customer, amount) "
            "SELECT g % 50 + 1, g FROM generate_series(1, 1000) g",
            "CREATE SCHEMA audit",
            "CREATE TABLE audit.log AS SELECT g AS id FROM generate_series(1, 77) g",
        ):
            server.sql(stmt, dbname="shop")
        env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        self.backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
        server.sql("INSERT INTO orders (customer, amount) VALUES (1, 5000)", dbname="shop")
        self.before = self.orders()
        time.sleep(0.2)
        self.when = str(server.sql("SELECT now()::text")[0][0])
        time.sleep(0.2)
        server.sql("DELETE FROM orders WHERE id % 2 = 0", dbname="shop")  # the accident
        server.sql("DROP TABLE audit.log", dbname="shop")
        switch_and_wait_archived(server)
        # Sandboxes go under the test's own directory, where sandboxes_left looks.
        self.env = {**server.libpq_env(), "TMPDIR": str(server.pgdata.parent)}

    def orders(self, table: str = "orders") -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.server.sql(
            f"SELECT id, customer, amount FROM {table} ORDER BY id", dbname="shop")]  # fmt: skip

    def restore(self, *args: str, check: bool = True) -> Any:
        return run_pgkura("--repo", self.repo, "restore", "--dbname", "shop", "--to-time",
                          self.when, *args, env=self.env, check=check)  # fmt: skip


def restored_schemas(shop: Shop, pattern: str) -> list[str]:
    query = f"SELECT nspname FROM pg_namespace WHERE nspname LIKE '{pattern}'"
    return [r[0] for r in shop.server.sql(query, dbname="shop")]


@pytest.fixture
def shop(make_server: Any, repo: str) -> Shop:
    return Shop(make_server("live", extra_conf=archiving_conf(repo)), repo)


@pytest.mark.matrix
def test_a_table_comes_back_under_a_new_schema_and_nothing_else_changes(shop: Shop) -> None:
    live_after_accident = shop.orders()
    customers = shop.server.sql("SELECT count(*) FROM customers", dbname="shop")[0][0]
    out = shop.restore("--table", "public.orders")
    assert f"restored from backup {shop.backup_id}" in out.stdout
    # Only the catalogs and the table asked for went into the sandbox: the other databases'
    # and the other tables' files stayed in the repository.
    restored, left_out = (int(x) for x in re.findall(r"restoring (\d+) MiB .*\((\d+) MiB left out",
                                                     out.stderr)[0])  # fmt: skip
    assert left_out > restored > 0
    assert "whole backup" not in out.stderr
    (schema,) = restored_schemas(shop, "restored_%")
    assert shop.orders(f"{schema}.orders") == shop.before
    assert f"{schema}.orders: {len(shop.before)} rows" in out.stdout
    # The live table and the others are untouched.
    assert shop.orders() == live_after_accident
    assert shop.server.sql("SELECT count(*) FROM customers", dbname="shop")[0][0] == customers
    # Indexes and ownership came along; the foreign key to customers (outside the set) is
    # reported, not silently dropped.
    indexes = shop.server.sql(f"SELECT indexname FROM pg_indexes WHERE schemaname = '{schema}'",
                              dbname="shop")  # fmt: skip
    assert len(indexes) == 2
    owner = shop.server.sql(f"SELECT tableowner FROM pg_tables WHERE schemaname = '{schema}'",
                            dbname="shop")[0][0]  # fmt: skip
    assert owner == "clerk"
    assert "foreign key left out" in out.stdout and "customers" in out.stdout
    assert sandboxes_left(shop.server.pgdata.parent) == []


def test_replace_swaps_the_table_in_and_as_refuses_a_clash(shop: Shop) -> None:
    clash = shop.restore("--table", "public.orders", "--as", "customers", check=False)
    assert clash.returncode == 3 and "public.customers already exists" in clash.stderr
    unconfirmed = shop.restore("--table", "public.orders", "--replace", check=False)
    assert unconfirmed.returncode == 3 and "--yes" in unconfirmed.stderr
    shop.restore("--table", "public.orders", "--replace", "--yes")
    assert shop.orders() == shop.before
    shop.restore("--table", "public.orders", "--as", "orders_before")
    assert shop.orders("orders_before") == shop.before


def test_a_schema_restore_and_bad_inputs(shop: Shop) -> None:
    shop.restore("--schema", "audit")
    (schema,) = restored_schemas(shop, "restored_%audit")
    assert shop.server.sql(f"SELECT count(*) FROM {schema}.log", dbname="shop")[0][0] == 77

    missing = shop.restore("--table", "public.nosuch", check=False)
    assert missing.returncode != 0
    assert "table public.nosuch did not exist" in missing.stderr and "--to-time" in missing.stderr
    early = run_pgkura("--repo", shop.repo, "restore", "--dbname", "shop", "--table",
                       "public.orders", "--to-time", "2000-01-01 00:00:00+00", env=shop.env,
                       check=False)  # fmt: skip
    assert early.returncode == 3 and "recoverable window is from" in early.stderr
    down = run_pgkura("--repo", shop.repo, "restore", "--dbname", "shop", "--table",
                      "public.orders", "--to-time", shop.when,
                      env={**shop.env, "PGPORT": "1"}, check=False)  # fmt: skip
    assert down.returncode != 0 and "cannot connect to PostgreSQL" in down.stderr
    assert sandboxes_left(shop.server.pgdata.parent) == []


def test_a_sparse_sandbox_that_lacks_a_table_falls_back_to_the_whole_backup(shop: Shop) -> None:
    """The sparse restore picks files by the names in the backup's catalogs. A table renamed
    after the backup is not found by its new name there: the started sandbox shows that its
    file was left out, and the table restore goes on from a whole restore, with the right rows.
    A table created after the backup has no file in it at all; replay makes it whole, so the
    sparse sandbox serves it."""
    server = shop.server
    server.sql("ALTER TABLE customers RENAME TO clients", dbname="shop")
    server.sql("CREATE TABLE fresh AS SELECT g AS id FROM generate_series(1, 321) g",
               dbname="shop")  # fmt: skip
    time.sleep(0.2)
    when = str(server.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    server.sql("UPDATE clients SET name = 'lost'", dbname="shop")
    server.sql("DROP TABLE fresh", dbname="shop")
    switch_and_wait_archived(server)

    def restore(*args: str) -> Any:
        return run_pgkura("--repo", shop.repo, "restore", "--dbname", "shop", "--to-time", when,
                          *args, env=shop.env)  # fmt: skip

    renamed = restore("--table", "public.clients", "--as", "clients_before")
    assert "restoring the whole backup" in renamed.stderr and "lacks" in renamed.stderr
    names = "SELECT count(*) FROM clients_before WHERE name = 'c' || id"
    assert server.sql(names, dbname="shop")[0][0] == 50
    created = restore("--table", "public.fresh", "--as", "fresh_before")
    assert "left out" in created.stderr and "whole backup" not in created.stderr
    assert server.sql("SELECT count(*) FROM fresh_before", dbname="shop")[0][0] == 321
    assert sandboxes_left(server.pgdata.parent) == []


def test_a_table_in_another_tablespace_with_toasted_values_comes_back_sparsely(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """The sparse sandbox finds a table's files in its tablespace, and its toast table and
    toast index, which the rows' large values need."""
    server = make_server("live", extra_conf=archiving_conf(repo))
    ts_dir = work_dir / "ts_far"
    ts_dir.mkdir()
    chown(ts_dir)
    server.sql(f"CREATE TABLESPACE far LOCATION '{ts_dir}'")
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE docs (id int PRIMARY KEY, body text) TABLESPACE far", dbname="shop")
    # Values of 200 kB of random hex: stored out of line, in the toast table.
    server.sql("INSERT INTO docs SELECT g, (SELECT string_agg(md5(g::text || r::text), '') "
               "FROM generate_series(1, 6400) r) FROM generate_series(1, 20) g",
               dbname="shop")  # fmt: skip
    checksum = "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM "
    before = server.sql(checksum + "docs", dbname="shop")[0]
    env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    time.sleep(0.2)
    when = str(server.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    server.sql("UPDATE docs SET body = 'gone'", dbname="shop")
    switch_and_wait_archived(server)
    out = run_pgkura("--repo", repo, "restore", "--dbname", "shop", "--to-time", when,
                     "--table", "public.docs", "--as", "docs_before",
                     env={**server.libpq_env(), "TMPDIR": str(work_dir)})  # fmt: skip
    assert "left out" in out.stderr and "whole backup" not in out.stderr
    assert server.sql(checksum + "docs_before", dbname="shop")[0] == before
    assert sandboxes_left(work_dir) == []


def test_restores_in_the_same_second_get_schemas_of_their_own(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default schema is named after the second: a name taken, by a restored table or as
    the prefix of a restored schema, gets _2, _3... (it used to be an error)."""
    import psycopg

    from pgkura.commands import table_restore

    monkeypatch.setattr(table_restore.time, "strftime", lambda _fmt, _t: "20260101_120000")
    with psycopg.connect(shop.server.conninfo("shop"), autocommit=True) as live:
        assert table_restore._free_schema_name(live) == "restored_20260101_120000"
        live.execute("CREATE SCHEMA restored_20260101_120000_audit")
        assert table_restore._free_schema_name(live) == "restored_20260101_120000_2"
        live.execute("CREATE SCHEMA restored_20260101_120000_2")
        assert table_restore._free_schema_name(live) == "restored_20260101_120000_3"
        live.execute("CREATE SCHEMA restoredX20260101Y120000Z3")  # not taken: _ is literal
        assert table_restore._free_schema_name(live) == "restored_20260101_120000_3"
