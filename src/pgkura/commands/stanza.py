"""`pgkura stanza upgrade`: let a stanza go on with its cluster after pg_upgrade.

pg_upgrade makes a new cluster: a new major, a new system identifier, and WAL that starts
again on timeline 1, so the stanza refuses its WAL and backups. ``stanza upgrade`` records the
upgraded cluster (read from --pgdata's pg_control, through its own major's pg_controldata) as
the stanza's next generation: its WAL goes into an archive of its own, new backups belong to
it, and the older generations' backups and WAL stay as they are, restorable with their own
major's programs (docs/repository-format.md, "Stanza generations").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import UsageError
from pgkura.pg.binaries import find_pg_bin
from pgkura.pg.controldata import read_control_data
from pgkura.pg.versions import capabilities
from pgkura.repository.locks import backup_lock
from pgkura.repository.repo import StanzaInfo


@dataclass(frozen=True)
class StanzaUpgrade:
    info: StanzaInfo
    added: bool  # False: the cluster already was the current generation

    def to_json(self) -> dict[str, Any]:
        return {
            "stanza": self.info.name,
            "generation": self.info.current.number,
            "added": self.added,
            "generations": [g.to_json() for g in self.info.generations],
        }


def run_stanza_upgrade(cfg: Config) -> StanzaUpgrade:
    pgdata = Path(cfg.require_pgdata())
    what = f"the cluster in {pgdata}"
    try:
        major = int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        raise UsageError(
            f"{pgdata} is not a PostgreSQL data directory (no readable PG_VERSION)",
            hint="point --pgdata at the upgraded cluster's data directory",
        ) from None
    capabilities(major, what)
    bin_dir = find_pg_bin(cfg.pg_bin, major=major, search_path=cfg.pg_search_path, what=what)
    control = read_control_data(pgdata, bin_dir)
    repo = open_repository(cfg)
    # No backup of the stanza runs meanwhile: each belongs to exactly one generation.
    with backup_lock(repo, cfg.stanza):
        info, added = repo.upgrade_stanza(cfg.stanza, control.system_identifier, major)
    return StanzaUpgrade(info, added)
