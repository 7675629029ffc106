"""PostgreSQL's client programs for logical backups: finding them, checking their version, and
running them as streams.

pg_dump can read servers of its own major version and older ones, never newer ones (its catalog
queries would miss what the newer server added), so the tools chosen are of the server's major
version or newer. Connection parameters reach the tools as a libpq connection string built from
``--dbconn`` (which never holds a password: config.py refuses it) or through libpq's environment
(PGHOST, PGPORT, PGUSER, PGPASSFILE), inherited as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from psycopg.conninfo import make_conninfo

from pgkura.config import Config
from pgkura.errors import PostgresError, UsageError

log = logging.getLogger("pgkura")

TOOLS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")
_VERSION_RE = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")
#: How much of a tool's stderr an error message quotes.
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class PgTools:
    """One directory of PostgreSQL client programs, all of one version."""

    bin_dir: Path
    major: int
    version: str  # as `pg_dump --version` prints it, e.g. "15.10"

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)


def tool_version(program: Path) -> tuple[int, str]:
    """(major, "major.minor") of a PostgreSQL program, from its ``--version``."""
    try:
        out = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostgresError(f"cannot run {program} --version: {exc}") from None
    m = _VERSION_RE.search(out)
    if not m:
        raise PostgresError(f"cannot read the version of {program} from {out.strip()!r}")
    major = int(m.group(1))
    return major, f"{major}.{m.group(2) or 0}"


def _candidate_dirs(pg_bin: str | None) -> list[Path]:
    if pg_bin:
        return [Path(pg_bin)]
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if d.parent.name.isdigit():
            found.append(d)
    found.sort(key=lambda d: -int(d.parent.name))
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        try:
            if entry and (Path(entry) / "pg_dump").is_file():
                found.append(Path(entry))
        except OSError:  # a PATH entry this user may not read
            continue
    return found


def find_tools(pg_bin: str | None, server_major: int) -> PgTools:
    """The client programs to use with a server of ``server_major``: ``--pg-bin`` when given
    (refused when older than the server), else the newest installed ones."""
    candidates = _candidate_dirs(pg_bin)
    for d in candidates:
        missing = [t for t in TOOLS if not (d / t).is_file()]
        if missing:
            if pg_bin:
                raise UsageError(
                    f"{d} has no {', '.join(missing)}",
                    hint="point --pg-bin at a directory with PostgreSQL's client programs",
                )
            continue
        major, version = tool_version(d / "pg_dump")
        if major < server_major:
            raise UsageError(
                f"pg_dump {version} in {d} is older than the server (PostgreSQL {server_major}); "
                "pg_dump cannot dump a newer server",
                hint=f"install PostgreSQL {server_major} (or newer) client programs and pass "
                "their directory with --pg-bin",
            )
        return PgTools(d, major, version)
    raise UsageError(
        "no PostgreSQL client programs (pg_dump, pg_restore, psql) found",
        hint="install postgresql-client, or pass their directory with --pg-bin",
    )


def conninfo(cfg: Config, dbname: str | None) -> str:
    """A connection string for a tool: ``--dbconn`` with ``dbname`` put over its own."""
    if dbname is None:
        return make_conninfo(cfg.dbconn or "")
    return make_conninfo(cfg.dbconn or "", dbname=dbname)


def connect_maintenance(cfg: Config) -> Any:
    """A connection for catalog queries and CREATE/DROP DATABASE: to the postgres database,
    or template1 when postgres is gone (as pg_dumpall does)."""
    from pgkura.pg.connection import connect

    try:
        return connect(cfg, "postgres")
    except PostgresError as first:
        try:
            return connect(cfg, "template1")
        except PostgresError:
            raise first from None


def tool_env() -> dict[str, str]:
    """The environment PostgreSQL's programs run in: pgkura's own, refused when it holds a
    password (pgkura relies on .pgpass / PGPASSFILE, as the README says)."""
    from pgkura.pg.connection import refuse_password_env

    refuse_password_env()
    return dict(os.environ)


class ToolProcess:
    """A running PostgreSQL program with its stderr kept in a temporary file (a pipe could
    fill up and block the tool while pgkura streams its stdout or stdin)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = Path(args[0]).name
        self.args = list(args)
        log.info("running %s", shlex.join(self.args))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.args,
                stdin=stdin,
                stdout=stdout,
                stderr=self._stderr,
                env=tool_env(),
                cwd=cwd or "/",
            )
        except OSError as exc:
            self._stderr.close()
            raise PostgresError(f"cannot run {self.name}: {exc}") from None

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
        """Wait for the tool; return its exit status and stderr."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        rc = self.proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        return rc, err

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.kill()
        if not self._stderr.closed:
            self._stderr.close()


def tool_message(stderr: str) -> str:
    """The tool's own error lines, trimmed for an error message."""
    text = stderr.strip()
    if len(text) > MAX_MESSAGE:
        text = "…" + text[-MAX_MESSAGE:]
    return text or "(no message)"


def run_tool(args: Sequence[str], *, input: bytes | None = None, what: str) -> tuple[str, str]:
    """Run a tool to completion; return (stdout, stderr), or raise PostgresError saying ``what``
    failed with the tool's own message."""
    log.info("running %s", shlex.join(args))
    try:
        proc = subprocess.run(
            list(args), input=input, capture_output=True, env=tool_env(), cwd="/", check=False
        )
    except OSError as exc:
        raise PostgresError(f"cannot run {Path(args[0]).name}: {exc}") from None
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise PostgresError(f"{what} failed: {tool_message(err)}")
    return out, err
