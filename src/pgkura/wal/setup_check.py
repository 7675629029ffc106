"""Is this server set up so that its backups will restore (`pgkura check`'s engine)?

Each problem is reported with the setting to change; the WAL switch test runs only when the
settings are right, because it would otherwise wait for an archive that never comes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pgkura.config import Config
from pgkura.errors import PgkuraError, StorageError, UsageError
from pgkura.invocation import command_line, find_invocation, readable_by, resolve, same_repository
from pgkura.pg.connection import connect
from pgkura.pg.serverenv import postmaster_process
from pgkura.pg.versions import SUPPORTED_TEXT, is_supported, major_of_version_num
from pgkura.repository.repo import Repository

POLL_SECONDS = 0.2


@dataclass
class CheckReport:
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, what: str) -> None:
        self.passed.append(what)

    def fail(self, what: str) -> None:
        self.problems.append(what)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": list(self.passed),
            "problems": list(self.problems),
            "ok": not self.problems,
        }


def judge_archive_command(
    command: str, cfg: Config, data_directory: str | None
) -> tuple[str | None, str]:
    """``(problem, "")`` when ``command`` does not archive into this repository and
    stanza, else ``(None, what it archives into)``. The settings are those pgkura will
    take when PostgreSQL runs the command: in the data directory, with the server's
    environment, reading the config file as the server's OS user."""
    fix = f"set archive_command = '{_suggested(cfg)}'"
    try:
        invocation = find_invocation(command, "archive-push")
    except ValueError as exc:
        return f"archive_command {command!r} cannot be read: {exc}; {fix}", ""
    if invocation is None:
        return f"archive_command is {command!r}, which does not call pgkura archive-push; {fix}", ""
    server = postmaster_process(data_directory) if data_directory else None
    environ = server.environ if server is not None else None
    known_env = environ is not None
    try:
        used, sources = resolve(invocation, environ or {}, data_directory or "/")
    except PgkuraError as exc:
        return f"archive_command's pgkura would fail: {exc.message}; {exc.hint or fix}", ""
    if (
        used.config_file
        and server is not None
        and not readable_by(used.config_file, server.uid, server.gids)
    ):
        owner = _user_name(server.uid)
        return (
            f"config file {used.config_file}, which archive_command's pgkura reads, "
            f"cannot be read by the server's OS user {owner}; give {owner} read access "
            "(it may stay mode 0600 if that user owns it)"
        ), ""
    if used.repo is None:
        return (
            f"archive_command gives pgkura no repository ({_sources_text(used, sources)}); {fix}",
            "",
        )
    if not same_repository(used.repo, cfg.require_repo()) or used.stanza != cfg.stanza:
        return (
            f"archive_command archives into repository {used.repo}, stanza {used.stanza!r} "
            f"({_sources_text(used, sources)}), not repository {cfg.repo}, stanza "
            f"{cfg.stanza!r}; {fix}, or check the stanza and repository it uses"
        ), ""
    said = f"archive_command = {command} ({_sources_text(used, sources)})"
    if not known_env:
        said += (
            "; the server's environment could not be read (run check on the server's machine, "
            "as its OS user or root), so PGKURA_* variables set there are not counted"
        )
    return None, said


def _sources_text(used: Config, sources: dict[str, str]) -> str:
    def source(name: str) -> str:
        where = sources[name]
        if where == "default":
            return "the default"
        if where.startswith("PGKURA_"):
            return f"{where} in the server's environment"
        return where

    out = f"stanza {used.stanza!r} from {source('stanza')}"
    if used.repo is None:
        return out + "; no --repo, no repo in a config file, no PGKURA_REPO"
    return f"repository from {source('repo')}, {out}"


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _suggested(cfg: Config) -> str:
    return command_line(cfg, ["archive-push"]) + " %p"


