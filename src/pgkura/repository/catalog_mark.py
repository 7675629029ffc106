"""The newest catalog epoch this host has seen, per repository and stanza: what tells a stanza
rolled back as a whole from the stanza as it is (docs/repository-format.md, "Catalogs").

A catalog checks each manifest against the newest epoch in the store, so a manifest put back
on its own is refused; but whoever holds the bucket can put back an older state of the whole
stanza (its older epochs with its older manifests), and the store alone cannot tell that from
a stanza that never went further. This host can: it remembers the highest epoch any of its
commands read or wrote at this location of the repository, in
``<cache-dir>/<repository id>/catalog-epochs/<location's digest>-<stanza, hex>``, outside the
store. Per location, because a copy of the repository's files elsewhere (a replica bucket
that lags, a directory copied with rsync) has the same id and is older without having been
rolled back: it is a repository of its own for this check. An epoch below the mark means
the newer ones were deleted: epochs are only ever added (older ones pruned behind the
newest), so pgkura itself never lowers the newest.

The mark is a plain local file of the user pgkura runs as; without a cache directory
(cache-dir off, or unwritable) nothing is remembered and nothing checked. Two commands
writing the mark at once may leave the lower of their epochs: the check grows weaker for a
moment, never wrong.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from pgkura.errors import CorruptionError
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.repo import Repository

# The standard library's own SHA-256 (what hashlib falls back to): hashlib itself would load
# OpenSSL, about 3 ms of every command that reads a catalog.
try:
    from _sha256 import sha256
except ImportError:  # pragma: no cover - Python 3.12 and later name it _sha2
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

_DIR = "catalog-epochs"


def mark_path(repo: Repository, stanza: str) -> str | None:
    """Where this host keeps the stanza's mark; None without a cache directory."""
    directory = IndexCache.of(repo).directory
    if directory is None:
        return None
    storage = repo.storage
    where = str(getattr(storage, "root", None) or storage.location)
    place = sha256(where.encode()).hexdigest()[:16]
    return os.path.join(directory, _DIR, f"{place}-{stanza.encode().hex()}")


def seen(repo: Repository, stanza: str) -> int:
    """The highest epoch of the stanza's catalog this host has seen (0: none)."""
    path = mark_path(repo, stanza)
    if path is None:
        return 0
    try:
        with open(path, "rb") as f:
            return int(f.read(32).strip() or b"0")
    except (OSError, ValueError):
        return 0


def remember(repo: Repository, stanza: str, epoch: int) -> None:
    """Raise the mark to ``epoch`` (never lower it). Errors are ignored: the mark is a
    check added to the store's own, not something a command needs."""
    path = mark_path(repo, stanza)
    if path is None or epoch <= seen(repo, stanza):
        return
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(b"%d\n" % epoch)
        os.replace(tmp, path)


def check_not_rolled_back(
    repo: Repository, stanza: str, epoch: int, what: str, newest: Callable[[], int]
) -> None:
    """Raise CorruptionError when the stanza's newest epoch in the store, ``epoch``, is below
    what this host has seen; ``what`` starts the message (the object being read). Before
    raising, ``newest()`` reads the store's newest epoch again: another command may have
    committed, and raised the mark, since ``epoch`` was read."""
    mark = seen(repo, stanza)
    if epoch < mark:
        epoch = newest()
    if epoch >= mark:
        remember(repo, stanza, epoch)
        return
    raise CorruptionError(
        f"{what}: the newest catalog of stanza {stanza!r} in the store is epoch {epoch}, but "
        f"this host has seen epoch {mark}: the stanza was rolled back to an older copy of the "
        "repository (a snapshot replayed from an older copy), or its newer catalogs were deleted",
        hint="do not trust this repository's store; if you put an older copy of the repository "
        f"back on purpose, delete {mark_path(repo, stanza)} and run the command again",
    )
