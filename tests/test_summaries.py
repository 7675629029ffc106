"""Summary-guided online backups on PostgreSQL 17+ (issue 18, points 3 and 4): a backup reads
only the blocks the WAL summaries list as changed since the previous backup, reuses the rest,
and restores exactly like any other."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from pgkura.repository.manifest import Manifest, read_manifest
from pgkura.repository.repo import Repository
from pgkura.storage import open_storage
from pgutil import archiving_conf, switch_and_wait_archived
from runner import run_pgkura

SUMMARIZING = {"summarize_wal": "on", "checkpoint_timeout": "1h"}


def digests(server: Any, dbname: str = "postgres") -> list[tuple[str, int, str]]:
    """Every user table's name, row count and a digest of its rows in a stable order."""
    names = server.sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1",
        dbname=dbname,
    )
    out = []
    for (name,) in names:
        (count, digest) = server.sql(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
            f'FROM "{name}" t',
            dbname=dbname,
        )[0]
        out.append((str(name), int(count), str(digest)))
    assert out, "no table to compare"
    return out


def _server(make_server: Any, repo: str, name: str = "src") -> Any:
    return make_server(name, extra_conf={**archiving_conf(repo), **SUMMARIZING})


def _backup(src: Any, repo: str, **env: str) -> Manifest:
    full_env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata), **env}
    out = run_pgkura("--repo", repo, "backup", "--type", "online", "--output", "json", env=full_env)
    backup_id = json.loads(out.stdout)["id"]
    manifest = read_manifest(Repository.open(open_storage(repo)), "main", backup_id)
    return manifest.with_changes(extra={**manifest.extra, "stderr": out.stderr})


