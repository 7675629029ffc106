"""Drill records: the result of the latest restore drill of each backup
(docs/repository-format.md, "Drills"), written by `verify --restore` and read by `info`.

A record is plain JSON (not sealed): it is a report about a backup, never needed to restore one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout

if TYPE_CHECKING:
    from pgkura.repository.repo import Repository


class DrillStore:
    """The drill records of a repository, one per backup (each drill replaces the last)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def record(self, stanza: str, backup_id: str, result: dict[str, Any]) -> None:
        """Keep ``result`` as the latest drill of ``backup_id``."""
        self._repo.put_record(
            layout.drill_key(stanza, backup_id), json.dumps(result, indent=1).encode()
        )

    def latest(self, stanza: str, backup_id: str) -> dict[str, Any] | None:
        """The latest drill's record, or None when the backup was never drilled (or its
        record cannot be read as JSON)."""
        try:
            data = json.loads(self._repo.get_record(layout.drill_key(stanza, backup_id)))
        except (ObjectNotFound, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def all(self, stanza: str) -> dict[str, dict[str, Any]]:
        """The latest drill of every drilled backup of ``stanza``, by backup id: one listing
        and one read per drilled backup (metrics), not one read per backup."""
        prefix = layout.drill_prefix(stanza)
        out: dict[str, dict[str, Any]] = {}
        for obj in self._repo.storage.list(prefix):
            name = obj.key[len(prefix) :]
            if "/" in name or not name.endswith(".json"):
                continue
            data = self.latest(stanza, name[: -len(".json")])
            if data is not None:
                out[name[: -len(".json")]] = data
        return out

    def summary(self, stanza: str, backup_id: str) -> dict[str, Any] | None:
        """When the latest drill of ``backup_id`` finished and whether it passed, for info."""
        data = self.latest(stanza, backup_id)
        if data is None:
            return None
        return {"when": data.get("finished"), "passed": bool(data.get("passed"))}

    def delete(self, stanza: str, backup_id: str) -> None:
        """Forget the drills of a deleted backup."""
        self._repo.storage.delete(layout.drill_key(stanza, backup_id))
