"""`pgkura stanza upgrade`: let a stanza go on with its cluster after pg_upgrade; `pgkura
stanza create`: bind a stanza to its cluster before its first backup or archived segment.

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


def _cluster(cfg: Config) -> tuple[str, int]:
    """(system identifier, major) of the cluster at --pgdata, from its pg_control, read by
    its own major's pg_controldata."""
    pgdata = Path(cfg.require_pgdata())
    what = f"the cluster in {pgdata}"
    try:
        major = int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        raise UsageError(
            f"{pgdata} is not a PostgreSQL data directory (no readable PG_VERSION)",
            hint="point --pgdata at the cluster's data directory",
        ) from None
    capabilities(major, what)
    bin_dir = find_pg_bin(cfg.pg_bin, major=major, search_path=cfg.pg_search_path, what=what)
    return read_control_data(pgdata, bin_dir).system_identifier, major


def run_stanza_upgrade(cfg: Config) -> StanzaUpgrade:
    system_identifier, major = _cluster(cfg)
    repo = open_repository(cfg)
    # No backup of the stanza runs meanwhile: each belongs to exactly one generation.
    with backup_lock(repo, cfg.stanza):
        info, added = repo.upgrade_stanza(cfg.stanza, system_identifier, major)
    return StanzaUpgrade(info, added)


def run_stanza_create(cfg: Config) -> StanzaUpgrade:
    """Bind --stanza to the cluster at --pgdata, even when another stanza of the repository
    backs that cluster up already (a backup or archive-push would refuse to start a second
    stanza of one cluster: repository/stanzas.py, ``bind_new_stanza``). ``added`` is False
    when the stanza was bound to this cluster already; bound to another, it is refused."""
    system_identifier, major = _cluster(cfg)
    repo = open_repository(cfg)
    with backup_lock(repo, cfg.stanza):
        existed = repo.stanza(cfg.stanza) is not None
        info = repo.ensure_stanza(cfg.stanza, system_identifier, major)
    return StanzaUpgrade(info, not existed)
