"""`--output json`: every command's result is one JSON object that its schema in docs/json/
describes (docs/json-output.md), and the values in it are what happened.

One cluster and one repository for the module: a backup, a dump, the catalog, a verify and a
drill, the three restores (each proven by reading the restored rows), the check, a copy and a
repair of its index, a pin, an expire, a gc and a delete, key slots of an encrypted repository,
a stanza upgrade (and ``metrics``, once docs/json/metrics.schema.json exists), each run with
``--output json``. Every schema file is checked as a schema, then against what its command
printed, closed (a field the schema does not name fails: the documentation is complete) and
with times checked as RFC 3339 UTC.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from pgkura.cli.app import VERB_MODULES
from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from pgutil import archiving_conf, chown, switch_and_wait_archived
from pgversions import DEFAULT_MAJOR, bin_of
from runner import os_user, run_pgkura

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMAS = sorted((DOCS / "json").glob("*.schema.json"))
#: schema files that describe no command's output but parts the others refer to
SHARED = {"defs.schema.json"}
ORDERS = "SELECT id, amount FROM orders ORDER BY id"


def rows(server: LocalServer, query: str = ORDERS, dbname: str = "shop") -> list[tuple[Any, ...]]:
    return [tuple(r) for r in server.sql(query, dbname=dbname)]


def files_under(path: Path) -> dict[str, int]:
    """The files under ``path`` with their sizes (none when it does not exist)."""
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


@dataclass
class Story:
    """What the module's commands printed (by schema name) and what the tests compare it to."""

    work: Path
    repo: str
    server: LocalServer
    env: dict[str, str]
    printed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def json(self, schema: str, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run ``pgkura --repo REPO ARGS --output json``; its object, kept for ``schema``."""
        return run_json(self, schema, "--repo", self.repo, *args, env=env)


def run_json(story: Story, schema: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``pgkura ARGS --output json``; the one object it printed, kept for ``schema``."""
    out = run_pgkura(*args, "--output", "json", env=env or story.env)
    assert out.stdout.startswith("{") and out.stdout.endswith("}\n"), out.stdout
    printed = json.loads(out.stdout)
    story.printed.setdefault(schema, []).append(printed)
    return printed


def _tell(story: Story) -> None:
    """The commands of the module, in the order a DBA would run them."""
    live, facts = story.server, story.facts
    # Data only the first backup holds (dropped before the second): the space gc reclaims.
    live.sql("CREATE TABLE scratch AS SELECT md5(random()::text) AS noise "
             "FROM generate_series(1, 40000)")  # fmt: skip
    live.sql("CREATE DATABASE shop")
    live.sql("CREATE TABLE orders AS SELECT g AS id, g * 10 AS amount FROM "
             "generate_series(1, 1000) g", dbname="shop")  # fmt: skip
    facts["rows_at_backup"] = rows(live)
    facts["backup"] = story.json("backup", "backup")
    live.sql("INSERT INTO orders SELECT g, g FROM generate_series(1001, 1500) g", dbname="shop")
    facts["rows_at_when"] = rows(live)
    time.sleep(0.2)
    facts["when"] = str(live.sql("SELECT now()::text")[0][0])
    time.sleep(0.2)
    live.sql("DELETE FROM orders WHERE id % 2 = 0", dbname="shop")  # the accident
    switch_and_wait_archived(live)
    facts["dump"] = story.json("dump", "dump", "--dbname", "shop")
    facts["verify"] = story.json("verify", "verify")
    facts["drill"] = story.json(
        "drill", "verify", "--restore", facts["backup"]["id"], env={"TMPDIR": str(story.work)}
    )
    facts["info"] = story.json("info", "info")
    facts["info_one"] = story.json("info", "info", facts["backup"]["id"])
    _restores(story)
    facts["check"] = story.json("check", "check")
    copy_to = str(story.work / "offsite")
    facts["copy"] = story.json("copy", "copy", "--to", copy_to, "--all")
    facts["copy_again"] = story.json("copy", "copy", "--to", copy_to, "--all")
    facts["offsite_wal"] = files_under(Path(copy_to, "wal"))
    # A lost index object, written again from the packs' own copies.
    facts["offsite_packs"] = sorted(
        p.name for p in Path(copy_to, "packs").rglob("*") if p.is_file()
    )
    shutil.rmtree(Path(copy_to, "index"))
    facts["repair"] = run_json(story, "repair", "--repo", copy_to, "repair", "index")
    _expire_and_gc(story)
    _keys(story)
    # The same stanza goes on with another cluster (a pg_upgrade's): a second generation.
    other = LocalServer(story.work / "other", free_port(), live.socket_dir, live.bin_dir, os_user())
    other.initdb()
    facts["stanza"] = story.json("stanza", "--pgdata", str(other.pgdata), "stanza", "upgrade")
    facts["info_upgraded"] = story.json("info", "info")
    if (DOCS / "json" / "metrics.schema.json").exists():
        assert "metrics" in VERB_MODULES, "docs/json/metrics.schema.json, but no metrics verb"
        facts["metrics"] = story.json("metrics", "metrics")


def _restores(story: Story) -> None:
    """A point-in-time restore (started, its rows read), a logical and a table restore."""
    facts = story.facts
    target = story.work / "restored"
    facts["restore"] = story.json(
        "restore", "restore", "--target-dir", str(target), "--to-time", facts["when"],
        "--archive-mode", "off",
    )  # fmt: skip
    restored = LocalServer(
        target, free_port(), story.server.socket_dir, story.server.bin_dir, os_user()
    )
    restored.start()
    try:
        restored.wait_for_promotion()
        facts["restored_rows"] = rows(restored)
    finally:
        restored.stop(mode="immediate")
    facts["restore_logical"] = story.json(
        "restore", "restore", facts["dump"]["id"], "--dbname", "shop_copy", "--create"
    )
    facts["restore_list"] = story.json("restore", "restore", facts["dump"]["id"], "--list")
    facts["restore_table"] = story.json(
        "restore", "restore", "--dbname", "shop", "--table", "public.orders",
        "--to-time", facts["when"], env={**story.env, "TMPDIR": str(story.work)},
    )  # fmt: skip


def _expire_and_gc(story: Story) -> None:
    """A second backup, then an expire that deletes the first, then a gc that repacks the
    packs the first backup's own data leaves partly unused."""
    facts, repo = story.facts, Path(story.repo)
    story.server.sql("DROP TABLE scratch")
    facts["second_backup"] = story.json("backup", "backup")
    facts["pin"] = story.json("pin", "pin", facts["second_backup"]["id"], "--pitr")
    facts["before_expire"] = (files_under(repo / "packs"), files_under(repo / "wal"))
    # --max-unused 99: expire's gc deletes only packs nothing references; gc repacks.
    facts["expire"] = story.json("expire", "--keep-last", "1", "--max-unused", "99", "expire")
    facts["after_expire"] = (files_under(repo / "packs"), files_under(repo / "wal"))
    facts["info_after_expire"] = story.json("info", "info")
    facts["unpin"] = story.json("pin", "unpin", facts["second_backup"]["id"])
    facts["gc"] = story.json("gc", "gc")
    facts["after_gc"] = files_under(repo / "packs")
    facts["delete"] = story.json("expire", "delete", facts["dump"]["id"], "--force")
    facts["info_after_delete"] = story.json("info", "info")


def _keys(story: Story) -> None:
    """An encrypted repository's key slots: one added, listed, removed."""
    keys = {}
    for name in ("a", "b"):
        path = story.work / f"{name}.key"
        path.write_text(os.urandom(32).hex() + "\n")
        chown(path)
        path.chmod(0o600)
        keys[name] = str(path)
    crypt = ("--repo", str(story.work / "crypt"), "--key-file", keys["a"])
    run_pgkura(*crypt, "init", "--encrypt", "--raw-key")
    facts = story.facts
    facts["key_add"] = run_json(story, "key", *crypt, "key", "add", "--new-key-file",
                                keys["b"], "--raw-key")  # fmt: skip
    facts["key_list"] = run_json(story, "key", *crypt, "key", "list")
    facts["key_remove"] = run_json(
        story, "key", *crypt, "key", "remove", facts["key_add"]["changed"]
    )


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    work = Path(tempfile.mkdtemp(prefix="pgkura-test-json-"))
    sockets = Path(tempfile.mkdtemp(prefix="pgk-"))
    for path in (work, sockets):
        make_owned_dir(path, os_user(), mode=0o755)
    repo = str(work / "repo")
    run_pgkura("--repo", repo, "init")
    live = LocalServer(work / "live", free_port(), sockets, bin_of(DEFAULT_MAJOR), os_user())
    live.initdb(extra_conf=archiving_conf(repo))
    live.start()
    told = Story(work, repo, live, {**live.libpq_env(), "PGKURA_PGDATA": str(live.pgdata)})
    try:
        _tell(told)
        yield told
    finally:
        live.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)


