"""`pgkura archive-push` and `pgkura archive-get`: PostgreSQL's archive and restore commands.

Both start once per WAL segment, so they import only the repository and the WAL modules.
With ``--archive-async on`` they go through the spool (pgkura.wal.spool).
"""

from __future__ import annotations

from pgkura.config import Config
from pgkura.errors import NotFoundError

TYPE_CHECKING = False  # typing itself costs archive-push about 5 ms to import
if TYPE_CHECKING:
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
    from pgkura.wal import early
    from pgkura.wal.archive import push_wal, read_to_push

    source = read_to_push(path, mapped=True)
    ahead = early.start(cfg, source.raw)  # compressing while the repository opens
    repo = open_repository(cfg)
    result = push_wal(repo, cfg.stanza, source, early=ahead)
    early.remember(cfg, repo.codec, ahead)
    return result


def run_archive_get(cfg: Config, wal_name: str, dest: str, stop_after: str | None = None) -> None:
    """Fetch ``wal_name`` into ``dest``; NotFoundError (exit 1) only when the archive truly
    does not have it. ``stop_after``: the restore proved that recovery reaches its target
    before any later segment, so later ones are "not in the archive" without being read."""
    from pgkura.wal.names import is_segment_name

    if stop_after is not None and is_segment_name(wal_name) and wal_name[8:] > stop_after[8:]:
        raise NotFoundError(
            f"{wal_name} lies past {stop_after}, the last segment this recovery needs"
        )
    if cfg.archive_async:
        from pgkura.wal.spool import get_async

        found = get_async(cfg, wal_name, dest)
    else:
        from pgkura.commands import open_repository
        from pgkura.wal.archive import get_wal, recovering_archive

        repo = open_repository(cfg)
        found = get_wal(repo, recovering_archive(repo, cfg.stanza), wal_name, dest, durable=False)
    if not found:
        if is_segment_name(wal_name):
            _refuse_hole(cfg, wal_name)
        raise NotFoundError(f"{wal_name} is not in the archive of stanza {cfg.stanza!r}")


def _refuse_hole(cfg: Config, wal_name: str) -> None:
    """A segment that is absent while later segments of its timeline are archived is a hole,
    not the end of the archive: PostgreSQL asks a timeline for a segment only within the
    stretch of WAL that timeline owns, so answering "not found" would end recovery early."""
    from pgkura.commands import open_repository
    from pgkura.errors import CorruptionError
    from pgkura.wal.archive import archived_after, recovering_archive

    repo = open_repository(cfg)
    later = archived_after(repo, recovering_archive(repo, cfg.stanza), wal_name)
    if later is not None:
        raise CorruptionError(
            f"{wal_name} is missing from the archive of stanza {cfg.stanza!r}, but the archive "
            f"continues at {later}: a hole; recovery is stopped rather than ended early",
            hint="put the segment back (archive-push it from the server's pg_wal if it is "
            "still there), or restore to a point before it with --to-lsn",
        )


def run_archive_daemon(cfg: Config, role: str) -> None:
    from pgkura.wal.spool import run_daemon

    run_daemon(cfg, role)
