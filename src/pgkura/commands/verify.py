"""`pgkura verify [ID]`: read back everything a backup needs and say what is wrong, where
(the work is physical/verify.py's)."""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.physical.verify import VerifyReport as VerifyReport
from pgkura.physical.verify import verify_backups
from pgkura.repository.runs import recorded


def run_verify(cfg: Config, backup_id: str | None, jobs: int, pages: bool = True) -> VerifyReport:
    """Check one backup (or all, and then the whole WAL archive); ``pages`` recomputes every
    data page checksum instead of reporting the failures each backup recorded."""
    with (
        locked_repository(cfg, "shared") as repo,  # gc cannot delete what is verified
        recorded(repo, "verify", cfg.stanza) as run,  # pgkura metrics shows the outcome
    ):
        return run.done(verify_backups(repo, cfg.stanza, backup_id, jobs, pages))
