"""Which files of a data directory hold relation pages, and where their pages are numbered from.

Kept apart from :mod:`pgkura.pg.checksum` so that deciding which files to check does not import
numpy.
"""

from __future__ import annotations

import re

BLCKSZ = 8192
# Blocks per segment file: RELSEG_SIZE for the default 1 GiB segments of 8 KiB pages.
RELSEG_BLOCKS = 131072

# A relation data file: numeric relfilenode, optional fork suffix, optional segment number.
# Temporary relations ("t3_16384") and everything else (pg_filenode.map, pg_internal.init,
# PG_VERSION, config_exec_params, pgsql_tmp*) do not match.
_RELATION_NAME = re.compile(r"(?P<node>[0-9]+)(?:_(?:fsm|vm|init))?(?:\.(?P<seg>[0-9]+))?")
_DB_DIR = re.compile(r"[0-9]+")
_TS_VERSION_DIR = re.compile(r"PG_[0-9]+_[0-9]+")


def is_relation_file(relpath: str) -> tuple[int, int] | None:
    """``(relfilenode, segment number)`` when ``relpath`` (relative to PGDATA) holds pages with
    checksums, else None.

    Only global/, base/<db>/ and pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/ hold relation files,
    which is where pg_checksums looks too. A segment number of 0 (``16384.0``) is not a name
    PostgreSQL writes; pg_checksums rejects it, and so do we.
    """
    parts = relpath.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "global":
        name = parts[1]
    elif len(parts) == 3 and parts[0] == "base" and _DB_DIR.fullmatch(parts[1]):
        name = parts[2]
    elif (
        len(parts) == 5
        and parts[0] == "pg_tblspc"
        and _DB_DIR.fullmatch(parts[1])
        and _TS_VERSION_DIR.fullmatch(parts[2])
        and _DB_DIR.fullmatch(parts[3])
    ):
        name = parts[4]
    else:
        return None
    match = _RELATION_NAME.fullmatch(name)
    if match is None:
        return None
    seg = match.group("seg")
    if seg is not None and (seg.startswith("0")):
        return None
    return int(match.group("node")), int(seg) if seg else 0
