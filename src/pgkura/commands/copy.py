"""`pgkura copy --to REPO2 [ID | --all] [--wal]`: backups, dumps and their WAL copied into
another repository (the work is physical/copy.py's)."""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config, load_config
from pgkura.errors import StorageError, UsageError
from pgkura.physical.copy import CopyReport as CopyReport
from pgkura.physical.copy import chosen_backups, copy_backups
from pgkura.progress import Progress
from pgkura.repository.copy import open_destination
from pgkura.repository.locks import backup_lock
from pgkura.storage import is_url, open_storage


def run_copy(
    cfg: Config,
    to: str | None,
    backup_id: str | None,
    *,
    wal: bool,
    jobs: int,
    progress: Progress | None = None,
    to_config: str | None = None,
) -> CopyReport:
    """Copy one backup (``backup_id``, or ``latest``) or all (None) of ``cfg.stanza`` and
    the WAL they need into the repository at ``to``, created there when the location is
    empty. The destination's storage settings (S3 endpoint, credentials) are those of the
    config file ``to_config`` alone when given (no flags or ``PGKURA_*`` variables: those
    are the source's), else the same as ``--repo``'s."""
    dest_cfg = cfg if to_config is None else load_config({}, to_config, environ={})
    to = to or (dest_cfg.repo if to_config is not None else None)
    if to is None:
        raise UsageError(
            "no destination: give --to DIR|URL, or --to-config FILE with a repo setting",
            hint="for example: pgkura copy --to s3://bucket/offsite --all",
        )
    with locked_repository(cfg, "shared") as source:
        ids = chosen_backups(source, cfg.stanza, backup_id)  # before the destination is touched
        storage = open_storage(to, dest_cfg)
        if _same_location(storage.location, source.location):
            raise _same(to)
        try:
            dest, created = open_destination(storage, source)
        except StorageError as exc:  # its hint names --repo: here the location is --to's
            raise StorageError(
                f"the destination: {exc.message}",
                (exc.hint or "").replace("--repo", "--to"),
                exc.errno,
                exc.strerror,
            ) from None
        if dest.config.repo_id == source.config.repo_id:
            raise _same(to)
        # gc in the destination keeps what this copy stores until its manifests are written.
        with backup_lock(dest, cfg.stanza):
            return copy_backups(
                source,
                dest,
                cfg.stanza,
                ids,
                wal=wal,
                jobs=jobs,
                created=created,
                progress=progress,
            )


def _same_location(a: str, b: str) -> bool:
    """Whether one location is the other or lies inside it."""
    import os

    if not (is_url(a) or is_url(b)):
        a, b = os.path.realpath(a), os.path.realpath(b)
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _same(to: str) -> UsageError:
    return UsageError(
        f"--to {to} is the repository being copied (--repo), or inside it",
        hint="give --to another repository: another directory, bucket or prefix",
    )