# -- the schemas ------------------------------------------------------------------------------


COMBINATORS = ("anyOf", "oneOf", "allOf")


def closed(schema: Any, *, close: bool = True) -> Any:
    """``schema`` with every object schema closed to properties it does not name: what the
    tests hold the output to, so that the documentation is complete (the published schemas
    let new fields come: docs/json-output.md, "Stability").

    ``unevaluatedProperties`` sees the properties named through ``$ref`` and the combinators,
    so a schema is closed where it is used: not a definition itself (``$defs``, which another
    schema may extend), nor a branch of a combinator (the branch's siblings name more)."""
    if isinstance(schema, list):
        return [closed(s, close=close) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$defs":
            out[key] = {name: closed(d, close=False) for name, d in value.items()}
        elif key in COMBINATORS:
            out[key] = closed(value, close=False)
        else:
            out[key] = closed(value)
    shapes = ("properties", "$ref", *COMBINATORS)
    opened = ("additionalProperties", "unevaluatedProperties")
    if close and any(k in out for k in shapes) and not any(k in out for k in opened):
        out["unevaluatedProperties"] = False
    return out


UTC_TIMES = FormatChecker(formats=())


@UTC_TIMES.checks("date-time", raises=ValueError)
def _utc_time(value: object) -> bool:
    """RFC 3339 with a UTC offset of zero (``...T...+00:00`` or ``Z``)."""
    if not isinstance(value, str):
        return True
    when = datetime.fromisoformat(value)
    if "T" not in value or when.utcoffset() is None or when.utcoffset().total_seconds() != 0:
        raise ValueError(f"{value!r} is not an RFC 3339 time in UTC")
    return True


def validator(name: str) -> Draft202012Validator:
    """The closed validator of docs/json/``name``, which may refer to the other files."""
    loaded = {p.name: json.loads(p.read_text()) for p in SCHEMAS}
    registry: Registry[Any] = Registry().with_resources(
        (s.get("$id", name), Resource.from_contents(closed(s))) for name, s in loaded.items()
    )
    return Draft202012Validator(closed(loaded[name]), registry=registry, format_checker=UTC_TIMES)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.name)
