"""Opening and creating a repository, and the stanza record that ties it to one cluster."""

from __future__ import annotations

import errno
import json
import os

from pgkura.codec.compression import Codec, parse_codec
from pgkura.errors import (
    NotARepositoryError,
    ObjectNotFound,
    RepositoryError,
    StorageError,
    UsageError,
)
from pgkura.repository import layout
from pgkura.repository import sealed as envelope
from pgkura.repository.repoconfig import ENCRYPTED_V5 as ENCRYPTED_V5
from pgkura.repository.repoconfig import ENCRYPTED_VERSION as ENCRYPTED_VERSION
from pgkura.repository.repoconfig import FORMAT as FORMAT
from pgkura.repository.repoconfig import VERSION as VERSION
from pgkura.repository.repoconfig import RepoConfig as RepoConfig
from pgkura.repository.stanzas import Generation as Generation
from pgkura.repository.stanzas import StanzaInfo as StanzaInfo
from pgkura.storage.base import Storage

# archive-push opens the repository once per WAL segment: typing, datetime and dataclasses
# (about 10 ms together) are not imported here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from typing import Any

    from pgkura.config import Config
    from pgkura.repository.drills import DrillStore
    from pgkura.repository.walstore import WalStore

DEFAULT_BLOCK_SIZE = 64 * 1024