def check_setup(repo: Repository, cfg: Config) -> CheckReport:
    """Every check of the server ``cfg`` connects to and of its archiving into ``repo``."""
    report = CheckReport()
    try:
        repo.check_writable()
        report.ok(f"repository {repo.location} is writable")
    except StorageError as exc:
        if exc.errno is None:
            raise  # an object store's failure: its message says what to fix
        report.fail(
            f"repository {repo.location} is not writable ({exc.strerror}); "
            "give the server's OS user write access"
        )
    except UsageError as exc:  # root beside another user's repository: writes nothing there
        report.fail(f"{exc.message} ({exc.hint})")
    with connect(cfg.dbconn) as conn:

        def one(query: str) -> str:
            row = conn.execute(query).fetchone()
            assert row is not None
            return str(row[0])

        settings_ok = True
        major = major_of_version_num(int(one("SHOW server_version_num")))
        if is_supported(major):
            report.ok(f"PostgreSQL {major} is supported")
        else:
            settings_ok = False
            report.fail(f"the server is PostgreSQL {major}; pgkura supports {SUPPORTED_TEXT}")
        wal_level = one("SHOW wal_level")
        if wal_level in ("replica", "logical"):
            report.ok(f"wal_level = {wal_level}")
        else:
            settings_ok = False
            report.fail(f"wal_level is {wal_level}; set wal_level = replica and restart")
        archive_mode = one("SHOW archive_mode")
        if archive_mode in ("on", "always"):
            report.ok(f"archive_mode = {archive_mode}")
        else:
            settings_ok = False
            report.fail(f"archive_mode is {archive_mode}; set archive_mode = on and restart")
        command = one("SHOW archive_command")
        rows = conn.execute(
            "SELECT setting FROM pg_settings WHERE name = 'data_directory'"
        ).fetchall()  # none unless the role may read it (superuser, pg_read_all_settings)
        problem, said = judge_archive_command(command, cfg, str(rows[0][0]) if rows else None)
        if problem is None:
            report.ok(said)
        else:
            settings_ok = False
            report.fail(problem)
        sysid = one("SELECT system_identifier FROM pg_control_system()")
        info = repo.stanza(cfg.stanza)
        if info is not None and info.system_identifier != sysid:
            settings_ok = False
            refused = info.refuse(sysid, major)
            report.fail(f"{refused.message}; {refused.hint}")
        if not settings_ok:
            return report
        if one("SELECT pg_is_in_recovery()") == "True":
            switched = _switch_through_primary(report, cfg, archive_mode)
            if switched is None:
                return report
            segment = switched
        else:
            segment = _switch(conn)
    archive = repo.wal_archive(cfg.stanza)
    deadline = time.monotonic() + cfg.archive_timeout
    started = time.monotonic()
    while not repo.wal.exists(archive, segment):
        if time.monotonic() > deadline:
            report.fail(
                f"WAL segment {segment} did not reach the archive within "
                f"{cfg.archive_timeout:g} s; look at the server log for archive_command "
                "errors, or raise --archive-timeout"
            )
            return report
        time.sleep(POLL_SECONDS)
    report.ok(f"WAL segment {segment} reached the archive in {time.monotonic() - started:.1f} s")
    return report


def _switch(conn: Any) -> str:
    """Finish the server's WAL segment; its name. A restore point guarantees there is WAL
    to switch away from."""
    conn.execute("SELECT pg_create_restore_point('pgkura check')")
    row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    return str(row[0])


def _switch_through_primary(report: CheckReport, cfg: Config, archive_mode: str) -> str | None:
    """On a standby: switch WAL on the primary (--primary-dbconn), whose segment then reaches
    the archive through the primary's archiving or the standby's (archive_mode = always);
    None when there is no primary to ask, with what that means for backups said."""
    if not cfg.primary_dbconn:
        if archive_mode == "always":
            report.ok(
                "server is a standby that archives itself (archive_mode = always); give "
                "--primary-dbconn to test a WAL switch through the primary"
            )
        else:
            report.fail(
                "server is a standby with archive_mode = on, which archives nothing itself: "
                "its backups need the primary to archive into this stanza; give "
                "--primary-dbconn so check can prove it does, or set archive_mode = always "
                "on the standby"
            )
        return None
    with connect(cfg.primary_dbconn) as primary:
        row = primary.execute("SELECT pg_is_in_recovery()").fetchone()
        if row and row[0]:
            report.fail(
                "--primary-dbconn reaches a standby, not the primary; point it at the primary"
            )
            return None
        segment = _switch(primary)
    report.ok(f"server is a standby (archive_mode = {archive_mode}); WAL switched on the primary")
    return segment