def _restore_and_compare(
    make_server: Any, work_dir: Path, repo: str, m: Manifest, expected: list[Any]
) -> None:
    """Restore ``m`` to its consistency point, check every file's CRC-32C in the manifest
    against the restored bytes, start it and compare every table row for row."""
    target = work_dir / f"restored-{m.id}"
    run_pgkura(
        "--repo", repo, "restore", "--backup", m.id, "--target-dir", str(target),
        "--to-immediate", "--archive-mode", "off",
    )  # fmt: skip
    for f in m.files:
        if f.type == "file" and f.crc32c is not None and f.path != "backup_label":
            path = target / f.path
            if path.is_file() and path.stat().st_size == f.size:
                assert f"{google_crc32c.value(path.read_bytes()):08x}" == f.crc32c, f.path
    restored = make_server(f"r{m.id[-6:]}", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert digests(restored) == expected
    restored.stop()


def _summarized_past_checkpoint(src: Any) -> None:
    """Checkpoint, and wait until the summarizer has written the summary that ends there."""
    src.sql("CHECKPOINT")
    (redo,) = src.sql("SELECT redo_lsn FROM pg_control_checkpoint()")[0]
    deadline = time.monotonic() + 30
    while src.sql(f"SELECT summarized_lsn < '{redo}' FROM pg_get_wal_summarizer_state()")[0][0]:
        assert time.monotonic() < deadline, "the WAL summarizer did not reach the checkpoint"
        time.sleep(0.05)


def _note(m: Manifest) -> dict[str, Any]:
    note = m.extra.get("summaries")
    assert isinstance(note, dict), m.extra
    return note


@pytest.mark.matrix
@pytest.mark.min_pg(17, reason="WAL summaries")
def test_guided_backup_after_every_kind_of_change_restores_exactly(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = _server(make_server, repo)
    src.sql(
        "CREATE TABLE upd AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g;"
        "CREATE TABLE ins AS SELECT g AS id FROM generate_series(1, 20000) g;"
        "CREATE TABLE trunc AS SELECT g AS id FROM generate_series(1, 20000) g;"
        "CREATE TABLE dropped AS SELECT g AS id FROM generate_series(1, 20000) g;"
        "CREATE TABLE vac AS SELECT g AS id FROM generate_series(1, 100000) g;"
        "CREATE INDEX ON upd (id)"
    )
    # Hint bits set now, not by the first scan after the backup (which would log every page).
    src.sql("VACUUM (FREEZE)")
    first = _backup(src, repo)
    assert _note(first) == {"guided": False, "fallback": "no previous backup of this cluster"}
    src.sql(
        "UPDATE upd SET v = -v WHERE id BETWEEN 20000 AND 20500;"
        "INSERT INTO ins SELECT g FROM generate_series(20001, 60000) g;"
        "TRUNCATE trunc; INSERT INTO trunc VALUES (7);"
        "DROP TABLE dropped; CREATE TABLE created AS SELECT g AS id FROM generate_series(1, 99) g;"
        "DELETE FROM vac WHERE id > 30000"
    )
    src.sql("VACUUM vac")  # truncates the empty tail of the table
    guided = _backup(src, repo)
    expected = digests(src)
    note = _note(guided)
    assert note["guided"] is True and note["base"] == first.id, note
    assert "read_whole" not in note
    # Fewer bytes read than the files hold: the unchanged blocks came from the first backup.
    assert guided.extra["read_bytes"] < 0.5 * guided.size_bytes, guided.extra
    assert guided.extra["read_bytes"] < first.extra["read_bytes"]
    # info says so, as a note and in its JSON.
    lines = {b["id"]: b for b in json.loads(
        run_pgkura("--repo", repo, "info", "--output", "json").stdout)["backups"]}  # fmt: skip
    assert lines[guided.id]["summaries"] == {
        "guided": True, "base": first.id, "fallback": None, "read_whole": 0}  # fmt: skip
    assert lines[guided.id]["read_bytes"] == guided.extra["read_bytes"]
    assert lines[first.id]["summaries"]["fallback"] == "no previous backup of this cluster"
    table = run_pgkura("--repo", repo, "info").stdout
    assert "summary-guided, read" in table
    detail = run_pgkura("--repo", repo, "info", first.id).stdout
    assert "not summary-guided: no previous backup of this cluster" in detail
    switch_and_wait_archived(src)
    # verify reads every block back and checks each file's CRC-32C and pages.
    run_pgkura("--repo", repo, "verify", guided.id)
    _restore_and_compare(make_server, work_dir, repo, guided, expected)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_guided_backup_takes_a_new_gigabyte_segment(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = _server(make_server, repo)
    began = time.monotonic()
    # One 500-byte row per page (fillfactor 10): 131072 rows fill the first 1 GiB segment.
    src.sql(
        "CREATE TABLE big (id int, pad text) WITH (fillfactor = 10);"
        "INSERT INTO big SELECT g, repeat('x', 500) FROM generate_series(1, 131000) g"
    )
    # Frozen before the next checkpoint, while no page needs a full-page image for it: the
    # scans after the backups change no page of the first segment.
    src.sql("VACUUM (FREEZE) big")
    built = time.monotonic() - began
    first = _backup(src, repo)
    src.sql("INSERT INTO big SELECT g, repeat('y', 500) FROM generate_series(131001, 133000) g")
    guided = _backup(src, repo)
    expected = digests(src)
    assert _note(guided)["guided"] is True
    node = src.sql("SELECT pg_relation_filepath('big')")[0][0]
    paths = {f.path: f for f in guided.files}
    assert f"{node}.1" in paths and paths[f"{node}.1"].size > 0
    assert guided.extra["read_bytes"] < 0.1 * first.extra["read_bytes"], guided.extra
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, guided, expected)
    # A page of the first segment changed behind the summaries' back: both segments of the
    # relation are read whole, not only the one where it showed.
    src.sql("UPDATE big SET pad = 'z' WHERE id IN (1, 133000)")
    path = src.pgdata / node
    src.stop()
    _copy_page_lsn(path, 0, 3)
    src.start()
    suspect = _backup(src, repo)
    assert _note(suspect)["read_whole"] == [node, f"{node}.1"], _note(suspect)
    assert suspect.extra["read_bytes"] > 2**30
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, suspect, expected)
    print(f"big table built in {built:.1f} s, test took {time.monotonic() - began:.1f} s")


def _copy_page_lsn(path: Path, source: int, target: int) -> None:
    """Give page ``target`` of the (stopped) server's file the LSN of page ``source``, with a
    valid checksum, and no WAL naming it: what a summarizer's bug looks like."""
    from pgkura.pg.checksum import page_checksums
    from pgkura.pg.relfile import BLCKSZ

    with open(path, "r+b") as f:
        f.seek(source * BLCKSZ)
        lsn = f.read(8)
        f.seek(target * BLCKSZ)
        page = bytearray(f.read(BLCKSZ))
        page[0:8] = lsn
        page[8:10] = b"\0\0"
        page[8:10] = page_checksums(bytes(page), target)[0].to_bytes(2, "little")
        f.seek(target * BLCKSZ)
        f.write(page)


@pytest.mark.matrix
@pytest.mark.min_pg(17, reason="WAL summaries")
def test_backup_falls_back_when_summaries_are_gone_or_turned_off(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = _server(make_server, repo)
    src.sql("CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g")
    _backup(src, repo)
    src.sql("UPDATE t SET v = 0 WHERE id < 100")
    second = _backup(src, repo)
    assert _note(second)["guided"] is True
    # A summary that is listed but cannot be read (as when it is removed between the two).
    src.sql("UPDATE t SET v = 3 WHERE id < 50")
    _summarized_past_checkpoint(src)
    summaries = sorted((src.pgdata / "pg_wal" / "summaries").iterdir())
    for f in summaries:
        f.chmod(0)
    unreadable = _backup(src, repo)
    assert "could not be read" in _note(unreadable)["fallback"], _note(unreadable)
    assert "could not be read" in unreadable.extra["stderr"]
    for f in summaries:
        f.chmod(0o600)
    # Summaries removed (expired, or by hand): the range since the last backup is not covered.
    src.sql("UPDATE t SET v = 1 WHERE id < 200")
    _summarized_past_checkpoint(src)
    for f in (src.pgdata / "pg_wal" / "summaries").iterdir():
        f.unlink()
    third = _backup(src, repo)
    note = _note(third)
    assert note["guided"] is False and "do not cover" in note["fallback"], note
    assert "not summary-guided" in third.extra["stderr"] and "do not cover" in third.extra["stderr"]
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, third, expected)
    # summarize_wal turned off between two backups.
    fourth_base = _backup(src, repo)
    assert _note(fourth_base)["guided"] is True
    src.sql("ALTER SYSTEM SET summarize_wal = off")
    src.sql("SELECT pg_reload_conf()")
    src.sql("UPDATE t SET v = 2 WHERE id < 300")
    fourth = _backup(src, repo)
    assert _note(fourth) == {"guided": False, "fallback": "summarize_wal is off"}
    assert "summarize_wal is off" in fourth.extra["stderr"]
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, fourth, expected)


