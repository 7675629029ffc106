"""A logical dump brought back into a server, or its table of contents listed (`pgkura restore
ID --dbname DB`, `--list`): choosing the dump and the tools, then logical/restore.py's work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgkura.config import Config
from pgkura.errors import BackupNotFoundError, UsageError
from pgkura.logical.records import DumpFacts, dump_facts
from pgkura.logical.restore import (
    RestoreOptions,
    check_tables,
    plan_targets,
    prepare_database,
    restore_database,
    restore_globals,
)
from pgkura.logical.toc import read_toc
from pgkura.logical.tools import PgTools, connect_maintenance, find_tools
from pgkura.pg.versions import major_of_version_num
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex, BlockReader
from pgkura.repository.manifest import (
    Manifest,
    list_backup_ids,
    read_manifest,
    resolve_backup_id,
)
from pgkura.repository.repo import Repository


@dataclass(frozen=True)
class LogicalRestoreRequest:
    backup_id: str | None = None
    dbname: str | None = None
    options: RestoreOptions = field(default_factory=RestoreOptions)
    list_only: bool = False


@dataclass(frozen=True)
class LogicalRestoreResult:
    manifest: Manifest
    format: str
    databases: list[tuple[str, str]] = field(default_factory=list)  # (dumped, restored into)
    created: list[str] = field(default_factory=list)
    globals_restored: bool = False
    skipped_globals: list[str] = field(default_factory=list)
    listing: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "logical",
            "backup": self.manifest.id,
            "format": self.format,
            "databases": [
                {"dumped": dumped, "restored_into": into, "created": into in self.created}
                for dumped, into in self.databases
            ],
            "globals_restored": self.globals_restored,
            "skipped_globals": list(self.skipped_globals),
            "listing": self.listing,
        }


def _choose(repo: Repository, stanza: str, wanted: str | None) -> Manifest:
    if wanted in (None, "latest"):
        for backup_id in reversed(list_backup_ids(repo, stanza)):
            manifest = read_manifest(repo, stanza, backup_id)
            if manifest.kind == "logical":
                return manifest
        raise BackupNotFoundError(
            f"stanza {stanza!r} has no logical dump",
            hint="take one with: pgkura dump --dbname DB",
        )
    assert wanted is not None
    return read_manifest(repo, stanza, resolve_backup_id(repo, stanza, wanted))


def _tools(cfg: Config, facts: DumpFacts, list_only: bool) -> PgTools:
    # pg_restore reads archives of its own version and older: at least the pg_dump's that
    # wrote the dump.
    dumped_by = int(facts.pg_dump_version.split(".")[0])
    if list_only:
        return find_tools(cfg.pg_bin, dumped_by, search_path=cfg.pg_search_path)
    conn = connect_maintenance(cfg)
    try:
        row = conn.execute("SHOW server_version_num").fetchone()
    finally:
        conn.close()
    target_major = major_of_version_num(int(row[0])) if row else 0
    # The target server's own pg_restore and psql when they can read the dump: what they
    # send, the server understands (a newer psql's script may set what it does not know).
    return find_tools(
        cfg.pg_bin,
        max(target_major, dumped_by),
        prefer=target_major,
        search_path=cfg.pg_search_path,
    )


def listing(tools: PgTools, reader: BlockReader, manifest: Manifest, facts: DumpFacts) -> str:
    parts = []
    for db in facts.databases:
        parts.append(f";\n; database {db.name} (owner {db.owner}, {facts.format} format)\n;\n")
        if facts.format == "plain":
            parts.append("; a plain SQL script has no table of contents\n")
        else:
            parts.append(read_toc(tools, reader, manifest, db, facts.format))
    return "".join(parts)


def restore_dump(
    cfg: Config, repo: Repository, req: LogicalRestoreRequest, progress: Progress | None
) -> LogicalRestoreResult:
    """Restore (or list) the dump ``req`` names; the caller holds a shared lock."""
    manifest = _choose(repo, cfg.stanza, req.backup_id)
    facts = dump_facts(manifest)  # refuses a physical backup with a hint
    reader = BlockReader(BlockIndex(repo).load())
    tools = _tools(cfg, facts, req.list_only)
    if req.list_only:
        return LogicalRestoreResult(
            manifest, facts.format, listing=listing(tools, reader, manifest, facts)
        )
    if not req.dbname:
        raise UsageError(
            "a logical restore needs the database to restore into",
            hint=f"add --dbname DB (see the databases with: pgkura restore {manifest.id} --list)",
        )
    opts = req.options
    if facts.format == "plain" and opts.no_owner:
        raise UsageError(
            "--no-owner needs a custom, directory or tar dump; a plain SQL script sets owners "
            "itself",
            hint="restore without --no-owner, or dump with --format custom",
        )
    cluster = facts.whole_cluster and req.dbname == "postgres"
    if cluster and (opts.tables or opts.schemas):
        raise UsageError(
            "--table and --schema restore from one database, not from a whole cluster",
            hint="name the database with --dbname",
        )
    targets = plan_targets(cfg, facts, req.dbname, cluster, opts)
    check_tables(tools, reader, manifest, facts, targets, opts)
    # Nothing has changed on the target server up to here.
    skipped: list[str] = []
    if cluster:
        skipped = restore_globals(tools, cfg, reader, manifest)
    created = []
    if progress is not None:
        progress.start(f"restore {manifest.id}", sum(t.dump.size_bytes for t in targets))
    try:
        for t in targets:
            made = prepare_database(cfg, t, facts, opts)
            if made:
                created.append(t.name)
            restore_database(
                tools, cfg, reader, manifest, facts, t, opts, created=made, progress=progress
            )
    finally:
        if progress is not None:
            progress.finish()
    return LogicalRestoreResult(
        manifest,
        facts.format,
        databases=[(t.dump.name, t.name) for t in targets],
        created=created,
        globals_restored=cluster,
        skipped_globals=skipped,
    )
