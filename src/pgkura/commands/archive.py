"""`pgkura archive-push` and `pgkura archive-get`: PostgreSQL's archive and restore commands.

Both start once per WAL segment, so they import only the repository and the WAL modules.
"""

from __future__ import annotations

from pathlib import Path

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import NotFoundError
from pgkura.wal.archive import PushResult, get_wal, push_wal


def run_archive_push(cfg: Config, path: str) -> PushResult:
    repo = open_repository(cfg)
    return push_wal(repo, cfg.stanza, Path(path))


def run_archive_get(cfg: Config, wal_name: str, dest: str) -> None:
    repo = open_repository(cfg)
    if not get_wal(repo, cfg.stanza, wal_name, Path(dest)):
        raise NotFoundError(f"{wal_name} is not in the archive of stanza {cfg.stanza!r}")
