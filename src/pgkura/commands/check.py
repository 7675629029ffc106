"""`pgkura check`: is this server set up so that its backups will restore?

Each problem is reported with the setting to change; the WAL switch test runs only when the
settings are right, because it would otherwise wait for an archive that never comes.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import StorageError
from pgkura.pg.connection import connect
from pgkura.pg.versions import SUPPORTED_TEXT, is_supported, major_of_version_num
from pgkura.repository import layout

POLL_SECONDS = 0.2


@dataclass
class CheckReport:
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, what: str) -> None:
        self.passed.append(what)

    def fail(self, what: str) -> None:
        self.problems.append(what)


def archive_command_problem(command: str, cfg: Config) -> str | None:
    """Why ``command`` does not archive into this repository and stanza, or None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return f"archive_command {command!r} does not parse"
    if not any(w.endswith("pgkura") for w in words) or "archive-push" not in words:
        return (
            f"archive_command is {command!r}, which does not call pgkura archive-push; set "
            f"archive_command = '{_suggested(cfg)}'"
        )
    stanza = _option(words, "--stanza") or "main"
    if stanza != cfg.stanza:
        return (
            f"archive_command archives into stanza {stanza!r}, not {cfg.stanza!r}; set "
            f"archive_command = '{_suggested(cfg)}'"
        )
    repo = _option(words, "--repo")
    if repo is not None and cfg.repo is not None and repo.rstrip("/") != cfg.repo.rstrip("/"):
        return (
            f"archive_command archives into repository {repo}, not {cfg.repo}; set "
            f"archive_command = '{_suggested(cfg)}'"
        )
    return None


def _option(words: list[str], name: str) -> str | None:
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _suggested(cfg: Config) -> str:
    from pgkura.physical.recovery import pgkura_executable

    parts = [pgkura_executable(), "--repo", cfg.require_repo(), *cfg.storage_flags()]
    if cfg.stanza != "main":
        parts += ["--stanza", cfg.stanza]
    return shlex.join([*parts, "archive-push"]) + " %p"


def run_check(cfg: Config) -> CheckReport:
    report = CheckReport()
    repo = open_repository(cfg)
    try:
        repo.storage.check_writable()
        report.ok(f"repository {repo.storage.location} is writable")
    except StorageError as exc:
        if exc.errno is None:
            raise  # an object store's failure: its message says what to fix
        report.fail(
            f"repository {repo.storage.location} is not writable ({exc.strerror}); "
            "give the server's OS user write access"
        )
    with connect(cfg) as conn:

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
        problem = archive_command_problem(command, cfg)
        if problem is None:
            report.ok(f"archive_command = {command}")
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
            report.ok("server is a standby: WAL switch test skipped (run check on the primary)")
            return report
        # A restore point guarantees there is WAL to switch away from.
        one("SELECT pg_create_restore_point('pgkura check')")
        segment = one("SELECT pg_walfile_name(pg_switch_wal())")
    key = layout.wal_key(repo.wal_archive(cfg.stanza), segment)
    deadline = time.monotonic() + cfg.archive_timeout
    started = time.monotonic()
    while not repo.storage.exists(key):
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
