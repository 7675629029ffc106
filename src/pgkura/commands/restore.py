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


def is_physical_backup(cfg: Config, backup_id: str) -> bool:
    """Whether ``backup_id`` (an id or a unique prefix) names a physical backup of the
    stanza, not a logical dump: which restore a backup id with --dbname asks for. For the
    CLI, which reads no manifests itself."""
    from pgkura.repository.manifest import read_manifest, resolve_backup_id

    with locked_repository(cfg, "none") as repo:
        manifest = read_manifest(repo, cfg.stanza, resolve_backup_id(repo, cfg.stanza, backup_id))
    return manifest.kind == "physical"
