"""What a logical dump records beside its files: typed views of a logical Manifest's ``extra``.

A dump's files are ``globals.sql`` (``pg_dumpall --globals-only``: roles, memberships,
tablespaces) and, per database, either one file ``<prefix>/dump`` (custom, tar and plain
formats) or the files of a directory-format dump under ``<prefix>/`` (``toc.dat`` and one data
file per table). The prefix is ``db<N>``, not the database's name, which may hold any character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgkura.errors import UsageError
from pgkura.repository.manifest import FileEntry, Manifest

FORMATS = ("custom", "directory", "tar", "plain")
GLOBALS_PATH = "globals.sql"
SINGLE_FILE = "dump"


@dataclass(frozen=True)
class DatabaseDump:
    """One dumped database and what is needed to create it again."""

    name: str
    owner: str
    encoding: str
    collate: str
    ctype: str
    size_bytes: int
    prefix: str
    locale_provider: str = "c"  # pg_database.datlocprovider: c (libc) or i (ICU), 15+
    icu_locale: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "encoding": self.encoding,
            "collate": self.collate,
            "ctype": self.ctype,
            "locale_provider": self.locale_provider,
            "icu_locale": self.icu_locale,
            "size_bytes": self.size_bytes,
            "prefix": self.prefix,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DatabaseDump:
        return cls(
            name=d["name"],
            owner=d["owner"],
            encoding=d["encoding"],
            collate=d["collate"],
            ctype=d["ctype"],
            size_bytes=int(d.get("size_bytes", 0)),
            prefix=d["prefix"],
            locale_provider=d.get("locale_provider", "c"),
            icu_locale=d.get("icu_locale"),
        )


@dataclass(frozen=True)
class DumpFacts:
    """The facts of a logical dump, as kept in its manifest's ``extra``."""

    format: str
    whole_cluster: bool
    server_version: str
    server_version_num: int
    pg_dump_version: str
    databases: tuple[DatabaseDump, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "whole_cluster": self.whole_cluster,
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "pg_dump_version": self.pg_dump_version,
            "databases": [d.to_json() for d in self.databases],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DumpFacts:
        return cls(
            format=d["format"],
            whole_cluster=bool(d.get("whole_cluster", False)),
            server_version=d["server_version"],
            server_version_num=int(d["server_version_num"]),
            pg_dump_version=d["pg_dump_version"],
            databases=tuple(DatabaseDump.from_json(x) for x in d.get("databases", ())),
        )


def dump_facts(manifest: Manifest) -> DumpFacts:
    """The dump facts of a logical manifest; a clear error for a physical one."""
    if manifest.kind != "logical":
        raise UsageError(
            f"backup {manifest.id} is a physical backup ({manifest.method}), not a logical dump",
            hint=f"restore it into a data directory with: pgkura restore --backup {manifest.id} "
            "--target-dir DIR",
        )
    return DumpFacts.from_json(manifest.extra)


def database_files(manifest: Manifest, db: DatabaseDump) -> list[FileEntry]:
    """The stored files of one database's dump, in the order they were written."""
    prefix = db.prefix + "/"
    return [f for f in manifest.files if f.type == "file" and f.path.startswith(prefix)]


def globals_file(manifest: Manifest) -> FileEntry | None:
    for f in manifest.files:
        if f.path == GLOBALS_PATH:
            return f
    return None
