"""WAL file names and LSN arithmetic, as PostgreSQL defines them.

PostgreSQL's own definitions live in src/include/access/xlog_internal.h (XLogFileName,
IsXLogFileName, IsPartialXLogFileName, IsBackupHistoryFileName, IsTLHistoryFileName) and in
src/include/access/xlogdefs.h (LSN_FORMAT_ARGS). Everything here is pure arithmetic on text and
integers: no I/O, so the archive commands stay cheap to import.

A segment name is three groups of eight upper-case hex digits: the timeline, then the absolute
segment number split into a "log" part and a "seg" part, where one log id covers 4 GiB of WAL.
With the default 16 MiB segments the seg part therefore runs from 00000000 to 000000FF.
"""

from __future__ import annotations

import re

# LSN notation lives in pg/ (a leaf): re-exported here, where WAL arithmetic is looked for.
from pgkura.pg.lsn import MAX_LSN as MAX_LSN
from pgkura.pg.lsn import format_lsn as format_lsn
from pgkura.pg.lsn import parse_lsn as parse_lsn

TYPE_CHECKING = False  # names are parsed once per WAL segment: typing is not imported
if TYPE_CHECKING:
    from typing import Literal

    WalKind = Literal["segment", "partial", "backup", "history"]

DEFAULT_SEG_SIZE = 16 * 1024 * 1024
_LOG_SPAN = 0x1_0000_0000  # bytes of WAL per "log id" (the middle group of a segment name)

# PostgreSQL writes these names with %08X, so only upper-case hex is valid (IsXLogFileName uses
# strspn(fname, "0123456789ABCDEF")).
_HEX8 = "[0-9A-F]{8}"
_SEGMENT_RE = re.compile(rf"^({_HEX8})({_HEX8})({_HEX8})$")
_PARTIAL_RE = re.compile(rf"^({_HEX8})({_HEX8})({_HEX8})\.partial$")
_BACKUP_RE = re.compile(rf"^({_HEX8})({_HEX8})({_HEX8})\.({_HEX8})\.backup$")
_HISTORY_RE = re.compile(rf"^({_HEX8})\.history$")


class WalName:
    """A parsed WAL archive file name.

    ``segno`` is the absolute segment number for the segment size the name was parsed with
    (None for history files); ``backup_offset`` is the byte offset within the segment of a
    ``.backup`` file's start LSN (None for the other kinds).
    """

    __slots__ = ("backup_offset", "kind", "name", "segno", "timeline")

    def __init__(
        self,
        name: str,
        kind: WalKind,
        timeline: int,
        segno: int | None,
        backup_offset: int | None = None,
    ) -> None:
        self.name, self.kind, self.timeline = name, kind, timeline
        self.segno, self.backup_offset = segno, backup_offset

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WalName) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"WalName({self.name!r}, {self.kind!r}, {self.timeline}, {self.segno})"

    def _key(self) -> tuple[object, ...]:
        return (self.name, self.kind, self.timeline, self.segno, self.backup_offset)

    @property
    def segment(self) -> str | None:
        """The 24-digit segment name this file belongs to (None for history files)."""
        return None if self.kind == "history" else self.name[:24]


def _check_seg_size(seg_size: int) -> None:
    # PostgreSQL allows powers of two from 1 MiB to 1 GiB (IsValidWalSegSize).
    if seg_size < 1024 * 1024 or seg_size > 1024**3 or seg_size & (seg_size - 1):
        raise ValueError(f"invalid WAL segment size {seg_size}: a power of two, 1 MiB to 1 GiB")


def segments_per_log(seg_size: int = DEFAULT_SEG_SIZE) -> int:
    """How many segments one "log id" (4 GiB of WAL) holds: XLogSegmentsPerXLogId."""
    _check_seg_size(seg_size)
    return _LOG_SPAN // seg_size


def segno_of(lsn: int, seg_size: int = DEFAULT_SEG_SIZE) -> int:
    """The absolute number of the segment holding byte ``lsn`` (XLByteToSeg)."""
    _check_seg_size(seg_size)
    return lsn // seg_size


