"""Storage backends; ``open_storage`` picks one from a repository location."""

from __future__ import annotations

import os

from pgkura.storage.base import ObjectInfo, Storage

TYPE_CHECKING = False  # typing itself is not imported on archive-push's path
if TYPE_CHECKING:
    from pgkura.config import Config

__all__ = ["ObjectInfo", "Storage", "is_url", "open_storage", "refuse_root_writes_to_others"]


def refuse_root_writes_to_others() -> None:
    """From now on, as root, write nothing into a directory repository another user owns
    (posix.refuse_root_writes_to_others)."""
    from pgkura.storage import posix

    posix.refuse_root_writes_to_others = True


def is_url(location: str) -> bool:
    """Whether ``location`` names an object store rather than a directory."""
    return location.startswith("s3://")


def open_storage(location: str, cfg: Config | None = None) -> Storage:
    """The store at ``location``: ``s3://BUCKET/PREFIX`` (its settings from ``cfg``), or a
    directory. obstore is imported only for S3: archive-push starts once per WAL segment."""
    if is_url(location):
        from pgkura.storage.s3 import S3Storage
        from pgkura.storage.s3_config import S3Options

        return S3Storage(location, S3Options.from_config(cfg))
    scheme, sep, _ = location.partition("://")
    if sep and scheme.isalnum():
        from pgkura.errors import ConfigError

        raise ConfigError(
            f"pgkura does not know repositories of the kind {scheme}://",
            hint="use --repo DIR or --repo s3://BUCKET/PREFIX",
        )
    from pgkura.storage.posix import PosixStorage

    return PosixStorage(os.path.abspath(location))
