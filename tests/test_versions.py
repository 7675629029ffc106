"""PostgreSQL versions: the table in pgkura.pg.versions against each real server, and the
majors pgkura refuses (issue: versions)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pgkura.errors import UnsupportedVersionError
from pgkura.pg.versions import SUPPORTED, capabilities, major_of_wal_magic
from pgutil import archiving_conf, chown, pg_verifybackup
from pgversions import bin_of
from runner import run_pgkura
from test_archive import one_segment

_ALIGN = {"c": 1, "s": 2, "i": 4, "d": 8}


def test_supported_majors_and_the_ones_refused_with_the_range() -> None:
    assert SUPPORTED == (14, 15, 16, 17, 18)
    assert [major_of_wal_magic(m) for m in (0xD10D, 0xD110, 0xD113, 0xD116, 0xD118)] == [
        14, 15, 16, 17, 18,
    ]  # fmt: skip
    assert major_of_wal_magic(0xD121) == 19 and major_of_wal_magic(0x1234) is None
    with pytest.raises(UnsupportedVersionError, match=r"beta.*PostgreSQL 14 to 18"):
        capabilities(19, "the server")
    with pytest.raises(UnsupportedVersionError, match=r"is PostgreSQL 13, .*PostgreSQL 14 to 18"):
        capabilities(13, "the server")


@pytest.mark.matrix
def test_the_version_table_matches_the_server(make_server: Any, pg_major: int) -> None:
    """What pgkura.pg.versions says of this major is what the server has: the WAL page magic
    of the WAL it writes, pg_class's byte layout (the sparse table restore reads it), the
    backup API's functions, the initdb checksum default."""
    caps = capabilities(pg_major)
    server = make_server("src", checksums=True, extra_conf={"wal_level": "replica"})

    def exists(function: str) -> bool:
        return bool(
            server.sql("SELECT count(*) > 0 FROM pg_proc WHERE proname = %s", [function])[0][0]
        )

    assert int(server.sql("SHOW server_version_num")[0][0]) // 10000 == pg_major
    magic = int.from_bytes(one_segment(server).read_bytes()[:2], "little")
    assert major_of_wal_magic(magic) == pg_major and magic == caps.wal_page_magic

    # Byte offsets of pg_class's columns, computed from the catalog's own description.
    offset, offsets = 0, {}
    for name, length, align in server.sql(
        "SELECT attname, attlen, attalign FROM pg_attribute WHERE attrelid = 'pg_class'::regclass "
        "AND attnum > 0 ORDER BY attnum"
    ):
        if length < 0:
            break  # the variable-width columns come after the fixed ones pgkura reads
        offset = -(-offset // _ALIGN[align]) * _ALIGN[align]
        offsets[name] = offset
        offset += length
    layout = caps.pg_class
    assert (offsets["oid"], offsets["relname"]) == (0, 4)
    assert offsets["relnamespace"] == layout.relnamespace
    assert offsets["relfilenode"] == layout.relfilenode
    assert offsets["reltoastrelid"] == layout.reltoastrelid
    assert offsets["relkind"] == layout.relkind

    for sql in (caps.backup_start_sql, caps.backup_stop_sql):
        function = re.search(r"(pg_\w+_backup|pg_backup_\w+)\(", sql)
        assert function is not None
        assert exists(function.group(1)), sql
    assert exists("pg_available_wal_summaries") is caps.has_wal_summaries


@pytest.mark.matrix
def test_initdb_checksums_on_and_off_whatever_the_default(make_server: Any, pg_major: int) -> None:
    """18's initdb enables data checksums by default: off must then be asked for."""
    on = make_server("on", checksums=True)
    off = make_server("off", checksums=False)
    assert on.sql("SHOW data_checksums")[0][0] == "on"
    assert off.sql("SHOW data_checksums")[0][0] == "off"
    assert capabilities(pg_major).initdb_checksums_by_default is (pg_major >= 18)


def test_archive_push_refuses_wal_of_a_major_it_does_not_support(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf={"wal_level": "replica"})
    raw = one_segment(src).read_bytes()
    for magic, words in ((0xD121, "PostgreSQL 19, which is in beta"),
                         (0xD106, "PostgreSQL 13, which pgkura does not support"),
                         (0xBEEF, "WAL page magic 0xBEEF")):  # fmt: skip
        segment = work_dir / "000000010000000000000002"
        segment.write_bytes(magic.to_bytes(2, "little") + raw[2:])
        chown(segment)
        refused = run_pgkura("--repo", repo, "archive-push", str(segment), check=False)
        # Non-zero: PostgreSQL keeps the segment in pg_wal and retries.
        assert refused.returncode != 0
        assert words in refused.stderr and "PostgreSQL 14 to 18" in refused.stderr
        assert refused.stderr.count("error:") == 1
    # Nothing was written: no stanza, no WAL.
    assert not Path(repo, "stanzas").exists() or not list(Path(repo, "stanzas").iterdir())
    assert not Path(repo, "wal").exists() or not list(Path(repo, "wal").rglob("0000*"))


@pytest.mark.min_pg(17, reason="backup_manifest version 2, with System-Identifier")
def test_a_restored_directory_names_its_cluster_for_pg_verifybackup(
    make_server: Any, work_dir: Path, repo: str, pg_major: int
) -> None:
    src = make_server("src")
    src.stop()
    env = {"PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", "--type", "offline", env=env)
    target = work_dir / "restored"
    run_pgkura("--repo", repo, "restore", "--target-dir", str(target))
    text = (target / "backup_manifest").read_text()
    head = json.loads(text)
    sysid = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)[
        "system_identifier"
    ]
    assert head["PostgreSQL-Backup-Manifest-Version"] == 2
    assert str(head["System-Identifier"]) == sysid
    pg_verifybackup(src, target)
    # pg_verifybackup compares it with pg_control: another cluster's manifest is caught.
    body = text[: text.index('"Manifest-Checksum"')].replace(sysid, str(int(sysid) + 1), 1)
    digest = hashlib.sha256(body.encode()).hexdigest()
    (target / "backup_manifest").write_text(body + f'"Manifest-Checksum": "{digest}"}}\n')
    with pytest.raises(AssertionError, match="system identifier"):
        pg_verifybackup(src, target)