def test_each_schema_is_valid_and_holds_what_its_command_printed(
    schema: Path, story: Story
) -> None:
    document = json.loads(schema.read_text())
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    if schema.name in SHARED:
        return
    command = schema.name.removesuffix(".schema.json")
    assert command in story.printed, f"no test runs the command {schema.name} describes"
    check = validator(schema.name)
    for printed in story.printed[command]:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in check.iter_errors(printed)]  # fmt: skip
        assert not errors, errors
        assert printed["schema_version"] == 1


def test_the_tests_hold_output_to_the_fields_its_schema_names(story: Story) -> None:
    """The closed validators refuse a field no schema names, at the top, in an object a
    definition describes and in a branch of restore's kinds; and a time that is not UTC."""
    backup, info = story.facts["backup"], story.facts["info"]
    restore = story.facts["restore"]
    line = info["backups"][0]
    wrong = [
        ("backup", {**backup, "surprise": 1}),
        ("info", {**info, "backups": [{**line, "surprise": 1}]}),
        ("info", {**info, "backups": [{**line, "last_drill": {"when": "x", "passed": True}}]}),
        ("restore", {**restore, "surprise": 1}),
        ("restore", {**restore, "recovery_target": {**restore["recovery_target"], "x": 1}}),
        ("drill", {**story.facts["drill"], "drills": [{**story.facts["drill"]["drills"][0],
                                                       "started": "2026-12-02T21:00:11+01:00"}]}),
    ]  # fmt: skip
    for schema, printed in wrong:
        assert not validator(f"{schema}.schema.json").is_valid(printed), (schema, printed)
    assert validator("backup.schema.json").is_valid(backup)


