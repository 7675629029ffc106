"""`pgkura gc`: give back the space of what no backup references (repository.prune).

It deletes packs no manifest references (left by failed or killed runs, or by backups that
expire deleted) and repacks the partly used ones while unused space exceeds --max-unused.
It holds the maintenance lock only: backups, dumps, restores and the WAL archive go on, and a
pack that a running command may use is deleted by a later gc, once that command has ended
(two-phase deletion).
"""

from __future__ import annotations

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.errors import UsageError
from pgkura.repository.prune import PruneReport as PruneReport
from pgkura.repository.prune import prune
from pgkura.repository.repo import Repository


def check_max_unused(value: float) -> float:
    if not 0 < value < 100:
        raise UsageError(
            f"--max-unused {value:g} is not a percentage between 0 and 100",
            hint="give the share of the repository that may stay unused, such as --max-unused 5",
        )
    return value


def run_gc(cfg: Config, dry_run: bool = False) -> PruneReport:
    max_unused = check_max_unused(cfg.max_unused)
    with locked_repository(cfg, "maintenance") as repo:
        return prune(repo, max_unused=max_unused, dry_run=dry_run)


def gc_locked(
    repo: Repository, cfg: Config, dry_run: bool, deleting: set[tuple[str, str]]
) -> PruneReport:
    """gc for a caller that holds the maintenance lock already (expire, delete); a dry run
    counts the backups ``deleting`` (stanza, id) as gone, as the real run would find them."""
    max_unused = check_max_unused(cfg.max_unused)
    return prune(repo, max_unused=max_unused, dry_run=dry_run, gone=deleting if dry_run else None)
