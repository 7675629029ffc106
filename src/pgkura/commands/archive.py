"""`pgkura archive-push` and `pgkura archive-get`: PostgreSQL's archive and restore commands.

Both start once per WAL segment, so they import only the repository and the WAL modules.
With ``--archive-async on`` they go through the spool (pgkura.wal.spool).
"""

from __future__ import annotations

from pgkura.config import Config
from pgkura.errors import NotFoundError

TYPE_CHECKING = False  # typing itself costs archive-push about 5 ms to import
if TYPE_CHECKING:
    from pgkura.repository.repo import Repository
    from pgkura.wal.archive import PushResult

# The repository and codec modules are imported only on the paths that need them: with
# --archive-async the foreground command only waits for the background pusher.


def run_archive_push(cfg: Config, path: str) -> PushResult | None:
    """Archive one file; None when the background pusher did it (no per-file figures)."""
    if cfg.archive_async:
        from pgkura.wal.spool import push_async

        push_async(cfg, path)
        return None
    from pgkura.commands import open_repository
    from pgkura.wal.archive import push_wal

    return push_wal(open_repository(cfg), cfg.stanza, path, mapped=True)


def run_archive_get(cfg: Config, wal_name: str, dest: str) -> None:
    if cfg.archive_async:
        from pgkura.wal.spool import get_async

        found = get_async(cfg, wal_name, dest)
    else:
        from pgkura.commands import open_repository
        from pgkura.wal.archive import get_wal

        repo = open_repository(cfg)
        found = get_wal(repo, recovering_archive(repo, cfg.stanza), wal_name, dest, durable=False)
    if not found:
        raise NotFoundError(f"{wal_name} is not in the archive of stanza {cfg.stanza!r}")


def recovering_archive(repo: Repository, stanza: str) -> str:
    """The WAL archive restore_command reads: that of the stanza's generation whose cluster
    is being recovered. PostgreSQL runs restore_command in the data directory (the
    postmaster's working directory), whose pg_control names the cluster; elsewhere (by hand,
    from a shell) it is the current generation's. Segment names repeat across generations
    (each pg_upgrade starts a new cluster on timeline 1), so this is what keeps a restore of
    one generation from ever replaying another's WAL."""
    from pgkura.pg.controlfile import read_system_identifier

    return repo.wal_archive(stanza, read_system_identifier("."))


def run_archive_daemon(cfg: Config, role: str) -> None:
    from pgkura.wal.spool import run_daemon

    run_daemon(cfg, role)
