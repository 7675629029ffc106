"""The one way pgkura runs another program.

Every subprocess goes through :func:`run` so that each command is logged the same way, its stderr
is captured, and a failure becomes a :class:`PostgresError` carrying the tool's own words (the
user needs initdb's or pg_ctl's message, not "exit status 1").
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgkura.errors import PostgresError

log = logging.getLogger("pgkura")

# How many of the tool's last stderr lines go into the error message.
STDERR_LINES = 10


def current_user_name() -> str:
    """The name of the effective OS user (not $USER, which sudo and runuser may leave stale)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def as_user_prefix(user: str | None) -> list[str]:
    """``runuser -u USER --`` when we are root and must act as another user, else nothing.

    PostgreSQL's server programs refuse to run as root, and files they create must belong to the
    cluster's owner, so root switches user; anyone else cannot and need not.
    """
    if user is None or os.geteuid() != 0 or user == current_user_name():
        return []
    return ["runuser", "-u", user, "--"]


def _tail(data: bytes, lines: int = STDERR_LINES) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:])


def run(
    cmd: Sequence[str],
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` (as ``user`` when root), capturing stdout and stderr.

    ``env`` replaces the environment when given. With ``check``, a non-zero exit, a missing
    program or a timeout raises PostgresError whose message ends with the tool's last stderr
    lines. Only the command line is logged, never the environment (it may hold passwords).
    """
    full = [*as_user_prefix(user), *cmd]
    log.debug("running: %s", shlex.join(full))
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            # The caller's directory may be unreadable to the switched-to user.
            cwd=cwd if cwd is not None else ("/" if full[0] == "runuser" else None),
            check=False,
        )
    except FileNotFoundError as exc:
        raise PostgresError(
            f"cannot run {full[0]}: not found",
            hint="install PostgreSQL's programs or pass --pg-bin / PGKURA_PG_BIN",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        stderr = _tail(exc.stderr or b"")
        raise PostgresError(
            f"{Path(cmd[0]).name} did not finish within {timeout:g} s"
            + (f":\n{stderr}" if stderr else "")
        ) from exc
    if check and proc.returncode != 0:
        detail = _tail(proc.stderr) or _tail(proc.stdout)
        raise PostgresError(
            f"{Path(cmd[0]).name} failed (exit status {proc.returncode})"
            + (f":\n{detail}" if detail else "")
        )
    return proc
