"""A private PostgreSQL server on a data directory: initdb, start, stop, query.

Used by the demo, the sandbox and the tests. Every server listens only on its own Unix socket
directory and port (``listen_addresses=''``), given on pg_ctl's command line so they win over
whatever a restored postgresql.conf says. When pgkura runs as root the server runs as the data
directory's owner, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgkura.errors import PostgresError
from pgkura.pg.binaries import program_version
from pgkura.pg.process import run
from pgkura.pg.versions import capabilities

SUPERUSER = "postgres"
LOG_TAIL_LINES = 20


def free_port() -> int:
    """A TCP port nobody is listening on right now (the socket file name carries it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_owned_dir(path: Path, user: str | None, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) and hand it to ``user`` when we are root."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if user is not None and os.geteuid() == 0:
        shutil.chown(path, user, user)
    return path


class LocalServer:
    def __init__(
        self, pgdata: Path, port: int, socket_dir: Path, bin_dir: Path, user: str | None
    ) -> None:
        self.pgdata = Path(pgdata)
        self.port = port
        self.socket_dir = Path(socket_dir)
        self.bin_dir = Path(bin_dir)
        self.user = user
        self.log_file = self.pgdata.parent / f"{self.pgdata.name}.log"
        # The role to connect as: initdb's bootstrap superuser here; a restored cluster's may
        # be named otherwise (pgkura.physical.sandbox finds it).
        self.superuser = SUPERUSER
        self.running = False

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def major(self) -> int:
        """The major version of the server's programs."""
        found = program_version(self.bin_dir / "pg_controldata")
        if found is None:
            raise PostgresError(f"cannot tell which PostgreSQL {self.bin_dir} holds")
        return found[0]

    def _run(
        self,
        cmd: Sequence[str],
        timeout: float | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> str:
        env = {**os.environ, "LC_ALL": "C", **self.libpq_env(), **(extra_env or {})}
        return run(cmd, user=self.user, env=env, timeout=timeout).stdout.decode()

    def libpq_env(self) -> dict[str, str]:
        """Environment variables that point libpq (psql, pg_dump, pgkura) at this server."""
        return {
            "PGHOST": str(self.socket_dir),
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGDATABASE": "postgres",
        }

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user={self.superuser} dbname={dbname}"

    def initdb(
        self,
        *,
        checksums: bool = True,
        extra_conf: Mapping[str, str] | None = None,
        initdb_args: Sequence[str] = (),
    ) -> None:
        if not self.pgdata.parent.exists():
            make_owned_dir(self.pgdata.parent, self.user, mode=0o755)
        cmd = [
            self._tool("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ]  # fmt: skip
        cmd += capabilities(self.major(), f"initdb in {self.bin_dir}").initdb_checksum_args(
            checksums
        )
        self._run([*cmd, *initdb_args])
        conf = {
            "fsync": "off",  # private throwaway servers; backups themselves still fsync
            "shared_buffers": "64MB",
            "max_wal_size": "1GB",
            "log_min_messages": "warning",
            **(extra_conf or {}),
        }
        with open(self.pgdata / "postgresql.conf", "a") as f:
            f.write("\n# added by pgkura\n")
            for key, value in conf.items():
                f.write(f"{key} = '{value}'\n" if not value.isdigit() else f"{key} = {value}\n")

    def start(self, *, timeout: float = 120, env: Mapping[str, str] | None = None) -> None:
        """Start and wait until the server accepts connections (a standby in recovery does
        so once it is consistent). ``env``: variables added to the server's environment, which
        archive_command and restore_command inherit."""
        # The port and socket always come from the command line, over any postgresql.conf.
        options = shlex.join(
            ["-p", str(self.port), "-k", str(self.socket_dir), "-c", "listen_addresses="]
        )
        cmd = [
            self._tool("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file),
            "-w", "-t", str(int(timeout)), "-o", options, "start",
        ]  # fmt: skip
        try:
            self._run(cmd, timeout=timeout + 30, extra_env=env)
        except PostgresError as exc:
            raise PostgresError(
                f"the server in {self.pgdata} did not start: {exc.message}\n{self.log_tail()}"
            ) from None
        self.running = True

    def stop(self, mode: str = "fast", timeout: float = 120) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            self.running = False
            return
        # pg_ctl's own wait looks every 100 ms; the postmaster removes its pid file last thing,
        # so watching that file ends the wait as soon as the server is gone.
        signalled = run(
            [self._tool("pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-W", "stop"],
            user=self.user,
            check=False,
        )
        deadline = time.monotonic() + timeout
        pause = 0.005
        while signalled.returncode == 0 and pid_file.exists() and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)
        self.running = False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return f"(no server log at {self.log_file})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"last lines of {self.log_file}:\n{tail}"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(self.conninfo(dbname), autocommit=True)

    def sql(
        self, query: str, params: Sequence[object] | None = None, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit and return its rows (empty for no result set)."""
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def pgbench_init(self, scale: int, dbname: str = "postgres") -> None:
        self._run([self._tool("pgbench"), "-i", "-q", "-s", str(scale), dbname], timeout=1800)

    def wait_for_promotion(self, timeout: float = 300, dbname: str = "postgres") -> None:
        """Wait until recovery has ended and the server accepts writes."""
        deadline = time.monotonic() + timeout
        pause = 0.01  # promotion usually follows consistency within tens of milliseconds
        while time.monotonic() < deadline:
            try:
                if self.sql("SELECT pg_is_in_recovery()", dbname=dbname)[0][0] is False:
                    return
            except Exception as exc:  # still starting up: retry until the deadline
                # A missing role or database never starts to exist, nor a missing file.
                if "does not exist" in str(exc) or "could not open file" in str(exc):
                    raise PostgresError(f"cannot connect to {self.pgdata}: {exc}") from None
                if not (self.pgdata / "postmaster.pid").exists():
                    raise PostgresError(
                        f"the server in {self.pgdata} stopped during recovery\n" + self.log_tail()
                    ) from None
            time.sleep(pause)
            pause = min(pause * 1.5, 0.2)
        raise PostgresError(
            f"the server in {self.pgdata} is still in recovery after {timeout:g} s\n"
            + self.log_tail()
        )
