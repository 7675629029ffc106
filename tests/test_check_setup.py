"""`check` judges archive_command by the settings pgkura takes when PostgreSQL runs it, and
`--help` names values, not Python types (issue: check and a config-file setup)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from pgkura.config import Config, load_config
from pgkura.invocation import child_args, find_invocation, resolve, shell_commands
from pgkura.physical.recovery import restore_command
from pgutil import chown
from runner import PGKURA, run_pgkura


def _config_file(path: Path, **keys: str) -> Path:
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in keys.items()))
    path.chmod(0o600)
    chown(path)
    return path


def _set_archive_command(server: Any, command: str) -> None:
    server.sql(f"ALTER SYSTEM SET archive_command = {_literal(command)}")
    server.sql("SELECT pg_reload_conf()")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture
def archiving(make_server: Any, repo: str) -> Any:
    conf = {"wal_level": "replica", "archive_mode": "on", "archive_timeout": "0"}
    return make_server("cfgsetup", extra_conf=conf)


def test_a_config_file_setup_passes_check_and_another_stanza_fails_it_by_name(
    archiving: Any, repo: str, work_dir: Path
) -> None:
    conf = _config_file(work_dir / "pgkura.toml", repo=repo, stanza="prod")
    _set_archive_command(archiving, f"{shlex.quote(PGKURA)} --config {conf} archive-push %p")
    ok = run_pgkura("--config", str(conf), "check", env=archiving.libpq_env())
    assert "reached the archive" in ok.stdout
    assert f"stanza 'prod' from config file {conf}" in ok.stdout

    other = _config_file(work_dir / "other.toml", repo=repo, stanza="other")
    _set_archive_command(archiving, f"{shlex.quote(PGKURA)} --config={other} archive-push %p")
    bad = run_pgkura("--config", str(conf), "check", env=archiving.libpq_env(), check=False)
    assert bad.returncode != 0
    assert f"repository {repo}, stanza 'other' (repository from config file {other}" in bad.stdout
    assert "not repository" in bad.stdout and "stanza 'prod'" in bad.stdout
    assert "reached the archive" not in bad.stdout


def test_check_reports_in_json_what_passed_and_what_failed(archiving: Any, repo: str) -> None:
    _set_archive_command(archiving, f"{shlex.quote(PGKURA)} --repo {repo} archive-push %p")
    ok = run_pgkura("--repo", repo, "check", "--output", "json", env=archiving.libpq_env())
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert any("reached the archive" in line for line in doc["passed"])
    _set_archive_command(archiving, "/bin/true")
    bad = run_pgkura(
        "--repo", repo, "check", "--output", "json", env=archiving.libpq_env(), check=False
    )
    assert bad.returncode != 0
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False
    assert any("does not call pgkura archive-push" in line for line in doc["problems"])


def test_pgkura_variables_in_the_servers_environment_are_counted(archiving: Any, repo: str) -> None:
    _set_archive_command(archiving, f"{shlex.quote(PGKURA)} archive-push %p")
    archiving.stop()
    archiving.start(env={"PGKURA_REPO": repo, "PGKURA_STANZA": "fromenv"})
    ok = run_pgkura("--repo", repo, "--stanza", "fromenv", "check", env=archiving.libpq_env())
    assert "reached the archive" in ok.stdout
    assert "PGKURA_STANZA in the server's environment" in ok.stdout
    wrong = run_pgkura("--repo", repo, "check", env=archiving.libpq_env(), check=False)
    assert wrong.returncode != 0 and "stanza 'fromenv'" in wrong.stdout


def test_a_chained_archive_command_with_equals_forms_passes_check(
    archiving: Any, repo: str
) -> None:
    command = f"{shlex.quote(PGKURA)} --repo={repo} --stanza=chain archive-push %p && /bin/true"
    _set_archive_command(archiving, command)
    ok = run_pgkura("--repo", repo, "--stanza", "chain", "check", env=archiving.libpq_env())
    assert "reached the archive" in ok.stdout


def test_a_config_file_the_server_cannot_read_fails_check(
    archiving: Any, repo: str, work_dir: Path
) -> None:
    conf = _config_file(work_dir / "private.toml", repo=repo)
    if os.geteuid() != 0:
        pytest.fail("this test needs root to make a file the server's user cannot read")
    os.chown(conf, 0, 0)
    _set_archive_command(archiving, f"{shlex.quote(PGKURA)} --config {conf} archive-push %p")
    bad = run_pgkura("--repo", repo, "check", env=archiving.libpq_env(), user=None, check=False)
    assert bad.returncode != 0
    assert f"config file {conf}" in bad.stdout and "cannot be read by the server's OS user" in (
        bad.stdout
    )


def test_command_lines_are_split_as_the_shell_splits_them() -> None:
    assert shell_commands("a --x=1 && b 'c d'; e | f") == [
        ["a", "--x=1"],
        ["b", "c d"],
        ["e"],
        ["f"],
    ]
    found = find_invocation(
        "test ! -f /x && PGKURA_STANZA=s exec /opt/v/bin/pgkura --repo /r archive-push %p "
        "|| pgbackrest archive-push %p",
        "archive-push",
    )
    assert found is not None
    assert found.env == {"PGKURA_STANZA": "s"} and found.flags == {"repo": "/r"}
    assert found.rest == ["%p"]
    assert find_invocation("/usr/bin/pgbackrest archive-push %p", "archive-push") is None
    with pytest.raises(ValueError, match="unknown option --nope"):
        find_invocation("pgkura --nope 1 archive-push %p", "archive-push")


def test_restore_command_and_the_async_pusher_resolve_to_the_same_settings(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "pgkura.toml"
    conf.write_text(f'repo = "{tmp_path / "r"}"\nstanza = "prod"\n')
    cfg = load_config({"archive_async": "on"}, str(conf), environ={})
    for text, command in (
        (restore_command(cfg), "archive-get"),
        (
            shlex.join(["python3", "-m", "pgkura.entry", *child_args(cfg), "archive-daemon"]),
            "archive-daemon",
        ),
    ):
        found = find_invocation(text, command)
        assert found is not None
        # The environment of whoever runs it cannot move it elsewhere: flags win.
        used, _ = resolve(found, {"PGKURA_STANZA": "elsewhere", "PGKURA_REPO": "/x"}, "/")
        assert _same(used, cfg)


def _same(a: Config, b: Config) -> bool:
    return (a.repo, a.stanza, a.config_file, a.archive_async) == (
        b.repo,
        b.stanza,
        b.config_file,
        b.archive_async,
    )


PYTHON_TYPES = re.compile(r"\b(str|int|float|bool|TEXT|INTEGER|FLOAT|BOOLEAN)\b")


def test_help_names_values_with_defaults_and_variables() -> None:
    top = run_pgkura("--help").stdout
    commands = re.findall(r"^  ([a-z][a-z-]+) ", top.split("Commands:")[1], re.M)
    assert "restore" in commands and "check" in commands
    for command in ["", *commands]:
        text = run_pgkura(*([command] if command else []), "--help").stdout
        assert not PYTHON_TYPES.search(text), f"pgkura {command} --help: {text}"
    flat = " ".join(top.split())
    for shown in (
        "--repo DIR|URL",
        "--stanza NAME",
        "--archive-timeout SECONDS",
        "--archive-async on|off",
        "(default: main) [env PGKURA_STANZA; config key stanza]",
        "(default: 60) [env PGKURA_ARCHIVE_TIMEOUT; config key archive-timeout]",
    ):
        assert shown in flat, shown
