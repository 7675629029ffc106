"""The settings model: each global setting is declared once, then read from flags, the
environment (``PGKURA_<NAME>``) and the TOML config file, in that order of precedence.

The CLI flags, the config keys and the README's table are all derived from ``SETTINGS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pgkura.errors import ConfigError

# Plain classes, not dataclasses or typing.NamedTuple: archive-push imports this module once
# per WAL segment, and importing typing (or dataclasses, with inspect) costs it 6-9 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONFIG = "/etc/pgkura/pgkura.toml"


class Setting:
    __slots__ = ("default", "help", "name", "type")

    def __init__(self, name: str, type_: type, default: Any, help_: str) -> None:
        self.name = name
        self.type = type_
        self.default = default
        self.help = help_

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "PGKURA_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("repo", str, None, "repository location: a directory"),
    Setting("stanza", str, "main", "name of the cluster within the repository"),
    Setting("pgdata", str, None, "the cluster's data directory"),
    Setting("pg_bin", str, None, "directory of PostgreSQL's programs (default: found)"),
    Setting(
        "pg_search_path",
        str,
        None,
        "where to find PostgreSQL's programs of each major version: bin directories or glob "
        "patterns, ':'-separated (default: /usr/lib/postgresql/*/bin:/usr/pgsql-*/bin:"
        "/opt/pgkura/pg/*/bin, then PATH)",
    ),
    Setting("dbconn", str, None, "libpq connection string (passwords: use .pgpass, never this)"),
    Setting("log_level", str, "warning", "log level on stderr: debug, info, warning, error"),
    Setting("archive_timeout", float, 60.0, "seconds to wait for WAL to reach the archive"),
    Setting(
        "archive_async",
        bool,
        False,
        "archive-push/-get through a background process: several segments pushed at once, "
        "the next ones prefetched during recovery",
    ),
    Setting("spool_path", str, None, "spool directory for --archive-async (default: in TMPDIR)"),
    Setting(
        "direct_io",
        bool,
        True,
        "restore writes large files with O_DIRECT, past the page cache (off: through it)",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}


class Config:
    """The merged settings (one attribute per entry of SETTINGS, and config_file)."""

    __slots__ = (*(s.name for s in SETTINGS), "config_file")
    repo: str | None
    stanza: str
    pgdata: str | None
    pg_bin: str | None
    pg_search_path: str | None
    dbconn: str | None
    log_level: str
    archive_timeout: float
    archive_async: bool
    spool_path: str | None
    direct_io: bool
    config_file: str | None

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, values[name])

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Config({inner})"

    def require_repo(self) -> str:
        if not self.repo:
            raise ConfigError(
                "no repository given",
                hint="pass --repo DIR, set PGKURA_REPO, or set repo in the config file",
            )
        return self.repo

    def require_pgdata(self) -> str:
        if not self.pgdata:
            raise ConfigError(
                "no data directory given",
                hint="pass --pgdata DIR, set PGKURA_PGDATA, or set pgdata in the config file",
            )
        return self.pgdata


def _convert(setting: Setting, value: Any, source: str) -> Any:
    if value is None:
        return None
    try:
        if setting.type is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return setting.type(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{setting.name} from {source} is not a valid {setting.type.__name__}: {value!r}",
            hint=f"fix {setting.name} in {source}",
        ) from None


def read_config_file(path: str) -> dict[str, Any]:
    import tomllib  # only when a config file exists: archive-push starts once per segment

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist", hint="check --config or PGKURA_CONFIG"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"config file {path} cannot be read (permission denied)",
            hint="make it readable by the user running pgkura",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in BY_NAME:
            known = ", ".join(s.name.replace("_", "-") for s in SETTINGS)
            raise ConfigError(
                f"unknown key {key!r} in config file {path}", hint=f"known keys: {known}"
            )
        out[name] = value
    return out


def load_config(
    flags: Mapping[str, Any],
    config_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge flags over ``PGKURA_*`` variables over the config file over the defaults."""
    env = os.environ if environ is None else environ
    path_text = config_file or env.get("PGKURA_CONFIG")
    file_values: dict[str, Any] = {}
    if path_text:
        file_values = read_config_file(path_text)
    elif os.path.exists(DEFAULT_CONFIG):
        file_values = read_config_file(DEFAULT_CONFIG)
        path_text = DEFAULT_CONFIG
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if flags.get(s.name) is not None:
            values[s.name] = _convert(s, flags[s.name], s.flag)
        elif env.get(s.env):
            values[s.name] = _convert(s, env[s.env], s.env)
        elif s.name in file_values:
            values[s.name] = _convert(s, file_values[s.name], str(path_text))
        else:
            values[s.name] = s.default
    if values["dbconn"] and "password" in values["dbconn"].lower():
        raise ConfigError(
            "the connection string contains a password",
            hint="remove it and put the password in ~/.pgpass (mode 0600) or PGPASSFILE",
        )
    return Config(config_file=path_text, **values)
