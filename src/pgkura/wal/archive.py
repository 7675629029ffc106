"""The WAL archive of a stanza: push (archive_command) and get (restore_command).

Each archived file is one sealed object of ``repo.wal`` (repository/walstore.py), in the
archive of the stanza's generation the file's cluster is (docs/repository-format.md, "WAL
archive", "Stanza generations"); ``get_wal`` is given that archive.

PostgreSQL retries a failed archive_command for ever and deletes the segment once the command
succeeds, so push must never report success before the object is durable, never overwrite an
archived file with different content, and accept a repeated push of identical content (the
archiver may have died after the object was written but before it recorded success).
"""

from __future__ import annotations

import errno
import mmap
import os

from pgkura.durable import write_all, write_file
from pgkura.errors import (
    CorruptionError,
    ObjectNotFound,
    PgkuraError,
    RepositoryError,
    StorageError,
    UnsupportedVersionError,
    UsageError,
)
from pgkura.repository import layout
from pgkura.repository.repo import Repository
from pgkura.repository.walstore import SealError
from pgkura.wal.header import WalHeaderError, read_long_header
from pgkura.wal.names import WalName, is_wal_name, parse_wal_name

# Paths are strings or os.PathLike, never pathlib: archive-push imports this module once per
# WAL segment, and pathlib costs it about 5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]

