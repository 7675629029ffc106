"""archive-push / archive-get as PostgreSQL calls them, against real WAL (issue: online)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgutil import archiving_conf, chown, switch_wal
from runner import os_user, run_pgkura


def one_segment(server: Any) -> Path:
    """A complete segment from pg_wal (the one a fresh switch just finished)."""
    server.sql("CREATE TABLE IF NOT EXISTS filler AS SELECT g FROM generate_series(1, 1000) g")
    name = switch_wal(server)
    return server.pgdata / "pg_wal" / name


@pytest.mark.matrix
def test_push_get_round_trip_and_repeats(make_server: Any, work_dir: Path, repo: str) -> None:
    src = make_server("src", extra_conf={"wal_level": "replica"})
    segment = one_segment(src)
    raw = segment.read_bytes()
    run_pgkura("--repo", repo, "archive-push", str(segment))
    # PostgreSQL may push again after a crash: identical content is fine.
    again = run_pgkura("--repo", repo, "--log-level", "info", "archive-push", str(segment))
    assert "already archived with the same content" in again.stderr

    dest_dir = work_dir / "dest"
    dest_dir.mkdir()
    chown(dest_dir)
    dest = dest_dir / "RECOVERYXLOG"
    run_pgkura("--repo", repo, "archive-get", segment.name, str(dest))
    assert dest.read_bytes() == raw
    stored = next(Path(repo, "wal").rglob(segment.name))
    assert stored.stat().st_size < len(raw)  # compressed

    # Different content under the same name is refused, and the archived copy is kept.
    altered = work_dir / segment.name
    altered.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    chown(altered)
    before = stored.read_bytes()
    refused = run_pgkura("--repo", repo, "archive-push", str(altered), check=False)
    assert refused.returncode != 0
    assert "already archived with different content" in refused.stderr
    assert stored.read_bytes() == before


def test_get_of_a_missing_file_exits_1_and_creates_nothing(work_dir: Path, repo: str) -> None:
    dest = work_dir / "RECOVERYXLOG"
    missing = run_pgkura(
        "--repo", repo, "archive-get", "000000010000000000000042", str(dest), check=False
    )
    assert missing.returncode == 1
    assert "not in the archive" in missing.stderr
    assert not dest.exists()
    history = run_pgkura("--repo", repo, "archive-get", "00000002.history", str(dest), check=False)
    assert history.returncode == 1 and not dest.exists()


def test_wal_of_another_cluster_is_refused(make_server: Any, repo: str) -> None:
    first = make_server("first", extra_conf={"wal_level": "replica"})
    second = make_server("second", extra_conf={"wal_level": "replica"})
    run_pgkura("--repo", repo, "archive-push", str(one_segment(first)))
    other = run_pgkura("--repo", repo, "archive-push", str(one_segment(second)), check=False)
    assert other.returncode != 0
    assert "system identifier" in other.stderr and "--stanza" in other.stderr
    # The same WAL goes into a stanza of its own.
    run_pgkura("--repo", repo, "--stanza", "second", "archive-push", str(one_segment(second)))


def test_bad_names_and_damaged_archive(make_server: Any, work_dir: Path, repo: str) -> None:
    bad = run_pgkura("--repo", repo, "archive-push", "/etc/hostname", check=False)
    assert bad.returncode == 3 and "not a WAL file name" in bad.stderr
    absent = run_pgkura("--repo", repo, "archive-push", "pg_wal/000000010000000000000099",
                        check=False)  # fmt: skip
    assert absent.returncode == 3 and "does not exist" in absent.stderr

    src = make_server("src", extra_conf={"wal_level": "replica"})
    segment = one_segment(src)
    run_pgkura("--repo", repo, "archive-push", str(segment))
    stored = next(Path(repo, "wal").rglob(segment.name))
    data = bytearray(stored.read_bytes())
    data[-10] ^= 0xFF
    stored.write_bytes(bytes(data))
    dest = work_dir / "out"
    damaged = run_pgkura("--repo", repo, "archive-get", segment.name, str(dest), check=False)
    # Above 125, so that PostgreSQL stops recovery instead of taking it for the archive's end.
    assert damaged.returncode == 255 and "is damaged" in damaged.stderr
    # The damage is found only at the end, after most of the content was written out
    # piece by piece: neither the file nor its temporary is left.
    assert not dest.exists() and not list(work_dir.glob(".out.*"))
    # Pushing the real segment again heals the damaged copy.
    run_pgkura("--repo", repo, "archive-push", str(segment))
    dest_dir = work_dir / "healed"
    dest_dir.mkdir()
    chown(dest_dir)
    run_pgkura("--repo", repo, "archive-get", segment.name, str(dest_dir / "x"))
    assert (dest_dir / "x").read_bytes() == segment.read_bytes()


def test_history_files_are_archived(make_server: Any, work_dir: Path, repo: str) -> None:
    src = make_server("src", extra_conf={"wal_level": "replica"})
    segment = one_segment(src)
    history = work_dir / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    chown(history)
    run_pgkura("--repo", repo, "archive-push", str(segment))
    run_pgkura("--repo", repo, "archive-push", str(history))
    dest_dir = work_dir / "d"
    dest_dir.mkdir()
    chown(dest_dir)
    run_pgkura("--repo", repo, "archive-get", history.name, str(dest_dir / "h"))
    assert (dest_dir / "h").read_text() == history.read_text()
    assert json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)[
        "system_identifier"
    ]


def test_check_reports_each_wrong_setting(make_server: Any, repo: str) -> None:
    plain = make_server("plain", extra_conf={"wal_level": "minimal", "max_wal_senders": "0"})
    env = {**plain.libpq_env()}
    result = run_pgkura("--repo", repo, "check", env=env, check=False)
    assert result.returncode != 0
    assert "set wal_level = replica" in result.stdout
    assert "set archive_mode = on" in result.stdout
    assert "archive-push" in result.stdout

    good = make_server("good", extra_conf=archiving_conf(repo))
    ok = run_pgkura("--repo", repo, "check", env=good.libpq_env())
    assert "reached the archive" in ok.stdout
    wrong_stanza = run_pgkura(
        "--repo", repo, "--stanza", "other", "check", env=good.libpq_env(), check=False
    )
    assert wrong_stanza.returncode != 0
    assert "stanza 'main'" in wrong_stanza.stdout and "not repository" in wrong_stanza.stdout


# PostgreSQL starts archive-push and archive-get once per WAL segment, so what they import is
# their latency: each of these cost them 3 to 10 ms (python -X importtime, docs/benchmarks.md).
HEAVY_MODULES = {
    "pathlib", "typing", "platform", "dataclasses", "datetime", "inspect",
    "zstandard", "click", "rich", "psycopg", "logging", "importlib.util", "tomllib",
}  # fmt: skip


def modules_after(work_dir: Path, *args: str) -> set[str]:
    """The modules the ``pgkura ARGS`` command had imported when it finished."""
    out = work_dir / "modules.txt"
    code = (
        "import sys, atexit\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(chr(10).join(sys.modules)))\n"
        f"sys.argv = ['pgkura', *{list(args)!r}]\n"
        "from pgkura.entry import main\n"
        "sys.exit(main())\n"
    )
    cmd = [sys.executable, "-c", code]
    if os_user() is not None:
        cmd = ["runuser", "-u", os_user() or "", "--", *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGKURA_", "PG"))}
    subprocess.run(cmd, env=env, check=True, cwd="/", timeout=120)
    return set(out.read_text().split("\n"))


def test_archive_commands_import_only_what_they_need(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf={"wal_level": "replica"})
    segment = one_segment(src)
    run_pgkura("--repo", repo, "archive-push", str(one_segment(src)))  # the stanza exists
    pushed = modules_after(work_dir, "--repo", repo, "archive-push", str(segment))
    assert "pgkura.wal.archive" in pushed and "zstandard.backend_c" in pushed
    assert pushed & HEAVY_MODULES == set()
    dest = work_dir / "dest"
    dest.mkdir()
    chown(dest)
    got = modules_after(work_dir, "--repo", repo, "archive-get", segment.name, str(dest / "X"))
    assert (dest / "X").read_bytes() == segment.read_bytes()
    assert got & HEAVY_MODULES == set()


def test_as_root_pgkura_writes_nothing_into_a_repository_another_user_owns(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """Run as root (sudo, a cron job of root's) on the repository the server's user made,
    pgkura would leave root's files in it, which that user's archive_command could not read
    or replace: archiving would stop. Each command that would write refuses in one line,
    naming the owner, before it writes anything; reading commands work."""
    import pwd

    if os.geteuid() != 0:
        pytest.fail("this test needs root: it runs pgkura as root beside the server's user")
    owner = pwd.getpwuid(Path(repo).stat().st_uid).pw_name
    assert owner != "root"
    src = make_server("src", extra_conf={"wal_level": "replica"})
    kept = work_dir / "kept"
    kept.mkdir()
    segment = Path(shutil.copy2(one_segment(src), kept))  # a stopped server recycles it
    chown(kept)
    chown(segment)
    src.stop()
    before = {str(p): p.stat().st_mtime_ns for p in Path(repo).rglob("*")}
    for args in (
        ("archive-push", str(segment)),
        ("--pgdata", str(src.pgdata), "backup", "--type", "offline"),
        ("gc",),
        ("--keep-last", "1", "expire"),
    ):
        result = run_pgkura("--repo", repo, *args, user=None, check=False)
        error, hint = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 3, (args, result.stderr)
        assert f"pgkura runs as root, but the repository at {repo} belongs to {owner}" in error
        assert f"runuser -u {owner} -- pgkura" in hint
    assert {str(p): p.stat().st_mtime_ns for p in Path(repo).rglob("*")} == before
    assert run_pgkura("--repo", repo, "info", user=None).returncode == 0
    empty = work_dir / "empty"  # an empty directory of the server's user: init refuses too
    empty.mkdir()
    shutil.chown(empty, owner, owner)
    result = run_pgkura("--repo", str(empty), "init", user=None, check=False)
    assert result.returncode == 3 and "belongs to" in result.stderr and not any(empty.iterdir())
    run_pgkura("--repo", repo, "archive-push", str(segment))  # as the owner: archived
