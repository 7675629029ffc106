"""`restore --table` of partitioned tables and inheritance trees: every partition and child
comes back with the table asked for, attached as it was, each with exactly the rows it had at
the target; and a load whose counts differ from the sandbox's is rolled back.

One live cluster and one backup serve every test here (a sandbox restore each is the cost):
a range-partitioned table with a sub-partitioned partition and a default partition, a
hash-partitioned one, a list-partitioned one with partitions in another schema, an inheritance
tree of three levels, and a partitioned table of schema ``archive`` with a partition in
``public``. Then, at a known time, the accident: rows deleted from each, a partition dropped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from pgutil import archiving_conf, switch_and_wait_archived
from pgversions import DEFAULT_MAJOR, bin_of
from runner import os_user, run_pgkura
from test_sandbox import sandboxes_left

SETUP = """
CREATE SCHEMA archive;
CREATE TABLE measurements (id int GENERATED ALWAYS AS IDENTITY, city text NOT NULL,
    logdate date NOT NULL, reading numeric, PRIMARY KEY (id, logdate, city))
    PARTITION BY RANGE (logdate);
CREATE TABLE measurements_2023 PARTITION OF measurements
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE measurements_2024 PARTITION OF measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (city);
CREATE TABLE measurements_2024_north PARTITION OF measurements_2024
    FOR VALUES IN ('oslo', 'bergen');
CREATE TABLE measurements_2024_rest PARTITION OF measurements_2024 DEFAULT;
CREATE TABLE measurements_default PARTITION OF measurements DEFAULT;
CREATE INDEX measurements_city ON measurements (city);
INSERT INTO measurements (city, logdate, reading)
    SELECT (ARRAY['oslo', 'bergen', 'rome', 'lima'])[g % 4 + 1], date '2022-09-01' + g % 800,
           g / 10.0
    FROM generate_series(1, 3000) g;

CREATE TABLE sessions (id bigint PRIMARY KEY, payload text) PARTITION BY HASH (id);
CREATE TABLE sessions_0 PARTITION OF sessions FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE sessions_1 PARTITION OF sessions FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE sessions_2 PARTITION OF sessions FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE sessions_3 PARTITION OF sessions FOR VALUES WITH (MODULUS 4, REMAINDER 3);
INSERT INTO sessions SELECT g, md5(g::text) FROM generate_series(1, 800) g;
-- values of a few kB, stored out of line in the partitions' toast tables
UPDATE sessions SET payload = (SELECT string_agg(md5(id::text || r::text), '')
                               FROM generate_series(1, 200) r) WHERE id % 100 = 0;

CREATE TABLE kinds (kind text PRIMARY KEY);
INSERT INTO kinds VALUES ('click'), ('view'), ('scroll'), ('hover'), ('buy');
CREATE TABLE events (id int, kind text NOT NULL REFERENCES kinds, body text)
    PARTITION BY LIST (kind);
CREATE TABLE events_click PARTITION OF events FOR VALUES IN ('click');
CREATE TABLE archive.events_view PARTITION OF events FOR VALUES IN ('view');
CREATE TABLE archive.events_misc PARTITION OF events FOR VALUES IN ('scroll', 'hover');
CREATE TABLE events_misc PARTITION OF events DEFAULT;
INSERT INTO events SELECT g, (ARRAY['click', 'view', 'scroll', 'hover', 'buy'])[g % 5 + 1], 'e' || g
    FROM generate_series(1, 1000) g;

CREATE TABLE road (name text, km int);
CREATE TABLE highway (lanes int) INHERITS (road);
CREATE TABLE archive.superhighway (toll numeric) INHERITS (highway);
CREATE TABLE street (sidewalk bool) INHERITS (road);
INSERT INTO road SELECT 'r' || g, g FROM generate_series(1, 300) g;
INSERT INTO highway SELECT 'h' || g, g, g % 6 FROM generate_series(1, 200) g;
INSERT INTO archive.superhighway SELECT 's' || g, g, 8, g FROM generate_series(1, 100) g;
INSERT INTO street SELECT 'st' || g, g, g % 3 = 0 FROM generate_series(1, 150) g;

CREATE TABLE archive.ledger (n int, note text) PARTITION BY RANGE (n);
CREATE TABLE archive.ledger_low PARTITION OF archive.ledger FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE ledger_high PARTITION OF archive.ledger FOR VALUES FROM (100) TO (MAXVALUE);
INSERT INTO archive.ledger SELECT g, 'n' || g FROM generate_series(1, 250) g;

