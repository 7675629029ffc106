"""Opening and creating a repository, and the stanza record that ties it to one cluster."""

from __future__ import annotations

import json
import os

from pgkura.codec.compression import Codec, parse_codec
from pgkura.errors import NotARepositoryError, RepositoryError, UsageError
from pgkura.repository import layout
from pgkura.storage.base import Storage

# archive-push opens the repository once per WAL segment: typing, datetime and dataclasses
# (about 10 ms together) are not imported here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

FORMAT = "pgkura-repository"
VERSION = 1
DEFAULT_BLOCK_SIZE = 64 * 1024


def utc_now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    from datetime import UTC

    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RepoConfig:
    __slots__ = ("block_size", "compression", "created", "hash_key", "repo_id", "version")

    def __init__(
        self,
        repo_id: str,
        created: str,
        block_size: int,
        compression: str,
        hash_key: bytes,
        version: int = VERSION,
    ) -> None:
        self.repo_id, self.created, self.block_size = repo_id, created, block_size
        self.compression, self.hash_key, self.version = compression, hash_key, version

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "id": self.repo_id,
            "created": self.created,
            "block_size": self.block_size,
            "compression": self.compression,
            "hash": "blake3-keyed",
            "hash_key": self.hash_key.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoConfig:
        return cls(
            repo_id=data["id"],
            created=data["created"],
            block_size=int(data["block_size"]),
            compression=data["compression"],
            hash_key=bytes.fromhex(data["hash_key"]),
            version=int(data["version"]),
        )


class StanzaInfo:
    __slots__ = ("created", "name", "pg_version", "system_identifier")

    def __init__(self, name: str, system_identifier: str, pg_version: int, created: str) -> None:
        self.name, self.system_identifier = name, system_identifier
        self.pg_version, self.created = pg_version, created

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system_identifier": self.system_identifier,
            "pg_version": self.pg_version,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StanzaInfo:
        return cls(
            data["name"], str(data["system_identifier"]), int(data["pg_version"]), data["created"]
        )


class Repository:
    """A repository opened on a storage backend: its configuration and catalog entry points."""

    def __init__(self, storage: Storage, config: RepoConfig) -> None:
        self.storage = storage
        self.config = config
        self.codec: Codec = parse_codec(config.compression)

    @property
    def key(self) -> bytes:
        return self.config.hash_key

    @classmethod
    def create(
        cls, storage: Storage, *, compression: str = "zstd:3", block_size: int = DEFAULT_BLOCK_SIZE
    ) -> Repository:
        parse_codec(compression)
        if block_size % 8192 or not 8192 <= block_size <= 16 * 1024 * 1024:
            raise UsageError(
                f"block size {block_size} is not a multiple of 8192 between 8 KiB and 16 MiB",
                hint="use for example --block-size 65536",
            )
        config = RepoConfig(
            repo_id=os.urandom(16).hex(),
            created=iso(utc_now()),
            block_size=block_size,
            compression=compression,
            hash_key=os.urandom(32),  # what secrets.token_bytes uses
        )
        if storage.exists(layout.CONFIG_KEY):
            raise RepositoryError(
                f"{storage.location} is already a pgkura repository",
                hint="use it as it is, or choose an empty location for a new one",
            )
        existing = next(iter(storage.list("")), None)
        if existing is not None:
            raise RepositoryError(
                f"{storage.location} is not empty (it holds {existing.key})",
                hint="choose an empty or new directory for the repository",
            )
        body = json.dumps(config.to_json(), indent=2).encode()
        if not storage.put_if_absent(layout.CONFIG_KEY, body):
            raise RepositoryError(f"{storage.location} was initialised concurrently")
        return cls(storage, config)

    @classmethod
    def open(cls, storage: Storage) -> Repository:
        try:
            raw = storage.get(layout.CONFIG_KEY)
        except KeyError:
            raise _no_config(storage) from None
        except (NotADirectoryError, PermissionError) as exc:
            raise NotARepositoryError(
                f"cannot read the repository at {storage.location}: {exc.strerror}",
                hint="check --repo and the permissions of the directory",
            ) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise RepositoryError(f"{layout.CONFIG_KEY} in {storage.location} is damaged") from None
        if data.get("format") != FORMAT:
            raise NotARepositoryError(f"{storage.location} is not a pgkura repository")
        if int(data.get("version", 0)) > VERSION:
            raise RepositoryError(
                f"repository format version {data['version']} is newer than this pgkura knows",
                hint="upgrade pgkura",
            )
        # What writers killed mid-write left is removed by whoever comes next.
        storage.sweep()
        return cls(storage, RepoConfig.from_json(data))

    # -- stanzas -------------------------------------------------------------------------

    def stanza(self, name: str) -> StanzaInfo | None:
        try:
            raw = self.storage.get(layout.stanza_key(name))
        except KeyError:
            return None
        return StanzaInfo.from_json(json.loads(raw))

    def ensure_stanza(self, name: str, system_identifier: str, pg_version: int) -> StanzaInfo:
        """Bind ``name`` to a cluster on first use; refuse a different cluster afterwards."""
        check_stanza_name(name)
        info = self.stanza(name)
        if info is None:
            info = StanzaInfo(name, system_identifier, pg_version, iso(utc_now()))
            body = json.dumps(info.to_json(), indent=2).encode()
            if not self.storage.put_if_absent(layout.stanza_key(name), body):
                info = self.stanza(name)
                assert info is not None
        if info.system_identifier != system_identifier:
            raise RepositoryError(
                f"stanza {name!r} belongs to the cluster with system identifier "
                f"{info.system_identifier}, not {system_identifier}",
                hint="use another --stanza for this cluster",
            )
        return info


def _no_config(storage: Storage) -> NotARepositoryError:
    """An empty or new location is not a repository yet; one that holds pgkura's objects has
    lost its pgkura.json, and `init` (which refuses a non-empty location) would not help."""
    held = next(
        (o.key for o in storage.list("") if o.key.split("/", 1)[0] in _REPOSITORY_DIRS), None
    )
    if held is None:
        return NotARepositoryError(
            f"{storage.location} is not a pgkura repository",
            hint=f"create one with: pgkura --repo {storage.location} init",
        )
    return NotARepositoryError(
        f"{storage.location} holds a pgkura repository's objects ({held}) but no "
        f"{layout.CONFIG_KEY}: its configuration, and the key its objects are checked with, "
        "is lost",
        hint=f"put {layout.CONFIG_KEY} back from a copy of the repository; do not run init here "
        "(it refuses a location that is not empty)",
    )


_REPOSITORY_DIRS = frozenset({"packs", "index", "snapshots", "wal", "stanzas", "drills"})


def check_stanza_name(name: str) -> None:
    from pgkura.config import check_stanza_name as check

    check(name)