def test_every_command_that_printed_has_a_schema(story: Story) -> None:
    assert sorted(story.printed) == sorted(
        p.name.removesuffix(".schema.json") for p in SCHEMAS if p.name not in SHARED
    )
    described = (DOCS / "json-output.md").read_text()
    assert [p.name for p in SCHEMAS if f"json/{p.name}" not in described] == []


# -- the values -------------------------------------------------------------------------------


def test_backup_prints_the_line_info_lists_for_it(story: Story) -> None:
    backup, info = story.facts["backup"], story.facts["info"]
    (line,) = [b for b in info["backups"] if b["id"] == backup["id"]]
    manifest_facts = set(backup) - {"schema_version", "last_drill", "generation", "pinned"}
    assert {k: backup[k] for k in manifest_facts} == {k: line[k] for k in manifest_facts}
    assert backup["kind"] == "physical" and backup["method"] == "online"
    assert backup["size_bytes"] > 0 and backup["checksum_failures"] == []
    assert story.facts["info_one"]["backups"] == [line]
    # The drill that followed is in the catalog.
    assert line["last_drill"]["passed"] is True


def test_dump_names_its_databases_and_info_lists_it(story: Story) -> None:
    dump, info = story.facts["dump"], story.facts["info"]
    assert dump["kind"] == "logical" and dump["format"] == "custom"
    assert dump["databases"] == ["shop"]
    assert [b["id"] for b in info["backups"]] == [story.facts["backup"]["id"], dump["id"]]
    assert info["window"]["from_backup"] == story.facts["backup"]["id"]


def test_verify_and_the_drill_report_the_backups_they_read(story: Story) -> None:
    verify, drill = story.facts["verify"], story.facts["drill"]
    assert {b["id"] for b in verify["backups"]} == {
        story.facts["backup"]["id"],
        story.facts["dump"]["id"],
    }
    assert verify["ok"] is True and verify["problems"] == [] and verify["wal_files_checked"] > 0
    (one,) = drill["drills"]
    assert drill["passed"] is True and one["passed"] is True
    assert one["backup"] == story.facts["backup"]["id"]
    assert one["row_counts"]["shop"]["public.orders"] == len(story.facts["rows_at_backup"])


def test_restores_say_where_they_restored_what(story: Story) -> None:
    facts = story.facts
    physical = facts["restore"]
    assert physical["kind"] == "physical" and physical["backup"] == facts["backup"]["id"]
    assert physical["target_dir"] == str(story.work / "restored")
    assert physical["recovery_target"]["kind"] == "time"
    assert datetime.fromisoformat(physical["recovery_target"]["value"]) == datetime.fromisoformat(
        facts["when"]
    )
    assert physical["files"] > 0 and physical["bytes_written"] > 0
    assert facts["restored_rows"] == facts["rows_at_when"]

    logical = facts["restore_logical"]
    assert logical["kind"] == "logical" and logical["backup"] == facts["dump"]["id"]
    assert logical["databases"] == [
        {"dumped": "shop", "restored_into": "shop_copy", "created": True}
    ]
    assert rows(story.server, dbname="shop_copy") == rows(story.server)
    listed = facts["restore_list"]
    assert listed["databases"] == [] and "TABLE DATA public orders" in listed["listing"]

    table = facts["restore_table"]
    assert table["kind"] == "table" and table["database"] == "shop"
    assert table["recovery_target"] == physical["recovery_target"]
    (restored,) = table["tables"]
    assert restored["was"] == "public.orders"
    assert table["restored"] == {restored["table"]: len(facts["rows_at_when"])}
    query = f"SELECT id, amount FROM {restored['table']} ORDER BY id"
    assert rows(story.server, query) == facts["rows_at_when"]


def test_check_reports_archiving_works(story: Story) -> None:
    check = story.facts["check"]
    assert check["ok"] is True and check["problems"] == [] and check["passed"]


