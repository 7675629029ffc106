"""LSNs as PostgreSQL writes them (src/include/access/xlogdefs.h, LSN_FORMAT_ARGS).

Pure arithmetic on text and integers, imported by pg/ (pg_controldata's output) and by
wal.names (segment arithmetic): it lives here so that pg/ stays a leaf.
"""

from __future__ import annotations

import re

MAX_LSN = (1 << 64) - 1
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """Parse PostgreSQL's ``X/X`` LSN notation ("16/B374D848") into an integer."""
    m = _LSN_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid LSN {text!r}: expected the form 16/B374D848")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """Format an LSN as PostgreSQL prints it (``%X/%X``: upper-case, no zero padding)."""
    if not 0 <= lsn <= MAX_LSN:
        raise ValueError(f"LSN {lsn} is out of range")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