def _file_size(src: Any, table: str) -> tuple[str, int]:
    """The path (in PGDATA) and size of ``table``'s main fork (one segment)."""
    path = str(src.sql(f"SELECT pg_relation_filepath('{table}')")[0][0])
    return path, (src.pgdata / path).stat().st_size


@pytest.mark.matrix
@pytest.mark.min_pg(17, reason="WAL summaries")
def test_a_stalled_summarizer_times_out_into_a_whole_file_backup_that_says_so(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """The summarizer stops (SIGSTOP: what a summarizer far behind a burst of WAL looks like)
    with ``summarize_wal = on``: the backup waits ``--summary-timeout``, then reads every
    changed file whole, says so on stderr and in its manifest, and restores
    every committed row; once the summarizer runs again, the next backup is guided by it."""
    import signal

    from pgkura.wal.names import parse_lsn

    src = _server(make_server, repo)
    src.sql("CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g")
    src.sql("VACUUM (FREEZE) t")
    _backup(src, repo)
    src.sql("UPDATE t SET v = -v WHERE id <= 500")
    _summarized_past_checkpoint(src)
    time.sleep(0.3)  # idle, waiting for WAL: it holds no lock the checkpointer needs
    (pid,) = src.sql("SELECT summarizer_pid FROM pg_get_wal_summarizer_state()")[0]
    assert pid, "no WAL summarizer runs"
    os.kill(int(pid), signal.SIGSTOP)
    try:
        # Only WAL the summarizer never reads: the update, the insert, the backup's start.
        src.sql("UPDATE t SET v = 7 WHERE id BETWEEN 40000 AND 40100")
        src.sql("INSERT INTO t SELECT g, g FROM generate_series(50001, 52000) g")
        began = time.monotonic()
        stalled = _backup(src, repo, PGKURA_SUMMARY_TIMEOUT="2")
        waited = time.monotonic() - began
        expected = digests(src)
        (summarized,) = src.sql("SELECT summarized_lsn FROM pg_get_wal_summarizer_state()")[0]
    finally:
        os.kill(int(pid), signal.SIGCONT)
    assert stalled.start_lsn is not None
    assert parse_lsn(str(summarized)) < parse_lsn(stalled.start_lsn), summarized
    reason = f"the WAL summarizer did not reach {stalled.start_lsn} within 2 s"
    assert _note(stalled) == {"guided": False, "fallback": reason}, _note(stalled)
    assert "not summary-guided" in stalled.extra["stderr"] and reason in stalled.extra["stderr"]
    assert waited >= 2, waited
    # The changed table was read whole, not by the blocks the summaries would have listed.
    path, size = _file_size(src, "t")
    entry = next(f for f in stalled.files if f.path == path)
    assert entry.size == size and stalled.extra["read_bytes"] >= size, stalled.extra
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, stalled, expected)
    # Running again, the summarizer catches up: the next backup is guided, by the fallback
    # backup (which kept its per-block CRCs), and reads far less than the fallback did.
    # (Not less than the table alone: what else a backup reads whole, the non-relation files
    # and the forks that change with autovacuum, varied from 0.4 to 4 MiB between runs.)
    src.sql("UPDATE t SET v = 9 WHERE id <= 100")
    again = _backup(src, repo)
    note = _note(again)
    assert note["guided"] is True and note["base"] == stalled.id, note
    assert again.extra["read_bytes"] < stalled.extra["read_bytes"] / 3, again.extra
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, again, expected)


