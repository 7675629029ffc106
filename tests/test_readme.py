"""The README's commands, run as written against a real server, so that they cannot rot.

Every ``pgkura`` line of a ``sh`` block is run here, with the README's example paths, ids, times
and names replaced by this test's own; optional ``[...]`` parts are left out (but ``[--yes]``
is given: the tests have no terminal to answer on), and ``a | b`` alternatives are each run.
Sections that need what this machine's test server does not give (object storage, a second
major) are listed in COVERED_ELSEWHERE with the test that runs them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from time import sleep
from typing import Any

from pgutil import switch_and_wait_archived
from runner import PGKURA, Result, run_pgkura

README = Path(__file__).resolve().parent.parent / "README.md"

COVERED_ELSEWHERE = {
    "Encryption": "tests/test_encryption.py (init --encrypt, key add/list/remove, restore, "
    "dump restore, tampering, bad keys) and tests/test_key_rotation.py (key rotate, "
    "gc --rewrite-keys, replayed snapshots)",
    "Object storage (S3)": "tests/test_s3_e2e.py (a SeaweedFS repository through a config file)",
    "Copying to another repository": "tests/test_copy.py (posix to S3 and back, then "
    "restores, PITR and a table restore from each copy)",
    "Major upgrades": "tests/test_upgrade.py (pg_upgrade from 16 to 18, then stanza upgrade)",
    "Monitoring": "tests/test_metrics.py (metrics to stdout, a file and over HTTP, --dbconn's "
    "archive lag, check's freshness limits)",
    "Retention": "tests/test_expire.py (each policy kind, pins, delete, expire-auto, the PITR "
    "window) and tests/test_gc.py (repack to --max-unused, gc beside a backup, kill -9)",
}


def sections() -> dict[str, list[str]]:
    """The ``pgkura`` lines of each section's ``sh`` blocks, by section heading."""
    out: dict[str, list[str]] = {}
    heading = ""
    fence = None
    for line in README.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence == "sh" and line.startswith("pgkura "):
            out.setdefault(heading, []).append(line)
    return out


def blocks(heading: str, fence: str) -> list[str]:
    """The ``fence`` blocks of a section, as text."""
    found: list[str] = []
    current: list[str] | None = None
    inside = False
    for line in README.read_text().splitlines():
        if line.startswith("## "):
            inside = line[3:].strip() == heading
        elif line.startswith("```") and inside:
            if current is None and line[3:].strip() == fence:
                current = []
            elif current is not None:
                found.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return found


def commands(line: str, values: dict[str, str]) -> list[list[str]]:
    """The argument lists one README line stands for: ``[...]`` left out, each ``a | b``
    alternative on its own, the README's examples replaced by ``values``."""
    # --yes stays: without a terminal, --replace asks nobody and refuses.
    line = line.replace("[--yes]", "--yes")
    words = shlex.split(re.sub(r"\s\[[^\]]*\]", "", line), comments=True)[1:]
    variants = [words]
    if "|" in words:
        bar = words.index("|")
        before, after = words[:bar], words[bar + 1 :]
        variants = [before, before[:-2] + after]  # the alternative replaces the last option
    return [[values.get(w, w) for w in v] for v in variants]


def run_section(heading: str, values: dict[str, str], env: dict[str, str]) -> list[Result]:
    results = []
    for line in sections()[heading]:
        for args in commands(line, values):
            results.append(run_pgkura(*args, env=env))
    return results


