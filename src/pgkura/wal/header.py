"""The long page header at the start of every WAL segment.

The first page of each segment starts with XLogLongPageHeaderData
(src/include/access/xlog_internal.h):

    offset  size  field
         0     2  xlp_magic        WAL format version (XLOG_PAGE_MAGIC)
         2     2  xlp_info         flag bits; XLP_LONG_HEADER (0x0002) on a segment's first page
         4     4  xlp_tli          timeline of the first record on the page
         8     8  xlp_pageaddr     LSN of the page
        16     4  xlp_rem_len      bytes of a record continued from the previous page
        20     4  (padding: XLogPageHeaderData is MAXALIGNed to 24 bytes on 64-bit hosts)
        24     8  xlp_sysid        system identifier of the cluster (pg_control)
        32     4  xlp_seg_size     WAL segment size, as a cross-check
        36     4  xlp_xlog_blcksz  WAL page size, as a cross-check

Integers are in the host's byte order; pgkura runs on little-endian hosts (x86-64, arm64).
"""

from __future__ import annotations

import struct

from pgkura.pg.versions import major_of_wal_magic

XLP_LONG_HEADER = 0x0002
LONG_HEADER = struct.Struct("<HHIQI4xQII")
LONG_HEADER_SIZE = LONG_HEADER.size  # 40


class WalHeaderError(ValueError):
    """The bytes do not start with a valid WAL long page header."""


class LongPageHeader:
    __slots__ = (
        "block_size",
        "info",
        "magic",
        "page_address",
        "seg_size",
        "system_identifier",
        "timeline",
    )  # not a dataclass: read once per WAL segment by archive-push

    def __init__(
        self,
        magic: int,
        info: int,
        timeline: int,
        page_address: int,
        system_identifier: int,
        seg_size: int,
        block_size: int,
    ) -> None:
        self.magic, self.info, self.timeline = magic, info, timeline
        self.page_address, self.system_identifier = page_address, system_identifier
        self.seg_size, self.block_size = seg_size, block_size

    @property
    def pg_version(self) -> int | None:
        """The PostgreSQL major version that wrote the segment, when pgkura knows the magic
        (supported or not: pgkura.pg.versions says which are)."""
        return major_of_wal_magic(self.magic)


def read_long_header(data: bytes | memoryview) -> LongPageHeader:
    """Decode the long page header of a segment's first page; WalHeaderError when invalid."""
    if len(data) < LONG_HEADER_SIZE:
        raise WalHeaderError(f"it is {len(data)} bytes long, too short for a WAL page header")
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = LONG_HEADER.unpack_from(data, 0)
    if not info & XLP_LONG_HEADER:
        raise WalHeaderError(
            f"its first page has no long header (magic 0x{magic:04X}, info 0x{info:04X})"
        )
    if seg_size < 1024 * 1024 or seg_size > 1024**3 or seg_size & (seg_size - 1):
        raise WalHeaderError(f"its header gives an invalid segment size ({seg_size})")
    if blcksz < 1024 or blcksz > 65536 or blcksz & (blcksz - 1):
        raise WalHeaderError(f"its header gives an invalid WAL block size ({blcksz})")
    if sysid == 0:
        raise WalHeaderError("its header has no system identifier")
    return LongPageHeader(magic, info, tli, pageaddr, sysid, seg_size, blcksz)
