"""`pgkura check`: is this server set up so that its backups will restore? (The checks are
wal/setup_check.py's.)"""

from __future__ import annotations

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.wal.setup_check import CheckReport as CheckReport
from pgkura.wal.setup_check import check_setup
from pgkura.wal.setup_check import judge_archive_command as judge_archive_command


def run_check(cfg: Config) -> CheckReport:
    return check_setup(open_repository(cfg), cfg)