def utc_now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    from datetime import UTC

    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Repository:
    """A repository opened on a storage backend: its configuration, the envelope every object
    is sealed in, and the typed stores of its objects (``wal``, ``drills``; blocks, packs and
    the index in repository/blocks.py; snapshots in repository/manifest.py; locks in
    repository/locks.py).

    This package is the only code that seals, unseals, names, lists and deletes stored
    objects (docs/architecture.md): the codec and the hash key are used here and nowhere
    above, so a new envelope (encryption) changes this class and sealed.py only."""

    def __init__(
        self, storage: Storage, config: RepoConfig, cipher: envelope.Cipher | None = None
    ) -> None:
        self.storage = storage
        self.config = config
        self.codec: Codec = parse_codec(config.compression)
        # Not None exactly when the repository is encrypted (Repository.open checks).
        self.cipher = cipher
        self.master_key: bytes | None = None  # an encrypted repository's, for key add
        self._wal: WalStore | None = None
        self._drills: DrillStore | None = None
        #: the cache-dir setting (repository/index_cache.py): "off" unless opened by a Config
        self.cache_setting: str | None = "off"
        self._index_cache: Any = None

    @property
    def key(self) -> bytes:
        return self.config.hash_key

    # -- the store, as engines see it --------------------------------------------------

    @property
    def location(self) -> str:
        """Where the repository is, for messages ("/backups/repo", "s3://bucket/prefix")."""
        return self.storage.location

    @property
    def fork_safe(self) -> bool:
        """Whether forked worker processes may use this repository (storage.base)."""
        return self.storage.fork_safe

    def workers_for(self, jobs: int) -> int:
        """How many workers that each use the repository to run for ``jobs`` asked: never
        more than its store takes at once, never fewer than one."""
        return self.storage.workers_for(jobs)

    def check_writable(self) -> None:
        """Raise StorageError when the repository cannot take writes."""
        self.storage.check_writable()

    # -- the envelope ------------------------------------------------------------------

    def digest(self, raw: bytes | memoryview) -> bytes:
        """The keyed hash that names and checks ``raw`` (a block id; a WAL file's checksum)."""
        return envelope.keyed_digest(self.key, raw)

    # Each object is sealed bound to its identity, which an encrypted repository's tag
    # covers: ``name`` is the object's key; a block (no name) is bound to its id. An object
    # moved to another name or block id no longer unseals.

    def seal(
        self,
        raw: bytes | memoryview,
        digest: bytes | None = None,
        *,
        name: str | None = None,
        codec: Codec | None = None,
    ) -> envelope.Sealed:
        """``raw`` in the repository's envelope (compressed, framed, checksummed; encrypted
        in an encrypted repository), to be stored as ``name`` (None: a block); ``codec``:
        compressed so instead of as the repository's objects are (a local cache's copy)."""
        identity = BLOCK_IDENTITY if name is None else _named(name)
        codec = self.codec if codec is None else codec
        return envelope.seal(raw, codec, self.key, digest, self.cipher, identity)

    def frame(self, raw: bytes | memoryview, digest: bytes) -> bytes:
        """The sealed bytes of the block ``raw`` whose id (digest) the caller computed (the
        backup's hot path: see sealed.frame)."""
        return envelope.frame(raw, self.codec, digest, self.cipher, BLOCK_IDENTITY)

    def unseal(
        self,
        data: bytes | memoryview,
        expect_digest: bytes | None = None,
        *,
        name: str | None = None,
    ) -> bytes:
        """The verified content of the object stored as ``name``, or (no name) of the block
        ``expect_digest``; SealError when anything is off."""
        identity = BLOCK_IDENTITY if name is None else _named(name)
        if name is None and expect_digest is None:
            raise ValueError("unseal needs the object's name or its block id")
        return envelope.unseal(data, self.key, expect_digest, self.cipher, identity)

    def authenticate(
        self,
        data: bytes | memoryview,
        expect_digest: bytes | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """The header of a sealed object and, encrypted, its tag, without decompressing it
        (sealed.authenticate); SealError when anything is off."""
        identity = BLOCK_IDENTITY if name is None else _named(name)
        envelope.authenticate(data, expect_digest, self.cipher, identity)

    def unseal_to(
        self, data: bytes | memoryview, write: Callable[[memoryview], None], *, name: str
    ) -> None:
        """:meth:`unseal`, handing the content to ``write`` piece by piece (sealed.unseal_to)."""
        envelope.unseal_to(data, self.key, write, self.cipher, _named(name))

    # -- small records (stanza records, pins, drills, expire records, doomed lists) ----
    # Plain JSON in an unencrypted repository, as they always were; sealed in an encrypted one.

    def _record_bytes(self, key: str, body: bytes) -> bytes:
        return body if self.cipher is None else self.seal(body, name=key).data

    def put_record(self, key: str, body: bytes) -> None:
        """Store (replace atomically) the record ``key``."""
        self.storage.put(key, self._record_bytes(key, body))

    def put_record_if_absent(self, key: str, body: bytes) -> bool:
        """Store the record ``key`` unless it exists; whether it was written."""
        return self.storage.put_if_absent(key, self._record_bytes(key, body))

    def get_record(self, key: str) -> bytes:
        """The content of the record ``key``: ObjectNotFound when absent, SealError (a
        ValueError, like bad JSON) when it does not unseal."""
        data = self.storage.get(key)
        return data if self.cipher is None else self.unseal(data, name=key)

    # -- typed stores ------------------------------------------------------------------

    @property
    def wal(self) -> WalStore:
        """The WAL archive's objects (repository/walstore.py)."""
        if self._wal is None:
            from pgkura.repository.walstore import WalStore

            self._wal = WalStore(self)
        return self._wal

    @property
    def drills(self) -> DrillStore:
        """The records of restore drills (repository/drills.py)."""
        if self._drills is None:
            from pgkura.repository.drills import DrillStore

            self._drills = DrillStore(self)
        return self._drills

    @classmethod
    def create(
        cls,
        storage: Storage,
        *,
        compression: str = "zstd:3",
        block_size: int = DEFAULT_BLOCK_SIZE,
        secret: bytes | None = None,
        raw: bool = False,
    ) -> Repository:
        """A new repository; encrypted when ``secret`` (its first key slot's passphrase, or
        with ``raw`` its random key)."""
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
        master = None
        if secret is not None:
            from pgkura.repository import keys

            master = keys.new_master_key()
            config.hash_key = keys.split_master_key(master)[1]
            config.version = ENCRYPTED_VERSION
            config.key_slots = [
                keys.new_slot(master, secret, config.repo_id, config.created, raw=raw)
            ]
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
        return cls._opened(storage, config, master)

    @classmethod
    def _opened(cls, storage: Storage, config: RepoConfig, master: bytes | None) -> Repository:
        if master is None:
            return cls(storage, config)
        from pgkura.repository.keys import open_data_keys, split_master_key

        data_key, config.hash_key = split_master_key(master)
        more = open_data_keys(master, config.repo_id, config.data_keys)
        dropped = frozenset(config.dropped_data_keys)
        repo = cls(storage, config, envelope.Cipher(data_key, more, dropped))
        repo.master_key = master
        return repo

    def reload_keys(self) -> None:
        """Take up the data keys ``config`` now lists (after key rotate or a key drop)."""
        assert self.master_key is not None
        opened = self._opened(self.storage, self.config, self.master_key)
        self.cipher = opened.cipher

    @classmethod
    def open(cls, storage: Storage, key_file: str | None = None) -> Repository:
        """The repository on ``storage``; an encrypted one is opened with the passphrase in
        ``key_file`` (the file's path: the secret itself is never passed around)."""
        try:
            raw = storage.get(layout.CONFIG_KEY)
        except ObjectNotFound:
            raise _no_config(storage) from None
        except StorageError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.EACCES, errno.EPERM):
                raise
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
        known = ENCRYPTED_V5 if "key_slots" in data else VERSION
        if int(data.get("version", 0)) > known:
            raise RepositoryError(
                f"repository format version {data['version']} is newer than this pgkura knows",
                hint="upgrade pgkura",
            )
        config = RepoConfig.from_json(data)
        master = None
        if (
            config.key_slots is not None
        ):  # opened before anything is swept: a wrong key writes nothing
            from pgkura.repository import keys

            if not key_file:
                raise keys.need_key_error(storage.location)
            secret = keys.read_key_file(key_file)
            master, _ = keys.open_master_key(
                config.key_slots, secret, config.repo_id, storage.location, key_file
            )
        # What writers killed mid-write left is removed by whoever comes next.
        storage.sweep()
        return cls._opened(storage, config, master)

    def write_config(self) -> None:
        """Replace pgkura.json (atomically: storage put) with ``config``."""
        self.storage.put(layout.CONFIG_KEY, json.dumps(self.config.to_json(), indent=2).encode())

    # -- stanzas -------------------------------------------------------------------------

    def stanza(self, name: str) -> StanzaInfo | None:
        key = layout.stanza_key(name)
        try:
            raw = self.get_record(key)
        except ObjectNotFound:
            return None
        except envelope.SealError as exc:
            raise RepositoryError(
                f"the stanza record {key} is damaged: {exc}",
                hint="run pgkura verify; restore the record from a copy of the repository",
            ) from None
        return StanzaInfo.from_json(json.loads(raw))

    def ensure_stanza(self, name: str, system_identifier: str, pg_version: int) -> StanzaInfo:
        """Bind ``name`` to a cluster on first use; afterwards refuse any cluster but its
        current generation's."""
        check_stanza_name(name)
        info = self.stanza(name)
        if info is None:
            created = iso(utc_now())
            info = StanzaInfo(
                name, [Generation(1, system_identifier, pg_version, created)], created
            )
            body = json.dumps(info.to_json(), indent=2).encode()
            if not self.put_record_if_absent(layout.stanza_key(name), body):
                info = self.stanza(name)
                assert info is not None
        if info.system_identifier != system_identifier:
            raise info.refuse(system_identifier, pg_version)
        return info

    def wal_archive(self, stanza: str, system_identifier: str | None = None) -> str:
        """The WAL archive of the stanza's generation whose cluster is ``system_identifier``
        (None: the current generation; a stanza not created yet: its first)."""
        info = self.stanza(stanza)
        if info is None:
            return layout.wal_archive(stanza, 1)
        return info.archive_for(system_identifier)

    def upgrade_stanza(
        self, name: str, system_identifier: str, pg_version: int
    ) -> tuple[StanzaInfo, bool]:
        """Make the cluster ``system_identifier`` the stanza's new generation (after
        pg_upgrade); (the record, whether a generation was added). The caller holds the
        stanza's backup lock."""
        check_stanza_name(name)
        info = self.stanza(name)
        if info is None:
            raise RepositoryError(
                f"stanza {name!r} does not exist yet: there is nothing to upgrade",
                hint="a new stanza is bound to its cluster by its first backup or archive-push",
            )
        if info.system_identifier == system_identifier:
            return info, False
        old = info.generation_of(system_identifier)
        if old is not None:
            raise RepositoryError(
                f"the cluster with system identifier {system_identifier} is generation "
                f"{old.number} of stanza {name!r}, not a new one: a stanza never goes back",
                hint="point --pgdata at the upgraded cluster",
            )
        # Old readers would look for every generation's WAL where the first one's is.
        raise_version(self, 2)
        number = info.current.number + 1
        info.generations.append(Generation(number, system_identifier, pg_version, iso(utc_now())))
        self.put_record(layout.stanza_key(name), json.dumps(info.to_json(), indent=2).encode())
        return info, True


