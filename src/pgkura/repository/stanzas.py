"""The stanza record (``stanzas/<stanza>.json``, docs/repository-format.md): the cluster a
stanza is bound to, one generation per cluster after each ``stanza upgrade``. Read and written
by repository/repo.py (``repo.stanza``, ``ensure_stanza``, ``upgrade_stanza``)."""

from __future__ import annotations

from pgkura.errors import RepositoryError
from pgkura.repository import layout

TYPE_CHECKING = False  # archive-push reads the stanza record once per WAL segment
if TYPE_CHECKING:
    from typing import Any

    from pgkura.repository.repo import Repository


class Generation:
    """One cluster a stanza has backed up: the first, and one more per ``stanza upgrade``
    (pg_upgrade makes a new cluster, with a new system identifier, of a newer major)."""

    __slots__ = ("created", "number", "pg_version", "system_identifier")

    def __init__(self, number: int, system_identifier: str, pg_version: int, created: str) -> None:
        self.number, self.system_identifier = number, system_identifier
        self.pg_version, self.created = pg_version, created

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.number,
            "system_identifier": self.system_identifier,
            "pg_version": self.pg_version,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Generation:
        return cls(
            int(data["generation"]),
            str(data["system_identifier"]),
            int(data["pg_version"]),
            data["created"],
        )


class StanzaInfo:
    """The stanza record: its generations, oldest first; the last one takes new WAL and
    backups. ``system_identifier`` and ``pg_version`` are the current generation's."""

    __slots__ = ("created", "generations", "name")

    def __init__(self, name: str, generations: list[Generation], created: str) -> None:
        self.name, self.generations, self.created = name, generations, created

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    @property
    def system_identifier(self) -> str:
        return self.current.system_identifier

    @property
    def pg_version(self) -> int:
        return self.current.pg_version

    def generation_of(self, system_identifier: str) -> Generation | None:
        for gen in self.generations:
            if gen.system_identifier == system_identifier:
                return gen
        return None

    def archive(self, generation: Generation) -> str:
        """The WAL archive of ``generation`` (layout.wal_archive)."""
        return layout.wal_archive(self.name, generation.number)

    def archive_for(self, system_identifier: str | None) -> str:
        """The WAL archive of the generation whose cluster is ``system_identifier`` (None: the
        current one); a RepositoryError when the stanza never had that cluster."""
        if system_identifier is None:
            return self.archive(self.current)
        gen = self.generation_of(system_identifier)
        if gen is None:
            raise RepositoryError(
                f"the cluster with system identifier {system_identifier} is not one of stanza "
                f"{self.name!r}'s ({self.describe()})",
                hint="point this cluster at its own --stanza",
            )
        return self.archive(gen)

    def describe(self) -> str:
        return "; ".join(
            f"generation {g.number}: PostgreSQL {g.pg_version}, system identifier "
            f"{g.system_identifier}"
            for g in self.generations
        )

    def refuse(self, system_identifier: str, pg_version: int | None) -> RepositoryError:
        """The error for a cluster that is not the current generation's."""
        old = self.generation_of(system_identifier)
        if old is not None:
            return RepositoryError(
                f"the cluster with system identifier {system_identifier} is generation "
                f"{old.number} of stanza {self.name!r} (PostgreSQL {old.pg_version}), which was "
                f"upgraded to generation {self.current.number} (PostgreSQL "
                f"{self.current.pg_version}, system identifier {self.system_identifier}): it "
                "takes no new WAL or backups",
                hint="back up the upgraded cluster; the old generation's backups stay "
                "restorable as they are",
            )
        theirs = f" (PostgreSQL {pg_version})" if pg_version else ""
        return RepositoryError(
            f"stanza {self.name!r} belongs to the cluster with system identifier "
            f"{self.system_identifier} (PostgreSQL {self.pg_version}), not {system_identifier}"
            f"{theirs}",
            hint="use another --stanza for this cluster; if it is the stanza's cluster after "
            "pg_upgrade, run pgkura --pgdata DIR stanza upgrade first",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system_identifier": self.system_identifier,
            "pg_version": self.pg_version,
            "created": self.created,
            "generations": [g.to_json() for g in self.generations],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StanzaInfo:
        if "generations" in data:
            generations = [Generation.from_json(g) for g in data["generations"]]
        else:  # written before generations existed (format version 1): one generation
            generations = [
                Generation(1, str(data["system_identifier"]), int(data["pg_version"]),
                           data["created"])
            ]  # fmt: skip
        return cls(data["name"], generations, data["created"])


def recorded_stanzas(repo: Repository) -> list[str]:
    """The stanzas that have a stanza record (a backup or an archived segment made it)."""
    names = []
    for obj in repo.storage.list(layout.STANZA_PREFIX):
        name = obj.key[len(layout.STANZA_PREFIX) :]
        if "/" not in name and name.endswith(".json"):
            names.append(name[: -len(".json")])
    return sorted(names)


def bind_new_stanza(
    repo: Repository, name: str, system_identifier: str, pg_version: int
) -> StanzaInfo:
    """``repo.ensure_stanza`` for a physical backup or an archived segment, which create the
    stanza on first use, except when another stanza of the repository already archives this
    cluster's WAL (its current generation's archive holds anything): that is refused. A
    mistyped ``--stanza`` would otherwise start a stanza of its own without a word, and one
    cluster's backups and WAL would go to two stanzas: backups no archived WAL follows,
    restores that end where their backup ended. A stanza of dumps only, or of offline backups
    only, does not count (such backups need no WAL). ``pgkura stanza create`` makes a second
    stanza of one cluster on purpose."""
    if repo.stanza(name) is None:
        other = _archiving_stanza(repo, name, system_identifier)
        if other is not None:
            raise RepositoryError(
                f"stanza {name!r} does not exist, and this cluster (system identifier "
                f"{system_identifier}) is backed up as stanza {other!r} of this repository, "
                "which archives its WAL",
                hint=f"use --stanza {other}; to give this cluster a second stanza on purpose, "
                f"create it first: pgkura --stanza {name} --pgdata DIR stanza create",
            )
    return repo.ensure_stanza(name, system_identifier, pg_version)


def _archiving_stanza(repo: Repository, name: str, system_identifier: str) -> str | None:
    """Another stanza bound to the cluster ``system_identifier`` whose WAL archive holds
    anything; None when there is none."""
    for other in recorded_stanzas(repo):
        if other == name:
            continue
        try:
            info = repo.stanza(other)
        except RepositoryError:
            continue  # a damaged record is verify's to report, not this one's to judge
        if info is None or info.system_identifier != system_identifier:
            continue
        if next(iter(repo.wal.list(info.archive(info.current))), None) is not None:
            return other
    return None
