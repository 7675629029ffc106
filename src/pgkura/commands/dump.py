"""`pgkura dump`: a logical dump (pg_dump per database, pg_dumpall --globals-only) into the
repository."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.logical.dump import DumpRequest, take_dump
from pgkura.logical.records import DumpFacts, dump_facts
from pgkura.physical.backup import CatalogLine
from pgkura.progress import Progress


@dataclass(frozen=True)
class DumpTaken:
    """A logical dump that was stored: its catalog line (what ``info`` lists for it) and the
    dump's format and databases."""

    line: CatalogLine
    facts: DumpFacts

    @property
    def id(self) -> str:
        return self.line.id

    def to_json(self) -> dict[str, Any]:
        return {
            **self.line.to_json(),
            "format": self.facts.format,
            "whole_cluster": self.facts.whole_cluster,
            "databases": [d.name for d in self.facts.databases],
        }


def run_dump(
    cfg: Config,
    *,
    dbname: str | None,
    all_databases: bool = False,
    format: str = "custom",
    jobs: int | None = None,
    schemas: tuple[str, ...] = (),
    tables: tuple[str, ...] = (),
    exclude_tables: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> DumpTaken:
    request = DumpRequest(
        dbname=dbname,
        all_databases=all_databases,
        format=format,
        jobs=jobs,
        schemas=schemas,
        tables=tables,
        exclude_tables=exclude_tables,
    )
    request.check()  # before touching the repository or the server
    repo = open_repository(cfg)
    manifest = take_dump(repo, cfg, request, progress)
    return DumpTaken(CatalogLine.of(manifest), dump_facts(manifest))