BLOCK_IDENTITY = b"block"


def _named(name: str) -> bytes:
    return b"object " + name.encode()


def open_repository(cfg: Config) -> Repository:
    """The repository ``cfg`` names (--repo), opened: the one way every layer opens it."""
    from pgkura.storage import open_storage

    repo = Repository.open(open_storage(cfg.require_repo(), cfg), cfg.key_file)
    repo.cache_setting = cfg.cache_dir
    return repo


def raise_version(repo: Repository, version: int) -> None:
    """Mark the repository as of format ``version`` before writing what older readers would
    misread: from then on they refuse it instead."""
    if repo.config.version >= version:
        return
    repo.config.version = version
    repo.write_config()


def _no_config(storage: Storage) -> NotARepositoryError:
    """An empty or new location is not a repository yet; one that holds pgkura's objects has
    lost its pgkura.json, and `init` (which refuses a non-empty location) would not help."""
    # Only pgkura's own directories: /tmp holds much, some unreadable, that says nothing.
    listed = (next((o.key for o in storage.list(f"{d}/")), None) for d in _REPOSITORY_DIRS)
    held = next((key for key in listed if key is not None), None)
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


_REPOSITORY_DIRS = frozenset(
    {"packs", "index", "snapshots", "catalogs", "wal", "stanzas", "drills", "pins", "expire", "gc"}
)


def check_stanza_name(name: str) -> None:
    from pgkura.config import check_stanza_name as check

    check(name)
