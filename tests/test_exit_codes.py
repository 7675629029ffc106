"""One exit-code policy, checked through the real ``pgkura`` command: 1 only for archive-get's
"not in the archive", 3 for every usage error, 9 for a restore the archive cannot complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgkura.errors import ExitCode
from pgutil import archiving_conf, chown, switch_and_wait_archived
from runner import run_pgkura


def test_archive_get_of_a_missing_segment_exits_1(work_dir: Path, repo: str) -> None:
    dest = work_dir / "RECOVERYXLOG"
    got = run_pgkura(
        "--repo", repo, "archive-get", "000000010000000000000042", str(dest), check=False
    )
    assert got.returncode == ExitCode.NOT_FOUND == 1
    assert "not in the archive" in got.stderr
    assert not dest.exists()


@pytest.mark.parametrize("value", ["0", "-2", "many"])
@pytest.mark.parametrize(
    "command",
    [
        ["backup"],
        ["dump"],
        ["verify"],
        ["restore", "--target-dir", "/nonexistent/restore-target"],
    ],
)
def test_a_bad_jobs_is_a_usage_error_for_every_command(
    repo: str, command: list[str], value: str
) -> None:
    result = run_pgkura("--repo", repo, *command, "--jobs", value, check=False)
    assert result.returncode == ExitCode.USAGE == 3, result.stderr
    assert "--jobs" in result.stderr
    assert not Path("/nonexistent/restore-target").exists()


def test_usage_errors_exit_3(repo: str) -> None:
    for args, words in (
        (["no-such-verb"], "No such command"),
        (["backup", "--no-such-flag"], "No such option"),
        (["restore", "--target-dir", "/nonexistent/t", "--to-lsn", "x/y"], "LSN"),
        (["--log-level", "loud", "info"], "unknown log level"),
        (["verify", "--all"], "belong to a drill"),
        (["verify", "--restore", "--all", "20200101T000000Z"], "not both"),
        (["--pgdata", "/", "backup", "--type", "offline"], "not a PostgreSQL data directory"),
    ):
        result = run_pgkura("--repo", repo, *args, check=False)
        assert result.returncode == 3, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)


def test_an_option_of_one_value_given_twice_is_refused_not_taken_at_its_last(
    work_dir: Path, repo: str
) -> None:
    """click would keep the last value: the other repository, an online backup instead of
    an offline one, two backups kept instead of one. Refused in one line, before anything
    runs, on the fast paths too; options that take several values are not judged."""
    other = work_dir / "other"
    before = sorted(Path(repo).rglob("*"))
    for args, name in (
        (["--repo", str(other), "init"], "--repo"),
        (["--keep-last", "1", "--keep-last=2", "expire", "--dry-run"], "--keep-last"),
        (["backup", "--type", "offline", "--type", "online"], "--type"),
        (
            ["restore", "--target-dir", str(work_dir / "t"), "--backup", "a", "--backup", "b"],
            "--backup",
        ),
        (["dump", "-d", "a", "--dbname", "b"], "--dbname"),
        (["--stanza", "main", "--stanza", "other", "archive-push", "/nonexistent"], "--stanza"),
        (["verify", "--quick", "--jobs", "2", "-j", "3"], "-j"),
    ):
        result = run_pgkura("--repo", repo, *args, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 3 and len(lines) == 2, (args, result.stderr)
        assert lines[0].startswith(f"pgkura: error: {name} was given twice"), lines
        assert lines[1] == f"hint: give {name} once", lines
    assert sorted(Path(repo).rglob("*")) == before and not other.exists()
    assert not (work_dir / "t").exists()
    many = ["dump", "--table", "a", "-t", "b", "--schema", "x", "-n", "y", "--help"]
    assert run_pgkura("--repo", repo, *many).returncode == 0


def test_restore_refuses_an_archive_without_the_wal_to_consistency(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    src = make_server("src", extra_conf=archiving_conf(repo))
    src.sql("CREATE TABLE t AS SELECT generate_series(1, 100) AS i")
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    run_pgkura("--repo", repo, "backup", env=env)
    switch_and_wait_archived(src)
    archived = [p for p in Path(repo, "wal").rglob("0*") if p.is_file() and len(p.name) == 24]
    assert archived, "the backup archived no WAL segment"
    for segment in archived:
        segment.unlink()

    target = work_dir / "restored"
    result = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), check=False)
    assert result.returncode == ExitCode.INCOMPLETE_ARCHIVE == 9, result.stderr
    assert "needed to make it consistent" in result.stderr
    assert "not in the archive" in result.stderr
    assert not target.exists()
    # A timeline whose history file the archive lacks: the same code.
    no_tl = run_pgkura("--repo", repo, "restore", "--target-dir", str(target),
                       "--target-timeline", "7", "--to-immediate", check=False)  # fmt: skip
    assert no_tl.returncode == 9 and "00000007.history" in no_tl.stderr, no_tl.stderr
    assert not target.exists()
    # archive-get of the same segment is still PostgreSQL's "not in the archive".
    dest = work_dir / "dest"
    dest.mkdir()
    chown(dest)
    got = run_pgkura("--repo", repo, "archive-get", archived[0].name, str(dest / "x"), check=False)
    assert got.returncode == 1 and not (dest / "x").exists()
