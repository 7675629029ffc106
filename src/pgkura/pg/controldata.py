"""What pg_control says about a cluster, read through pg_controldata.

pg_control's binary layout changes between major versions, so pgkura asks the version's own
pg_controldata and parses its text (with LC_ALL=C: the labels are translated otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pgkura.errors import PostgresError
from pgkura.pg.lsn import parse_lsn
from pgkura.pg.process import run

# States that mean "no WAL needs replaying": a clean shutdown of a primary or a standby.
CLEAN_STATES = frozenset({"shut down", "shut down in recovery"})


@dataclass(frozen=True)
class ControlData:
    system_identifier: str
    state: str
    timeline: int
    checkpoint_lsn: int
    redo_lsn: int
    data_checksum_version: int
    wal_segment_size: int
    block_size: int

    @property
    def clean_shutdown(self) -> bool:
        return self.state in CLEAN_STATES


def parse_control_data(text: str) -> ControlData:
    """Parse pg_controldata's output (C locale)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()

    def field(name: str) -> str:
        try:
            return fields[name]
        except KeyError:
            raise PostgresError(f"pg_controldata printed no {name!r} line") from None

    return ControlData(
        system_identifier=field("Database system identifier"),
        state=field("Database cluster state"),
        timeline=int(field("Latest checkpoint's TimeLineID")),
        checkpoint_lsn=parse_lsn(field("Latest checkpoint location")),
        redo_lsn=parse_lsn(field("Latest checkpoint's REDO location")),
        data_checksum_version=int(field("Data page checksum version")),
        wal_segment_size=int(fields.get("Bytes per WAL segment", str(16 * 1024 * 1024))),
        block_size=int(field("Database block size")),
    )


def read_control_data(pgdata: Path, bin_dir: Path) -> ControlData:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    proc = run([str(bin_dir / "pg_controldata"), "-D", str(pgdata)], env=env)
    return parse_control_data(proc.stdout.decode("utf-8", errors="replace"))
