"""The settings model: each global setting is declared once, then read from flags, the
environment (``PGKURA_<NAME>``) and the TOML config file, in that order of precedence.

The CLI flags, the config keys and the README's table are all derived from ``SETTINGS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pgkura.errors import ConfigError

# Plain classes, not dataclasses or typing.NamedTuple: archive-push imports this module once
# per WAL segment, and importing typing (or dataclasses, with inspect) costs it 6-9 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONFIG = "/etc/pgkura/pgkura.toml"


class Setting:
    __slots__ = ("choices", "default", "help", "metavar", "name", "on_command_line", "type")

    def __init__(
        self,
        name: str,
        type_: type,
        default: Any,
        help_: str,
        *,
        metavar: str,
        choices: tuple[str, ...] = (),
        on_command_line: bool = True,
    ) -> None:
        self.name = name
        self.type = type_
        self.default = default
        self.help = help_
        # What the value is, as --help shows it: DIR, NAME, SECONDS, on|off.
        self.metavar = metavar
        self.choices = choices
        # False: only the environment and the config file set it (a command line is visible
        # to every user in ps).
        self.on_command_line = on_command_line

    @property
    def flag(self) -> str:
        return "--" + self.key

    @property
    def env(self) -> str:
        return "PGKURA_" + self.name.upper()

    @property
    def key(self) -> str:
        """The setting's key in the config file."""
        return self.name.replace("_", "-")

    def help_line(self) -> str:
        """The setting's --help text: what it does, its default, where else it can be set."""
        default = self.default
        if isinstance(default, bool):
            default = "on" if default else "off"
        elif isinstance(default, float):
            default = f"{default:g}"
        shown = "" if default is None else f" (default: {default})"
        return f"{self.help}{shown} [env {self.env}; config key {self.key}]"


# Retention (pgkura expire; README "Retention"): counts and durations apply to physical
# backups and to logical dumps separately. (name, type, default, metavar, help)
_RETENTION: tuple[tuple[str, type, Any, str, str], ...] = (
    ("keep_last", int, None, "N", "expire: keep the N newest backups (and dumps)"),
    ("keep_daily", int, None, "N", "expire: keep the newest backup of each of N days (UTC)"),
    ("keep_weekly", int, None, "N", "expire: the same per ISO week"),
    ("keep_monthly", int, None, "N", "expire: the same per month"),
    ("keep_within", str, None, "DURATION", "expire: keep every backup taken within "
     "DURATION of the newest one (30m, 12h, 14d, 2w)"),
    ("pitr_window", str, None, "DURATION", "expire: keep every point within "
     "DURATION before the newest archived WAL recoverable"),
    ("max_unused", float, 5.0, "PERCENT", "gc: repack partly used packs until unused "
     "space is at most this percent of the repository"),
    ("expire_auto", bool, False, "on|off", "run expire after each backup and dump"),
)  # fmt: skip

# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("repo", str, None,
        "repository location: a directory, or s3://BUCKET/PREFIX",
        metavar="DIR|URL"),
    Setting("stanza", str, "main", "name of the cluster within the repository", metavar="NAME"),
    Setting("pgdata", str, None, "the cluster's data directory", metavar="DIR"),
    Setting(
        "pg_bin", str, None, "directory of PostgreSQL's programs (default: found)", metavar="DIR"
    ),
    Setting("pg_search_path", str, None,
        "where to find PostgreSQL's programs of each major version: bin directories or glob "
        "patterns, ':'-separated (default: "
        "/usr/lib/postgresql/*/bin:/usr/pgsql-*/bin:/opt/pgkura/pg/*/bin, then PATH)",
        metavar="PATHS"),
    Setting("dbconn", str, None,
        "libpq connection string (passwords: use .pgpass, never this)",
        metavar="CONNINFO"),
    Setting("primary_dbconn", str, None,
        "backup from a standby: the primary's connection string, used only to switch WAL so the"
        " backup's last segment is archived at once (passwords: use .pgpass)",
        metavar="CONNINFO"),
    Setting("log_level", str, "warning",
        "log level on stderr: debug, info, warning, error",
        metavar="LEVEL"),
    Setting("archive_timeout", float, 60.0,
        "seconds to wait for WAL to reach the archive",
        metavar="SECONDS"),
    Setting("wal_summaries", bool, True,
        "PostgreSQL 17+ with summarize_wal = on: an online backup reads only the blocks the WAL"
        " summaries say changed since the previous backup (off: read every changed file whole)",
        metavar="on|off"),
    Setting("summary_timeout", float, 30.0,
        "seconds an online backup waits for the WAL summarizer to reach its start, before it"
        " reads every changed file whole instead",
        metavar="SECONDS"),
    Setting("archive_async", bool, False,
        "archive-push/-get through a background process: several segments pushed at once, the "
        "next ones prefetched during recovery",
        metavar="on|off"),
    Setting("spool_path", str, None,
        "spool directory for --archive-async (default: in TMPDIR)",
        metavar="DIR"),
    Setting("direct_io", bool, True,
        "restore writes large files with O_DIRECT, past the page cache (off: through it)",
        metavar="on|off"),
    Setting("s3_endpoint", str, None,
        "S3 endpoint URL, such as http://127.0.0.1:8333 (default: AWS)",
        metavar="URL"),
    Setting("s3_region", str, None, "S3 region (default: us-east-1)", metavar="REGION"),
    Setting("s3_uri_style", str, None,
        "S3 addressing: path (endpoint/bucket/key) or host (bucket.endpoint/key); default path "
        "with --s3-endpoint, else host",
        choices=("path", "host"), metavar="path|host"),
    Setting("s3_ca_file", str, None,
        "PEM file of the CA that signed the S3 server's certificate",
        metavar="FILE"),
    Setting("s3_verify_tls", bool, True,
        "verify the S3 server's TLS certificate (off: for tests)",
        metavar="on|off"),
    Setting("s3_credentials_file", str, None,
        "AWS-style credentials file (mode 0600) for S3; environment or config file only",
        on_command_line=False, metavar="FILE"),
    Setting("s3_retry_seconds", float, 60.0,
        "seconds to retry a failing S3 request (5xx, SlowDown, dropped connections)",
        metavar="SECONDS"),
    Setting("s3_max_connections", int, 16,
        "most S3 requests in flight at once; parallel work (--jobs) is capped at it",
        metavar="N"),
    Setting("key_file", str, None,
        "file (mode 0600) holding the passphrase of an encrypted repository; the file's "
        "path, never the passphrase, is what any command line carries",
        metavar="FILE"),
    *(Setting(n, t, d, h, metavar=m) for n, t, d, m, h in _RETENTION),
    Setting("cache_dir", str, None, "local cache (default: ~/.cache/pgkura)", metavar="DIR|off"),
)
# fmt: on
BY_NAME = {s.name: s for s in SETTINGS}


def split_global(args: list[str]) -> tuple[dict[str, str], str | None, str | None, list[str]]:
    """``(flags, config file, command, rest)`` of pgkura's arguments: the global options
    before the command, as ``--name value`` or ``--name=value``. Raises ValueError naming an
    option pgkura does not know."""
    by_flag = {s.flag: s.name for s in SETTINGS if s.on_command_line}
    flags: dict[str, str] = {}
    config_file = None
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-"):
            return flags, config_file, word, args[i + 1 :]
        name, sep, value = word.partition("=")
        if name != "--config" and name not in by_flag:
            raise ValueError(f"unknown option {name}")
        if not sep:
            if i + 1 >= len(args):
                raise ValueError(f"{name} has no value")
            i += 1
            value = args[i]
        if (config_file if name == "--config" else flags.get(by_flag[name])) is not None:
            raise ValueError(f"{name} given twice")  # the full CLI refuses it (cli/repeats.py)
        if name == "--config":
            config_file = value
        else:
            flags[by_flag[name]] = value
        i += 1
    return flags, config_file, None, []


