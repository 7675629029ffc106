"""`pgkura restore` of a logical dump (the work is logical/restore_job.py's)."""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.logical.restore import RestoreOptions
from pgkura.logical.restore_job import LogicalRestoreRequest as LogicalRestoreRequest
from pgkura.logical.restore_job import LogicalRestoreResult as LogicalRestoreResult
from pgkura.logical.restore_job import restore_dump
from pgkura.progress import Progress


def run_logical_restore(
    cfg: Config, req: LogicalRestoreRequest, progress: Progress | None = None
) -> LogicalRestoreResult:
    with locked_repository(cfg, "shared") as repo:  # gc cannot delete what this restore reads
        return restore_dump(cfg, repo, req, progress)


def restore_logical(
    cfg: Config,
    backup_id: str | None,
    dbname: str | None,
    *,
    create: bool = False,
    clean: bool = False,
    jobs: int = 1,
    tables: tuple[str, ...] = (),
    schemas: tuple[str, ...] = (),
    no_owner: bool = False,
    list_only: bool = False,
    progress: Progress | None = None,
) -> LogicalRestoreResult:
    """The CLI's entry point: options as flags (``jobs`` checked by the CLI)."""
    options = RestoreOptions(
        create=create,
        clean=clean,
        jobs=jobs,
        tables=tables,
        schemas=schemas,
        no_owner=no_owner,
    )
    request = LogicalRestoreRequest(backup_id, dbname, options, list_only)
    return run_logical_restore(cfg, request, progress)
