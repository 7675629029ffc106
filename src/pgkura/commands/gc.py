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
from pgkura.repository.prune import PruneReport as PruneReport
from pgkura.repository.prune import checked_max_unused, prune
from pgkura.repository.runs import recorded


def run_gc(cfg: Config, dry_run: bool = False) -> PruneReport:
    max_unused = checked_max_unused(cfg.max_unused)
    with (
        locked_repository(cfg, "maintenance") as repo,
        recorded(repo, "gc", None, dry_run=dry_run) as run,  # for pgkura metrics
    ):
        return run.done(prune(repo, max_unused=max_unused, dry_run=dry_run))
