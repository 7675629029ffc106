"""`pgkura archive-push` and `pgkura archive-get`: PostgreSQL's archive and restore commands.

Both start once per WAL segment, so they import only the repository and the WAL modules.
With ``--archive-async on`` they go through the spool (pgkura.wal.spool).
"""

from __future__ import annotations

from pathlib import Path

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import NotFoundError
from pgkura.wal.archive import PushResult, get_wal, push_wal


def run_archive_push(cfg: Config, path: str) -> PushResult | None:
    """Archive one file; None when the background pusher did it (no per-file figures)."""
    if cfg.archive_async:
        from pgkura.wal.spool import push_async

        push_async(cfg, Path(path))
        return None
    repo = open_repository(cfg)
    return push_wal(repo, cfg.stanza, Path(path))


def run_archive_get(cfg: Config, wal_name: str, dest: str) -> None:
    if cfg.archive_async:
        from pgkura.wal.spool import get_async

        found = get_async(cfg, wal_name, Path(dest))
    else:
        found = get_wal(open_repository(cfg), cfg.stanza, wal_name, Path(dest))
    if not found:
        raise NotFoundError(f"{wal_name} is not in the archive of stanza {cfg.stanza!r}")


def run_archive_daemon(cfg: Config, role: str) -> None:
    from pgkura.wal.spool import run_daemon

    run_daemon(cfg, role)
