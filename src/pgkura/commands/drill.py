"""`pgkura verify --restore [ID]`: the drill that proves a backup restores (the work is
physical/drill.py's; its records are repository/drills.py's)."""

from __future__ import annotations

from typing import Any

from pgkura.config import Config
from pgkura.physical.recovery import RecoveryTarget


def drill(cfg: Config, backup_id: str | None, target: RecoveryTarget, keep: bool = False,
          say: Any = None) -> dict[str, Any]:  # fmt: skip
    """Drill one backup; the restore inside takes the repository's shared lock."""
    from pgkura.physical.drill import drill_backup

    return drill_backup(cfg, backup_id, target, keep, say)
