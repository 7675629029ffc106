"""One module per verb; each is a thin function over the layers below: it opens the
repository with the lock it needs (:func:`locked_repository`) and calls an engine.

Nothing is imported at package level: archive-push imports this package once per WAL segment.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported on archive-push's path
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from types import TracebackType

    from pgkura.config import Config
    from pgkura.repository.repo import Repository

#: What a command may hold while it runs (repository/locks.py): "none" (reads that need no
#: protection from gc), "shared" (reads gc must not delete from under), "backup" (writes to
#: the stanza: one at a time), "maintenance" (gc, expire, delete, pin: one at a time; it
#: stops nobody else, gc's deletions wait for the shared locks instead).
LOCKS = ("none", "shared", "backup", "maintenance")


def as_command_line() -> None:
    """What a process started as ``pgkura`` holds to and code calling the library does not:
    run as root, it writes nothing into a repository another user owns (that user's
    archive_command could not read it any more)."""
    import os

    if os.geteuid() == 0:
        from pgkura.storage import refuse_root_writes_to_others

        refuse_root_writes_to_others()


def open_repository(cfg: Config) -> Repository:
    """The repository ``cfg`` names (repository.repo.open_repository)."""
    from pgkura.repository.repo import open_repository as open_repo

    return open_repo(cfg)


def locked_repository(cfg: Config, lock: str) -> _Locked:
    """The repository ``cfg`` names, holding ``lock`` (one of :data:`LOCKS`; "backup" is
    the stanza's, ``cfg.stanza``) while the ``with`` block runs: the one way a command
    declares and takes its lock, so that none forgets to release it."""
    if lock not in LOCKS:
        raise ValueError(f"unknown lock {lock!r}")
    return _Locked(cfg, lock)


class _Locked:
    """What :func:`locked_repository` returns (a class, not contextlib: this package is on
    archive-push's path, which does not import contextlib)."""

    __slots__ = ("_cfg", "_held", "_lock")

    def __init__(self, cfg: Config, lock: str) -> None:
        self._cfg, self._lock = cfg, lock
        self._held: AbstractContextManager[None] | None = None

    def __enter__(self) -> Repository:
        from pgkura.repository import locks

        repo = open_repository(self._cfg)
        if self._lock == "shared":
            self._held = locks.shared_lock(repo)
        elif self._lock == "backup":
            self._held = locks.backup_lock(repo, self._cfg.stanza)
        elif self._lock == "maintenance":
            self._held = locks.maintenance_lock(repo)
        if self._held is not None:
            self._held.__enter__()
        return repo

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        held, self._held = self._held, None
        return held.__exit__(exc_type, exc, tb) if held is not None else None
