"""`pgkura restore`: write a physical backup back into a data directory, ready to start
(the work is physical/restore_job.py's)."""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.physical.restore_job import RestoreRequest as RestoreRequest
from pgkura.physical.restore_job import RestoreResult as RestoreResult
from pgkura.physical.restore_job import prepare_restore
from pgkura.physical.restore_job import wal_reader as wal_reader
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex


def run_restore(
    cfg: Config,
    req: RestoreRequest,
    progress: Progress | None,
    index: BlockIndex | None = None,
) -> RestoreResult:
    """Restore as ``req`` says (nothing is written when a check refuses)."""
    with locked_repository(cfg, "shared") as repo:  # gc cannot delete what this reads
        return prepare_restore(repo, cfg, req).run(progress, index)
