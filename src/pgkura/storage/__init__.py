"""Storage backends; ``open_storage`` picks one from a repository location."""

from __future__ import annotations

from pathlib import Path

from pgkura.storage.base import ObjectInfo, Storage

__all__ = ["ObjectInfo", "Storage", "open_storage"]


def open_storage(location: str) -> Storage:
    from pgkura.storage.posix import PosixStorage

    return PosixStorage(Path(location).absolute())