def test_every_readme_command_runs(make_server: Any, work_dir: Path) -> None:
    repo = str(work_dir / "backups")
    server = make_server("readme", start=False)
    using = "\n".join(x for x in README.read_text().splitlines() if "archive_command = '" in x)
    archive_command = re.search(r"archive_command = '([^']*--stanza main[^']*)'", using)
    assert archive_command is not None, "the README shows no archive_command for stanza main"
    command = archive_command.group(1).replace("/path/to/pgkura", PGKURA).replace("/backups", repo)
    with open(server.pgdata / "postgresql.conf", "a") as f:
        f.write(f"wal_level = replica\narchive_mode = on\narchive_command = '{command}'\n")
    env = {**server.libpq_env()}
    values = {"/backups": repo, "/var/lib/postgresql/15/main": str(server.pgdata)}

    # Using it: init and the offline backup with the server stopped, then online.
    lines = sections()["Using it"]
    assert "--type offline" in lines[1]
    for args in commands(lines[0], values) + commands(lines[1], values):
        run_pgkura(*args, env=env)
    server.start()
    _populate(server)
    values["/srv/restore/main"] = str(work_dir / "restore-main")
    for line in lines[2:]:
        for args in commands(line, values):
            run_pgkura(*args, env=env)
    # The source keeps running and archiving: the copy must not archive a timeline of its own
    # into the same stanza, as it would in place of a lost original.
    with open(work_dir / "restore-main" / "postgresql.auto.conf", "a") as f:
        f.write("archive_mode = 'off'\n")
    restored = make_server("restore-main", pgdata=work_dir / "restore-main", init=False)
    restored.wait_for_promotion()
    assert restored.sql("SELECT count(*) FROM orders", dbname="shop")[0][0] == 3
    restored.stop()

    # Point-in-time recovery and table restores: targets that exist in this archive.
    server.sql("SELECT pg_create_restore_point('before_upgrade')")
    server.sql("SELECT pg_create_restore_point('before_migration')")
    sleep(0.2)  # commit times are what a time target is judged by: keep them apart from T
    time = server.sql("SELECT now()::text")[0][0]
    lsn = server.sql("SELECT pg_current_wal_lsn()::text")[0][0]
    xid = str(server.sql("SELECT txid_current()")[0][0])
    sleep(0.2)
    server.sql("DELETE FROM orders", dbname="shop")
    switch_and_wait_archived(server)
    targets = {"2025-01-01 12:00:00+01": time, "...": time, "0/3000060": lsn}
    values.update(targets | {"1234": xid, "4711": xid})
    for n, line in enumerate(sections()["Point-in-time recovery"]):
        for m, args in enumerate(commands(line, values)):
            run_pgkura(*[str(work_dir / f"pitr{n}{m}") if a == "/srv/pitr" else a for a in args])
    run_section("Getting one table back", values, env)
    assert server.sql("SELECT count(*) FROM orders", dbname="shop")[0][0] == 3  # --replace

    # Logical dumps: ID is the dump of shop, and the whole-cluster one for --dbname postgres.
    dumps = sections()["Logical dumps"]
    ids = []
    for line in dumps[:3]:
        for args in commands(line, values):
            ids.append(run_pgkura(*args, env=env).stdout.strip())
    fresh = make_server("fresh")  # a whole-cluster dump goes into a new cluster
    for line in dumps[3:]:
        whole = "--dbname postgres" in line
        values["ID"] = ids[-1] if whole else ids[0]
        for args in commands(line, values):
            run_pgkura(*args, env=fresh.libpq_env() if whole else env)
    assert server.sql("SELECT count(*) FROM orders", dbname="shop_copy")[0][0] == 3
    assert fresh.sql("SELECT count(*) FROM highway", dbname="shop")[0][0] == 1

    _config_file_setup(server, work_dir, repo, env)

    ran = {"Using it", "Point-in-time recovery", "Getting one table back", "Logical dumps"}
    assert set(sections()) <= ran | set(COVERED_ELSEWHERE), set(sections()) - ran


def _populate(server: Any) -> None:
    server.sql("CREATE DATABASE shop")
    for statement in (
        "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 3) g",
        "CREATE TABLE audit_log (at timestamptz DEFAULT now())",
        "CREATE SCHEMA audit",
        "CREATE TABLE audit.events AS SELECT 1 AS id",
        "CREATE TABLE road (name text)",
        "CREATE TABLE highway (lanes int) INHERITS (road)",
        "INSERT INTO road VALUES ('a'), ('b')",
        "INSERT INTO highway VALUES ('c', 4)",
    ):
        server.sql(statement, dbname="shop")


def _config_file_setup(server: Any, work_dir: Path, repo: str, env: dict[str, str]) -> None:
    """The section's config file and archive_command, then check through that file."""
    heading = "WAL archiving and `check`"
    (toml,) = blocks(heading, "toml")
    conf = work_dir / "pgkura.toml"
    conf.write_text(
        toml.replace('"/backups"', f'"{repo}"').replace(
            "/var/lib/postgresql/15/main", str(server.pgdata)
        )
    )
    command = next(
        re.search(r"archive_command = '([^']*)'", b).group(1)  # type: ignore[union-attr]
        for b in blocks(heading, "ini")
        if "--config" in b
    )
    command = command.replace("/path/to/.venv/bin/pgkura", PGKURA).replace(
        "/etc/pgkura/pgkura.toml", str(conf)
    )
    server.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.sql("SELECT pg_reload_conf()")
    checked = run_pgkura("--config", str(conf), "check", env=env)
    assert "stanza 'main' from config file" in checked.stdout
    assert "reached the archive" in checked.stdout