CREATE TABLE audit (n int, what text) PARTITION BY RANGE (n);
CREATE TABLE audit_1 PARTITION OF audit FOR VALUES FROM (0) TO (100);
CREATE TABLE audit_2 (n int, what text);
INSERT INTO audit SELECT g, 'a' || g FROM generate_series(0, 99) g;
INSERT INTO audit_2 SELECT g, 'b' || g FROM generate_series(100, 159) g;
"""

# After the backup, before the target: replay brings these (a partition the backup never saw).
AFTER_BACKUP = """
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measurements (city, logdate, reading)
    SELECT (ARRAY['oslo', 'rome'])[g % 2 + 1], date '2024-06-01' + g % 300, g
    FROM generate_series(1, 500) g;
INSERT INTO sessions SELECT g, md5(g::text) FROM generate_series(801, 1000) g;
INSERT INTO events SELECT g, (ARRAY['click', 'view', 'scroll', 'buy'])[g % 4 + 1], 'late' || g
    FROM generate_series(1001, 1200) g;
INSERT INTO road SELECT 'r' || g, g FROM generate_series(301, 350) g;
INSERT INTO archive.superhighway SELECT 's' || g, g, 10, g FROM generate_series(101, 150) g;
-- a table the backup saw on its own becomes a partition
ALTER TABLE audit ATTACH PARTITION audit_2 FOR VALUES FROM (100) TO (200);
"""

ACCIDENT = """
DELETE FROM measurements WHERE id % 3 = 0;
DELETE FROM sessions WHERE id % 2 = 0;
DELETE FROM events WHERE id % 2 = 0;
DELETE FROM road WHERE km % 2 = 0;
DELETE FROM archive.ledger WHERE n % 2 = 0;
DELETE FROM audit WHERE n % 2 = 0;
DROP TABLE measurements_2023;
"""

MEASUREMENTS = ["public.measurements", "public.measurements_2023", "public.measurements_2024",
                "public.measurements_2024_north", "public.measurements_2024_rest",
                "public.measurements_2025", "public.measurements_default"]  # fmt: skip
SESSIONS = ["public.sessions", *(f"public.sessions_{n}" for n in range(4))]
EVENTS = ["public.events", "public.events_click", "archive.events_view", "archive.events_misc",
          "public.events_misc"]  # fmt: skip
ROAD = ["public.road", "public.highway", "archive.superhighway", "public.street"]
LEDGER = ["archive.ledger", "archive.ledger_low", "public.ledger_high"]
AUDIT = ["public.audit", "public.audit_1", "public.audit_2"]
# Rows are compared column by column: pg_dump may order an inheritance child's columns its way.
COLUMNS = {
    **dict.fromkeys(MEASUREMENTS, "id, city, logdate, reading"),
    **dict.fromkeys(SESSIONS, "id, md5(payload)"),
    **dict.fromkeys(EVENTS, "id, kind, body"),
    **dict.fromkeys(LEDGER, "n, note"),
    **dict.fromkeys(AUDIT, "n, what"),
    "public.road": "name, km",
    "public.highway": "name, km, lanes",
    "archive.superhighway": "name, km, lanes, toll",
    "public.street": "name, km, sidewalk",
}

LINKS_SQL = """
SELECT (SELECT n.nspname || '.' || p.relname FROM pg_inherits i
        JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE i.inhrelid = c.oid),
       pg_get_expr(c.relpartbound, c.oid)
FROM pg_class c WHERE c.oid = %s::regclass
"""

# The live tables' partitions and children, by parent.
LIVE_TREES_SQL = """
SELECT p.relname, array_agg(c.relname ORDER BY c.relname) FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relnamespace IN ('public'::regnamespace, 'archive'::regnamespace)
  AND c.relkind IN ('r', 'p')
