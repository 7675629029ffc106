"""What differs between PostgreSQL major versions, in one table.

Every place where pgkura behaves differently per major asks the version's ``Capabilities``
(``capabilities(16).backup_start_sql``, ``caps.has_wal_summaries``) instead of comparing
version numbers. A major outside ``SUPPORTED`` gets one error naming the supported range,
before anything is written.

Adding a major is one entry in ``_TABLE`` (and its WAL page magic in ``_MAGIC``), after
checking each field against the release's sources and running the test matrix on it
(README, "PostgreSQL versions"). PostgreSQL 19 (beta) is known and refused: its WAL page magic
is 0xD121, and its pg_control's data checksum field has four states (off, on, and two "in
progress" states in which checksums cannot be trusted), which the offline backup and the page
checks would have to read before 19 can be supported.

Differences pgkura avoids rather than branches on: from 17, pg_walfile_name() names an LSN on
a segment boundary as the segment after it (up to 16, the one before), so a WAL switch is
always made after writing a record (wal/setup_check.py); 18 lists NOT NULL constraints in
pg_constraint, which pgkura never reads.

archive-push looks the WAL page magic up here once per segment: this module imports nothing
(no typing, no dataclasses) and its records are plain classes.
"""

from __future__ import annotations

from pgkura.errors import UnsupportedVersionError

SUPPORTED_TEXT = "PostgreSQL 14 to 18"


class PgClassLayout:
    """Byte offsets in a pg_class heap tuple's data (after its header) of the fixed-width
    columns the sparse table restore reads (src/include/catalog/pg_class.h). ``oid`` is at 0
    and ``relname`` (NameData, 64 bytes) at 4 in every supported major."""

    __slots__ = ("min_length", "relfilenode", "relkind", "relnamespace", "reltoastrelid")

    def __init__(self, relnamespace: int, relfilenode: int, reltoastrelid: int, relkind: int):
        self.relnamespace, self.relfilenode = relnamespace, relfilenode
        self.reltoastrelid, self.relkind = reltoastrelid, relkind
        self.min_length = relkind + 1


# oid, relname, relnamespace, reltype, reloftype, relowner, relam, relfilenode, reltablespace,
# relpages, reltuples, relallvisible, reltoastrelid, relhasindex, relisshared, relpersistence,
# relkind: all fixed width and never null (12 to 17).
PG_CLASS_12 = PgClassLayout(relnamespace=68, relfilenode=88, reltoastrelid=108, relkind=115)
# 18 adds relallfrozen (int4) after relallvisible: everything from reltoastrelid on moves by 4.
PG_CLASS_18 = PgClassLayout(relnamespace=68, relfilenode=88, reltoastrelid=112, relkind=119)


class Capabilities:
    """What one PostgreSQL major version has and how pgkura talks to it."""

    __slots__ = (
        "backup_manifest_version",
        "backup_start_sql",
        "backup_stop_sql",
        "has_icu_locale_clause",
        "has_wal_summaries",
        "initdb_checksums_by_default",
        "major",
        "pg_class",
        "pg_database_locale_sql",
        "recovery_signal",
        "standby_signal",
        "wal_page_magic",
    )

    def __init__(
        self,
        major: int,
        *,
        wal_page_magic: int,
        pg_class: PgClassLayout,
        backup_start_sql: str,
        backup_stop_sql: str,
        pg_database_locale_sql: str,
        has_icu_locale_clause: bool,
        backup_manifest_version: int,
        has_wal_summaries: bool,
        initdb_checksums_by_default: bool,
    ) -> None:
        self.major = major
        #: XLOG_PAGE_MAGIC (src/include/access/xlog_internal.h): the WAL format's version
        self.wal_page_magic = wal_page_magic
        #: the pg_class columns the sparse table restore reads, by byte offset
        self.pg_class = pg_class
        #: the low-level backup API, non-exclusive (15 renamed the functions and dropped the
        #: exclusive mode); the start takes (label, fast), the stop returns (lsn, labelfile,
        #: spcmapfile) and never waits for the archive (pgkura waits itself, with a timeout)
        self.backup_start_sql = backup_start_sql
        self.backup_stop_sql = backup_stop_sql
        #: pg_database's locale provider and ICU (or builtin) locale, as two select-list items
        self.pg_database_locale_sql = pg_database_locale_sql
        #: CREATE DATABASE takes LOCALE_PROVIDER icu ICU_LOCALE '...'
        self.has_icu_locale_clause = has_icu_locale_clause
        #: backup_manifest's PostgreSQL-Backup-Manifest-Version: 2 adds System-Identifier,
        #: which pg_verifybackup then compares with pg_control
        self.backup_manifest_version = backup_manifest_version
        #: summarize_wal, pg_available_wal_summaries(), pg_walsummary
        self.has_wal_summaries = has_wal_summaries
        #: initdb enables data checksums unless told --no-data-checksums
        self.initdb_checksums_by_default = initdb_checksums_by_default
        #: archive recovery is asked for by recovery.signal (standby.signal), with the settings
        #: in the normal configuration (12 and newer: there is no recovery.conf any more)
        self.recovery_signal = "recovery.signal"
        #: ... and a standby's recovery, which never ends, by standby.signal
        self.standby_signal = "standby.signal"

    def initdb_checksum_args(self, enabled: bool) -> list[str]:
        """initdb's arguments for data checksums on or off."""
        if enabled:
            return ["--data-checksums"]
        return ["--no-data-checksums"] if self.initdb_checksums_by_default else []

    def __repr__(self) -> str:
        return f"Capabilities(PostgreSQL {self.major})"