class Config:
    """The merged settings (one attribute per entry of SETTINGS, and config_file)."""

    __slots__ = (*(s.name for s in SETTINGS), "config_file", "sources")
    repo: str | None
    stanza: str
    pgdata: str | None
    pg_bin: str | None
    pg_search_path: str | None
    dbconn: str | None
    primary_dbconn: str | None
    log_level: str
    archive_timeout: float
    wal_summaries: bool
    summary_timeout: float
    archive_async: bool
    spool_path: str | None
    direct_io: bool
    s3_endpoint: str | None
    s3_region: str | None
    s3_uri_style: str | None
    s3_ca_file: str | None
    s3_verify_tls: bool
    s3_credentials_file: str | None
    s3_retry_seconds: float
    s3_max_connections: int
    key_file: str | None
    keep_last: int | None
    keep_daily: int | None
    keep_weekly: int | None
    keep_monthly: int | None
    keep_within: str | None
    pitr_window: str | None
    max_unused: float
    expire_auto: bool
    cache_dir: str | None
    config_file: str | None
    #: where each setting's value came from: its flag, its variable, "config file PATH" or
    #: "default" (for messages about a value that is only judged where it is used)
    sources: dict[str, str]

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, values[name])

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Config({inner})"

    def named(self, name: str) -> str:
        """The setting ``name`` as its value was given, for a message about that value:
        ``--keep-within``, ``PGKURA_KEEP_WITHIN`` or ``keep-within in config file PATH``
        (its flag when it was not given, or the source is not known)."""
        setting = next(s for s in SETTINGS if s.name == name)
        source = self.sources.get(name, setting.flag)
        if source.startswith("config file"):
            return f"{setting.key} in {source}"
        return setting.flag if source == "default" else source

    def require_repo(self) -> str:
        if not self.repo:
            raise ConfigError(
                "no repository given",
                hint="pass --repo DIR, set PGKURA_REPO, or set repo in the config file",
            )
        return self.repo

    def storage_flags(self) -> list[str]:
        """The storage settings as flags, for the pgkura commands that pgkura itself starts
        (restore_command, the background archiver): they run with another environment.
        Secrets are never among them; s3-credentials-file travels in the config file."""
        if not (self.repo or "").startswith("s3://"):
            return []
        out = []
        for s in SETTINGS:
            value = getattr(self, s.name)
            if not s.name.startswith("s3_") or not s.on_command_line or value == s.default:
                continue
            out += [s.flag, ("on" if value else "off") if s.type is bool else str(value)]
        return out

    def require_pgdata(self) -> str:
        if not self.pgdata:
            raise ConfigError(
                "no data directory given",
                hint="pass --pgdata DIR, set PGKURA_PGDATA, or set pgdata in the config file",
            )
        return self.pgdata


_WHAT = {str: "a text value", float: "a number greater than 0",
         int: "a whole number of at least 1", bool: "on or off"}  # fmt: skip


def _convert(setting: Setting, value: Any, source: str) -> Any:
    """``value`` as the setting's type; a config file's TOML values must already be of it
    (``repo = [1, 2]`` is refused, not turned into the text "[1, 2]")."""
    if value is None:
        return None
    try:
        if setting.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if setting.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise TypeError(value)
            number = float(value)
            if not number > 0:
                raise ValueError(value)
            return number
        if setting.type is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise TypeError(value)
            if int(value) < 1:
                raise ValueError(value)
            return int(value)
        if not isinstance(value, str):
            raise TypeError(value)
        if setting.choices and value not in setting.choices:
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        what = _WHAT.get(setting.type, setting.type.__name__)
        if setting.choices:
            what = " or ".join(setting.choices)
        raise ConfigError(
            f"{setting.key} from {source} is {value!r}, not {what}",
            hint=f"fix {setting.key} in {source}",
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
            known = ", ".join(s.key for s in SETTINGS)
            raise ConfigError(
                f"unknown key {key!r} in config file {path}", hint=f"known keys: {known}"
            )
        out[name] = value
    return out


def load_config(
    flags: Mapping[str, Any], config_file: str | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Merge flags over ``PGKURA_*`` variables over the config file over the defaults."""
    return resolve_settings(flags, config_file, environ)[0]


def resolve_settings(
    flags: Mapping[str, Any], config_file: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Config, dict[str, str]]:
    """The merged settings and, for each, where its value came from: the flag, the
    variable's name, the config file's path, or "default"."""
    env = os.environ if environ is None else environ
    path_text = config_file or env.get("PGKURA_CONFIG")
    file_values: dict[str, Any] = {}
    if path_text:
        file_values = read_config_file(path_text)
    elif os.path.exists(DEFAULT_CONFIG):
        file_values = read_config_file(DEFAULT_CONFIG)
        path_text = DEFAULT_CONFIG
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        if s.on_command_line and flags.get(s.name) is not None:
            values[s.name] = _convert(s, flags[s.name], s.flag)
            sources[s.name] = s.flag
        elif env.get(s.env):
            values[s.name] = _convert(s, env[s.env], s.env)
            sources[s.name] = s.env
        elif s.name in file_values:
            values[s.name] = _convert(s, file_values[s.name], str(path_text))
            sources[s.name] = f"config file {path_text}"
        else:
            values[s.name] = s.default
            sources[s.name] = "default"
    for conninfo in (values["dbconn"], values["primary_dbconn"]):
        if conninfo:
            from pgkura.pg.conninfo import check_conninfo

            check_conninfo(conninfo)
    check_stanza_name(values["stanza"])
    return Config(config_file=path_text, sources=sources, **values), sources


# A stanza name is part of object keys (snapshots/<stanza>/...): nothing that could climb out.
STANZA_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_stanza_name(name: str) -> None:
    if not STANZA_RE.match(name) or name in (".", ".."):
        raise ConfigError(
            f"invalid stanza name {name!r}",
            hint="use 1-64 letters, digits, '_', '.' or '-' (not '.' or '..')",
        )
