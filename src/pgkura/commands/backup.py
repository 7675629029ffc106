"""`pgkura backup`: take a physical backup of the configured cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import ChecksumFailuresError, UsageError
from pgkura.pg.postmaster import running_postmaster_pid
from pgkura.physical.backup import CatalogLine
from pgkura.progress import Progress
from pgkura.repository.manifest import Manifest


@dataclass(frozen=True)
class BackupTaken:
    """A backup that was stored: its catalog line (what ``info`` lists for it), with the data
    page checksum failures it found."""

    line: CatalogLine

    @property
    def id(self) -> str:
        return self.line.id

    @property
    def checksum_failures(self) -> tuple[dict[str, Any], ...]:
        return self.line.checksum_failures

    def to_json(self) -> dict[str, Any]:
        return self.line.to_json()

    def checksum_error(self) -> ChecksumFailuresError | None:
        """The error to exit with when the cluster has corrupt pages (the backup is kept)."""
        if not self.checksum_failures:
            return None
        first = self.checksum_failures[0]
        total = sum(int(f["count"]) for f in self.checksum_failures)
        return ChecksumFailuresError(
            f"backup {self.id} was stored, but {total} page(s) failed their checksum "
            f"(first: {first['path']} block {first['blocks'][0]})",
            hint=f"see pgkura info {self.id}; the cluster has corrupt pages",
        )


def run_backup(
    cfg: Config,
    *,
    backup_type: str | None,
    force: bool,
    fast_checkpoint: bool = True,
    jobs: int,
    progress: Progress | None,
) -> BackupTaken:
    manifest = _take(cfg, backup_type, force, fast_checkpoint, jobs, progress)
    return BackupTaken(CatalogLine.of(manifest))


def _take(
    cfg: Config,
    backup_type: str | None,
    force: bool,
    fast_checkpoint: bool,
    jobs: int,
    progress: Progress | None,
) -> Manifest:
    repo = open_repository(cfg)
    if backup_type == "basebackup":
        # Through the replication protocol: no access to the data directory needed.
        from pgkura.physical.basebackup import backup_basebackup

        return backup_basebackup(
            repo, cfg, jobs=jobs, fast_checkpoint=fast_checkpoint, progress=progress
        )
    pgdata = Path(cfg.require_pgdata())
    if not (pgdata / "PG_VERSION").is_file() or not (pgdata / "global" / "pg_control").is_file():
        raise UsageError(
            f"{pgdata} is not a PostgreSQL data directory (no PG_VERSION or global/pg_control)",
            hint="point --pgdata at the cluster's data directory",
        )
    if backup_type is None:
        backup_type = "online" if running_postmaster_pid(pgdata) else "offline"
    if backup_type == "offline":
        from pgkura.physical.offline import backup_offline

        return backup_offline(
            repo,
            cfg.stanza,
            pgdata,
            pg_bin=cfg.pg_bin,
            search_path=cfg.pg_search_path,
            jobs=jobs,
            force=force,
            progress=progress,
        )
    if backup_type == "online":
        from pgkura.physical.online import backup_online

        return backup_online(
            repo, cfg, pgdata, jobs=jobs, fast_checkpoint=fast_checkpoint, progress=progress
        )
    raise UsageError(
        f"unknown backup type {backup_type!r}", hint="use offline, online or basebackup"
    )