_START_15 = "SELECT pg_backup_start(%s, %s)"
_STOP_15 = "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(false)"
_START_14 = "SELECT pg_start_backup(%s, %s, false)"
_STOP_14 = "SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
_LOCALE_14 = "'c', NULL"
_LOCALE_15 = "datlocprovider, daticulocale"
_LOCALE_17 = "datlocprovider, datlocale"  # 17 renamed it: it also holds the builtin provider's


def _entry(
    major: int,
    magic: int,
    *,
    pg_class: PgClassLayout = PG_CLASS_12,
    backup_api: tuple[str, str] = (_START_15, _STOP_15),
    locale: str = _LOCALE_15,
    icu_clause: bool = True,
    manifest_version: int = 1,
    wal_summaries: bool = False,
    checksums_by_default: bool = False,
) -> Capabilities:
    return Capabilities(
        major,
        wal_page_magic=magic,
        pg_class=pg_class,
        backup_start_sql=backup_api[0],
        backup_stop_sql=backup_api[1],
        pg_database_locale_sql=locale,
        has_icu_locale_clause=icu_clause,
        backup_manifest_version=manifest_version,
        has_wal_summaries=wal_summaries,
        initdb_checksums_by_default=checksums_by_default,
    )


# One entry per supported major; each says how it differs from the defaults above (15's).
_TABLE = {
    14: _entry(14, 0xD10D, backup_api=(_START_14, _STOP_14), locale=_LOCALE_14, icu_clause=False),
    15: _entry(15, 0xD110),
    16: _entry(16, 0xD113),
    17: _entry(17, 0xD116, locale=_LOCALE_17, manifest_version=2, wal_summaries=True),
    18: _entry(
        18,
        0xD118,
        pg_class=PG_CLASS_18,
        locale=_LOCALE_17,
        manifest_version=2,
        wal_summaries=True,
        checksums_by_default=True,
    ),
}
SUPPORTED = tuple(sorted(_TABLE))

# WAL page magic of the majors pgkura knows of, supported or not, so that a segment of an
# unsupported one is named by its version rather than by a number.
_MAGIC = {
    0xD097: 10,
    0xD098: 11,
    0xD101: 12,
    0xD106: 13,
    **{caps.wal_page_magic: major for major, caps in _TABLE.items()},
    0xD121: 19,
}
# Why a known major is refused, beyond "outside the range".
_REFUSED = {19: "which is in beta and not supported yet"}


def major_of_wal_magic(magic: int) -> int | None:
    """The major version whose WAL has page magic ``magic``, supported or not; None when
    pgkura knows no version that wrote it."""
    return _MAGIC.get(magic)


def major_of_version_num(version_num: int) -> int:
    """The major of ``server_version_num`` (150004 -> 15; 90624 -> 9, for messages)."""
    return version_num // 10000


def is_supported(major: int) -> bool:
    return major in _TABLE


def capabilities(major: int, what: str | None = None) -> Capabilities:
    """The capabilities of ``major``; UnsupportedVersionError, saying what ``what`` is (for
    example "the server", "backup 20260101T000000000Z") and the supported range, when pgkura
    does not support it."""
    caps = _TABLE.get(major)
    if caps is not None:
        return caps
    subject = f"{what} is PostgreSQL {major}" if what else f"PostgreSQL {major}"
    reason = _REFUSED.get(major, "which pgkura does not support")
    raise UnsupportedVersionError(
        f"{subject}, {reason}; pgkura supports {SUPPORTED_TEXT}",
        hint="use a cluster of a supported major version (pg_upgrade moves one to a newer "
        "major), or a pgkura release that supports it",
    )
