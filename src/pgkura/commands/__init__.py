"""One module per verb; each is a thin function over the layers below: it opens the
repository with the lock it needs (:func:`locked_repository`) and calls an engine.

Nothing is imported at package level: archive-push imports this package once per WAL segment.
"""

from __future__ import annotations

from contextlib import contextmanager

TYPE_CHECKING = False  # typing itself is not imported on archive-push's path
if TYPE_CHECKING:
    from collections.abc import Iterator

    from pgkura.config import Config
    from pgkura.repository.repo import Repository

#: What a command may hold while it runs (repository/locks.py): "none" (reads that need no
#: protection from gc), "shared" (reads gc must not delete from under), "backup" (writes to
#: the stanza: one at a time, and gc waits), "exclusive" (deletes: nothing else runs).
LOCKS = ("none", "shared", "backup", "exclusive")


def open_repository(cfg: Config) -> Repository:
    """The repository ``cfg`` names (repository.repo.open_repository)."""
    from pgkura.repository.repo import open_repository as open_repo

    return open_repo(cfg)


@contextmanager
def locked_repository(cfg: Config, lock: str) -> Iterator[Repository]:
    """The repository ``cfg`` names, holding ``lock`` (one of :data:`LOCKS`; "backup" is
    the stanza's, ``cfg.stanza``) until the block ends: the one way a command declares and
    takes its lock, so that none forgets to release it."""
    from pgkura.repository import locks

    if lock not in LOCKS:
        raise ValueError(f"unknown lock {lock!r}")
    repo = open_repository(cfg)
    if lock == "none":
        yield repo
    elif lock == "shared":
        with locks.shared_lock(repo):
            yield repo
    elif lock == "backup":
        with locks.backup_lock(repo, cfg.stanza):
            yield repo
    else:
        with locks.exclusive_lock(repo):
            yield repo