def _summary_files(src: Any) -> list[tuple[int, int, int, Path]]:
    """pg_wal/summaries' files as (timeline, start, end, path), by start: each is named
    TTTTTTTT + start LSN + end LSN, in hex (src/backend/backup/walsummary.c)."""
    out = []
    for f in (src.pgdata / "pg_wal" / "summaries").glob("*.summary"):
        n = f.name
        out.append((int(n[:8], 16), int(n[8:24], 16), int(n[24:40], 16), f))
    return sorted(out)


@pytest.mark.matrix
@pytest.mark.min_pg(17, reason="WAL summaries")
def test_a_gap_in_the_summaries_falls_back_and_keeps_the_rows_changed_in_it(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """Summaries cover the start and the end of the range since the previous backup, not a
    stretch in the middle (one summary file removed): the backup is not guided, says which
    range is not covered, and restores the change made in the gap."""
    from pgkura.wal.names import format_lsn, parse_lsn

    src = _server(make_server, repo)
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g;"
        "CREATE TABLE u AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g"
    )
    src.sql("VACUUM (FREEZE)")
    base = _backup(src, repo)
    assert base.start_lsn is not None
    base_start = parse_lsn(base.start_lsn)
    # Three changes, each in its own summary (every checkpoint's redo ends one); u changes
    # only in the middle one, so that no page the other summaries list is near it (were the
    # gap ignored, no block of u would be read, and the cross-check could not see it).
    lsn = "SELECT pg_current_wal_insert_lsn()::text"
    for table, n in (("t", 1), ("u", 2), ("t", 3)):
        before = parse_lsn(src.sql(lsn)[0][0])
        src.sql(f"UPDATE {table} SET v = {-n} WHERE id BETWEEN {n * 10000} AND {n * 10000 + 100}")
        if n == 2:
            in_gap = (before, parse_lsn(src.sql(lsn)[0][0]))
        _summarized_past_checkpoint(src)
    since = [f for f in _summary_files(src) if f[2] > base_start]
    removed = [f for f in since if f[1] < in_gap[1] and f[2] > in_gap[0]]
    # Covered at both ends, not in the middle.
    assert removed and since[0] not in removed and since[-1] not in removed, (since, in_gap)
    for _tli, _start, _end, path in removed:
        path.unlink()
    listed = src.sql("SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries()")
    for _tli, start, end, _path in removed:
        assert (format_lsn(start), format_lsn(end)) not in set(listed), listed
    tli = since[0][0]
    gapped = _backup(src, repo)
    note = _note(gapped)
    assert gapped.start_lsn is not None
    reason = (
        f"the WAL summaries do not cover {base.start_lsn} to {gapped.start_lsn} on timeline "
        f"{tli} (expired, removed, or summarize_wal was off meanwhile)"
    )
    assert note == {"guided": False, "fallback": reason}, note
    assert "not summary-guided" in gapped.extra["stderr"] and reason in gapped.extra["stderr"]
    sizes = [_file_size(src, table) for table in ("t", "u")]
    for path, size in sizes:
        entry = next(f for f in gapped.files if f.path == path)
        assert entry.size == size, (entry, size)
    # Both changed tables were read whole.
    assert gapped.extra["read_bytes"] >= sum(size for _path, size in sizes), gapped.extra
    expected = digests(src)
    # The gap's change is what the restore must not lose.
    assert src.sql("SELECT count(*), min(v) FROM u WHERE v < 0") == [(101, -2)]
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, gapped, expected)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_summarize_wal_off_then_on_again_after_its_wal_was_recycled_falls_back(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A DBA turns summarize_wal off after a backup, and on again once the WAL written
    meanwhile is archived and recycled (ALTER SYSTEM + reload both times): the summarizer
    cannot summarize what pg_wal no longer holds, so the next backup falls back (the
    summarizer never reaches its start, or the summaries leave a gap), says which, and
    restores the rows changed while summarization was off."""
    src = _server(make_server, repo)
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g;"
        "CREATE TABLE u AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g"
    )
    src.sql("VACUUM (FREEZE)")
    _backup(src, repo)
    src.sql("ALTER SYSTEM SET summarize_wal = off")
    src.sql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 30
    while src.sql("SELECT summarizer_pid FROM pg_get_wal_summarizer_state()")[0][0] is not None:
        assert time.monotonic() < deadline, "the WAL summarizer did not stop"
        time.sleep(0.05)
    src.sql("UPDATE u SET v = -v WHERE id BETWEEN 20000 AND 20100")
    (changed,) = src.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    for _ in range(4):  # the segment of the update is archived, then removed or recycled
        switch_and_wait_archived(src)
        src.sql("CHECKPOINT")
    assert not (src.pgdata / "pg_wal" / changed).exists(), changed
    src.sql("ALTER SYSTEM SET summarize_wal = on")
    src.sql("SELECT pg_reload_conf()")
    src.sql("UPDATE t SET v = 0 WHERE id <= 100")
    m = _backup(src, repo, PGKURA_SUMMARY_TIMEOUT="5")
    note = _note(m)
    assert m.start_lsn is not None and note["guided"] is False, note
    assert note["fallback"] == f"the WAL summarizer did not reach {m.start_lsn} within 5 s" or note[
        "fallback"
    ].startswith("the WAL summaries do not cover "), note
    assert "not summary-guided" in m.extra["stderr"] and note["fallback"] in m.extra["stderr"]
    (summarized,) = src.sql("SELECT summarized_lsn FROM pg_get_wal_summarizer_state()")[0]
    print(f"summarize_wal off and on: {note['fallback']}; summarized up to {summarized}")
    expected = digests(src)
    assert src.sql("SELECT count(*) FROM u WHERE v < 0")[0][0] == 101
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, m, expected)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_a_page_changed_behind_the_summaries_back_makes_its_file_read_whole(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = _server(make_server, repo)
    src.sql("CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g")
    src.sql("VACUUM (FREEZE) t")
    _backup(src, repo)
    src.sql("UPDATE t SET v = -1 WHERE id = 1")  # page 0: listed by the summaries
    path = src.pgdata / src.sql("SELECT pg_relation_filepath('t')")[0][0]
    src.stop()
    # Page 3 is read with page 0 (one 64 KiB block) and gets page 0's new LSN.
    _copy_page_lsn(path, 0, 3)
    src.start()
    guided = _backup(src, repo)
    note = _note(guided)
    rel = str(path.relative_to(src.pgdata))
    assert note["guided"] is True and note["read_whole"] == [rel], note
    assert "did not list" in guided.extra["stderr"] and rel in guided.extra["stderr"]
    entry = next(f for f in guided.files if f.path == rel)
    assert entry.size == path.stat().st_size
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, guided, expected)


def test_combined_block_crcs_equal_the_whole_file_crc_of_real_files() -> None:
    """The whole-file CRC a guided backup keeps comes from per-block CRCs joined by
    crc32c_combine: checked against google-crc32c over real files, cut at many sizes."""
    import random
    import sys

    from pgkura.codec.crc import crc32c_combine
    from pgkura.physical.guided import block_crcs_of

    files = [Path(sys.executable).resolve(), Path(google_crc32c.__file__), Path(__file__)]
    rng = random.Random(18)
    for path in files:
        data = path.read_bytes()
        assert data, path
        for block_size in (8192, 65536, 1 << 20, rng.randrange(1, 100_000)):
            crc = 0
            for i, text in enumerate(block_crcs_of(data, block_size)):
                piece = len(data[i * block_size : (i + 1) * block_size])
                crc = crc32c_combine(crc, int(text, 16), piece)
            assert crc == google_crc32c.value(data), (path, block_size)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_a_database_recreated_by_file_copy_with_the_same_oid_is_read_whole(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """CREATE DATABASE ... STRATEGY FILE_COPY copies a template's files without logging their
    blocks; recreated under the same OID, its files have the old paths and new contents."""
    src = _server(make_server, repo)
    for name, rows in (("tmpl_a", 1000), ("tmpl_b", 3000)):
        src.sql(f"CREATE DATABASE {name}")
        src.sql(
            f"CREATE TABLE t AS SELECT g AS id, '{name}' AS src FROM generate_series(1, {rows}) g",
            dbname=name,
        )
        src.sql("VACUUM (FREEZE)", dbname=name)
    src.sql("CREATE DATABASE d OID = 70000 TEMPLATE tmpl_a STRATEGY FILE_COPY")
    src.sql("VACUUM (FREEZE)", dbname="d")
    first = _backup(src, repo)
    src.sql("DROP DATABASE d")
    src.sql("CREATE DATABASE d OID = 70000 TEMPLATE tmpl_b STRATEGY FILE_COPY")
    guided = _backup(src, repo)
    assert _note(guided)["guided"] is True and _note(guided)["base"] == first.id
    expected = digests(src, "d")
    assert expected[0][0] == "t" and src.sql("SELECT count(*) FROM t", dbname="d")[0][0] == 3000
    switch_and_wait_archived(src)
    target = work_dir / "restored"
    run_pgkura(
        "--repo", repo, "restore", "--backup", guided.id, "--target-dir", str(target),
        "--to-immediate", "--archive-mode", "off",
    )  # fmt: skip
    restored = make_server("restored", pgdata=target, init=False)
    restored.wait_for_promotion()
    assert digests(restored, "d") == expected
    assert restored.sql("SELECT count(*), min(src) FROM t", dbname="d") == [(3000, "tmpl_b")]


def test_coverage_follows_the_timeline_history_and_refuses_gaps() -> None:
    """Which stretches of WAL the summaries must cover between two backups' starts: each
    timeline's part of the history, up to its switch point; a base on a timeline this one
    left before the base's start is not on its history."""
    from pgkura.physical.summaries import _covering, _needed_ranges, summaries_apply
    from pgkura.wal.history import parse_history

    history = parse_history("1\t0/5000000\tno recovery target specified\n", 2)
    assert _needed_ranges(history, 1, 0x3000028, 0x7000028) == [
        (1, 0x3000028, 0x5000000),
        (2, 0x5000000, 0x7000028),
    ]
    assert _needed_ranges(history, 2, 0x6000000, 0x7000028) == [(2, 0x6000000, 0x7000028)]
    # The base was taken on timeline 1 after this timeline branched off from it.
    assert _needed_ranges(history, 1, 0x5000028, 0x7000028) is None
    available = [(1, 0x1000000, 0x4000000), (1, 0x4000000, 0x5000100), (2, 0x5000000, 0x8000000)]
    seg = 16 * 2**20
    assert _covering(available, 1, 0x3000028, 0x5000000, seg) == available[:2]
    assert _covering(available, 2, 0x5000000, 0x7000028, seg) == available[2:]
    gap = [(1, 0x1000000, 0x4000000), (1, 0x4000100, 0x6000000)]
    assert _covering(gap, 1, 0x3000028, 0x5000000, seg) is None
    assert _covering(available, 3, 0x5000000, 0x7000028, seg) is None
    # A new timeline's first summary starts after its first segment's page header.
    after_header = [(2, 0x5000028, 0x8000000)]
    assert _covering(after_header, 2, 0x5000000, 0x7000028, seg) == after_header
    assert _covering([(2, 0x5000029, 0x8000000)], 2, 0x5000000, 0x7000028, seg) is None
    assert _covering([(2, 0x5002018, 0x8000000)], 2, 0x5002000, 0x7000028, seg) is not None
    assert _covering([(2, 0x5002028, 0x8000000)], 2, 0x5002000, 0x7000028, seg) is None
    # The path is off below 17 and when turned off.
    assert not summaries_apply(160004, True) and not summaries_apply(170000, False)
    assert summaries_apply(170000, True) and summaries_apply(180001, True)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_guided_backup_follows_the_history_to_a_new_timeline(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A restored and promoted cluster (timeline 2) summarizes the WAL it replayed on
    timeline 1 and its own since: its backup is guided by the backup it was restored from,
    across the switch point its history file names."""
    src = _server(make_server, repo)
    src.sql("CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g")
    src.sql("VACUUM (FREEZE) t")
    base = _backup(src, repo)
    src.sql("UPDATE t SET v = -v WHERE id <= 100")  # replayed on timeline 1 by the restore
    switch_and_wait_archived(src)
    src.stop()
    target = work_dir / "promoted"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target), "--backup", base.id)
    promoted = make_server("promoted", pgdata=target, init=False)
    promoted.wait_for_promotion()
    assert promoted.sql("SELECT timeline_id FROM pg_control_checkpoint()")[0][0] == 2
    promoted.sql("UPDATE t SET v = 0 WHERE id BETWEEN 40000 AND 40100")
    guided = _backup(promoted, repo)
    note = _note(guided)
    assert guided.timeline == 2 and note["guided"] is True and note["base"] == base.id, note
    assert any(u.startswith("1/") for u in note["used"]), note
    assert any(u.startswith("2/") for u in note["used"]), note
    expected = digests(promoted)
    switch_and_wait_archived(promoted)
    _restore_and_compare(make_server, work_dir, repo, guided, expected)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_summaries_removed_while_the_backup_runs_leave_it_exact(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """The summaries are removed as soon as the backup's session is seen on the server:
    before they are read the backup falls back, after it they are no longer needed; either
    way it is exact and its manifest says which."""
    import subprocess

    from runner import PGKURA, os_user

    src = _server(make_server, repo)
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, repeat('x', 200) AS pad "
        "FROM generate_series(1, 200000) g"
    )
    src.sql("VACUUM (FREEZE) t")
    _backup(src, repo)
    src.sql("UPDATE t SET pad = 'y' WHERE id <= 1000")
    _summarized_past_checkpoint(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGKURA_", "PG"))}
    env.update(src.libpq_env(), PGKURA_PGDATA=str(src.pgdata))
    cmd = [PGKURA, "--repo", repo, "backup", "--type", "online", "--output", "json"]
    if os_user() is not None:
        cmd = ["runuser", "-u", str(os_user()), "--", *cmd]
    proc = subprocess.Popen(
        cmd, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkura'"
    deadline = time.monotonic() + 60
    while src.sql(seen)[0][0] == 0 and proc.poll() is None:
        assert time.monotonic() < deadline, "the backup's session never showed"
    for f in (src.pgdata / "pg_wal" / "summaries").iterdir():
        f.unlink()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    backup_id = json.loads(out)["id"]
    m = read_manifest(Repository.open(open_storage(repo)), "main", backup_id)
    note = _note(m)
    assert (
        note["guided"] is True
        or "do not cover" in note["fallback"]
        or ("could not be read" in note["fallback"])
    ), note
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, m, expected)
    print(f"summaries removed mid-backup: {note}")


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_a_role_that_may_not_read_summaries_backs_up_whole_and_says_why(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A backup role that may not run the summary functions (every role may by default; a
    DBA can revoke it) still takes an exact backup, read the old way, and names the refusal:
    an error in the backup's session does not end its backup."""
    src = _server(make_server, repo)
    src.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
    src.sql(
        "CREATE ROLE backup LOGIN; GRANT pg_monitor, pg_read_all_settings TO backup;"
        "GRANT EXECUTE ON FUNCTION pg_backup_start, pg_backup_stop TO backup;"
        "REVOKE EXECUTE ON FUNCTION pg_wal_summary_contents FROM PUBLIC"
    )
    _backup(src, repo, PGUSER="backup")
    src.sql("INSERT INTO t SELECT g FROM generate_series(10001, 20000) g")
    second = _backup(src, repo, PGUSER="backup")
    note = _note(second)
    assert note["guided"] is False and "permission denied" in note["fallback"], note
    assert "permission denied" in second.extra["stderr"]
    expected = digests(src)
    switch_and_wait_archived(src)
    _restore_and_compare(make_server, work_dir, repo, second, expected)


@pytest.mark.min_pg(17, reason="WAL summaries")
def test_guided_backups_from_a_standby_restore_like_the_primary(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """A standby summarizes the WAL it replays: its backups are guided (the first by the
    primary's backup it was restored from), and restore to the primary's rows."""
    primary = _server(make_server, repo, "primary")
    primary.sql("CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 50000) g")
    primary.sql("VACUUM (FREEZE) t")
    base = _backup(primary, repo)
    target = work_dir / "standby"
    conninfo = f"host={primary.socket_dir} port={primary.port} user=postgres"
    run_pgkura(
        "--repo", repo, "restore", "--target-dir", str(target), "--type", "standby",
        "--primary-conninfo", conninfo,
    )  # fmt: skip
    standby = make_server("standby", pgdata=target, init=False)
    backups = []
    digests_after_second: list[tuple[str, int, str]] = []
    for n in range(3):
        primary.sql(f"UPDATE t SET v = {n} WHERE id BETWEEN {n * 1000} AND {n * 1000 + 500}")
        if n < 2:
            # Replayed, the primary's checkpoint is where the standby's restartpoint, hence
            # its backup, starts, and where its summarizer ends a summary.
            primary.sql("CHECKPOINT")
        lsn = primary.sql("SELECT pg_current_wal_lsn()")[0][0]
        deadline = time.monotonic() + 60
        query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        while not standby.sql(query)[0][0]:
            assert time.monotonic() < deadline, "the standby did not replay the update"
            time.sleep(0.1)
        backups.append(_backup(standby, repo, PGKURA_PRIMARY_DBCONN=conninfo))
        if n == 1:
            digests_after_second = digests(primary)
    first, second, third = (_note(m) for m in backups)
    assert first["guided"] is True and first["base"] == base.id, first
    assert second["guided"] is True and second["base"] == backups[0].id, second
    assert first["used"] and second["used"], (first, second)  # summaries read, not skipped
    assert backups[1].extra["backup_from"] == "standby"
    assert backups[1].extra["read_bytes"] < 0.5 * backups[1].size_bytes
    # No checkpoint since: the third starts where the second did, every change is after its
    # start, and it reuses every block of the second that kept its size and mtime or place.
    assert backups[2].start_lsn == backups[1].start_lsn
    assert third["guided"] is True and third["used"] == [], third
    expected = digests(primary)
    switch_and_wait_archived(primary)
    _restore_and_compare(make_server, work_dir, repo, backups[2], expected)
    _restore_and_compare(make_server, work_dir, repo, backups[1], digests_after_second)
