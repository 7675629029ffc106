"""The one way pgkura runs another program.

Every subprocess goes through :func:`run` (to completion) or :func:`spawn` (a long-lived child:
a pg_dump pipe, the background archiver) so that each command is logged the same way, with its
secrets masked, its stderr is captured, and a failure becomes a :class:`PostgresError` (or the
caller's error class) carrying the tool's own words: the user needs initdb's or pg_ctl's
message, not "exit status 1".

It lives in pg/ because pg/ is the leaf every layer may use, and most programs pgkura runs are
PostgreSQL's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

from pgkura.errors import PgkuraError, PostgresError

log = logging.getLogger("pgkura")

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
# How many of the tool's last stderr lines go into the error message.
STDERR_LINES = 10
MASK = "********"

# password=... in a libpq key/value string (quoted or not), or any NAME=value whose name says
# password, passphrase or secret (PGPASSWORD=, --s3-key-secret=), and user:secret@ in a URI.
_KEYWORD_SECRET = re.compile(
    r"(?i)\b([\w-]*(?:password|passwd|passphrase|secret)[\w-]*)(\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)"
)
_URI_SECRET = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_SECRET_ENV = re.compile(r"(?i)(PASSWORD|SECRET|TOKEN|PASSPHRASE|(^|_)KEY$|CREDENTIAL)")


def mask_secrets(text: str) -> str:
    """``text`` with passwords of connection strings and URIs replaced by a mask."""
    text = _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _URI_SECRET.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def describe_command(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command line as it is logged: shell-quoted, secrets masked, and the variables
    ``env`` sets or changes (values of secret-looking names masked)."""
    line = mask_secrets(shlex.join(cmd))
    if env is None:
        return line
    changed = sorted(k for k, v in env.items() if os.environ.get(k) != v)
    shown = [f"{k}={MASK if _SECRET_ENV.search(k) else mask_secrets(env[k])}" for k in changed]
    return " ".join([*(shlex.quote(s) for s in shown), line])


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


def tail(data: bytes | str, lines: int = STDERR_LINES) -> str:
    """The last ``lines`` non-empty lines of a tool's output, for an error message."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def _prepare(
    cmd: Sequence[str],
    user: str | None,
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    level: int = logging.DEBUG,
) -> tuple[list[str], str | Path | None]:
    full = [*as_user_prefix(user), *cmd]
    log.log(level, "running %s", describe_command(full, env))
    # The caller's directory may be unreadable to the switched-to user.
    return full, cwd if cwd is not None else ("/" if full[0] == "runuser" else None)


def _cannot_run(program: str, exc: OSError, error: type[PgkuraError]) -> PgkuraError:
    if isinstance(exc, FileNotFoundError):
        return error(
            f"cannot run {program}: not found",
            hint="install PostgreSQL's programs or pass --pg-bin / PGKURA_PG_BIN",
        )
    return error(f"cannot run {program}: {exc.strerror or exc}")


def failure(
    cmd: Sequence[str],
    returncode: int,
    stderr: bytes | str,
    *,
    what: str | None = None,
    error: type[PgkuraError] = PostgresError,
    hint: str | None = None,
) -> PgkuraError:
    """The error for a tool that exited ``returncode``: ``what`` (default: the program's
    name) failed, followed by the tool's own last stderr lines."""
    detail = mask_secrets(tail(stderr))
    return error(
        f"{what or Path(cmd[0]).name} failed (exit status {returncode})"
        + (f":\n{detail}" if detail else ""),
        hint=hint,
    )


def run(
    cmd: Sequence[str],
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    cwd: str | Path | None = None,
    what: str | None = None,
    error: type[PgkuraError] = PostgresError,
    hint: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` (as ``user`` when root) to completion, capturing stdout and stderr.

    ``env`` replaces the environment when given. A missing program or a timeout always raises
    ``error``; with ``check`` so does a non-zero exit, with the tool's last stderr lines (see
    :func:`failure`; ``what`` names the step, ``hint`` says what to do).
    """
    full, cwd = _prepare(cmd, user, env, cwd)
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except OSError as exc:
        raise _cannot_run(full[0], exc, error) from exc
    except subprocess.TimeoutExpired as exc:
        stderr = mask_secrets(tail(exc.stderr or b""))
        raise error(
            f"{what or Path(cmd[0]).name} did not finish within {timeout:g} s"
            + (f":\n{stderr}" if stderr else "")
        ) from exc
    if check and proc.returncode != 0:
        raise failure(
            cmd, proc.returncode, proc.stderr or proc.stdout, what=what, error=error, hint=hint
        )
    return proc


class Child:
    """A running program started by :func:`spawn`: ``stdin``/``stdout`` as subprocess takes
    them (PIPE, DEVNULL, a file); ``stderr`` a file to send it to, else a temporary file (a
    pipe could fill up and block the tool while pgkura streams its stdout or stdin);
    ``detach`` starts a new session, for a child that must outlive its caller."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: IO[Any] | None = None,
        cwd: str | Path | None = None,
        detach: bool = False,
        error: type[PgkuraError] = PostgresError,
    ) -> None:
        self.args = list(cmd)
        self.name = Path(self.args[0]).name
        self.error = error
        # A long-lived child is a step of the work (a pg_dump, a pg_restore): logged at info.
        full, cwd = _prepare(self.args, user, env, cwd, logging.INFO)
        self._stderr: IO[bytes] | None = None
        if stderr is None:
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                full,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr if stderr is not None else self._stderr,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=detach,
            )
        except OSError as exc:
            if self._stderr is not None:
                self._stderr.close()
            raise _cannot_run(full[0], exc, error) from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def wait(self) -> tuple[int, str]:
        """Wait for the program; return its exit status and its stderr (empty when it was
        redirected)."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        rc = self.proc.wait()
        err = ""
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.seek(0)
            err = self._stderr.read().decode("utf-8", "replace")
            self._stderr.close()
        return rc, err

    def check(self, what: str | None = None, hint: str | None = None) -> str:
        """Wait; raise the error with the tool's own message unless it exited 0. Returns its
        stderr (warnings a caller may want to log)."""
        rc, err = self.wait()
        if rc != 0:
            raise failure(self.args, rc, err, what=what, error=self.error, hint=hint)
        return err

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()


#: Start ``cmd`` without waiting for it (:class:`Child` documents the arguments). Use the
#: child as a context manager, so that an error on our side kills it instead of leaving it
#: running; :meth:`Child.check` turns its failure into ``error``.
spawn = Child