# Errors that mean "the repository cannot take writes", as opposed to a bug or a damaged file.
_UNWRITABLE = {
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


# A plain class, not a dataclass: archive-push imports this once per WAL segment, and
# dataclasses (with inspect) would cost it about 7 ms.
class PushResult:
    """What one push did. ``written`` is False when the same content was already archived
    (nothing was written); ``repaired`` is True when a damaged archived copy with the same
    checksum was replaced."""

    __slots__ = ("key", "kind", "name", "raw_size", "repaired", "stored_size", "written")

    def __init__(
        self,
        name: str,
        key: str,
        kind: str,
        raw_size: int,
        stored_size: int,
        written: bool,
        repaired: bool = False,
    ) -> None:
        self.name, self.key, self.kind = name, key, kind
        self.raw_size, self.stored_size = raw_size, stored_size
        self.written, self.repaired = written, repaired


def _storage_error(exc: OSError | StorageError, action: str, repo: Repository) -> PgkuraError:
    """``exc`` in archive's words when a file system reported it; an object store's
    StorageError says all it knows already."""
    if isinstance(exc, StorageError) and exc.errno is None:
        return exc
    reason = _UNWRITABLE.get(exc.errno or 0, exc.strerror or str(exc))
    return RepositoryError(
        f"cannot {action} in the repository at {repo.location}: {reason}",
        hint="free space, or fix the mount and the permissions of the repository for the "
        "user running pgkura (PostgreSQL keeps the WAL and retries)",
    )


def _read_source(path: StrPath, mapped: bool) -> bytes | memoryview:
    """The bytes of the file to archive: read, or mapped when ``mapped`` (unmapped when the
    view is dropped).

    archive_command's file does not change while the command runs (PostgreSQL recycles a
    segment only after the command succeeded), so archive-push maps it, and so does the
    background pusher, whose segments wait for archive_command too: no copy of 16 MiB into
    fresh memory, about 10 ms on a small VM. A backup pushing finished segments from pg_wal
    reads them: a segment already marked done may be recycled, and read through a map it could
    change between its checksum and its compression."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not (mapped and size):
                return f.read()
            populate = getattr(mmap, "MAP_POPULATE", 0)
            return memoryview(
                mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED | populate, prot=mmap.PROT_READ)
            )
    except FileNotFoundError:
        raise UsageError(
            f"WAL file {path} does not exist",
            hint="archive_command must pass %p, the path relative to the data directory "
            "(archive_command = 'pgkura --stanza NAME archive-push %p')",
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a WAL file") from None
    except PermissionError:
        raise PgkuraError(
            f"cannot read WAL file {path}: permission denied",
            hint="run archive-push as the server's OS user",
        ) from None


def _check_segment(
    repo: Repository, stanza: str, wal: WalName, raw: bytes | memoryview, pg_version: int | None
) -> str:
    """Refuse a segment that is truncated, misnamed, of an unsupported PostgreSQL, or from a
    cluster that is not the stanza's current generation; bind a new stanza. Returns the WAL
    archive it goes into."""
    from pgkura.pg.versions import SUPPORTED_TEXT, capabilities

    try:
        header = read_long_header(raw)
    except WalHeaderError as exc:
        raise UsageError(f"{wal.name} is not a WAL segment: {exc}") from None
    version = header.pg_version
    if version is None:
        raise UnsupportedVersionError(
            f"{wal.name} has WAL page magic 0x{header.magic:04X}, which no PostgreSQL version "
            f"pgkura knows writes; pgkura supports {SUPPORTED_TEXT}",
            hint="the segment stays in pg_wal (PostgreSQL retries); upgrade pgkura, or check "
            "that this file is WAL",
        )
    # Before anything is stored: PostgreSQL keeps a refused segment and retries.
    capabilities(version, f"{wal.name} was written by a server that")
    if pg_version is not None and pg_version != version:
        raise UsageError(
            f"{wal.name} was written by PostgreSQL {version}, not {pg_version}",
            hint="check which cluster's WAL this is",
        )
    if len(raw) != header.seg_size:
        raise UsageError(
            f"{wal.name} is {len(raw)} bytes but its header says segments are "
            f"{header.seg_size} bytes: the file is incomplete",
            hint="archive only complete segments from pg_wal",
        )
    if header.seg_size != 16 * 1024 * 1024:
        wal = parse_wal_name(wal.name, header.seg_size)
    assert wal.segno is not None
    expected = wal.segno * header.seg_size
    if header.page_address != expected:
        raise UsageError(
            f"{wal.name} holds WAL from another position (its first page is at "
            f"{header.page_address >> 32:X}/{header.page_address & 0xFFFFFFFF:X}): it was renamed",
            hint="push the file under the name PostgreSQL gave it",
        )
    sysid = str(header.system_identifier)
    info = repo.stanza(stanza)
    if info is None:
        from pgkura.repository.stanzas import bind_new_stanza

        info = bind_new_stanza(repo, stanza, sysid, version)
    elif info.system_identifier != sysid:
        refused = info.refuse(sysid, version)
        raise RepositoryError(f"{wal.name} is refused: {refused.message}", hint=refused.hint)
    return info.archive(info.current)


def _archive_of_file(repo: Repository, stanza: str, path: StrPath) -> str:
    """The WAL archive for a .history or .backup file, which names no cluster itself: the
    stanza's current generation, unless the file sits in the pg_wal of a data directory
    whose pg_control says it is another cluster (then it is refused: a history file of an
    old generation must not take a name the current one's timelines need)."""
    from pgkura.pg.controlfile import read_system_identifier

    info = repo.stanza(stanza)
    if info is None:
        return layout.wal_archive(stanza, 1)
    pgdata = os.path.dirname(os.path.dirname(os.path.abspath(os.fspath(path))))
    sysid = read_system_identifier(pgdata)
    if sysid is not None and sysid != info.system_identifier:
        name = os.path.basename(os.fspath(path))
        refused = info.refuse(sysid, None)
        raise RepositoryError(f"{name} is refused: {refused.message}", hint=refused.hint)
    return info.archive(info.current)


def push_wal(
    repo: Repository,
    stanza: str,
    path: StrPath,
    *,
    pg_version: int | None = None,
    mapped: bool = False,
) -> PushResult:
    """Archive the WAL file at ``path`` (a segment, .partial, .backup or .history file).

    ``mapped`` is for a file that stays unchanged while it is pushed: archive_command's own,
    and the background pusher's (see _read_source)."""
    name = os.path.basename(os.fspath(path))
    if not is_wal_name(name):
        raise UsageError(
            f"{name!r} is not a WAL file name",
            hint="archive-push takes a segment (24 hex digits), .partial, .backup or "
            ".history file: use %p in archive_command",
        )
    try:
        wal = parse_wal_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raw = _read_source(path, mapped)
    try:
        if wal.kind in ("segment", "partial"):
            archive = _check_segment(repo, stanza, wal, raw, pg_version)
        else:
            archive = _archive_of_file(repo, stanza, path)
        return _store(repo, archive, wal, raw)
    except (OSError, StorageError) as exc:
        raise _storage_error(exc, f"archive {name}", repo) from None


def _store(repo: Repository, archive: str, wal: WalName, raw: bytes | memoryview) -> PushResult:
    digest = repo.digest(raw)
    key = repo.wal.key(archive, wal.name)
    try:
        # The conditional write first: a new file (nearly every push) costs one request, and
        # one that is archived already (a push repeated after a crash) is judged after it.
        stored = repo.wal.put_if_absent(archive, wal.name, raw, digest)
        if stored is not None:
            return PushResult(wal.name, key, wal.kind, len(raw), stored, written=True)
        existing = _compare_existing(repo, archive, wal.name, digest)
        if existing is None:  # pragma: no cover - only when someone deletes it meanwhile
            raise RepositoryError(f"archived {wal.name} vanished while it was being pushed")
        return PushResult(wal.name, key, wal.kind, len(raw), existing, written=False)
    except _Damaged:
        # The archived copy is damaged, but its header says it held exactly these bytes:
        # replacing it atomically loses nothing and heals the archive.
        stored = repo.wal.replace(archive, wal.name, raw, digest)
        return PushResult(wal.name, key, wal.kind, len(raw), stored, written=True, repaired=True)


class _Damaged(Exception):
    """The archived object claims the same content but does not unseal."""


def _compare_existing(repo: Repository, archive: str, name: str, digest: bytes) -> int | None:
    """None when ``name`` is not archived; its size when it holds the same content; raise
    otherwise."""
    stored = repo.wal.find(archive, name)
    if stored is None:
        return None
    if not stored.claims(digest):
        raise RepositoryError(
            f"{name} is already archived with different content in stanza "
            f"{archive!r}; the archived copy is kept and this push is refused",
            hint="two clusters may be archiving into one stanza, or the archived copy is "
            "damaged: check with pgkura check and give each cluster its own --stanza",
        )
    try:
        stored.content(digest)
    except SealError:
        raise _Damaged() from None
    return stored.size


def get_wal(
    repo: Repository, stanza: str, wal_name: str, dest: StrPath, *, durable: bool = True
) -> bool:
    """Write the archived ``wal_name`` to ``dest``; False (creating nothing) when it is absent.

    ``durable=False`` is for restore_command's destination: recovery reads the file at once and,
    after a crash, asks for it again, so an fsync there (about half of archive-get's time on
    this project's machine) buys nothing. The prefetcher's spool stays durable: its files are
    served later without another check."""
    if not is_wal_name(wal_name):
        raise UsageError(
            f"{wal_name!r} is not a WAL file name",
            hint="restore_command must pass %f (the file name) and %p (the destination)",
        )
    try:
        stored = repo.wal.get(stanza, wal_name)
    except ObjectNotFound:
        return False
    except StorageError as exc:
        if exc.errno is None:
            raise  # an object store's message names what to fix
        raise RepositoryError(
            f"cannot read {repo.wal.key(stanza, wal_name)} from the repository at "
            f"{repo.location}: {exc.strerror or exc}",
            hint="check that the repository is mounted and readable by the server's OS user",
        ) from None

    def fill(fd: int) -> None:
        # Decompressed, checked and written piece by piece; nothing is renamed into place
        # unless all of it matches its checksum.
        stored.write_to(lambda piece: write_all(fd, piece))

    try:
        write_file(dest, fill, durable=durable)
    except SealError as exc:
        raise CorruptionError(
            f"archived WAL file {wal_name} ({stored.key}) is damaged: {exc}",
            hint="recovery cannot use it; restore from an older backup or another copy of the "
            "archive, and run pgkura verify",
        ) from None
    return True


def archived_after(repo: Repository, stanza: str, segment: str) -> str | None:
    """The first archived segment of ``segment``'s timeline that comes after it, or None."""
    timeline = segment[:8]
    later = [
        f.name
        for f in repo.wal.list(stanza, timeline)
        if len(f.name) == 24 and f.name[:8] == timeline and f.name > segment
    ]
    return min(later, default=None)


def recovering_archive(repo: Repository, stanza: str) -> str:
    """The WAL archive restore_command reads: that of the stanza's generation whose cluster
    is being recovered. PostgreSQL runs restore_command in the data directory (the
    postmaster's working directory), whose pg_control names the cluster; elsewhere (by hand,
    from a shell) it is the current generation's. Segment names repeat across generations
    (each pg_upgrade starts a new cluster on timeline 1), so this is what keeps a restore of
    one generation from ever replaying another's WAL."""
    from pgkura.pg.controlfile import read_system_identifier

    return repo.wal_archive(stanza, read_system_identifier("."))
