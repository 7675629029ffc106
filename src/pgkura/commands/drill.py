"""`pgkura verify --restore [ID]`: the drill that proves a backup restores (the work is
physical/drill.py's; its records are repository/drills.py's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgkura.config import Config
from pgkura.physical.drill import DrillResult as DrillResult
from pgkura.physical.recovery import RecoveryTarget


@dataclass(frozen=True)
class DrillsReport:
    """The drills of one ``verify --restore`` run (one backup, or every one with --all)."""

    drills: tuple[DrillResult, ...]

    @property
    def failed(self) -> list[DrillResult]:
        return [d for d in self.drills if not d.passed]

    def to_json(self) -> dict[str, Any]:
        return {"drills": [d.to_json() for d in self.drills], "passed": not self.failed}


def drill(cfg: Config, backup_id: str | None, target: RecoveryTarget, keep: bool = False,
          say: Any = None) -> DrillResult:  # fmt: skip
    """Drill one backup; the restore inside takes the repository's shared lock."""
    from pgkura.physical.drill import drill_backup

    return drill_backup(cfg, backup_id, target, keep, say)


def drill_candidates(cfg: Config) -> list[str]:
    """The ids of the physical backups of the stanza, oldest first: what ``--all`` drills."""
    from pgkura.commands import locked_repository
    from pgkura.physical.choose import physical_backups

    with locked_repository(cfg, "none") as repo:
        return [m.id for m in physical_backups(repo, cfg.stanza)]
