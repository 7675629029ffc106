"""What an online backup leaves out: the same as pg_basebackup (src/backend/backup/basebackup.c).

These are files the server recreates, or that would be wrong in a restored cluster: runtime
state (postmaster.pid), WAL (it comes from the archive), temporary and unlogged relations
(their content is reset at startup; only the init fork is kept), and a stale backup_label.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

#: Directories whose contents are left out; the directories themselves are kept.
EXCLUDED_CONTENTS = frozenset(
    {
        "pg_wal",
        "pg_stat_tmp",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
    }
)
#: Files left out wherever they are at the top level.
EXCLUDED_TOP_FILES = frozenset(
    {
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        # A standby's own: restore writes the signal the restore asks for (a backup taken
        # from a standby must not restore as one by accident).
        "standby.signal",
        "recovery.signal",
    }
)
_TEMP_RELATION = re.compile(r"^t\d+_\d+(_(fsm|vm|init))?(\.\d+)?$")
_RELATION = re.compile(r"^(\d+)(_(fsm|vm|init))?(\.\d+)?$")


class OnlineExclusions:
    """Callable ``(relative path, is_dir) -> bool`` for :func:`walk_data_directory`."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._unlogged: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, path: str, is_dir: bool) -> bool:
        parent, _, name = path.rpartition("/")
        if name.startswith("pgsql_tmp"):
            return True
        if not is_dir and name.startswith("pg_internal.init"):
            return True
        if parent == "" and not is_dir and name in EXCLUDED_TOP_FILES:
            return True
        top = path.split("/", 1)[0]
        if top in EXCLUDED_CONTENTS and "/" in path:
            # pg_wal/archive_status is kept (empty), as pg_basebackup does.
            return not (is_dir and path == "pg_wal/archive_status")
        if is_dir or not _in_database_dir(path):
            return False
        if _TEMP_RELATION.match(name):
            return True
        match = _RELATION.match(name)
        if match and match.group(3) != "init":
            return match.group(1) in self._unlogged_in(parent)
        return False

    def _unlogged_in(self, rel_dir: str) -> frozenset[str]:
        """Relfilenodes with an init fork in a database directory: unlogged relations."""
        with self._lock:
            cached = self._unlogged.get(rel_dir)
        if cached is not None:
            return cached
        try:
            names = os.listdir(self.pgdata / rel_dir)
        except FileNotFoundError:
            names = []
        found = frozenset(n[: -len("_init")] for n in names if n.endswith("_init"))
        with self._lock:
            self._unlogged[rel_dir] = found
        return found


def _in_database_dir(path: str) -> bool:
    parts = path.split("/")
    if parts[0] == "base":
        return len(parts) == 3
    if parts[0] == "pg_tblspc":
        return len(parts) == 5
    return False
