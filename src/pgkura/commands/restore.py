"""`pgkura restore`: write a backup back into a data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import UsageError
from pgkura.physical.restore import (
    PhysicalRestorer,
    RestoreStats,
    check_targets,
    parse_tablespace_map,
    plan_restore,
)
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.manifest import Manifest, read_manifest, resolve_backup_id


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    target: Path
    stats: RestoreStats


def run_restore(
    cfg: Config,
    *,
    target_dir: str,
    backup_id: str | None,
    tablespace_map: list[str],
    delta: bool,
    jobs: int,
    progress: Progress | None,
) -> RestoreResult:
    repo = open_repository(cfg)
    chosen = resolve_backup_id(repo, cfg.stanza, backup_id)
    manifest = read_manifest(repo, cfg.stanza, chosen)
    if manifest.kind != "physical":
        raise UsageError(
            f"backup {chosen} is a logical dump, not a physical backup",
            hint="restore it with --dbname DB instead of --target-dir",
        )
    target = Path(target_dir).absolute()
    plan = plan_restore(manifest, target, parse_tablespace_map(tablespace_map))
    check_targets(plan, delta)
    index = BlockIndex(repo).load()
    restorer = PhysicalRestorer(index, manifest, plan, jobs=jobs, delta=delta, progress=progress)
    stats = restorer.run()
    return RestoreResult(manifest, target, stats)
