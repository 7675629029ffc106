"""`pgkura check`: is this server set up so that its backups will restore (the checks are
wal/setup_check.py's), and, with --max-age and the other limits, are its backups, its WAL
archive and its drills recent enough (monitor/freshness.py)?"""

from __future__ import annotations

import time

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.monitor.freshness import Freshness as Freshness
from pgkura.monitor.freshness import judge_freshness
from pgkura.wal.setup_check import CheckReport as CheckReport
from pgkura.wal.setup_check import check_setup
from pgkura.wal.setup_check import judge_archive_command as judge_archive_command


def run_check(cfg: Config, limits: Freshness | None = None, *, server: bool = True) -> CheckReport:
    """The server's checks (unless ``server`` is false: no connection, no WAL switch), then
    the freshness ``limits`` of the stanza."""
    repo = open_repository(cfg)
    report = check_setup(repo, cfg) if server else CheckReport()
    if limits is not None and limits.any():
        from pgkura.monitor.facts import stanza_facts

        passed, problems = judge_freshness(stanza_facts(repo, cfg.stanza), limits, time.time())
        report.passed += passed
        report.problems += problems
    return report
