"""`pgkura metrics` and `check --max-age` on real clusters and repositories: every family of
the exposition holds what the catalog (`info`), the drill, verify, expire and gc said; the
HTTP listener answers a scrape; freshness limits pass and fail on time; the archive lag grows
while archive_command fails and comes back to zero once it works again."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pgutil import archiving_conf, switch_and_wait_archived, switch_wal
from runner import PGKURA, os_user, run_pgkura

SEG = 16 * 1024 * 1024


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels (sorted)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict[Any, float], name: str, **labels: str) -> float:
    return got[(name, tuple(sorted(labels.items())))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def info_of(repo: str) -> dict[str, Any]:
    return json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)


def pack_bytes(repo: str) -> int:
    return sum(p.stat().st_size for p in Path(repo, "packs").rglob("*") if p.is_file())


def test_every_family_holds_what_the_catalog_drill_verify_expire_and_gc_said(
    make_server: Any, repo: str, work_dir: Path
) -> None:
    server = make_server("src", extra_conf=archiving_conf(repo))
    server.sql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS a")
    env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
    server.stop()
    run_pgkura("--repo", repo, "backup", "--type", "offline", env=env)
    server.start()
    switch_and_wait_archived(server)
    run_pgkura("--repo", repo, "backup", env=env)
    server.sql("INSERT INTO t SELECT generate_series(1, 5000)")
    online = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    run_pgkura("--repo", repo, "dump", "--dbname", "postgres", env=env)
    switch_and_wait_archived(server)
    drilled = run_pgkura("--repo", repo, "verify", "--restore", online, "--output", "json",
                         env={"TMPDIR": str(work_dir)})  # fmt: skip
    drill = json.loads(drilled.stdout)["drills"][0]
    assert drill["passed"], drill["problems"]
    verify = json.loads(
        run_pgkura("--repo", repo, "verify", "--no-pages", "--output", "json").stdout
    )
    assert verify["ok"]
    before = samples(run_pgkura("--repo", repo, "metrics").stdout)  # caches the manifests' heads
    assert value(before, "pgkura_backups", stanza="main", kind="physical", method="offline") == 1
    expire = json.loads(
        run_pgkura("--repo", repo, "--keep-last", "2", "expire", "--output", "json").stdout
    )
    assert len(expire["expired"]) == 1  # the offline backup
    catalog = info_of(repo)

    got = samples(run_pgkura("--repo", repo, "metrics").stdout)
    assert value(got, "pgkura_up") == 1
    by_method: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for b in catalog["backups"]:
        by_method.setdefault((b["kind"], b["method"]), []).append(b)
    assert set(by_method) == {("physical", "online"), ("logical", "pg_dump")}
    # The expired backup's cached head is not counted.
    assert (
        "pgkura_backups",
        (("kind", "physical"), ("method", "offline"), ("stanza", "main")),
    ) not in got
    for (kind, method), backups in by_method.items():
        last = backups[-1]
        labels = {"stanza": "main", "kind": kind, "method": method}
        assert value(got, "pgkura_backups", **labels) == len(backups)
        assert value(got, "pgkura_backup_last_success_timestamp_seconds", **labels) == ts(
            last["finished"]
        )
        duration = value(got, "pgkura_backup_last_duration_seconds", **labels)
        assert abs(duration - (ts(last["finished"]) - ts(last["started"]))) < 0.002
        assert value(got, "pgkura_backup_last_size_bytes", **labels) == last["size_bytes"]
        assert value(got, "pgkura_backup_last_stored_bytes", **labels) == last["stored_bytes"]
        assert value(got, "pgkura_backup_last_new_bytes", **labels) == last["new_bytes"]
        assert value(got, "pgkura_backup_last_checksum_failures", **labels) == 0
    assert by_method[("physical", "online")][-1]["id"] == online
    # No series is labelled by a backup id or an LSN.
    assert {k for name, labels in got for k, _v in labels} <= {"stanza", "kind", "method",
                                                                "timeline"}  # fmt: skip

    window = catalog["window"]
    assert value(got, "pgkura_pitr_window_available", stanza="main") == 1
    assert value(got, "pgkura_pitr_window_start_timestamp_seconds", stanza="main") == ts(
        window["from_time"]
    )
    assert value(got, "pgkura_pitr_window_end_timestamp_seconds", stanza="main") == ts(
        window["to_time"]
    )
    (timeline,) = catalog["timelines"]
    assert value(got, "pgkura_wal_gaps", stanza="main", timeline="1") == len(timeline["gaps"]) == 0
    segments = [p for p in Path(repo, "wal", "main").rglob("0*") if len(p.name) == 24]
    assert value(got, "pgkura_wal_segments", stanza="main", timeline="1") == len(segments)
    newest = max(p.stat().st_mtime for p in segments)
    assert abs(value(got, "pgkura_wal_last_archived_timestamp_seconds", stanza="main") - newest) < 1

    assert value(got, "pgkura_drill_last_timestamp_seconds", stanza="main") == ts(drill["finished"])
    assert value(got, "pgkura_drill_last_success", stanza="main") == 1
    restore, recovery = drill["timings"]["restore"], drill["timings"]["recovery"]
    assert value(got, "pgkura_drill_last_restore_seconds", stanza="main") == restore
    assert value(got, "pgkura_drill_last_recovery_seconds", stanza="main") == recovery
    assert value(got, "pgkura_drill_last_rto_seconds", stanza="main") == restore + recovery
    proven = next(b for b in catalog["backups"] if b["id"] == online)
    assert value(got, "pgkura_drill_proven_backup_timestamp_seconds", stanza="main") == ts(
        proven["started"]
    )

    assert value(got, "pgkura_verify_last_success", stanza="main") == 1
    assert value(got, "pgkura_verify_last_problems", stanza="main") == 0
    assert value(got, "pgkura_expire_last_success", stanza="main") == 1
    assert value(got, "pgkura_gc_last_success") == 1
    for verb in ("verify", "expire", "gc"):
        labels = {} if verb == "gc" else {"stanza": "main"}
        when = value(got, f"pgkura_{verb}_last_timestamp_seconds", **labels)
        assert time.time() - 600 < when <= time.time()
    assert value(got, "pgkura_repository_bytes") == pack_bytes(repo)
    gc = expire["gc"]
    assert value(got, "pgkura_repository_unused_bytes") == gc["unreferenced_bytes_kept"] + value(
        got, "pgkura_repository_doomed_bytes"
    )

    # The same facts as JSON, and the exposition written atomically for node_exporter.
    facts = json.loads(run_pgkura("--repo", repo, "metrics", "--output", "json").stdout)
    (stanza,) = facts["stanzas"]
    assert stanza["drills"]["proven_backup"] == online
    assert {(b["kind"], b["method"], b["count"]) for b in stanza["backups"]} == {
        (k, m, len(v)) for (k, m), v in by_method.items()
    }
    out = work_dir / "textfile" / "pgkura.prom"
    out.parent.mkdir()
    os.chmod(out.parent, 0o777)
    run_pgkura("--repo", repo, "metrics", "--output-file", str(out))
    written = samples(out.read_text())
    assert value(written, "pgkura_backups", stanza="main", kind="physical", method="online") == 2
    assert [p.name for p in out.parent.iterdir()] == ["pgkura.prom"]
    assert out.stat().st_mode & 0o044 == 0o044  # node_exporter may read it

    # The drill counts for check's limit too.
    drilled_ok = run_pgkura("--repo", repo, "check", "--freshness-only", "--require-drill-age",
                            "1h", "--max-age", "1h")  # fmt: skip
    assert "ok: a drill passed " in drilled_ok.stdout and "problem" not in drilled_ok.stdout

    # A backup deleted by hand ends with a gc too: the repository's last gc is that one.
    dump_id = next(b["id"] for b in info_of(repo)["backups"] if b["kind"] == "logical")
    gc_before = value(got, "pgkura_gc_last_timestamp_seconds")
    time.sleep(1.1)
    run_pgkura("--repo", repo, "delete", dump_id, "--force")
    deleted = samples(run_pgkura("--repo", repo, "metrics").stdout)
    assert value(deleted, "pgkura_gc_last_timestamp_seconds") > gc_before
    assert (
        "pgkura_backups",
        (("kind", "logical"), ("method", "pg_dump"), ("stanza", "main")),
    ) not in deleted

    # A hole in the archive: one segment lost from the middle of timeline 1.
    names = sorted(segments, key=lambda p: p.name)
    names[-2].unlink()
    holed = samples(run_pgkura("--repo", repo, "metrics").stdout)
    (timeline,) = info_of(repo)["timelines"]
    assert timeline["gaps"] == [{"first": names[-2].name, "last": names[-2].name}]
    assert value(holed, "pgkura_wal_gaps", stanza="main", timeline="1") == 1
    assert value(holed, "pgkura_wal_missing_segments", stanza="main", timeline="1") == 1
    assert value(holed, "pgkura_wal_segments", stanza="main", timeline="1") == len(segments) - 1
    # verify finds the hole: its run record says it failed, and how many problems it found.
    failed = run_pgkura("--repo", repo, "verify", "--no-pages", "--output", "json", check=False)
    assert failed.returncode == 7
    found = json.loads(failed.stdout)["problems"]
    after = samples(run_pgkura("--repo", repo, "metrics").stdout)
    assert value(after, "pgkura_verify_last_success", stanza="main") == 0
    assert value(after, "pgkura_verify_last_problems", stanza="main") == len(found) >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_listen_answers_an_http_scrape_and_a_bad_address_is_refused(
    make_server: Any, repo: str
) -> None:
    server = make_server("src")
    server.sql("CREATE TABLE t AS SELECT 1 AS a")
    run_pgkura("--repo", repo, "dump", "--dbname", "postgres", env=server.libpq_env())
    port = _free_port()
    owner = os_user() if os.geteuid() == 0 else None  # as the repository's owner
    proc = subprocess.Popen(
        [PGKURA, "--repo", repo, "metrics", "--listen", f"127.0.0.1:{port}"],
        user=owner,
        group=owner,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    assert r.status == 200
                    body = r.read().decode()
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        assert body is not None, "the listener never answered"
        got = samples(body)
        assert value(got, "pgkura_up") == 1
        assert value(got, "pgkura_backups", stanza="main", kind="logical", method="pg_dump") == 1
        # Each scrape reads afresh: a second dump shows up without a restart.
        run_pgkura("--repo", repo, "dump", "--dbname", "postgres", env=server.libpq_env())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            again = samples(r.read().decode())
        assert value(again, "pgkura_backups", stanza="main", kind="logical", method="pg_dump") == 2
        # A repository that cannot be read: the scrape answers, and says so.
        snapshots = Path(repo, "snapshots")
        snapshots.chmod(0)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                broken = samples(r.read().decode())
        finally:
            snapshots.chmod(0o755)
        assert broken == {("pgkura_up", ()): 0}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert value(samples(r.read().decode()), "pgkura_up") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "pgkura: error: a scrape could not read the repository: " in err

    bad = run_pgkura("--repo", repo, "metrics", "--listen", "localhost", check=False)
    assert bad.returncode != 0
    assert bad.stderr.splitlines()[0] == "pgkura: error: --listen 'localhost' is not HOST:PORT"
    assert bad.stderr.splitlines()[1].startswith("hint: ")


def test_check_max_age_passes_after_a_backup_and_fails_once_it_is_older(
    make_server: Any, repo: str
) -> None:
    server = make_server("src", extra_conf=archiving_conf(repo))
    env = {**server.libpq_env(), "PGKURA_PGDATA": str(server.pgdata)}
    backup = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()
    ok = run_pgkura("--repo", repo, "check", "--max-age", "30s", "--max-wal-age", "12min",
                    env=env)  # fmt: skip
    assert re.search(
        rf"^ok: the newest backup is \d+ s old \({backup}, physical online; limit 30 s\)$",
        ok.stdout,
        re.M,
    ), ok.stdout
    assert "ok: WAL archived" in ok.stdout and "reached the archive" in ok.stdout

    time.sleep(2)
    old = run_pgkura("--repo", repo, "check", "--freshness-only", "--max-age", "1s",
                     "--require-drill-age", "8d", "--max-wal-age", "1s", check=False)  # fmt: skip
    assert old.returncode == 2  # ExitCode.ERROR (CRITICAL to a Nagios-style runner)
    problems = [line for line in old.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 3
    assert problems[0].startswith("problem: the newest backup is ")
    assert problems[0].endswith(f" s old ({backup}, physical online; limit 1 s)")
    assert int(problems[0].split()[5]) >= 2
    assert problems[1].startswith("problem: no WAL archived for ")
    assert problems[1].endswith(" s (limit 1 s)") and int(problems[1].split()[5]) >= 2
    assert problems[2] == (
        "problem: no drill has passed yet (limit 8 days; run pgkura verify --restore)"
    )
    assert old.stderr.startswith("pgkura: error: check found 3 problem(s): the newest backup is")
    report = json.loads(run_pgkura("--repo", repo, "check", "--freshness-only", "--max-age", "1s",
                                   "--output", "json", check=False).stdout)  # fmt: skip
    assert report["ok"] is False and report["problems"][0].startswith("the newest backup is")

    bad = run_pgkura("--repo", repo, "check", "--freshness-only", "--max-age", "12x", check=False)
    assert bad.returncode != 0
    assert bad.stderr.splitlines() == [
        "pgkura: error: --max-age '12x' is not a duration",
        "hint: give a whole number and a unit, s, min (or m), h, d or w: --max-age 14d",
    ]


def _lag(repo: str, server: Any) -> tuple[float, float, float]:
    got = samples(run_pgkura("--repo", repo, "--dbconn", server.conninfo(), "metrics").stdout)
    return (
        value(got, "pgkura_archive_lag_bytes", stanza="main"),
        value(got, "pgkura_archive_lag_seconds", stanza="main"),
        value(got, "pgkura_archiver_failed_total", stanza="main"),
    )


def _wait_for(what: str, condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_archive_lag_grows_while_archiving_fails_and_returns_to_zero(
    make_server: Any, repo: str
) -> None:
    conf = archiving_conf(repo)
    server = make_server("src", extra_conf=conf)
    switch_and_wait_archived(server)
    # No backup yet: the stanza is there from its archived WAL, and has no backup series.
    plain = samples(run_pgkura("--repo", repo, "metrics").stdout)
    assert value(plain, "pgkura_wal_segments", stanza="main", timeline="1") >= 1
    assert value(plain, "pgkura_pitr_window_available", stanza="main") == 0
    assert not [k for k in plain if k[0] == "pgkura_backups"]
    assert _lag(repo, server) == (0, 0, 0)

    server.sql("ALTER SYSTEM SET archive_command = 'false'")
    server.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the archiver reads the new setting
    failed = switch_wal(server)
    failures_now = "SELECT failed_count FROM pg_stat_archiver"
    _wait_for("a failed archive_command", lambda: server.sql(failures_now)[0][0] > 0)
    one, seconds, failures = _lag(repo, server)
    assert one == SEG and failures >= 1
    time.sleep(1)
    last = switch_wal(server)
    two, later, _ = _lag(repo, server)
    assert two == 2 * SEG
    assert later > seconds >= 0 and later >= 1

    command = conf["archive_command"].replace("'", "''")
    server.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.sql("SELECT pg_reload_conf()")
    assert last > failed
    _wait_for("the archiver to catch up", lambda: (server.sql(
        "SELECT last_archived_wal FROM pg_stat_archiver")[0][0] or "") >= last)  # fmt: skip
    lag, lag_seconds, _ = _lag(repo, server)
    assert (lag, lag_seconds) == (0, 0)
    assert value(samples(run_pgkura("--repo", repo, "--dbconn", server.conninfo(), "metrics")
                         .stdout), "pgkura_server_up", stanza="main") == 1  # fmt: skip

    # A server that is down hides nothing the repository says.
    server.stop()
    down = run_pgkura("--repo", repo, "--dbconn", server.conninfo(), "metrics")
    got = samples(down.stdout)
    assert value(got, "pgkura_server_up", stanza="main") == 0
    assert ("pgkura_archive_lag_bytes", (("stanza", "main"),)) not in got
    assert value(got, "pgkura_wal_segments", stanza="main", timeline="1") >= 3
    assert down.stderr.startswith("pgkura: warning: stanza main: cannot connect to PostgreSQL")
