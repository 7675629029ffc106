"""`pgkura init`: create an empty repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgkura.config import Config
from pgkura.errors import RepositoryError, UsageError
from pgkura.repository.keys import read_key_file
from pgkura.repository.repo import DEFAULT_BLOCK_SIZE, Repository
from pgkura.storage import is_url, open_storage


@dataclass(frozen=True)
class Initialised:
    """A repository that was created."""

    location: str
    compression: str
    encrypted: bool = False

    def to_json(self) -> dict[str, str | bool]:
        return {
            "location": self.location,
            "compression": self.compression,
            "encrypted": self.encrypted,
        }


def run_init(
    cfg: Config,
    *,
    compression: str = "zstd:3",
    block_size: int = DEFAULT_BLOCK_SIZE,
    encrypt: bool = False,
    raw: bool = False,
) -> Initialised:
    secret = None
    if not encrypt and (raw or cfg.key_file):
        given = "--raw-key" if raw else f"a key file ({cfg.key_file})"
        raise UsageError(
            f"{given} was given without --encrypt: the repository would not be encrypted",
            hint="add --encrypt to encrypt it, or leave the key file out (--key-file, "
            "PGKURA_KEY_FILE, key-file in the config file) for an unencrypted one",
        )
    if encrypt:
        if not cfg.key_file:
            raise UsageError(
                "init --encrypt needs the passphrase of the repository's first key slot",
                hint="give --key-file FILE (mode 0600; or PGKURA_KEY_FILE, or key-file in "
                "the config file)",
            )
        secret = read_key_file(cfg.key_file, raw=raw)
    repo = _create(cfg, compression, block_size, secret, raw)
    return Initialised(repo.location, repo.config.compression, repo.config.encrypted)


def _create(
    cfg: Config, compression: str, block_size: int, secret: bytes | None, raw: bool
) -> Repository:
    location = cfg.require_repo()
    if is_url(location):  # a bucket has no directory to make
        storage = open_storage(location, cfg)
        return Repository.create(
            storage, compression=compression, block_size=block_size, secret=secret, raw=raw
        )
    path = Path(location)
    if path.exists() and not path.is_dir():
        raise RepositoryError(f"{location} exists and is not a directory")
    made = [p for p in [path, *path.parents] if not p.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise RepositoryError(
            f"cannot create {location}: permission denied",
            hint="create the directory as root and give it to the user running pgkura",
        ) from None
    try:
        return Repository.create(
            open_storage(location),
            compression=compression,
            block_size=block_size,
            secret=secret,
            raw=raw,
        )
    except BaseException:
        for directory in made:  # a refused init leaves nothing behind (only what it made)
            try:
                directory.rmdir()
            except OSError:
                break
        raise