def test_copy_counts_what_it_wrote(story: Story) -> None:
    first, again = story.facts["copy"], story.facts["copy_again"]
    ids = {story.facts["backup"]["id"], story.facts["dump"]["id"]}
    assert first["created"] is True and first["ok"] is True
    assert {b["id"]: b["status"] for b in first["backups"]} == dict.fromkeys(ids, "copied")
    assert set(first["verified"]) == ids
    # The backup's drill went with it (and nothing was pinned yet).
    assert {b["id"]: (b["drill_copied"], b["pinned"]) for b in first["backups"]} == {
        story.facts["backup"]["id"]: (True, False),
        story.facts["dump"]["id"]: (False, False),
    }
    assert first["wal_files"] == len(story.facts["offsite_wal"]) > 0
    assert first["bytes_written"] == first["wal_bytes"] + sum(
        b["bytes_stored"] for b in first["backups"]
    )
    assert {b["id"]: b["status"] for b in again["backups"]} == dict.fromkeys(ids, "present")
    assert again["bytes_written"] == again["wal_files"] == 0


def test_expire_names_what_it_deleted_and_gc_what_it_reclaimed(story: Story) -> None:
    facts = story.facts
    expire = facts["expire"]
    first, second = facts["backup"]["id"], facts["second_backup"]["id"]
    assert expire["expired"] == [first]
    assert {b["id"]: b["keep"] for b in expire["backups"]} == {
        first: False,
        facts["dump"]["id"]: True,
        second: True,
    }
    assert [b["id"] for b in facts["info_after_expire"]["backups"]] == [facts["dump"]["id"], second]
    (packs_before, wal_before), (packs_after, wal_after) = (
        facts["before_expire"],
        facts["after_expire"],
    )
    wal_gone = set(wal_before) - set(wal_after)
    assert expire["wal_deleted"] == len(wal_gone) > 0
    assert expire["wal_bytes_deleted"] == sum(wal_before[k] for k in wal_gone)
    packs_gone = set(packs_before) - set(packs_after)
    assert expire["gc"]["bytes_deleted"] == sum(packs_before[k] for k in packs_gone)

    gc, after_gc = facts["gc"], facts["after_gc"]
    gone = set(packs_after) - set(after_gc)
    assert gc["bytes_deleted"] == sum(packs_after[k] for k in gone) > 0
    assert gc["packs_repacked"] > 0 and gc["packs_deleted"] == len(gone)
    assert gc["unreferenced_bytes_kept"] <= gc["repository_bytes"] * 5 / 100
    assert gc["repository_bytes"] == sum(after_gc.values())


def test_pins_deletes_repairs_keys_and_generations_say_what_changed(story: Story) -> None:
    facts = story.facts
    second = facts["second_backup"]["id"]
    assert facts["pin"] == {"schema_version": 1, "id": second, "pinned": True, "pitr": True}
    (line,) = [b for b in facts["info_after_expire"]["backups"] if b["id"] == second]
    assert line["pinned"]["pitr"] is True
    assert "pinned" in {b["id"]: b["why"] for b in facts["expire"]["backups"]}[second]
    assert facts["unpin"] == {"schema_version": 1, "id": second, "pinned": False, "pitr": False}

    delete = facts["delete"]
    assert delete["expired"] == [facts["dump"]["id"]] and delete["policy"].startswith("delete")
    assert [b["id"] for b in facts["info_after_delete"]["backups"]] == [second]

    assert sorted(facts["repair"]["rebuilt"]) == facts["offsite_packs"]
    assert facts["repair"]["unrepairable"] == []

    added, listed, removed = facts["key_add"], facts["key_list"], facts["key_remove"]
    assert added["changed"] in {s["id"] for s in added["slots"]} and len(added["slots"]) == 2
    assert listed["slots"] == added["slots"] and listed["changed"] is None
    assert removed["changed"] == added["changed"]
    assert [s["id"] for s in removed["slots"]] == [
        s["id"] for s in added["slots"] if s["id"] != added["changed"]
    ]

    upgraded, info = facts["stanza"], facts["info_upgraded"]
    assert upgraded["generation"] == 2 and upgraded["added"] is True
    assert [g["generation"] for g in info["generations"]] == [1, 2]
    assert info["system_identifier"] == upgraded["generations"][1]["system_identifier"]
    assert info["generations"][0]["backups"] == 1 and info["generations"][1]["backups"] == 0


def test_an_error_prints_no_json_only_the_error_and_its_hint(story: Story) -> None:
    out = run_pgkura("--repo", str(story.work / "nothing-here"), "info", "--output", "json",
                     check=False)  # fmt: skip
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("pgkura: error: ") and lines[-1].startswith("hint: "), lines
