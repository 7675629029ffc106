"""The one check of ``--jobs``: every command that takes it refuses the same values with the
same message and the same exit status (3, a usage error)."""

from __future__ import annotations

import os

from pgkura.errors import UsageError


def check_jobs(jobs: int | None) -> None:
    """Refuse a ``--jobs`` that is not a number of workers (None: not given, allowed)."""
    if jobs is not None and jobs < 1:
        raise UsageError(
            f"--jobs must be at least 1, not {jobs}",
            hint="give a number of parallel workers, such as --jobs 2, or leave it out "
            "(one per core)",
        )


def resolve_jobs(jobs: int | None) -> int:
    """``jobs`` checked, or one worker per core this process may run on when not given."""
    check_jobs(jobs)
    return jobs or len(os.sched_getaffinity(0))
