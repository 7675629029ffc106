"""One exception hierarchy: each error carries the user's message, a hint and an exit code.

Only the CLI (``pgkura.cli``) prints errors and exits; everything below raises these.
"""

from __future__ import annotations


class ExitCode:
    """Exit statuses of the ``pgkura`` command; documented in the README.

    Plain ints, not an IntEnum: archive-push imports this once per WAL segment, and enum costs
    it about 3 ms."""

    OK = 0
    # archive-get: the file is not in the archive (PostgreSQL probes for files that may not exist).
    NOT_FOUND = 1
    ERROR = 2
    USAGE = 3
    NOT_A_REPOSITORY = 4
    LOCKED = 5
    SERVER_RUNNING = 6
    CORRUPTION = 7
    # The backup was taken and kept, but data page checksum failures were found in the cluster.
    CHECKSUM_FAILURES = 8
    # archive-get: the file is in the archive but cannot be delivered intact (damaged, or the
    # repository unreadable), or the archive has a hole there. Above 125, so that PostgreSQL
    # stops recovery instead of taking it for the end of the archive (126 and 127 it would
    # log as "command not executable" and "not found": misleading).
    ABORT_RECOVERY = 255
    INTERRUPTED = 130


class PgkuraError(Exception):
    """Base of every error pgkura reports to a user."""

    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self) -> tuple[type[PgkuraError], tuple[object, ...]]:
        # Raised in a worker process, it reaches the parent with its hint.
        return (self.__class__, (self.message, self.hint))


class UsageError(PgkuraError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    pass


class NotARepositoryError(PgkuraError):
    exit_code = ExitCode.NOT_A_REPOSITORY


class RepositoryError(PgkuraError):
    pass


class StorageError(PgkuraError):
    """The store failed an operation: the message names the operation, the key and the
    location, the hint what to fix. A failure of a local file system also carries the
    ``errno`` and ``strerror`` the operating system reported (None from an object store), so
    that a caller can explain, say, a full disk in its own words."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        errno: int | None = None,
        strerror: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.errno = errno
        self.strerror = strerror

    def __reduce__(self) -> tuple[type[PgkuraError], tuple[object, ...]]:
        return (self.__class__, (self.message, self.hint, self.errno, self.strerror))


class ObjectNotFound(StorageError, KeyError):
    """The object does not exist: the one failure of a store that is not an error for every
    caller (an archive probed for a WAL file it may not hold). Also a KeyError, the type the
    storage interface raised for it before this class."""

    def __str__(self) -> str:
        return self.message  # not KeyError's repr of its argument


class LockedError(PgkuraError):
    exit_code = ExitCode.LOCKED


class NotFoundError(PgkuraError):
    exit_code = ExitCode.NOT_FOUND


class BackupNotFoundError(UsageError):
    """A backup id (or "latest") that names no backup: the usage is wrong, nothing is damaged."""


class CorruptionError(PgkuraError):
    exit_code = ExitCode.CORRUPTION


class ServerRunningError(PgkuraError):
    exit_code = ExitCode.SERVER_RUNNING


class PostgresError(PgkuraError):
    """The server or a PostgreSQL tool refused or failed."""


class ChecksumFailuresError(PgkuraError):
    """The backup was written, but the cluster has pages whose checksum does not match."""

    exit_code = ExitCode.CHECKSUM_FAILURES


class InterruptedError_(PgkuraError):
    exit_code = ExitCode.INTERRUPTED


class UnsupportedVersionError(PgkuraError):
    """A PostgreSQL major version outside the range pgkura supports (pgkura.pg.versions)."""


class MissingProgramsError(UsageError):
    """PostgreSQL's programs of the major version needed are not where pgkura looks (the
    search path), or --pg-bin names another major's."""