def segment_name_of_segno(timeline: int, segno: int, seg_size: int = DEFAULT_SEG_SIZE) -> str:
    """The file name of segment ``segno`` on ``timeline`` (XLogFileName)."""
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"invalid timeline {timeline}")
    per_log = segments_per_log(seg_size)
    if not 0 <= segno < (1 << 64) // seg_size:
        raise ValueError(f"segment number {segno} is out of range")
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def segment_name(timeline: int, lsn: int, seg_size: int = DEFAULT_SEG_SIZE) -> str:
    """The name of the segment on ``timeline`` that holds byte ``lsn``."""
    return segment_name_of_segno(timeline, segno_of(lsn, seg_size), seg_size)


def is_wal_name(name: str) -> bool:
    """True for any name PostgreSQL archives: segment, .partial, .backup or .history."""
    return any(r.match(name) for r in (_SEGMENT_RE, _PARTIAL_RE, _BACKUP_RE, _HISTORY_RE))


def is_segment_name(name: str) -> bool:
    """True for a plain 24-digit segment name (not .partial, .backup or .history)."""
    return _SEGMENT_RE.match(name) is not None


def parse_wal_name(name: str, seg_size: int = DEFAULT_SEG_SIZE) -> WalName:
    """Parse an archivable WAL file name; ValueError when it is not one."""
    m = _HISTORY_RE.match(name)
    if m:
        timeline = int(m.group(1), 16)
        if timeline == 0:
            raise ValueError(f"{name!r} names timeline 0, which does not exist")
        return WalName(name, "history", timeline, None)
    kind: WalKind
    backup_offset = None
    if m := _SEGMENT_RE.match(name):
        kind = "segment"
    elif m := _PARTIAL_RE.match(name):
        kind = "partial"
    elif m := _BACKUP_RE.match(name):
        kind = "backup"
        backup_offset = int(m.group(4), 16)
    else:
        raise ValueError(
            f"{name!r} is not a WAL file name (24 hex digits, optionally followed by "
            ".partial or .XXXXXXXX.backup, or XXXXXXXX.history)"
        )
    timeline, log, seg = (int(m.group(i), 16) for i in (1, 2, 3))
    per_log = segments_per_log(seg_size)
    if timeline == 0:
        raise ValueError(f"{name!r} names timeline 0, which does not exist")
    if seg >= per_log:
        raise ValueError(
            f"{name!r} is not a valid segment name for {seg_size // (1024 * 1024)} MiB segments "
            f"(its last eight digits must be below {per_log:08X})"
        )
    if backup_offset is not None and backup_offset >= seg_size:
        raise ValueError(f"{name!r} has an offset beyond the end of its segment")
    return WalName(name, kind, timeline, log * per_log + seg, backup_offset)


def segment_start_lsn(name: str, seg_size: int = DEFAULT_SEG_SIZE) -> int:
    """The LSN of the first byte of the segment ``name`` (XLogSegNoOffsetToRecPtr, offset 0)."""
    wal = parse_wal_name(name, seg_size)
    if wal.segno is None:
        raise ValueError(f"{name!r} is a history file, not a segment")
    return wal.segno * seg_size


def next_segment_name(name: str, seg_size: int = DEFAULT_SEG_SIZE) -> str:
    """The segment that follows ``name`` on the same timeline."""
    wal = parse_wal_name(name, seg_size)
    if wal.segno is None:
        raise ValueError(f"{name!r} is a history file, not a segment")
    return segment_name_of_segno(wal.timeline, wal.segno + 1, seg_size)


def segments_between(
    timeline: int, start_lsn: int, end_lsn: int, seg_size: int = DEFAULT_SEG_SIZE
) -> list[str]:
    """Names of the segments holding ``start_lsn`` through ``end_lsn``, both included."""
    if end_lsn < start_lsn:
        raise ValueError(
            f"end LSN {format_lsn(end_lsn)} is before start LSN {format_lsn(start_lsn)}"
        )
    first, last = segno_of(start_lsn, seg_size), segno_of(end_lsn, seg_size)
    return [segment_name_of_segno(timeline, n, seg_size) for n in range(first, last + 1)]


def history_file_name(timeline: int) -> str:
    """The name of the history file that starts ``timeline`` (TLHistoryFileName)."""
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"invalid timeline {timeline}")
    return f"{timeline:08X}.history"
