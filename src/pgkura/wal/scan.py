"""Finding where a restore point or a transaction's end lies in the archived WAL.

PostgreSQL only learns that a ``recovery_target_name`` or ``recovery_target_xid`` does not
exist after replaying every archived segment, and then refuses to start ("recovery ended
before configured recovery target was reached"). pgkura reads the archived WAL first with the
server version's own pg_waldump (WAL record formats are PostgreSQL's to decode), so that it can
pick a backup that reaches the target and refuse a target that is not there.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pgkura.pg.process import run
from pgkura.repository.repo import Repository
from pgkura.scratch import make_scratch
from pgkura.wal.catalog import ArchiveCatalog, read_archived
from pgkura.wal.history import TimelineHistory
from pgkura.wal.names import parse_lsn, segment_name_of_segno

_LSN_FIELD = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+)")


def _runs(
    catalog: ArchiveCatalog, history: TimelineHistory, start_lsn: int
) -> list[tuple[int, list[int]]]:
    """The segments replay would read from ``start_lsn``, grouped by timeline."""
    runs: list[tuple[int, list[int]]] = []
    for tli, segno in catalog.replay_segments(history, start_lsn):
        if runs and runs[-1][0] == tli:
            runs[-1][1].append(segno)
        else:
            runs.append((tli, [segno]))
    return runs


def find_target_lsn(
    repo: Repository,
    archive: str,
    catalog: ArchiveCatalog,
    history: TimelineHistory,
    start_lsn: int,
    kind: str,
    value: str,
    bin_dir: Path,
) -> int | None:
    """The LSN of the restore point named ``value`` (kind "name"), or of the commit or abort
    record of transaction ``value`` (kind "xid"), replaying from ``start_lsn`` the WAL of
    ``archive`` (one generation's, read with its own major's ``bin_dir``); None if the
    archived WAL does not contain it."""
    waldump = bin_dir / "pg_waldump"
    if kind == "name":
        options = ["--rmgr=XLOG"]
        wanted = re.compile(r"desc: RESTORE_POINT " + re.escape(value) + r"$")
    else:
        options = ["--rmgr=Transaction", f"--xid={value}"]
        wanted = re.compile(r"desc: (COMMIT|ABORT)")
    workdir = make_scratch("scan")
    try:
        for tli, segnos in _runs(catalog, history, start_lsn):
            # A bounded batch of segments at a time keeps the scratch space small.
            for i in range(0, len(segnos), 16):
                batch = segnos[max(0, i - 1) : i + 16]  # one segment of overlap: records span
                names = [segment_name_of_segno(tli, n, catalog.seg_size) for n in batch]
                for old in workdir.iterdir():
                    old.unlink()
                for name in names:
                    raw = read_archived(repo, archive, name)
                    if raw is None:
                        break
                    (workdir / name).write_bytes(raw)
                cmd = [str(waldump), "-p", str(workdir), *options]
                if batch[0] * catalog.seg_size < start_lsn:
                    cmd += ["-s", f"{start_lsn >> 32:X}/{start_lsn & 0xFFFFFFFF:X}"]
                cmd += [names[0], names[-1]]
                # pg_waldump exits non-zero at the end of the WAL it was given; its output up
                # to there is what counts.
                proc = run(cmd, check=False)
                for line in proc.stdout.decode("utf-8", "replace").splitlines():
                    if wanted.search(line):
                        m = _LSN_FIELD.search(line)
                        if m:
                            return parse_lsn(m.group(1))
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
