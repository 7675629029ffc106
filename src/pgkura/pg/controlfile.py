"""The one field of pg_control pgkura reads itself: the system identifier.

pg_control's layout changes between majors (pgkura asks pg_controldata for the rest), but
ControlFileData has started with ``uint64 system_identifier`` in every version
(src/include/catalog/pg_control.h), in the host's byte order. archive-get reads it once per
WAL file, to know which generation of a stanza the cluster being recovered is: this module
imports nothing.
"""

from __future__ import annotations

import os
import sys


def read_system_identifier(pgdata: str) -> str | None:
    """The system identifier in ``pgdata``/global/pg_control; None when there is no readable
    pg_control there (``pgdata`` is not a data directory)."""
    try:
        with open(os.path.join(pgdata, "global", "pg_control"), "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if len(head) < 8:
        return None
    value = int.from_bytes(head, sys.byteorder)
    return str(value) if value else None
