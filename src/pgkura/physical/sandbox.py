"""The sandbox: a private PostgreSQL started from a backup restored into a scratch directory.

It can never touch the live cluster or the repository: it listens on no TCP address, only on a
socket in its own 0700 directory and on its own port; archiving is off and archive_command
empty; its pg_hba.conf is its own (trust, local socket only). It runs as the data directory's
owner, and is always stopped and removed afterwards, also after errors and Ctrl-C, unless
``keep`` is set (then it says how to connect).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pgkura.config import Config
from pgkura.errors import PgkuraError
from pgkura.physical.recovery import RecoveryTarget
from pgkura.physical.sparse import Selection, SparseRequest
from pgkura.scratch import KEPT, make_scratch

# Room for WAL replay and the server's own files beyond the restored data.
SPACE_MARGIN = 1.2
WAL_ALLOWANCE = 256 * 1024 * 1024


def _owner() -> str | None:
    """Who runs the sandbox server: ourselves, or postgres when we are root."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class Sandbox:
    cfg: Config
    target: RecoveryTarget
    backup_id: str | None = None
    keep: bool = False
    scratch_parent: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    server: Any = None
    scratch: Path | None = None
    backup: Any = None
    say: Any = None
    #: restore only what a table restore needs (physical/sparse.py); None restores it all
    sparse: SparseRequest | None = None
    selection: Selection | None = None
    _index: Any = None  # the block index, once loaded to choose the files

    def describe_target(self) -> str:
        """Where the sandbox's recovery stopped, for the drill record."""
        if self.backup is not None and self.backup.method == "offline":
            return "none: an offline backup starts as it was taken"
        return self.target.describe()

    def __enter__(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.keep and self.server is not None and exc_type is None:
            assert self.scratch is not None
            (self.scratch / KEPT).touch()  # the next run's sweep leaves it alone
            if self.say:
                self.say(
                    f"sandbox kept: psql -h {self.server.socket_dir} -p {self.server.port} "
                    f"-U {self.superuser()}; stop it with pg_ctl stop -D {self.server.pgdata} "
                    f"and remove {self.scratch}"
                )
            return
        if self.server is not None:
            self.server.stop(mode="immediate")
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _start(self) -> None:
        from pgkura.pg.server import LocalServer, free_port, make_owned_dir
        from pgkura.physical.choose import choose_backup
        from pgkura.physical.restore_job import RestoreRequest, restore_backup, wal_reader
        from pgkura.repository.repo import open_repository

        repo = open_repository(self.cfg)
        choice = choose_backup(
            repo, self.cfg.stanza, self.target, self.backup_id, wal_reader(self.cfg)
        )
        self.backup = choice.manifest
        self.note = choice.note
        if self.backup.method == "offline" and self.target.kind == "immediate":
            # The consistency point is the default of a drill and a table restore; an offline
            # backup is consistent as taken and starts without recovery, so it takes no target.
            self.target = RecoveryTarget()
        bin_dir = self._programs()
        size = self.backup.size_bytes
        if self.sparse is not None:
            self.selection = self._select(repo)
            if self.selection is not None:
                size = self.selection.restored_bytes
        parent = Path(self.scratch_parent or os.environ.get("TMPDIR") or "/tmp")
        needed = int(size * SPACE_MARGIN) + WAL_ALLOWANCE
        free = shutil.disk_usage(parent).free
        if free < needed:
            raise PgkuraError(
                f"{parent} has {free // 2**20} MiB free; the sandbox needs about "
                f"{needed // 2**20} MiB (backup {self.backup.id} is "
                f"{self.backup.size_bytes // 2**20} MiB)",
                hint="free space, or point TMPDIR at a larger file system",
            )
        self.scratch = make_scratch("sandbox", parent)
        user = _owner()
        make_owned_dir(self.scratch, user)
        sockets = make_owned_dir(self.scratch / "sock", user)
        pgdata = self.scratch / "pgdata"
        mapping = [f"{ts.oid}={self.scratch / f'ts-{ts.oid}'}" for ts in self.backup.tablespaces]
        started = time.monotonic()
        request = RestoreRequest(
            target_dir=str(pgdata),
            backup_id=self.backup.id,
            tablespace_map=mapping,
            jobs=len(os.sched_getaffinity(0)),
            target=self.target,
            archive_mode_off=True,
            only=self.selection.paths if self.selection is not None else None,
            durable=False,
        )
        restore_backup(repo, self.cfg, request, None, self._index)
        self.timings["restore"] = time.monotonic() - started
        self._isolate(pgdata)
        if user is not None:
            shutil.chown(self.scratch, user, user)
            for root, dirs, files in os.walk(self.scratch):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), *_ids(user))
        self.server = LocalServer(pgdata, free_port(), sockets, bin_dir, user)
        started = time.monotonic()
        try:
            self.server.start(timeout=3600)
            self.server.superuser = self._find_superuser()
            if self.backup.method != "offline":
                self.server.wait_for_promotion(timeout=3600, dbname=self._probe_db())
        except DatabaseMissing:
            raise
        except PgkuraError as exc:
            if self.selection is not None:
                raise SparseFallback(
                    f"the sandbox with only the catalogs and the tables asked for did not "
                    f"start ({exc.message})"
                ) from None
            raise PgkuraError(
                f"the sandbox did not start from backup {self.backup.id}: {exc.message}",
                hint="the server log above says why (missing WAL, a target that was never "
                "reached, damaged data)",
            ) from None
        self.timings["recovery"] = time.monotonic() - started

    def _programs(self) -> Path:
        """The programs that start the backup: only its own major's start its data directory."""
        from pgkura.pg.binaries import find_pg_bin

        if self.backup.kind != "physical":
            raise PgkuraError(
                f"backup {self.backup.id} is a logical dump; a sandbox starts from a physical "
                "backup",
                hint="choose a physical backup with --backup, or restore the dump with --dbname",
            )
        return find_pg_bin(
            self.cfg.pg_bin,
            major=self.backup.pg_version,
            search_path=self.cfg.pg_search_path,
            what=f"backup {self.backup.id}",
        )

    def _isolate(self, pgdata: Path) -> None:
        """Settings that keep the sandbox away from everything else, last so they win."""
        hba = pgdata / "pgkura_sandbox_hba.conf"
        hba.write_text("local all all trust\n")
        lines = [
            "listen_addresses = ''",
            "archive_mode = 'off'",
            "archive_command = ''",
            f"hba_file = '{hba}'",
            "logging_collector = 'off'",
            "shared_preload_libraries = ''",
        ]
        if self.selection is not None:
            # Replay reaches relations that were left out (see physical/sparse.py), and
            # nothing may read them afterwards.
            lines += ["ignore_invalid_pages = 'on'", "autovacuum = 'off'"]
        with open(pgdata / "postgresql.auto.conf", "a") as f:
            f.write("\n# pgkura sandbox: private, never archives\n" + "\n".join(lines) + "\n")
        # A restored standby.signal would keep the sandbox in recovery for ever.
        (pgdata / "standby.signal").unlink(missing_ok=True)

    def _select(self, repo: Any) -> Selection | None:
        """The files a sparse restore writes, or None (with the reason said) when the backup
        has to be restored whole."""
        from pgkura.physical.sparse import NotSparse, select
        from pgkura.repository.blocks import BlockIndex, BlockReader

        assert self.sparse is not None
        self._index = BlockIndex(repo).load()
        reader = BlockReader(self._index)

        def read(entry: Any) -> bytes:
            ids = [bytes.fromhex(b) for b in entry.blocks]
            return b"".join(reader.read_many(ids, entry.path))

        try:
            selection = select(self.backup, self.sparse, read)
        except NotSparse as exc:
            if self.say:
                self.say(f"restoring all of backup {self.backup.id} into the sandbox: {exc}")
            return None
        if self.say:
            self.say(
                f"restoring {selection.restored_bytes // 2**20} MiB of backup {self.backup.id} "
                f"into the sandbox: the catalogs and the tables asked for "
                f"({selection.skipped_bytes // 2**20} MiB left out)"
            )
        return selection

    def _probe_db(self) -> str:
        """A database to connect to: a sparse sandbox holds one database's catalogs only."""
        if self.selection is not None and self.sparse is not None:
            return self.sparse.dbname
        return "template1"

    def superuser(self) -> str:
        assert self.server is not None
        return str(self.server.superuser)

    def _find_superuser(self, timeout: float = 3600) -> str:
        """The cluster's bootstrap superuser (role oid 10), whatever initdb named it. The
        sandbox trusts local connections, so any existing role name gets in to ask; until
        recovery reaches consistency no connection is accepted at all, so keep trying."""
        import getpass

        import psycopg

        assert self.server is not None
        candidates = [os.environ.get("PGUSER"), "postgres", self.server.user, getpass.getuser()]
        # A sparse sandbox has one database's catalogs: template1 cannot be entered there.
        probe = self._probe_db()
        names = list(dict.fromkeys(c for c in candidates if c))
        deadline = time.monotonic() + timeout
        pause = 0.01
        while time.monotonic() < deadline:
            missing = 0
            for name in names:
                conninfo = (
                    f"host={self.server.socket_dir} port={self.server.port} user={name} "
                    f"dbname='{_quote(probe)}'"
                )
                try:
                    with psycopg.connect(conninfo, autocommit=True) as conn:
                        row = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
                        return str(row[0]) if row else name
                except psycopg.OperationalError as exc:
                    if f'database "{probe}" does not exist' in str(exc):
                        raise DatabaseMissing(probe) from None
                    if "does not exist" in str(exc):
                        missing += 1
                    elif "could not open file" in str(exc):  # never comes right by waiting
                        raise PgkuraError(f"the sandbox refuses connections: {exc}") from None
            if not (self.server.pgdata / "postmaster.pid").exists():
                raise PgkuraError(f"the sandbox server stopped\n{self.server.log_tail()}")
            if missing == len(names):
                raise PgkuraError(
                    f"none of the roles {', '.join(names)} exists in backup {self.backup.id}",
                    hint="set PGUSER to a role of the backed-up cluster",
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.2)
        raise PgkuraError(f"the sandbox did not accept connections within {timeout:g} s")

    def conninfo(self, dbname: str = "postgres") -> str:
        assert self.server is not None
        return (
            f"host={self.server.socket_dir} port={self.server.port} "
            f"user={self.superuser()} dbname='{_quote(dbname)}'"
        )

    def sql(self, query: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(query.encode())
            return list(cur.fetchall()) if cur.description is not None else []


class SparseFallback(PgkuraError):
    """A sparse sandbox could not serve the request: the caller restores the backup whole."""


class DatabaseMissing(PgkuraError):
    """The database asked for did not exist at the target."""

    def __init__(self, dbname: str) -> None:
        super().__init__(f"database {dbname} does not exist")
        self.dbname = dbname


def _quote(value: str) -> str:
    """A libpq conninfo value, inside single quotes."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
