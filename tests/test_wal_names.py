"""WAL names, LSN arithmetic, the long page header and timeline history files (pure units)."""

from __future__ import annotations

import struct

import pytest

from pgkura.wal.header import WalHeaderError, read_long_header
from pgkura.wal.history import (
    HistoryFormatError,
    parse_history,
    switchpoint_of,
    timeline_of_lsn,
    timeline_switch_points,
)
from pgkura.wal.names import (
    format_lsn,
    history_file_name,
    is_segment_name,
    is_wal_name,
    next_segment_name,
    parse_lsn,
    parse_wal_name,
    segment_name,
    segment_start_lsn,
    segments_between,
)

MiB = 1024 * 1024

# (timeline, LSN, segment size, expected segment name), checked against pg_walfile_name().
SEGMENT_TABLE = [
    (1, "0/0", 16 * MiB, "000000010000000000000000"),
    (1, "0/1000000", 16 * MiB, "000000010000000000000001"),
    (1, "0/1FFFFFF", 16 * MiB, "000000010000000000000001"),
    (1, "0/FFFFFFFF", 16 * MiB, "0000000100000000000000FF"),
    (1, "1/0", 16 * MiB, "000000010000000100000000"),
    (1, "16/B374D848", 16 * MiB, "0000000100000016000000B3"),
    (2, "16/B374D848", 16 * MiB, "0000000200000016000000B3"),
    (0x1A, "FFFFFFFF/FF000000", 16 * MiB, "0000001AFFFFFFFF000000FF"),
    (1, "16/B374D848", 64 * MiB, "00000001000000160000002C"),
    (1, "0/FFFFFFFF", 1024 * MiB, "000000010000000000000003"),
    (3, "5/8000000", 1 * MiB, "000000030000000500000080"),
]


@pytest.mark.parametrize(("timeline", "lsn", "seg_size", "expected"), SEGMENT_TABLE)
def test_segment_name_matches_postgresql(timeline: int, lsn: str, seg_size: int, expected: str):
    assert segment_name(timeline, parse_lsn(lsn), seg_size) == expected
    wal = parse_wal_name(expected, seg_size)
    assert wal.kind == "segment"
    assert wal.timeline == timeline
    assert wal.segno == parse_lsn(lsn) // seg_size
    assert segment_start_lsn(expected, seg_size) == parse_lsn(lsn) // seg_size * seg_size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("16/B374D848", 0x16_B374D848),
        ("16/b374d848", 0x16_B374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("1/0", 2**32),
    ],
)
def test_lsn_round_trips_in_postgresql_notation(text: str, value: int):
    assert parse_lsn(text) == value
    assert format_lsn(value) == text.upper()


@pytest.mark.parametrize("bad", ["", "16", "16/", "/1", "G/1", "123456789/0", "1/2/3", "-1/0"])
def test_parse_lsn_rejects_malformed_text(bad: str):
    with pytest.raises(ValueError, match="invalid LSN"):
        parse_lsn(bad)


def test_format_lsn_rejects_out_of_range():
    with pytest.raises(ValueError):
        format_lsn(-1)
    with pytest.raises(ValueError):
        format_lsn(2**64)


def test_parse_wal_name_knows_every_archived_kind():
    partial = parse_wal_name("000000020000000100000003.partial")
    assert (partial.kind, partial.timeline, partial.segno) == ("partial", 2, 0x103)
    assert partial.segment == "000000020000000100000003"
    backup = parse_wal_name("000000010000000000000002.00000028.backup")
    assert (backup.kind, backup.timeline, backup.segno, backup.backup_offset) == (
        "backup",
        1,
        2,
        0x28,
    )
    history = parse_wal_name("0000000A.history")
    assert (history.kind, history.timeline, history.segno, history.segment) == (
        "history",
        10,
        None,
        None,
    )
    assert history_file_name(10) == "0000000A.history"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "00000001000000000000000",  # 23 digits
        "0000000100000000000000001",  # 25 digits
        "00000001000000000000000a",  # lower case: PostgreSQL never writes it
        "000000010000000000000001.ready",
        "000000010000000000000001.backup",
        "00000001.History",
        "RECOVERYXLOG",
        "archive_status",
        "../000000010000000000000001",
    ],
)
def test_non_wal_names_are_rejected(bad: str):
    assert not is_wal_name(bad)
    with pytest.raises(ValueError):
        parse_wal_name(bad)


def test_names_that_cannot_exist_are_rejected():
    # Timeline 0 does not exist; with 16 MiB segments the last group stops at 000000FF.
    for bad in ("000000000000000000000001", "00000000.history", "000000010000000000000100"):
        with pytest.raises(ValueError):
            parse_wal_name(bad)
    assert parse_wal_name("000000010000000000000100", 1 * MiB).segno == 0x100


