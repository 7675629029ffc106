"""Where an S3 repository is and how to reach it: the location, the endpoint and TLS settings,
and the credentials, resolved once per command into the arguments of obstore's S3Store.

Credentials come, first found first used, from the ``s3-credentials-file`` setting (a file
of mode 0600), the standard environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN), or the shared credentials file (~/.aws/credentials, or
AWS_SHARED_CREDENTIALS_FILE; profile AWS_PROFILE, else "default"). Never from the command
line, and never from the instance metadata service: a repository whose credentials are
missing is an error that says where to put them. No secret is ever put in a message.
"""

from __future__ import annotations

import os
import re

from pgkura.errors import ConfigError
from pgkura.secret_file import check_private

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pgkura.config import Config

# AWS's rules for bucket names (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, put them in ~/.aws/credentials "
    "(profile from AWS_PROFILE), or name a credentials file (mode 0600) with "
    "s3-credentials-file in the config file or PGKURA_S3_CREDENTIALS_FILE"
)


def parse_location(location: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` as (bucket, prefix without surrounding slashes)."""
    rest = location[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.match(bucket):
        raise ConfigError(
            f"{location!r} does not name an S3 bucket",
            hint="use --repo s3://BUCKET/PREFIX, with a bucket name of 3-63 lowercase "
            "letters, digits, '.' and '-'",
        )
    if ".." in prefix.split("/") or "//" in prefix:
        raise ConfigError(
            f"the prefix of {location!r} is not a plain path",
            hint="use --repo s3://BUCKET/PREFIX with a prefix such as backups/db1",
        )
    return bucket, prefix


class S3Options:
    """The storage settings of one command (see config.SETTINGS, s3_*)."""

    __slots__ = (
        "ca_file",
        "credentials_file",
        "endpoint",
        "max_connections",
        "region",
        "retry_seconds",
        "uri_style",
        "verify_tls",
    )

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        uri_style: str | None = None,
        ca_file: str | None = None,
        verify_tls: bool = True,
        credentials_file: str | None = None,
        retry_seconds: float = 60.0,
        max_connections: int = 16,
    ) -> None:
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.region = region or "us-east-1"
        self.uri_style = uri_style or ("path" if endpoint else "host")
        self.ca_file = ca_file
        self.verify_tls = verify_tls
        self.credentials_file = credentials_file
        self.retry_seconds = retry_seconds
        if max_connections < 1:
            raise ConfigError(
                f"s3-max-connections must be at least 1, not {max_connections}",
                hint="use for example --s3-max-connections 16",
            )
        self.max_connections = max_connections

    @classmethod
    def from_config(cls, cfg: Config | None) -> S3Options:
        if cfg is None:
            return cls()
        return cls(
            endpoint=cfg.s3_endpoint,
            region=cfg.s3_region,
            uri_style=cfg.s3_uri_style,
            ca_file=cfg.s3_ca_file,
            verify_tls=cfg.s3_verify_tls,
            credentials_file=cfg.s3_credentials_file,
            retry_seconds=cfg.s3_retry_seconds,
            max_connections=cfg.s3_max_connections,
        )


class Credentials:
    __slots__ = ("key_id", "secret", "source", "token")

    def __init__(self, key_id: str, secret: str, token: str | None, source: str) -> None:
        self.key_id, self.secret, self.token, self.source = key_id, secret, token, source

    def __repr__(self) -> str:  # never the secret, whatever prints this
        return f"Credentials(from {self.source})"


def _read_profile(path: str, profile: str, what: str) -> dict[str, str] | None:
    """The ``[profile]`` section of an AWS-style INI file, or None when the file has none.
    Hand-parsed: configparser's errors quote the offending line, which may hold a secret."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the S3 credentials file {path}: {exc.strerror or 'unreadable'}",
            hint=f"fix {what}, or make the file readable by the user running pgkura",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"the S3 credentials file {path} is not text", hint=f"fix {what}"
        ) from None
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip()
            name = name[len("profile ") :] if name.startswith("profile ") else name
            current = sections.setdefault(name, {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ConfigError(
                f"the S3 credentials file {path} is not an AWS credentials file (line {number})",
                hint="write [default] then aws_access_key_id = ... and "
                "aws_secret_access_key = ... lines",
            )
        current[key.strip().lower()] = value.strip()
    return sections.get(profile)


def _from_file(path: str, profile: str, what: str) -> Credentials | None:
    section = _read_profile(path, profile, what)
    if section is None:
        return None
    key_id = section.get("aws_access_key_id")
    secret = section.get("aws_secret_access_key")
    if not key_id or not secret:
        raise ConfigError(
            f"profile {profile!r} of the S3 credentials file {path} lacks "
            "aws_access_key_id or aws_secret_access_key",
            hint=f"add both to [{profile}] of {path}",
        )
    return Credentials(key_id, secret, section.get("aws_session_token"), path)


def resolve_credentials(options: S3Options, environ: dict[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    profile = env.get("AWS_PROFILE") or "default"
    if options.credentials_file:
        check_private(
            options.credentials_file,
            f"the S3 credentials file {options.credentials_file}",
            "fix s3-credentials-file in the config file or PGKURA_S3_CREDENTIALS_FILE",
        )
        found = _from_file(options.credentials_file, profile, "s3-credentials-file")
        if found is None:
            raise ConfigError(
                f"the S3 credentials file {options.credentials_file} has no profile {profile!r}",
                hint="add that section, or set AWS_PROFILE to one of its profiles",
            )
        return found
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return Credentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None, "environment")
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    if os.path.exists(shared):
        found = _from_file(shared, profile, "AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials")
        if found is not None:
            return found
    raise ConfigError("no S3 credentials were found", hint=CREDENTIALS_HINT)


def store_arguments(location: str, options: S3Options) -> dict[str, Any]:
    """Keyword arguments of ``obstore.store.S3Store`` for ``location``."""
    from datetime import timedelta

    bucket, prefix = parse_location(location)
    creds = resolve_credentials(options)
    config: dict[str, Any] = {
        "region": options.region,
        "access_key_id": creds.key_id,
        "secret_access_key": creds.secret,
        "virtual_hosted_style_request": options.uri_style == "host",
        # The conditional writes pgkura relies on: If-None-Match: * on put-if-absent.
        "conditional_put": "etag",
    }
    if creds.token:
        config["session_token"] = creds.token
    if options.endpoint:
        endpoint = options.endpoint
        if options.uri_style == "host":  # object_store wants the bucket in the host then
            scheme, _, host = endpoint.partition("://")
            endpoint = f"{scheme}://{bucket}.{host}"
        config["endpoint"] = endpoint
    client: dict[str, Any] = {
        "allow_http": (options.endpoint or "").startswith("http://"),
        "connect_timeout": timedelta(seconds=min(10.0, options.retry_seconds)),
        # One request (a pack of tens of MB) may take a while on a slow link; a server that
        # stops answering is caught by the retry budget around it.
        "timeout": timedelta(seconds=max(120.0, options.retry_seconds)),
    }
    if not options.verify_tls:
        client["allow_invalid_certificates"] = True
    if options.ca_file:
        client["root_certificate"] = _read_ca(options.ca_file)
    budget = timedelta(seconds=options.retry_seconds)
    retry = {
        "max_retries": 1000,  # the time budget is what ends the retries
        "retry_timeout": budget,
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=4),
            "base": 2,
        },
    }
    return {
        "bucket": bucket,
        "prefix": prefix or None,
        "config": config,
        "client_options": client,
        "retry_config": retry,
    }


def _read_ca(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the S3 CA file {path}: {exc.strerror or 'unreadable'}",
            hint="fix --s3-ca-file (PGKURA_S3_CA_FILE)",
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(
            f"the S3 CA file {path} holds no PEM certificate",
            hint="give --s3-ca-file the CA certificate in PEM form (-----BEGIN CERTIFICATE-----)",
        )
    return pem
