"""`pgkura gc`: give back the space of what no backup references (repository.prune).

It deletes packs no manifest references (left by failed or killed runs, or by backups that
expire deleted) and repacks the partly used ones while unused space exceeds --max-unused.
It holds the maintenance lock only: backups, dumps, restores and the WAL archive go on, and a
pack that a running command may use is deleted by a later gc, once that command has ended
(two-phase deletion). With --rewrite-keys it first reseals what retired data keys sealed
(repository.rekey), and after its own work drops the keys nothing uses any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.errors import UsageError
from pgkura.repository.prune import PruneReport as PruneReport
from pgkura.repository.prune import checked_max_unused, prune
from pgkura.repository.rekey import RekeyReport as RekeyReport
from pgkura.repository.rekey import check_encrypted, drop_retired, rewrite_keys
from pgkura.repository.repo import Repository
from pgkura.repository.runs import recorded


@dataclass
class GcReport(PruneReport):
    #: with --rewrite-keys: what was resealed and which retired data keys were dropped
    rekey: RekeyReport | None = None


def run_gc(cfg: Config, dry_run: bool = False, rewrite: bool = False) -> GcReport:
    max_unused = checked_max_unused(cfg.max_unused)
    if rewrite and dry_run:
        raise UsageError(
            "gc --rewrite-keys does not take --dry-run",
            hint="run pgkura gc --rewrite-keys (a run that rewrites keeps the old key)",
        )
    with locked_repository(cfg, "maintenance") as repo:
        if rewrite:
            check_encrypted(repo)  # refused before anything, a run record included, is written
        with recorded(repo, "gc", None, dry_run=dry_run) as run:  # for pgkura metrics
            return run.done(_gc(repo, max_unused, dry_run, rewrite))


def _gc(repo: Repository, max_unused: float, dry_run: bool, rewrite: bool) -> GcReport:
    rekey = rewrite_keys(repo) if rewrite else None
    pruned = prune(repo, max_unused=max_unused, dry_run=dry_run)
    if rekey is not None:
        rekey = drop_retired(repo, rekey)
    return GcReport(**vars(pruned), rekey=rekey)
