"""Where PostgreSQL's programs are, per major version.

A data directory can only be started, and its WAL only read, by the programs of its own major
version, and a machine may have several installed: Debian and Ubuntu put each major under
/usr/lib/postgresql/<major>/bin (and only wrappers on PATH), the PGDG RPMs under
/usr/pgsql-<major>/bin, and ``scripts/bootstrap`` unpacks other majors under
/opt/pgkura/pg/<version>/bin. pgkura looks through a search path of such directories (glob
patterns, ``--pg-search-path``), then PATH, and asks each installation's pg_controldata for its
version; ``--pg-bin`` names one directory and wins over the search.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pgkura.errors import MissingProgramsError, PgkuraError, PostgresError, UsageError
from pgkura.pg.process import run

DEFAULT_SEARCH_PATH = "/usr/lib/postgresql/*/bin:/usr/pgsql-*/bin:/opt/pgkura/pg/*/bin"
# The program whose presence says "this is a PostgreSQL bin directory".
MARKER = "pg_controldata"
_VERSION_RE = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Installation:
    """One directory of PostgreSQL programs and the version they are."""

    bin_dir: Path
    major: int
    version: str  # "18.6"


_versions: dict[str, tuple[int, str] | None] = {}


def program_version(program: Path) -> tuple[int, str] | None:
    """(major, "major.minor") of a PostgreSQL program, from its ``--version``; None when it
    does not run or says no version."""
    key = str(program)
    if key not in _versions:
        try:
            out = run([key, "--version"], timeout=30, check=False).stdout.decode("utf-8", "replace")
        except PostgresError:
            out = ""
        m = _VERSION_RE.search(out)
        _versions[key] = (int(m.group(1)), f"{m.group(1)}.{m.group(2) or 0}") if m else None
    return _versions[key]


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key that orders the directories of one pattern by the numbers in them (9.6 < 10)."""
    return tuple(int(n) for n in re.findall(r"\d+", path))


def installations(search_path: str | None = None) -> list[Installation]:
    """Every PostgreSQL installation on ``search_path`` (default DEFAULT_SEARCH_PATH), then
    PATH's, in that order, each directory once."""
    dirs: list[str] = []
    for pattern in (search_path or DEFAULT_SEARCH_PATH).split(":"):
        if pattern:
            dirs += sorted(glob.glob(os.path.expanduser(pattern)), key=_version_key)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        dirs.append(os.path.dirname(os.path.realpath(pg_ctl)))
    out: list[Installation] = []
    seen: set[str] = set()
    for d in dirs:
        real = os.path.realpath(d)
        if real in seen or not os.path.isfile(os.path.join(d, MARKER)):
            continue
        seen.add(real)
        found = program_version(Path(d) / MARKER)
        if found is not None:
            out.append(Installation(Path(d), *found))
    return out


def _describe(found: list[Installation]) -> str:
    if not found:
        return "none is installed"
    return "installed: " + ", ".join(f"{i.version} in {i.bin_dir}" for i in found)


def find_pg_bin(
    explicit: str | None = None,
    *,
    major: int | None = None,
    search_path: str | None = None,
    what: str = "this",
) -> Path:
    """The directory of PostgreSQL's programs: ``explicit`` (``--pg-bin``) if given, else the
    installation of ``major`` on the search path, else (no major asked for) the newest one.

    ``what`` names what needs them, for the message when the major does not match or is not
    installed ("backup 20260101T000000000Z", "the cluster in /srv/pg")."""
    if explicit:
        path = Path(explicit)
        if not (path / MARKER).is_file():
            raise UsageError(
                f"{path} does not contain PostgreSQL's programs (no {MARKER})",
                hint="point --pg-bin / PGKURA_PG_BIN at the directory holding pg_ctl and "
                "pg_controldata",
            )
        if major is not None:
            found = program_version(path / MARKER)
            if found is not None and found[0] != major:
                raise MissingProgramsError(
                    f"--pg-bin {path} holds PostgreSQL {found[1]}, but {what} is PostgreSQL "
                    f"{major}, which only its own major's programs can start or read",
                    hint=f"point --pg-bin at PostgreSQL {major}'s bin directory, or leave it out "
                    "and let pgkura find it on --pg-search-path",
                )
        return path
    found_all = installations(search_path)
    if major is not None:
        for inst in found_all:
            if inst.major == major:
                return inst.bin_dir
        raise MissingProgramsError(
            f"{what} needs PostgreSQL {major}'s programs, and none are on the search path "
            f"({_describe(found_all)})",
            hint=f"install PostgreSQL {major}, add its bin directory to --pg-search-path "
            "(PGKURA_PG_SEARCH_PATH), or pass --pg-bin",
        )
    if found_all:
        return max(found_all, key=lambda i: i.major).bin_dir
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
