"""`pgkura demo`: pgkura's main job, end to end, on a throwaway cluster and repository.

It runs the same commands a DBA would type (and prints them), as the cluster's OS user:
build a cluster with sample data, back it up offline and online with WAL archiving, damage
it, restore, prove the data came back by comparing it with what was committed, and show
the catalog.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgkura.errors import PgkuraError
from pgkura.invocation import pgkura_executable
from pgkura.pg.process import run

Say = Callable[[str], None]

FINGERPRINT_SQL = (
    "SELECT count(*), coalesce(sum(abalance), 0), md5(coalesce(string_agg(aid::text || ':' || "
    "abalance::text, ',' ORDER BY aid), '')) FROM pgbench_accounts"
)


class Demo:
    def __init__(self, workdir: Path, say: Say, keep: bool, bin_dir: Path) -> None:
        self.workdir = workdir
        self.say = say
        self.keep = keep
        self.bin_dir = bin_dir
        self.user = "postgres" if os.geteuid() == 0 else None
        self.repo = workdir / "repo"

    def pgkura(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True, quiet: bool = False
    ) -> str:
        cmd = [pgkura_executable(), "--repo", str(self.repo), *args]
        if not quiet:
            self.say("$ " + " ".join(shlex.quote(c) for c in ["pgkura", *cmd[1:]]))
        # Every step uses the demo's PostgreSQL, without saying so on each printed command.
        env = {**os.environ, "PGKURA_PG_BIN": str(self.bin_dir), **(env or {})}
        done = run(cmd, user=self.user, env=env, cwd="/", check=False)
        stdout = done.stdout.decode("utf-8", "replace")
        stderr = done.stderr.decode("utf-8", "replace")
        # Messages (stderr) come before results (stdout) in what each command does.
        output = stderr if quiet else stderr.rstrip("\n") + "\n" + stdout
        for line in output.strip().splitlines():
            self.say("  " + line)
        if check and done.returncode != 0:
            raise PgkuraError(f"demo step failed: pgkura {' '.join(args)} exited {done.returncode}")
        return stdout.strip()

    def run(self) -> None:
        from pgkura.pg.server import LocalServer, free_port, make_owned_dir

        make_owned_dir(self.workdir, self.user)
        make_owned_dir(self.repo, self.user)
        sockets = self.workdir / "sockets"
        make_owned_dir(sockets, self.user)
        archive = f"{shlex.quote(pgkura_executable())} --repo {self.repo} archive-push %p"
        src = LocalServer(self.workdir / "pgdata", free_port(), sockets, self.bin_dir, self.user)
        self.say(f"== a throwaway cluster in {src.pgdata} (port {src.port}, data checksums on)")
        src.initdb(
            checksums=True,
            extra_conf={"archive_mode": "on", "archive_command": archive, "wal_level": "replica"},
        )
        servers = [src]
        try:
            src.start()
            self.pgkura("init")
            self.say("== sample data: pgbench scale 5 (500,000 accounts)")
            src.pgbench_init(5)
            env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
            self.pgkura("check", env=env)
            self.say("== an online backup while the server runs (WAL archived by archive_command)")
            self.pgkura("backup", "--type", "online", env=env)
            src.sql("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 10 = 0")
            src.sql("SELECT pg_switch_wal()")
            before = src.sql(FINGERPRINT_SQL)[0]
            self.say(
                f"   committed after the backup: accounts {before[0]}, balance sum {before[1]}"
            )
            src.stop()
            self.say("== an offline backup of the stopped cluster: only changed blocks are stored")
            self.pgkura("backup", "--type", "offline", env=env)
            self.say("== an accident: the data directory loses base/ (every database)")
            shutil.rmtree(src.pgdata / "base")
            self.say("== restore the offline backup over the damaged directory (--delta keeps")
            self.say("   what is intact and rewrites only what differs), then start it")
            self.pgkura("restore", "--target-dir", str(src.pgdata), "--delta", env=env)
            src.start()
            self._compare(src, before)
            online_id = self._restore_online(src, sockets, servers, env, before)
            self.say("== a drill proves the online backup restores: a private sandbox server,")
            self.say("   WAL replayed to consistency, pg_amcheck, page checksums, row counts")
            self.pgkura("verify", "--restore", online_id, env=env)
            self._undo_delete(src, env, before)
            self.say("== the catalog")
            self.pgkura("info", env=env)
            self.say("demo finished: every restore returned every committed row")
        finally:
            for server in servers:
                server.stop()
            if not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                self.say(f"kept {self.workdir}")

    def _restore_online(
        self, src: Any, sockets: Path, servers: list[Any], env: dict[str, str], before: Any
    ) -> str:
        """Restore the online backup beside the source, replay the archived WAL to its end and
        compare; the backup's id."""
        from pgkura.pg.server import LocalServer, free_port

        self.say("== restore the online backup and replay the archived WAL to its end")
        pitr = LocalServer(
            self.workdir / "restored-online", free_port(), sockets, self.bin_dir, self.user
        )
        servers.append(pitr)
        first = self.pgkura("info", "--output", "json", env=env, quiet=True)
        import json

        online_id = str(
            next(b["id"] for b in json.loads(first)["backups"] if b["method"] == "online")
        )
        self.pgkura(
            "restore",
            "--backup",
            online_id,
            "--target-dir",
            str(pitr.pgdata),
            "--archive-mode",
            "off",
            env=env,
        )
        pitr.start(timeout=300)
        pitr.wait_for_promotion()
        self._compare(pitr, before)
        pitr.stop()
        return online_id

    def _undo_delete(self, src: Any, env: dict[str, str], before: Any) -> None:
        """A DELETE without WHERE on the live server, undone by a table restore beside it."""
        self.say("== another accident, on the live server: a DELETE without its WHERE clause")
        (when,) = src.sql("SELECT now()::text")[0]
        time.sleep(0.2)
        src.sql("DELETE FROM pgbench_accounts")
        self._wait_archived(src)
        (left,) = src.sql("SELECT count(*) FROM pgbench_accounts")[0]
        self.say(f"   pgbench_accounts now has {left} rows")
        self.say("== one command brings the table back as it was before the DELETE, beside")
        self.say("   the live one, without touching anything else")
        table = ["--table", "public.pgbench_accounts", "--as", "pgbench_accounts_before"]
        self.pgkura("restore", *table, "--to-time", str(when), "--dbname", "postgres", env=env)
        self._compare(src, before, table="pgbench_accounts_before")

    @staticmethod
    def _wait_archived(server: Any) -> None:
        # A switch with nothing written since the last one returns the segment boundary, which
        # pg_walfile_name names as the next segment from PostgreSQL 17 on: write a record first.
        server.sql("SELECT pg_logical_emit_message(false, 'pgkura', 'demo')")
        segment = server.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = server.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
            if done is not None and done >= segment:
                return
            time.sleep(0.05)
        raise PgkuraError(f"demo: {segment} was not archived within 60 s")

    def _compare(self, server: object, before: tuple[object, ...], table: str = "") -> None:
        query = FINGERPRINT_SQL.replace("pgbench_accounts", table) if table else FINGERPRINT_SQL
        after = server.sql(query)[0]  # type: ignore[attr-defined]
        same = tuple(after) == tuple(before)
        self.say(
            f"   restored: accounts {after[0]}, balance sum {after[1]}, content md5 {after[2]} "
            f"-> {'identical' if same else 'DIFFERENT'}"
        )
        if not same:
            raise PgkuraError("demo failed: restored data differs from the data committed")


def run_demo(
    say: Say,
    keep: bool = False,
    workdir: str | None = None,
    pg_bin: str | None = None,
    search_path: str | None = None,
) -> None:
    """The demo, on ``pg_bin``'s PostgreSQL (default: the newest installed)."""
    from pgkura.pg.binaries import find_pg_bin

    bin_dir = find_pg_bin(pg_bin, search_path=search_path)
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pgkura-demo-"))
    if sys.platform != "linux":
        raise PgkuraError("the demo needs Linux")
    Demo(base, say, keep, bin_dir).run()
