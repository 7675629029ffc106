"""`pgkura restore`: write a physical backup back into a data directory, ready to start
(the work is physical/restore_job.py's)."""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.physical.recovery import Standby as Standby
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


def standby_of(primary_conninfo: str | None) -> Standby:
    """What ``restore --type standby`` asks for; a connection string with a password in it
    is refused (it would sit in postgresql.auto.conf and on the command line)."""
    if primary_conninfo is not None:
        from pgkura.pg.conninfo import check_conninfo

        check_conninfo(primary_conninfo)
    return Standby(primary_conninfo)