def test_is_segment_name_only_for_plain_segments():
    assert is_segment_name("000000010000000000000001")
    assert not is_segment_name("000000010000000000000001.partial")
    assert not is_segment_name("00000002.history")


def test_next_segment_crosses_the_log_boundary():
    assert next_segment_name("000000010000000000000001") == "000000010000000000000002"
    assert next_segment_name("0000000100000000000000FF") == "000000010000000100000000"
    assert next_segment_name("00000001000000000000003F", 64 * MiB) == "000000010000000100000000"


def test_segments_between_includes_both_ends():
    start, end = parse_lsn("0/FE000028"), parse_lsn("1/1000000")
    assert segments_between(1, start, end) == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert segments_between(2, parse_lsn("0/3000028"), parse_lsn("0/30000D8")) == [
        "000000020000000000000003"
    ]
    with pytest.raises(ValueError, match="before"):
        segments_between(1, end, start)


def test_invalid_segment_sizes_are_refused():
    with pytest.raises(ValueError, match="segment size"):
        segment_name(1, 0, 3 * MiB)
    with pytest.raises(ValueError, match="segment size"):
        segment_name(1, 0, 512 * 1024)


# -- the long page header -------------------------------------------------------------------


def _long_header(magic: int = 0xD110, sysid: int = 7312345678901234567, seg: int = 16 * MiB):
    return struct.pack("<HHIQI4xQII", magic, 0x0002, 1, 0x3000000, 0, sysid, seg, 8192)


def test_long_header_gives_system_identifier_and_version():
    header = read_long_header(_long_header() + bytes(100))
    assert header.system_identifier == 7312345678901234567
    assert header.seg_size == 16 * MiB
    assert header.block_size == 8192
    assert header.page_address == 0x3000000
    assert header.pg_version == 15
    assert read_long_header(_long_header(magic=0xD116)).pg_version == 17
    assert read_long_header(_long_header(magic=0xD10D)).pg_version == 14
    assert read_long_header(_long_header(magic=0xD113)).pg_version == 16
    assert read_long_header(_long_header(magic=0x1234)).pg_version is None


def test_long_header_rejects_garbage():
    with pytest.raises(WalHeaderError, match="too short"):
        read_long_header(b"\x10\xd1")
    with pytest.raises(WalHeaderError, match="long header"):
        read_long_header(bytes(64))
    with pytest.raises(WalHeaderError, match="segment size"):
        read_long_header(_long_header(seg=12345))
    with pytest.raises(WalHeaderError, match="system identifier"):
        read_long_header(_long_header(sysid=0))


# -- timeline history files -----------------------------------------------------------------

HISTORY_3 = """\
1\t0/3000060\tno recovery target specified

# a comment, and a blank line above
2\t0/5000000\tat restore point "before_delete"
"""


def test_history_spans_follow_tli_of_point_in_history():
    history = parse_history(HISTORY_3, 3)
    assert history.timelines() == [1, 2, 3]
    assert timeline_switch_points(history) == {1: 0x3000060, 2: 0x5000000}
    assert history.entries[1].reason == 'at restore point "before_delete"'
    # The switch point itself belongs to the child timeline.
    assert timeline_of_lsn(history, 0) == 1
    assert timeline_of_lsn(history, 0x300005F) == 1
    assert timeline_of_lsn(history, 0x3000060) == 2
    assert timeline_of_lsn(history, 0x4FFFFFF) == 2
    assert timeline_of_lsn(history, 0x5000000) == 3
    assert timeline_of_lsn(history, parse_lsn("FF/0")) == 3
    assert switchpoint_of(history, 1) == 0x3000060
    assert switchpoint_of(history, 3) is None
    with pytest.raises(ValueError):
        switchpoint_of(history, 4)


def test_history_text_round_trips():
    history = parse_history(HISTORY_3, 3)
    assert parse_history(history.to_text(), 3) == history


def test_timeline_one_has_an_empty_history():
    history = parse_history("", 1)
    assert history.timelines() == [1]
    assert timeline_of_lsn(history, parse_lsn("16/B374D848")) == 1


@pytest.mark.parametrize(
    ("text", "timeline", "message"),
    [
        ("1\n", 2, "switch point"),
        ("x\t0/1\treason\n", 2, "switch point"),
        ("2\t0/3000000\ta\n1\t0/4000000\tb\n", 3, "increase"),
        ("1\t0/5000000\ta\n2\t0/4000000\tb\n", 3, "precedes"),
        ("1\t0/3000000\ta\n2\t0/4000000\tb\n", 2, "lower"),
    ],
)
def test_malformed_history_is_refused(text: str, timeline: int, message: str):
    with pytest.raises(HistoryFormatError, match=message):
        parse_history(text, timeline)
