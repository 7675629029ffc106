"""Where PostgreSQL's programs are.

Debian and Ubuntu install each major version under /usr/lib/postgresql/<major>/bin and put only
wrappers on PATH (pg_ctlcluster, pg_wrapper), so looking at PATH alone finds the wrong thing or
nothing; the versioned directory comes first, PATH is the fallback for other layouts.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from pgkura.errors import PgkuraError

DEBIAN_PATTERN = "/usr/lib/postgresql/*/bin"
# The program whose presence says "this is a PostgreSQL bin directory".
MARKER = "pg_controldata"


def _major_of(bin_dir: str) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<major>/bin: 9.6 < 10 < 15."""
    version = Path(bin_dir).parent.name
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (-1,)


def find_pg_bin(explicit: str | None = None) -> Path:
    """The directory of PostgreSQL's programs: ``explicit`` if given, else the newest Debian-style
    versioned directory, else the directory of ``pg_ctl`` on PATH."""
    if explicit:
        path = Path(explicit)
        if not (path / MARKER).is_file():
            raise PgkuraError(
                f"{path} does not contain PostgreSQL's programs (no {MARKER})",
                hint="point --pg-bin / PGKURA_PG_BIN at the directory holding pg_ctl and "
                "pg_controldata",
            )
        return path
    candidates = [d for d in glob.glob(DEBIAN_PATTERN) if os.path.isfile(os.path.join(d, MARKER))]
    if candidates:
        return Path(max(candidates, key=_major_of))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        found = Path(pg_ctl).resolve().parent
        if (found / MARKER).is_file():
            return found
    raise PgkuraError(
        "cannot find PostgreSQL's programs (pg_ctl, pg_controldata)",
        hint="install postgresql, or pass --pg-bin / set PGKURA_PG_BIN to its bin directory",
    )


def pg_tool(bin_dir: Path, name: str) -> str:
    """The full path of program ``name`` in ``bin_dir``; a clear error if it is missing."""
    path = Path(bin_dir) / name
    if not path.is_file():
        raise PgkuraError(
            f"{name} not found in {bin_dir}",
            hint="install the PostgreSQL client/server package that provides it, "
            "or pass --pg-bin / PGKURA_PG_BIN",
        )
    return str(path)
