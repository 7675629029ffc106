"""Connections to a running server through psycopg 3.

The target is ``dbconn`` (``--dbconn``: a libpq connection string or URI) when given,
otherwise libpq's own environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE, ...),
exactly as psql would connect. psycopg is imported here, lazily, so that commands which never
connect (archive-push, archive-get) do not pay for it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pgkura.errors import ConfigError, PostgresError

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE")


def describe_target(dbconn: str | None) -> str:
    """Where a connection goes, for messages (never includes a password)."""
    if dbconn:
        return f"--dbconn {dbconn!r}"
    parts = [f"{name}={os.environ[name]}" for name in _LIBPQ_VARS if os.environ.get(name)]
    if parts:
        return "the libpq environment (" + ", ".join(parts) + ")"
    return "libpq's defaults (local socket, port 5432, user = OS user)"


def refuse_password_env() -> None:
    """PGPASSWORD is visible to every process of the user (ps e, /proc/PID/environ), and
    pgkura would pass it on to libpq and to PostgreSQL's programs: refused, as a password in
    a connection string is."""
    if os.environ.get("PGPASSWORD"):
        raise ConfigError(
            "PGPASSWORD is set in the environment; pgkura does not pass passwords on that way",
            hint="unset PGPASSWORD and put the password in ~/.pgpass (mode 0600) or a file "
            "named by PGPASSFILE",
        )


def connect(
    dbconn: str | None, dbname: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """Open an autocommit connection to the server ``dbconn`` (a libpq connection string, or
    None for libpq's environment); PostgresError with a hint when it fails."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    refuse_password_env()

    base = dbconn or ""
    try:
        params = conninfo_to_dict(base)
    except psycopg.ProgrammingError as exc:
        raise PostgresError(
            f"the connection string is not valid: {exc}",
            hint="use the form 'host=/run/postgresql port=5432 user=postgres' or a "
            "postgresql:// URI",
        ) from None
    extra: dict[str, str | int] = {"application_name": "pgkura"}
    if dbname is not None:
        extra["dbname"] = dbname
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        extra["connect_timeout"] = CONNECT_TIMEOUT
    conninfo = make_conninfo(base, **extra)
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresError(
            f"cannot connect to PostgreSQL through {describe_target(dbconn)}: {detail}",
            hint="start the server, or point pgkura at it with --dbconn "
            "'host=... port=... user=...' or PGHOST/PGPORT/PGUSER (passwords go in ~/.pgpass)",
        ) from None