GROUP BY 1 ORDER BY 1
"""


class Trees:
    """The live database ``shop`` with its trees, a backup, and the accident after ``when``."""

    def __init__(self, server: LocalServer, repo: str, tmp: Path) -> None:
        self.server = server
        self.repo = repo
        self.tmp = tmp
        server.sql("CREATE DATABASE shop")
        self.sql(SETUP)
        env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
        run_pgkura("--repo", repo, "backup", env=env)
        self.sql(AFTER_BACKUP)
        self.before = {t: self.own_rows(t, COLUMNS[t]) for t in COLUMNS}
        self.links = {t: self.link(t) for t in COLUMNS}
        time.sleep(0.2)
        self.when = str(server.sql("SELECT now()::text")[0][0])
        time.sleep(0.2)
        self.sql(ACCIDENT)
        switch_and_wait_archived(server)
        self.env = {**server.libpq_env(), "TMPDIR": str(tmp)}

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.server.sql(query, params, dbname="shop")

    def own_rows(self, table: str, columns: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in self.sql(f"SELECT {columns} FROM ONLY {table}"))

    def link(self, table: str) -> tuple[str | None, str | None]:
        """A table's parent (schema.name) and partition bound, None when it has none."""
        parent, bound = self.sql(LINKS_SQL, (table,))[0]
        return parent, bound

    def restore(self, *args: str, check: bool = True) -> Any:
        return run_pgkura("--repo", self.repo, "restore", "--dbname", "shop", "--to-time",
                          self.when, *args, env=self.env, check=check)  # fmt: skip

    def schemas(self) -> set[str]:
        return {r[0] for r in self.sql("SELECT nspname FROM pg_namespace")}

    def tables_in(self, schema: str) -> set[str]:
        query = ("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')")  # fmt: skip
        return {f"{schema}.{r[0]}" for r in self.sql(query, (schema,))}

    def expected_rows(self, table: str, names: dict[str, str]) -> int:
        """count(*) of ``table`` at the target over what was restored of its tree."""
        under = [t for t in names if self.links[t][0] == table]
        return len(self.before[table]) + sum(self.expected_rows(t, names) for t in under)

    def check(self, names: dict[str, str], report: str) -> None:
        """Each table restored (original name -> restored name) has exactly its rows at the
        target, is attached to the restored parent with the same bound (or to nothing, when
        its parent was not restored), and the report gives its count."""
        for was, now in names.items():
            assert self.own_rows(now, COLUMNS[was]) == self.before[was], f"{was} as {now}"
            parent, bound = self.links[was]
            expected = (names[parent], bound) if parent in names else (None, None)
            assert self.link(now) == expected, f"{was} as {now}"
            assert f"{now}: {self.expected_rows(was, names)} rows" in report, now

    def assert_sparse(self, out: Any) -> None:
        """The sandbox held the catalogs and the trees asked for only: no full restore."""
        assert "left out" in out.stderr and "whole backup" not in out.stderr, out.stderr


@pytest.fixture(scope="module")
def trees() -> Iterator[Trees]:
    """One live server of the default major for the whole module (a module fixture cannot
    take the per-test ``pg_bin``)."""
    base = Path(tempfile.mkdtemp(prefix="pgkura-test-"))
    make_owned_dir(base, os_user(), mode=0o755)
    sockets = Path(tempfile.mkdtemp(prefix="pgk-"))
    make_owned_dir(sockets, os_user(), mode=0o755)
    repo = str(base / "repo")
    run_pgkura("--repo", repo, "init")
    server = LocalServer(base / "live", free_port(), sockets, bin_of(DEFAULT_MAJOR), os_user())
    try:
        server.initdb(extra_conf=archiving_conf(repo))
        server.start()
        yield Trees(server, repo, base)
        assert sandboxes_left(base) == []
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)


def _live_counts(trees: Trees) -> dict[str, int]:
    live = [t for t in COLUMNS if t != "public.measurements_2023"]
    return {t: len(trees.own_rows(t, COLUMNS[t])) for t in live}


def test_each_tree_comes_back_whole_into_a_new_schema(trees: Trees) -> None:
    live_before = _live_counts(trees)
    schemas = trees.schemas()
    out = trees.restore("--table", "public.measurements", "--table", "public.sessions",
                        "--table", "public.events", "--table", "public.road")  # fmt: skip
    trees.assert_sparse(out)
    (schema,) = trees.schemas() - schemas
    names = {t: f"{schema}.{t.split('.')[1]}" for t in MEASUREMENTS + SESSIONS + EVENTS + ROAD}
    # Two partitions of events share a name in two schemas: the one from the other schema is
    # renamed, and the report says what it was.
    names["archive.events_misc"] = f"{schema}.events_misc_archive"
    trees.check(names, out.stdout)
    assert trees.tables_in(schema) == set(names.values())
    assert (
        f"{schema}.events_misc_archive: " in out.stdout and "was archive.events_misc" in out.stdout
    )
    assert f"{schema}.measurements: {trees.expected_rows('public.measurements', names)} rows " \
           "(with 4 partitions;" in out.stdout  # fmt: skip
    assert "(with 2 inheritance children;" in out.stdout
    assert "foreign key left out (it points outside the restored tables): " \
           "events.events_kind_fkey -> kinds" in out.stdout  # fmt: skip
    # The partition dropped after the target is back, in the restored tree only; the live
    # trees are as the accident left them.
    assert f"{schema}.measurements_2023" in trees.tables_in(schema)
    assert _live_counts(trees) == live_before


