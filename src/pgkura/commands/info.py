"""`pgkura info`: the catalog of a stanza, its WAL archive and its recoverable window.

A stanza that was upgraded (``pgkura stanza upgrade``) shows each generation: its cluster, its
backups, its own WAL archive and its own recoverable window; the top-level ``timelines`` and
``window`` are the current generation's.
"""

from __future__ import annotations

from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import CorruptionError
from pgkura.physical.backup import summary
from pgkura.physical.window import wal_facts
from pgkura.repository.manifest import list_backup_ids, read_manifest, resolve_backup_id


def run_info(cfg: Config, backup_id: str | None = None) -> dict[str, Any]:
    repo = open_repository(cfg)
    stanza = cfg.stanza
    ids = (
        [resolve_backup_id(repo, stanza, backup_id)] if backup_id else list_backup_ids(repo, stanza)
    )
    # One damaged manifest must not hide the others: it is listed as damaged.
    manifests = []
    damaged: list[dict[str, Any]] = []
    for i in ids:
        try:
            manifests.append(read_manifest(repo, stanza, i))
        except CorruptionError as exc:
            damaged.append({"id": i, "stanza": stanza, "damaged": exc.message})
    info = repo.stanza(stanza)
    out: dict[str, Any] = {
        "repository": repo.location,
        "stanza": stanza,
        "system_identifier": info.system_identifier if info else None,
        "pg_version": info.pg_version if info else None,
        "backups": [summary(m) for m in manifests],
        "damaged": damaged,
    }
    for entry, m in zip(out["backups"], manifests, strict=True):
        entry["last_drill"] = repo.drills.summary(stanza, entry["id"])
        gen = info.generation_of(m.system_identifier) if info else None
        entry["generation"] = gen.number if gen else None
    if backup_id is None and info is None:
        out["generations"] = []
        out.update(wal_facts(repo, stanza, manifests))
    elif backup_id is None and info is not None:
        out["generations"] = [
            {
                **gen.to_json(),
                "backups": sum(m.system_identifier == gen.system_identifier for m in manifests),
                **wal_facts(
                    repo,
                    info.archive(gen),
                    [m for m in manifests if m.system_identifier == gen.system_identifier],
                ),
            }
            for gen in info.generations
        ]
        current = out["generations"][-1]
        keys = ("timelines", "window", "window_problem")
        out.update({k: current[k] for k in keys if k in current})
    return out
