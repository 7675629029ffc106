"""Verifying a WAL archive as a whole: every archived segment and history file unseals, and
the gaps and missing history files of each timeline are named (physical/verify.py runs it
beside the read-back of the backups)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.repo import Repository
from pgkura.repository.stored_check import check_stored_wal
from pgkura.repository.walstore import SealError
from pgkura.wal.catalog import describe_runs, load_catalog
from pgkura.wal.names import parse_wal_name


class ArchiveCheck:
    """What checking archives found: how many files were read, and the problems."""

    def __init__(self) -> None:
        self.checked = 0
        self.checked_in_full = 0  # by --quick: unsealed (archived with no stored digest)
        self.problems: list[str] = []


def verify_archives(
    repo: Repository,
    archives: list[str],
    report: ArchiveCheck,
    jobs: int,
    gaps_from: dict[str, int] | None = None,
    *,
    quick: bool = False,
) -> None:
    """Every WAL archive of a stanza: one per generation (layout.wal_archive). A gap below
    ``gaps_from[archive]`` (a segment number) is no problem (physical/verify.py says why).
    ``quick``: each file is checked as stored (repository.stored_check.check_stored_wal)."""
    for archive in archives:
        verify_archive(
            repo,
            archive,
            report,
            jobs,
            len(archives) > 1,
            (gaps_from or {}).get(archive),
            quick=quick,
        )


def verify_archive(
    repo: Repository,
    archive: str,
    report: ArchiveCheck,
    jobs: int,
    name_generation: bool,
    gaps_from: int | None = None,
    *,
    quick: bool = False,
) -> None:
    """Read back every file of ``archive``, and name each timeline's gaps and missing
    history file; ``name_generation`` says which generation in each problem."""
    objects = list(repo.wal.list(archive))
    where = f" ({layout.describe_archive(archive)})" if name_generation else ""

    def check(name: str) -> tuple[str | None, bool]:
        """(the problem or None, whether the file was unsealed in full by --quick)."""
        try:
            parse_wal_name(name)
        except ValueError:
            return None, False  # not a WAL file name: not ours to judge
        try:
            stored = repo.wal.get(archive, name)
            if quick:
                return None, check_stored_wal(repo, stored)
            stored.check()
        except SealError as exc:
            return f"archived WAL file {name}{where} is damaged: {exc}", False
        except ObjectNotFound:
            return f"archived WAL file {name}{where} vanished while it was verified", False
        return None, False

    # This runs beside the read-back of the blocks, whose requests count against the store's
    # limit too: on a store that takes few, the read-back keeps one (it is serial there).
    workers = max(1, repo.workers_for(jobs + 1) - 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="pgkura-verify-wal") as pool:
        for problem, in_full in pool.map(check, [o.name for o in objects]):
            report.checked += 1
            report.checked_in_full += in_full
            if problem:
                report.problems.append(problem)
    catalog = load_catalog(repo, archive)
    for tl in describe_runs(catalog):
        if not tl["history_file"]:
            report.problems.append(
                f"timeline {tl['timeline']}{where}: its history file is missing from the archive"
            )
        for gap in tl["gaps"]:  # type: ignore[attr-defined]
            last = parse_wal_name(str(gap["last"])).segno
            if gaps_from is not None and last is not None and last < gaps_from:
                continue  # left by expire beside a pinned backup
            report.problems.append(
                f"timeline {tl['timeline']}{where}: WAL segments {gap['first']} to "
                f"{gap['last']} are missing from the archive"
            )