@pytest.mark.parametrize(
    ("table", "as_name", "expected"),
    [
        ("public.measurements", "m_before", {
            "public.measurements": "public.m_before",
            "public.measurements_2023": "public.m_before_2023",
            "public.measurements_2024": "public.m_before_2024",
            "public.measurements_2024_north": "public.m_before_2024_north",
            "public.measurements_2024_rest": "public.m_before_2024_rest",
            "public.measurements_2025": "public.m_before_2025",
            "public.measurements_default": "public.m_before_default",
        }),
        ("public.sessions", "sessions_before",
         {t: t.replace("sessions", "sessions_before") for t in SESSIONS}),
        ("public.events", "events_before", {
            "public.events": "public.events_before",
            "public.events_click": "public.events_before_click",
            "archive.events_view": "archive.events_before_view",
            "archive.events_misc": "archive.events_before_misc",
            "public.events_misc": "public.events_before_misc",
        }),
        ("public.road", "road_before", {
            "public.road": "public.road_before",
            "public.highway": "public.road_before_highway",
            "archive.superhighway": "archive.road_before_superhighway",
            "public.street": "public.road_before_street",
        }),
    ],
)  # fmt: skip
def test_as_gives_the_tree_new_names_beside_the_live_one(
    trees: Trees, table: str, as_name: str, expected: dict[str, str]
) -> None:
    live_before = _live_counts(trees)
    out = trees.restore("--table", table, "--as", as_name)
    trees.assert_sparse(out)
    trees.check(expected, out.stdout)
    assert _live_counts(trees) == live_before
    # Indexes, the constraints they back and owned sequences are named after the new tables,
    # so none clashes with the live tree's.
    indexes = {r[0] for r in trees.sql(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = ANY(%s::regclass[])",
        (list(expected.values()),))}  # fmt: skip
    assert all(i.split(".")[-1].startswith(as_name) for i in indexes), indexes
    if table == "public.measurements":
        assert "m_before_2024_north_pkey" in indexes and "m_before_city" in indexes
        sequence = trees.sql("SELECT pg_get_serial_sequence('m_before', 'id')")[0][0]
        assert sequence == "public.m_before_id_seq"


def test_one_partition_or_child_comes_back_alone(trees: Trees) -> None:
    """A partition asked for comes with its own partitions but without its parent: it is not
    attached to the live parent. So does an inheritance child, with its own child."""
    live_trees = trees.sql(LIVE_TREES_SQL)
    schemas = trees.schemas()
    out = trees.restore("--table", "public.measurements_2024", "--table", "public.highway",
                        "--table", "public.events_click")  # fmt: skip
    trees.assert_sparse(out)
    (schema,) = trees.schemas() - schemas
    names = {t: f"{schema}.{t.split('.')[1]}" for t in [
        "public.measurements_2024", "public.measurements_2024_north",
        "public.measurements_2024_rest", "public.highway", "archive.superhighway",
        "public.events_click"]}  # fmt: skip
    trees.check(names, out.stdout)
    assert trees.tables_in(schema) == set(names.values())
    assert "restored without its parent public.measurements" in out.stdout
    assert "restored without its parent public.road" in out.stdout
    # The partition's copy of its parent's foreign key became its own, and left the set.
    assert "events_click.events_kind_fkey -> kinds" in out.stdout
    # Nothing was attached to the live trees.
    assert trees.sql(LIVE_TREES_SQL) == live_trees


def test_only_restores_the_parents_own_rows(trees: Trees) -> None:
    refused = trees.restore("--table", "public.measurements", "--only", check=False)
    assert refused.returncode == 3 and "is partitioned" in refused.stderr
    assert "sandbox" not in refused.stderr  # refused before anything was restored
    out = trees.restore("--table", "public.road", "--only", "--as", "road_own")
    trees.assert_sparse(out)
    trees.check({"public.road": "public.road_own"}, out.stdout)
    assert trees.sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'road_own'::regclass"
                     )[0][0] == 0  # fmt: skip
    assert "children left out: public.highway, public.street" in out.stdout
    # The live children still inherit the live parent.
    assert trees.link("public.highway")[0] == "public.road"


