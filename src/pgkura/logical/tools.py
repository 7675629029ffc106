"""PostgreSQL's client programs for logical backups: finding them, checking their version, and
running them as streams.

pg_dump can read servers of its own major version and older ones, never newer ones (its catalog
queries would miss what the newer server added), so the tools chosen are of the server's major
version or newer: the server's own when installed (the most faithful dump, and a restore
script the server understands), else the nearest newer one.

Connection parameters reach the tools as a libpq connection string built from
``--dbconn`` (which never holds a password: config.py refuses it) or through libpq's environment
(PGHOST, PGPORT, PGUSER, PGPASSFILE), inherited as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from psycopg.conninfo import make_conninfo

from pgkura.config import Config
from pgkura.errors import PostgresError, UsageError
from pgkura.pg.binaries import installations, program_version
from pgkura.pg.process import Child

log = logging.getLogger("pgkura")

TOOLS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")
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
    found = program_version(program)
    if found is None:
        raise PostgresError(f"cannot read the version of {program} (from its --version)")
    return found


def find_tools(
    pg_bin: str | None,
    at_least: int,
    *,
    prefer: int | None = None,
    search_path: str | None = None,
) -> PgTools:
    """The client programs to use where a major of at least ``at_least`` is needed (pg_dump
    of the server's or newer; pg_restore of the dump's and of the target server's or newer):
    ``--pg-bin`` when given (refused when older), else the installation of major ``prefer``
    (default ``at_least``), else the oldest newer one on the search path (pgkura.pg.binaries)."""
    if pg_bin:
        d = Path(pg_bin)
        missing = [t for t in TOOLS if not (d / t).is_file()]
        if missing:
            raise UsageError(
                f"{d} has no {', '.join(missing)}",
                hint="point --pg-bin at a directory with PostgreSQL's client programs",
            )
        major, version = tool_version(d / "pg_dump")
        if major < at_least:
            raise UsageError(
                f"pg_dump {version} in {d} is older than PostgreSQL {at_least}, whose server or "
                "dump it would have to read; PostgreSQL's client programs read only their own "
                "major's and older ones",
                hint=f"install PostgreSQL {at_least} (or newer) client programs and pass "
                "their directory with --pg-bin",
            )
        return PgTools(d, major, version)
    usable = [
        i
        for i in installations(search_path)
        if i.major >= at_least and all((i.bin_dir / t).is_file() for t in TOOLS)
    ]
    if not usable:
        raise UsageError(
            f"no PostgreSQL client programs (pg_dump, pg_restore, psql) of PostgreSQL "
            f"{at_least} or newer found",
            hint="install postgresql-client of that version, add its bin directory to "
            "--pg-search-path, or pass it with --pg-bin",
        )
    wanted = prefer if prefer is not None else at_least
    chosen = next((i for i in usable if i.major == wanted), None)
    chosen = chosen or min(usable, key=lambda i: i.major)
    return PgTools(chosen.bin_dir, chosen.major, chosen.version)


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
        return connect(cfg.dbconn, "postgres")
    except PostgresError as first:
        try:
            return connect(cfg.dbconn, "template1")
        except PostgresError:
            raise first from None


def tool_env() -> dict[str, str]:
    """The environment PostgreSQL's programs run in: pgkura's own, refused when it holds a
    password (pgkura relies on .pgpass / PGPASSFILE, as the README says)."""
    from pgkura.pg.connection import refuse_password_env

    refuse_password_env()
    return dict(os.environ)


class ToolProcess(Child):
    """A running PostgreSQL client program (pgkura.pg.process's child) in the tools'
    environment, from the root directory."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        cwd: str | None = None,
    ) -> None:
        super().__init__(args, stdin=stdin, stdout=stdout, env=tool_env(), cwd=cwd or "/")


def tool_message(stderr: str) -> str:
    """The tool's own error lines, trimmed for an error message."""
    text = stderr.strip()
    if len(text) > MAX_MESSAGE:
        text = "…" + text[-MAX_MESSAGE:]
    return text or "(no message)"
