"""The one subprocess runner (pgkura.pg.process): what it logs, what its errors say, and that
a spawned child really runs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from pgkura.errors import PostgresError, UsageError
from pgkura.pg.process import PIPE, describe_command, mask_secrets, run, spawn


def test_secrets_are_masked_in_connection_strings_and_uris() -> None:
    line = mask_secrets(
        "pg_dump -d 'host=db password=hunter2 user=me' postgresql://alice:s3cret@db:5432/x"
        " \"password='quoted pass' port=5\" PGPASSWORD=pw1 --s3-key-secret=pw2"
    )
    assert "hunter2" not in line and "s3cret" not in line and "quoted pass" not in line
    assert "pw1" not in line and "pw2" not in line and "PGPASSWORD=********" in line
    assert "password=********" in line and "postgresql://alice:********@db:5432/x" in line
    assert "host=db" in line and "user=me" in line and "port=5" in line


def test_the_logged_command_hides_secrets_of_arguments_and_environment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": "topsecret", "AWS_SECRET_ACCESS_KEY": "k3y"}
    with caplog.at_level(logging.DEBUG, logger="pgkura"):
        run(["/bin/true", "password=hunter2", "s3://id:key@bucket"], env=env)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/bin/true" in logged and "PGPASSWORD=********" in logged
    for secret in ("hunter2", "topsecret", "k3y", "id:key@"):
        assert secret not in logged, logged
    assert describe_command(["x"], None) == "x"


def test_a_failing_tool_raises_with_its_own_message() -> None:
    script = (
        "import sys; print('noise'); sys.stderr.write('FATAL: the tool says why\\n'); sys.exit(4)"
    )
    with pytest.raises(PostgresError) as caught:
        run([sys.executable, "-c", script], what="the step")
    message = caught.value.message
    assert message.startswith("the step failed (exit status 4)")
    assert "FATAL: the tool says why" in message
    # The caller's error class and hint, and check=False hands the result back.
    with pytest.raises(UsageError) as usage:
        run([sys.executable, "-c", script], error=UsageError, hint="do this")
    assert usage.value.hint == "do this" and usage.value.exit_code == 3
    proc = run([sys.executable, "-c", script], check=False)
    assert proc.returncode == 4 and b"the tool says why" in proc.stderr


def test_a_password_in_a_tools_stderr_is_masked_in_the_error() -> None:
    script = "import sys; sys.stderr.write('bad uri postgresql://u:pw123@h/db\\n'); sys.exit(1)"
    with pytest.raises(PostgresError) as caught:
        run([sys.executable, "-c", script])
    assert "pw123" not in caught.value.message and "u:********@h" in caught.value.message


def test_a_missing_program_and_a_timeout_are_errors() -> None:
    with pytest.raises(PostgresError, match="cannot run /nonexistent/pg_nothing: not found"):
        run(["/nonexistent/pg_nothing"])
    with pytest.raises(PostgresError, match=r"did not finish within 0\.2 s"):
        run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)


def test_spawn_streams_a_real_child_and_reports_its_failure(tmp_path: Path) -> None:
    script = (
        "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data[::-1]);"
        "sys.stderr.write('warned\\n')"
    )
    with spawn([sys.executable, "-c", script], stdin=PIPE, stdout=PIPE) as child:
        assert child.pid > 0
        child.stdin.write(b"abcdef")
        child.stdin.close()
        out = child.stdout.read()
        rc, err = child.wait()
    assert (out, rc, err.strip()) == (b"fedcba", 0, "warned")

    failing = "import sys; sys.stderr.write('pg_dump: error: no such table\\n'); sys.exit(1)"
    with (
        pytest.raises(PostgresError, match="no such table"),
        spawn([sys.executable, "-c", failing]) as child,
    ):
        child.check(what="pg_dump of db")

    # A detached child with stderr to a file outlives the call and writes there.
    log_file = tmp_path / "child.log"
    with open(log_file, "ab") as f:
        child = spawn(
            [sys.executable, "-c", "import sys; sys.stderr.write('daemon up\\n')"],
            stderr=f,
            detach=True,
        )
    assert child.wait() == (0, "")
    assert log_file.read_text() == "daemon up\n"


def test_no_module_but_the_runner_starts_processes() -> None:
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "pgkura"
    runner = src / "pg" / "process.py"
    starters = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if "subprocess" in names and path != runner:
                starters.append(str(path.relative_to(src)))
    assert starters == []