def test_a_backup_is_restored_with_its_own_majors_programs(
    server_factory: Any, work_dir: Path, repo: str
) -> None:
    """Several majors are installed: pgkura picks the backup's own; --pg-bin overrides the
    search, and when no installed major matches, it says which one is needed."""
    bin18 = bin_of(18)
    src = server_factory("src", bin_dir=bin18, extra_conf=archiving_conf(repo))
    src.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 321) g")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata), "TMPDIR": str(work_dir)}
    backup_id = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()

    only_15 = run_pgkura("--repo", repo, "--pg-search-path", "/usr/lib/postgresql/15/bin",
                         "verify", "--restore", env=env, check=False)  # fmt: skip
    assert only_15.returncode == 3
    assert f"backup {backup_id} needs PostgreSQL 18's programs" in only_15.stderr
    assert "installed: 15." in only_15.stderr and "--pg-search-path" in only_15.stderr
    wrong = run_pgkura("--repo", repo, "--pg-bin", "/usr/lib/postgresql/15/bin", "verify",
                       "--restore", env=env, check=False)  # fmt: skip
    assert wrong.returncode == 3
    assert "holds PostgreSQL 15" in wrong.stderr and "is PostgreSQL 18" in wrong.stderr
    # Neither was a drill of the backup: nothing is recorded against it.
    info = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert info["backups"][0]["last_drill"] is None

    for flags in ((), ("--pg-bin", str(bin18))):
        out = run_pgkura("--repo", repo, *flags, "verify", "--restore", "--output", "json",
                         env=env)  # fmt: skip
        (result,) = json.loads(out.stdout)["drills"]
        assert result["passed"], result["problems"]
        assert result["row_counts"]["postgres"]["public.t"] == 321
