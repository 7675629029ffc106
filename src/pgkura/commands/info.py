"""`pgkura info`: the catalog of a stanza, its WAL archive and its recoverable window.

A stanza that was upgraded (``pgkura stanza upgrade``) shows each generation: its cluster, its
backups, its own WAL archive and its own recoverable window; the top-level ``timelines`` and
``window`` are the current generation's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import CorruptionError, UsageError
from pgkura.physical.backup import CatalogLine as CatalogLine
from pgkura.physical.window import wal_facts
from pgkura.repository.manifest import listed_backups, read_manifest, resolve_backup_id
from pgkura.repository.repo import Repository


@dataclass(frozen=True)
class InfoReport:
    """The catalog of a stanza, as ``info --output json`` shows it.

    ``backups`` are catalog lines (physical/backup.py's ``CatalogLine``). For the whole
    stanza, ``generations`` lists each generation with its own WAL facts, and ``wal`` holds
    the current generation's ``timelines``, ``window`` and ``window_problem`` (when there is
    one); for one backup both are left out."""

    repository: str
    stanza: str
    system_identifier: str | None
    pg_version: int | None
    backups: tuple[CatalogLine, ...]
    damaged: tuple[dict[str, Any], ...]
    generations: tuple[dict[str, Any], ...] | None = None
    wal: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repository": self.repository,
            "stanza": self.stanza,
            "system_identifier": self.system_identifier,
            "pg_version": self.pg_version,
            "backups": [b.to_json() for b in self.backups],
            "damaged": list(self.damaged),
        }
        if self.generations is not None:
            out["generations"] = list(self.generations)
        out.update(self.wal)
        return out


def backup_kind(cfg: Config, backup_id: str) -> str:
    """``physical`` or ``logical``: what the backup ``backup_id`` (or ``latest``) is."""
    repo = open_repository(cfg)
    return read_manifest(repo, cfg.stanza, resolve_backup_id(repo, cfg.stanza, backup_id)).kind


def run_info(cfg: Config, backup_id: str | None = None) -> InfoReport:
    """The catalog of the stanza, or of the one backup ``backup_id``."""
    repo = open_repository(cfg)
    stanza = cfg.stanza
    listed = listed_backups(repo, stanza)  # one listing; the sizes let the cache answer
    ids = sorted(listed)
    ids = [resolve_backup_id(repo, stanza, backup_id, ids)] if backup_id else ids
    # One damaged manifest must not hide the others: it is listed as damaged.
    manifests = []
    damaged: list[dict[str, Any]] = []
    for i in ids:
        try:
            manifests.append(read_manifest(repo, stanza, i, listed_size=listed.get(i)))
        except CorruptionError as exc:
            damaged.append({"id": i, "stanza": stanza, "damaged": exc.message})
    info = repo.stanza(stanza)
    if info is None and not ids:
        _refuse_unknown(repo, stanza)
    from pgkura.repository.pins import pins

    pinned = pins(repo, stanza)
    backups = []
    for m in manifests:
        gen = info.generation_of(m.system_identifier) if info else None
        pin = pinned.get(m.id)
        backups.append(
            CatalogLine.of(
                m,
                last_drill=repo.drills.summary(stanza, m.id),
                generation=gen.number if gen else None,
                pinned=None if pin is None else {"pitr": pin.pitr, "since": pin.pinned},
            )
        )
    report = InfoReport(
        repository=repo.location,
        stanza=stanza,
        system_identifier=info.system_identifier if info else None,
        pg_version=info.pg_version if info else None,
        backups=tuple(backups),
        damaged=tuple(damaged),
    )
    if backup_id is not None:
        return report
    if info is None:
        return replace(report, generations=(), wal=wal_facts(repo, stanza, manifests))
    generations = tuple(
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
    )
    current = generations[-1]
    keys = ("timelines", "window", "window_problem", "window_warning")
    return replace(
        report, generations=generations, wal={k: current[k] for k in keys if k in current}
    )


def _refuse_unknown(repo: Repository, stanza: str) -> None:
    """A stanza with no record and no backup, in a repository that has others: a mistyped
    --stanza, not an empty stanza (a repository without any says "no backups yet")."""
    from pgkura.repository.stanzas import recorded_stanzas

    others = recorded_stanzas(repo)
    if others:
        raise UsageError(
            f"stanza {stanza!r} does not exist in {repo.location}: nothing was backed up or "
            f"archived under that name (its stanzas: {', '.join(others)})",
            hint=f"use --stanza {others[0]}" if len(others) == 1 else "name one with --stanza",
        )
