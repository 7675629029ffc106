"""`pgkura info [ID]`: the catalog of backups."""

from __future__ import annotations

from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.physical.backup import summary
from pgkura.repository.manifest import list_backup_ids, read_manifest, resolve_backup_id


def run_info(cfg: Config, backup_id: str | None = None) -> dict[str, Any]:
    repo = open_repository(cfg)
    stanza = cfg.stanza
    ids = (
        [resolve_backup_id(repo, stanza, backup_id)] if backup_id else list_backup_ids(repo, stanza)
    )
    backups = [summary(read_manifest(repo, stanza, i)) for i in ids]
    info = repo.stanza(stanza)
    return {
        "repository": repo.storage.location,
        "stanza": stanza,
        "system_identifier": info.system_identifier if info else None,
        "pg_version": info.pg_version if info else None,
        "backups": backups,
    }
