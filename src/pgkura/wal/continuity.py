"""Reading what replay will read, before it does: damaged segments, and where records end.

PostgreSQL treats any failure of restore_command as "not in the archive" and ends recovery
there, so a damaged segment in the middle of the archive would end a restore early without a
word. A restore reads the segments its recovery needs first (here), and archive-get refuses
loudly on damage during recovery (commands/archive.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgkura.errors import ObjectNotFound, StorageError
from pgkura.repository.repo import Repository
from pgkura.repository.walstore import SealError
from pgkura.scratch import make_scratch
from pgkura.wal.catalog import read_archived
from pgkura.wal.names import parse_lsn

_RECORD = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: (\w+)(?: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?))?"
)


def damage_of(repo: Repository, stanza: str, name: str) -> str | None:
    """Why the archived ``name`` cannot be read back intact, or None when it can (absent
    counts as damage here: the caller lists only names the archive holds)."""
    try:
        stored = repo.wal.get(stanza, name)
    except ObjectNotFound:
        return "it vanished from the archive"
    except StorageError as exc:
        if exc.errno is None:
            raise  # an object store that fails is no damage of this file
        return f"it cannot be read: {exc.strerror}"
    try:
        stored.check()
    except SealError as exc:
        return str(exc)
    return None


def first_damaged(
    repo: Repository, stanza: str, names: list[str], jobs: int
) -> tuple[int, str] | None:
    """(index in ``names``, reason) of the first archived segment that is damaged, or None.
    Read in threads: zstd and BLAKE3 release the GIL."""
    if not names:
        return None
    workers = repo.workers_for(jobs)
    with ThreadPoolExecutor(workers, thread_name_prefix="pgkura-walcheck") as pool:
        for i, reason in enumerate(pool.map(lambda n: damage_of(repo, stanza, n), names)):
            if reason is not None:
                pool.shutdown(cancel_futures=True)
                return i, reason
    return None


@dataclass(frozen=True)
class Record:
    """A complete WAL record as pg_waldump prints it."""

    lsn: int
    kind: str  # the first word of pg_waldump's description: COMMIT, ABORT, RESTORE_POINT...
    time: datetime | None  # a transaction record's timestamp (UTC)


def complete_records(
    repo: Repository, stanza: str, names: list[str], bin_dir: Path
) -> list[Record] | None:
    """The complete records in consecutive archived segments ``names``, read by the server
    version's pg_waldump (record formats are PostgreSQL's to decode); None when pg_waldump
    cannot be run on them."""
    waldump = bin_dir / "pg_waldump"
    if not names or not waldump.is_file():
        return None
    workdir = make_scratch("waldump")
    try:
        for name in names:
            raw = read_archived(repo, stanza, name)
            if raw is None:
                return None
            (workdir / name).write_bytes(raw)
        env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
        cmd = [str(waldump), "-p", str(workdir), names[0], names[-1]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    except OSError:
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # pg_waldump exits non-zero where the WAL it was given ends mid-record; what it printed
    # up to there are complete records.
    records = []
    for line in proc.stdout.splitlines():
        m = _RECORD.search(line)
        if m is None:
            continue
        when = None
        if m.group(3):
            when = datetime.fromisoformat(m.group(3) + "+00:00")
        records.append(Record(parse_lsn(m.group(1)), m.group(2), when))
    return records
