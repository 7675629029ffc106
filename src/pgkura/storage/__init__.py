"""Storage backends; ``open_storage`` picks one from a repository location."""

from __future__ import annotations

import os

from pgkura.storage.base import ObjectInfo, Storage

__all__ = ["ObjectInfo", "Storage", "open_storage"]


def open_storage(location: str) -> Storage:
    from pgkura.storage.posix import PosixStorage

    return PosixStorage(os.path.abspath(location))