def test_a_schema_restore_brings_its_trees_whole(trees: Trees) -> None:
    """archive holds a partitioned table with a partition in public (it comes along), and
    partitions and a child of tables in public (they come alone)."""
    schemas = trees.schemas()
    out = trees.restore("--schema", "archive")
    trees.assert_sparse(out)
    (schema,) = trees.schemas() - schemas
    assert schema.endswith("_archive")
    names = {t: f"{schema}.{t.split('.')[1]}" for t in [
        *LEDGER, "archive.events_view", "archive.events_misc", "archive.superhighway"]}  # fmt: skip
    trees.check(names, out.stdout)
    assert trees.tables_in(schema) == set(names.values())


def test_a_partition_attached_after_the_backup_is_found_by_a_whole_restore(trees: Trees) -> None:
    """The sparse sandbox takes partitions from the backup's pg_inherits, where audit_2 was not
    yet a partition of audit: the started sandbox shows that its file was left out, and the
    restore goes on from the whole backup, with every row."""
    out = trees.restore("--table", "public.audit", "--as", "audit_before")
    assert "lacks" in out.stderr and "restoring the whole backup" in out.stderr
    names = {t: t.replace("audit", "audit_before") for t in AUDIT}
    trees.check(names, out.stdout)


def test_a_load_whose_counts_differ_is_rolled_back(trees: Trees) -> None:
    """An event trigger in the live database adds, to every table created, a trigger that
    drops some rows as they are inserted: the load comes out short, and is refused."""
    trees.sql("""
        CREATE FUNCTION drop_some() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id % 5 = 0 THEN RETURN NULL; END IF; RETURN NEW; END $$;
        CREATE FUNCTION add_filter() RETURNS event_trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT objid FROM pg_event_trigger_ddl_commands()
                     WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
                IF (SELECT relkind FROM pg_class WHERE oid = r.objid) = 'r' THEN
                    EXECUTE format('CREATE TRIGGER filter BEFORE INSERT ON %s FOR EACH ROW '
                                   'EXECUTE FUNCTION public.drop_some()', r.objid::regclass);
                END IF;
            END LOOP;
        END $$;
        CREATE EVENT TRIGGER add_filter ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
            EXECUTE FUNCTION add_filter();
    """)  # fmt: skip
    try:
        schemas = trees.schemas()
        out = trees.restore("--table", "public.sessions", check=False)
    finally:
        trees.sql("DROP EVENT TRIGGER add_filter")
    assert out.returncode == 2, out.stderr
    total = sum(len(trees.before[t]) for t in SESSIONS)
    assert "public.sessions (restored as restored_" in out.stderr
    assert f"rows were loaded into database shop, but it had {total} at" in out.stderr
    assert "rolled back, nothing was changed" in out.stderr
    assert trees.schemas() == schemas


def test_replace_swaps_whole_trees_in_one_transaction(trees: Trees) -> None:
    refused = trees.restore("--table", "public.road", "--replace", "--only", "--yes", check=False)
    assert refused.returncode == 3 and "would drop the children of public.road" in refused.stderr

    # One partition: swapped in, and attached again to the live parent where it was.
    out = trees.restore("--table", "public.measurements_2024", "--replace", "--yes")
    trees.assert_sparse(out)
    part = ["public.measurements_2024", "public.measurements_2024_north",
            "public.measurements_2024_rest"]  # fmt: skip
    for table in part:
        assert trees.own_rows(table, COLUMNS[table]) == trees.before[table]
        assert trees.link(table) == trees.links[table]
    assert "attached to public.measurements again" in out.stdout

    # Whole trees: the live ones (with measurements_2023 gone) are dropped and the trees as
    # they were at the target take their place, with the very same names.
    out = trees.restore("--replace", "--yes", "--table", "public.measurements",
                        "--table", "public.sessions", "--table", "public.events",
                        "--table", "public.road")  # fmt: skip
    trees.assert_sparse(out)
    names = {t: t for t in MEASUREMENTS + SESSIONS + EVENTS + ROAD}
    trees.check(names, out.stdout)
    assert "replaced (dropped in the same transaction): public.measurements, " in out.stdout
    assert trees.sql("SELECT count(*) FROM measurements")[0][0] == trees.expected_rows(
        "public.measurements", names
    )
