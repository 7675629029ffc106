"""Logical dumps: pg_dumpall --globals-only and pg_dump per database, streamed into the block store.

Custom, tar and plain dumps go from pg_dump's stdout straight into the content-defined chunker,
with no local copy. A directory-format dump (the one pg_dump can write in parallel) is written to
a scratch directory first, then each of its files is stored. pg_dump's own compression is turned
off: the repository's codec compresses each block, and uncompressed output is what lets an
unchanged table dedup against the previous dump.

Nothing is recorded until every tool has succeeded: the manifest is written last, so a pg_dump
that fails midway leaves only unreferenced blocks (no command deletes them yet).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.errors import PostgresError, UsageError
from pgkura.logical.records import FORMATS, GLOBALS_PATH, SINGLE_FILE, DatabaseDump, DumpFacts
from pgkura.logical.streams import store_stream
from pgkura.logical.tools import (
    PgTools,
    ToolProcess,
    connect_maintenance,
    conninfo,
    find_tools,
    tool_message,
)
from pgkura.pg.versions import capabilities, major_of_version_num
from pgkura.physical.backup import new_backup_id, stored_bytes
from pgkura.progress import NoProgress, Progress
from pgkura.repository.blocks import BlockIndex, PackWriter
from pgkura.repository.locks import backup_lock
from pgkura.repository.manifest import FileEntry, Manifest, write_manifest
from pgkura.repository.repo import Repository, iso, utc_now
from pgkura.scratch import scratch_dir


@dataclass(frozen=True)
class DumpRequest:
    dbname: str | None = None
    all_databases: bool = False
    format: str = "custom"
    jobs: int | None = None
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()

    def check(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(
                f"unknown dump format {self.format!r}", hint="use " + ", ".join(FORMATS)
            )
        if self.all_databases and self.dbname is not None:
            raise UsageError(
                "--all and --dbname exclude each other",
                hint="dump one database with --dbname DB, or every database with --all",
            )
        if not self.all_databases and not self.dbname:
            raise UsageError(
                "no database to dump", hint="name one with --dbname DB, or dump all with --all"
            )
        if self.all_databases and (self.schemas or self.tables or self.exclude_tables):
            raise UsageError(
                "--schema, --table and --exclude-table apply to one database, not to --all",
                hint="dump that database with --dbname DB and the filters",
            )
        if self.jobs not in (None, 1) and self.format != "directory":
            raise UsageError(
                f"pg_dump dumps in parallel only in directory format, not {self.format}",
                hint="add --format directory, or drop --jobs",
            )


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    version: str
    system_identifier: str
    superuser: bool
    databases: dict[str, DatabaseDump]  # every database that accepts connections, by name
    templates: frozenset[str]


def _one(conn: Any, query: str) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def server_facts(conn: Any) -> ServerFacts:
    version_num = int(_one(conn, "SHOW server_version_num"))
    locale = capabilities(major_of_version_num(version_num), "the server").pg_database_locale_sql
    rows = conn.execute(
        "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, "
        f"datctype, {locale}, pg_database_size(oid), datistemplate FROM pg_database "
        "WHERE datallowconn ORDER BY datname"
    ).fetchall()
    databases = {
        r[0]: DatabaseDump(
            name=r[0],
            owner=r[1],
            encoding=r[2],
            collate=r[3],
            ctype=r[4],
            locale_provider=str(r[5]),
            icu_locale=r[6],
            size_bytes=int(r[7]),
            prefix="",
        )
        for r in rows
    }
    try:
        sysid = str(_one(conn, "SELECT system_identifier FROM pg_control_system()"))
    except Exception as exc:  # psycopg's errors; only the message matters here
        raise PostgresError(
            f"cannot read the server's system identifier: {str(exc).strip()}",
            hint="connect as a superuser or a member of pg_monitor",
        ) from None
    return ServerFacts(
        version_num=version_num,
        version=str(_one(conn, "SHOW server_version")),
        system_identifier=sysid,
        superuser=bool(_one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")),
        databases=databases,
        templates=frozenset(r[0] for r in rows if r[8]),
    )


def _chosen_databases(req: DumpRequest, facts: ServerFacts) -> list[DatabaseDump]:
    if req.all_databases:
        names = [n for n in facts.databases if n not in facts.templates]
    else:
        assert req.dbname is not None
        if req.dbname not in facts.databases:
            raise UsageError(
                f"database {req.dbname!r} does not exist on the server (or takes no connections)",
                hint="list the databases with: psql -l",
            )
        names = [req.dbname]
    return [
        DatabaseDump(**{**facts.databases[n].to_json(), "prefix": f"db{i:04d}"})
        for i, n in enumerate(names)
    ]


def _pg_dump_args(
    tools: PgTools, cfg: Config, req: DumpRequest, db: DatabaseDump, out_dir: str | None
) -> list[str]:
    args = [
        tools.path("pg_dump"),
        f"--dbname={conninfo(cfg, db.name)}",
        f"--format={req.format}",
        "--no-password",
    ]
    if req.format in ("custom", "directory"):
        args.append("--compress=0")
    if out_dir is not None:
        args += [f"--file={out_dir}", f"--jobs={req.jobs or 1}"]
    args += [f"--schema={s}" for s in req.schemas]
    args += [f"--table={t}" for t in req.tables]
    args += [f"--exclude-table={t}" for t in req.exclude_tables]
    if req.schemas or req.tables:
        args.append("--strict-names")  # a name that matches nothing is an error, not a no-op
    return args


def _stream_tool(
    args: list[str], writer: PackWriter, path: str, what: str, progress: Progress
) -> FileEntry:
    with ToolProcess(args, stdout=subprocess.PIPE) as proc:
        entry = store_stream(writer, proc.stdout, path, progress=progress)
        rc, err = proc.wait()
    if rc != 0:
        raise PostgresError(
            f"{what} failed, and the dump was not recorded: {tool_message(err)}",
            hint="fix what the message says and dump again; the partial data is reclaimed "
            "by garbage collection",
        )
    return entry


def _dump_directory(
    args: list[str], writer: PackWriter, db: DatabaseDump, scratch: Path, progress: Progress
) -> list[FileEntry]:
    with ToolProcess(args) as proc:
        rc, err = proc.wait()
    if rc != 0:
        raise PostgresError(
            f"pg_dump of database {db.name!r} failed, and the dump was not recorded: "
            f"{tool_message(err)}",
            hint="fix what the message says and dump again",
        )
    entries = []
    for path in sorted(p for p in scratch.rglob("*") if p.is_file()):
        rel = path.relative_to(scratch).as_posix()
        with open(path, "rb") as f:
            entries.append(store_stream(writer, f, f"{db.prefix}/{rel}", progress=progress))
        path.unlink()  # keep the scratch space to one copy of the dump at most
    return entries


def take_dump(
    repo: Repository, cfg: Config, req: DumpRequest, progress: Progress | None = None
) -> Manifest:
    """Dump the globals and the chosen databases; commit the dump by writing its manifest."""
    req.check()
    progress = progress or NoProgress()
    conn = connect_maintenance(cfg)
    try:
        facts = server_facts(conn)
    finally:
        conn.close()
    databases = _chosen_databases(req, facts)
    major = major_of_version_num(facts.version_num)
    tools = find_tools(cfg.pg_bin, major, search_path=cfg.pg_search_path)
    repo.ensure_stanza(cfg.stanza, facts.system_identifier, major)
    with backup_lock(repo, cfg.stanza):
        started = utc_now()
        backup_id = new_backup_id(started)
        index = BlockIndex(repo).load(write_back=True)
        writer = PackWriter(index)
        progress.start(f"dump {backup_id}", sum(d.size_bytes for d in databases))
        globals_args = [tools.path("pg_dumpall"), "--globals-only", "--no-password"]
        if cfg.dbconn:
            # pg_dumpall ignores the connection string's dbname: it visits several databases.
            globals_args.append(f"--dbname={conninfo(cfg, None)}")
        if not facts.superuser:
            # Role passwords live in pg_authid, which only superusers may read.
            globals_args.append("--no-role-passwords")
        files = [
            _stream_tool(globals_args, writer, GLOBALS_PATH, "pg_dumpall --globals-only", progress)
        ]
        for db in databases:
            if req.format == "directory":
                with scratch_dir("dump") as tmp:
                    out = Path(tmp) / "dump"
                    args = _pg_dump_args(tools, cfg, req, db, str(out))
                    files += _dump_directory(args, writer, db, out, progress)
            else:
                args = _pg_dump_args(tools, cfg, req, db, None)
                path = f"{db.prefix}/{SINGLE_FILE}"
                files.append(
                    _stream_tool(args, writer, path, f"pg_dump of database {db.name!r}", progress)
                )
        writer.flush()
        progress.finish()
        dump = DumpFacts(
            format=req.format,
            whole_cluster=req.all_databases,
            server_version=facts.version,
            server_version_num=facts.version_num,
            pg_dump_version=tools.version,
            databases=tuple(databases),
        )
        manifest = Manifest(
            id=backup_id,
            stanza=cfg.stanza,
            kind="logical",
            method="pg_dumpall" if req.all_databases else "pg_dump",
            started=iso(started),
            finished=iso(utc_now()),
            pg_version=major,
            system_identifier=facts.system_identifier,
            files=tuple(files),
            size_bytes=sum(f.size for f in files),
            stored_bytes=stored_bytes(index, files),
            new_bytes=writer.bytes_written,
            options={
                "format": req.format,
                "jobs": req.jobs or 1,
                "schemas": list(req.schemas),
                "tables": list(req.tables),
                "exclude_tables": list(req.exclude_tables),
                "compression": repo.codec.spec,
                "role_passwords": facts.superuser,
            },
            extra=dump.to_json(),
        )
        write_manifest(repo, manifest)
        return manifest
