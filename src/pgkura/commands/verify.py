"""`pgkura verify [ID]`: read back everything a backup needs and say what is wrong, where
(the work is physical/verify.py's; with --quick, physical/quick_verify.py's)."""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.physical.verdicts import VerifyReport as VerifyReport
from pgkura.repository.runs import recorded


def run_verify(
    cfg: Config, backup_id: str | None, jobs: int, pages: bool = False, *, quick: bool = False
) -> VerifyReport:
    """Check one backup (or all, and then the whole WAL archive); ``pages`` recomputes every
    data page checksum instead of reporting the failures each backup recorded; ``quick``
    checks what is stored as it is stored, without decompressing."""
    with (
        locked_repository(cfg, "shared") as repo,  # gc cannot delete what is verified
        recorded(repo, "verify", cfg.stanza) as run,  # pgkura metrics shows the outcome
    ):
        if quick:
            from pgkura.physical.quick_verify import verify_quick

            return run.done(verify_quick(repo, cfg.stanza, backup_id, jobs))
        from pgkura.physical.verify import verify_backups

        return run.done(verify_backups(repo, cfg.stanza, backup_id, jobs, pages))
