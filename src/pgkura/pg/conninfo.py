"""Checking a libpq connection string before pgkura uses it."""

from __future__ import annotations

from pgkura.errors import ConfigError


def check_conninfo(text: str) -> None:
    """Refuse a connection string that is not one, or that carries a password in any of
    libpq's forms: ``password=`` keyword, URI user-info (``postgresql://u:pw@h``) or URI
    query parameter (``?password=``). Parsed by libpq's own rules (psycopg), imported only
    when a connection string is given."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(text)
    except ProgrammingError as exc:
        raise ConfigError(
            f"the connection string is not valid: {str(exc).strip()}",
            hint="use the form 'host=/run/postgresql port=5432 user=postgres' or a "
            "postgresql:// URI",
        ) from None
    if params.get("password") is not None:
        raise ConfigError(
            "the connection string contains a password",
            hint="remove it and put the password in ~/.pgpass (mode 0600) or PGPASSFILE",
        )
