"""Restoring a physical backup into a data directory, ready to start: choosing the backup
for the target, refusing before anything is written when the target, the blocks or the WAL
are not what the restore needs, then writing (physical/restore.py), the recovery settings and
the PostgreSQL-format backup_manifest. `pgkura restore` and the sandbox run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.durable import write_file
from pgkura.errors import CorruptionError, IncompleteArchiveError, PgkuraError, UsageError
from pgkura.physical.choose import Choice
from pgkura.physical.pgmanifest import write_pg_manifest
from pgkura.physical.recovery import RecoveryTarget, Standby, write_recovery_settings
from pgkura.physical.restore import PhysicalRestorer, RestoreStats
from pgkura.physical.restore_owner import give_to, owner_for
from pgkura.physical.restore_plan import (
    RestorePlan,
    check_targets,
    parse_tablespace_map,
    plan_restore,
)
from pgkura.physical.walcheck import WalCheck, check_replay
from pgkura.progress import Progress
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.locks import shared_lock
from pgkura.repository.manifest import Manifest
from pgkura.repository.repo import Repository


@dataclass(frozen=True)
class RestoreRequest:
    target_dir: str
    backup_id: str | None = None
    tablespace_map: list[str] = field(default_factory=list)
    delta: bool = False
    jobs: int = 1
    target: RecoveryTarget = field(default_factory=RecoveryTarget)
    archive_mode_off: bool = False
    #: restore --type standby: the restored cluster becomes a standby
    standby: Standby | None = None
    #: a sparse restore for a sandbox: only these files of the backup (see physical/sparse.py)
    only: frozenset[str] | None = None
    #: False for a sandbox, which is thrown away: nothing is fsynced
    durable: bool = True


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    target: Path
    stats: RestoreStats
    recovery_files: list[str]
    note: str | None = None
    #: where recovery stops; None when no recovery runs (an offline backup, a standby)
    recovery_target: RecoveryTarget | None = None
    standby: bool = False
    delta: bool = False
    #: run as root: the OS user the restored files were given to (None: not root, or none
    #: could be named, physical/restore_owner.py)
    owner: str | None = None

    def to_json(self) -> dict[str, Any]:
        m, s = self.manifest, self.stats
        return {
            "kind": "physical",
            "backup": m.id,
            "method": m.method,
            "pg_version": m.pg_version,
            "target_dir": str(self.target),
            "delta": self.delta,
            "standby": self.standby,
            "recovery_target": self.recovery_target and self.recovery_target.to_json(),
            "recovery_files": list(self.recovery_files),
            "files": s.files,
            "bytes_written": s.bytes_written,
            "files_unchanged": s.files_unchanged,
            "files_removed": s.files_removed,
            "note": self.note,
        }


class RestoreJob:
    """A restore whose backup is chosen and whose targets are checked: nothing is written
    yet. :meth:`run` needs the repository's shared lock held (gc cannot delete what it
    reads)."""

    def __init__(
        self, repo: Repository, cfg: Config, req: RestoreRequest, choice: Choice, plan: RestorePlan
    ) -> None:
        self.repo, self.cfg, self.req, self.choice, self.plan = repo, cfg, req, choice, plan

    def run(self, progress: Progress | None, index: BlockIndex | None = None) -> RestoreResult:
        """Check the WAL replay will read, then write the backup. ``index``, when the caller
        has loaded the repository's block index already (the sandbox has, to choose files),
        saves loading it again."""
        waldump = _waldump_dir(self.cfg, self.choice.manifest.pg_version)
        wal = check_replay(self.repo, self.choice, self.req.target, waldump, self.req.jobs)
        return _restore(self.cfg, self.req, progress, self.repo, self.choice, self.plan, index, wal)


def prepare_restore(repo: Repository, cfg: Config, req: RestoreRequest) -> RestoreJob:
    """Choose the backup ``req`` asks for and check where it goes, writing nothing."""
    from pgkura.physical.choose import choose_backup

    choice = choose_backup(repo, cfg.stanza, req.target, req.backup_id, wal_reader(cfg))
    manifest = choice.manifest
    chosen = manifest.id
    if manifest.kind != "physical":
        raise UsageError(
            f"backup {chosen} is a logical dump, not a physical backup",
            hint="restore it with --dbname DB instead of --target-dir",
        )
    if manifest.method == "offline" and req.target.kind != "none":
        raise UsageError(
            f"backup {chosen} is an offline backup: it starts as it is and takes no recovery "
            "target",
            hint="choose an online backup for point-in-time recovery",
        )
    if req.standby is not None:
        _check_standby(manifest, req.target)
    target = Path(req.target_dir).absolute()
    refuse_live_server([target])
    plan = plan_restore(manifest, target, parse_tablespace_map(req.tablespace_map))
    refuse_live_server(list(plan.tablespaces.values()))
    check_targets(plan, req.delta)
    return RestoreJob(repo, cfg, req, choice, plan)


def _check_standby(manifest: Manifest, target: RecoveryTarget) -> None:
    """A standby follows its WAL source for good: it takes no recovery target, and it needs
    the WAL an online backup starts from."""
    if target.kind != "none":
        raise UsageError(
            f"a standby takes no recovery target ({target.describe()} was given): it replays "
            "all the WAL its primary or the archive has, for good",
            hint="leave out the --to-* options with --type standby, or restore without it",
        )
    if manifest.method == "offline":
        raise UsageError(
            f"backup {manifest.id} is an offline backup, which holds no WAL position to "
            "follow from as a standby",
            hint="choose an online backup for --type standby",
        )


def restore_backup(
    repo: Repository,
    cfg: Config,
    req: RestoreRequest,
    progress: Progress | None,
    index: BlockIndex | None = None,
) -> RestoreResult:
    """Restore as ``req`` says, holding the repository's shared lock (gc cannot delete what
    it reads)."""
    with shared_lock(repo):
        return prepare_restore(repo, cfg, req).run(progress, index)


def _waldump_dir(cfg: Config, major: int) -> Path | None:
    """Where the backup's major's pg_waldump is, to say where a damaged archive's last
    recoverable point is (None: that is then said less precisely)."""
    try:
        return wal_reader(cfg)(major)
    except PgkuraError:
        return None


def wal_reader(cfg: Config) -> Callable[[int], Path]:
    """The programs that read archived WAL of a major (pg_waldump must be the WAL's own)."""
    from pgkura.pg.binaries import find_pg_bin

    def find(major: int) -> Path:
        what = f"reading PostgreSQL {major}'s archived WAL"
        return find_pg_bin(cfg.pg_bin, major=major, search_path=cfg.pg_search_path, what=what)

    return find


def refuse_live_server(paths: list[Path]) -> None:
    """Refuse, whatever the flags, a target or tablespace location that a running server
    uses: --delta would delete its postmaster.pid and live WAL under it."""
    from pgkura.errors import ServerRunningError
    from pgkura.pg.postmaster import server_using

    for path in paths:
        reason = server_using(path)
        if reason is not None:
            raise ServerRunningError(
                f"cannot restore into {path}: {reason}; nothing was written",
                hint="stop that server first (pg_ctl stop -D DIR), or restore into another "
                "directory",
            )


def _restore(
    cfg: Config,
    req: RestoreRequest,
    progress: Progress | None,
    repo: Repository,
    choice: Choice,
    plan: RestorePlan,
    index: BlockIndex | None,
    wal: WalCheck,
) -> RestoreResult:
    manifest, note, target = choice.manifest, choice.note, plan.target
    index = index or BlockIndex(repo).load()
    _check_blocks_present(index, manifest, req.only)
    if manifest.method != "offline":
        _check_wal_present(repo, choice.archive, manifest)
    restorer = PhysicalRestorer(
        index,
        manifest,
        plan,
        jobs=req.jobs,
        delta=req.delta,
        progress=progress,
        only=req.only,
        direct=cfg.direct_io,
        durable=req.durable,
    )
    try:
        stats = restorer.run()
    except PgkuraError as exc:
        raise _incomplete(exc, target) from None
    recovery_files: list[str] = []
    if manifest.method != "offline":
        written = _write_backup_files(manifest, plan)
        recovery_files = write_recovery_settings(
            target,
            manifest.pg_version,
            cfg,
            req.target,
            archive_mode_off=req.archive_mode_off,
            stop_after=wal.stop_after,
            standby=req.standby,
        )
    else:
        written = {}
        if req.archive_mode_off:
            _append_auto_conf(target, "archive_mode = 'off'")
    # For pg_verifybackup -n, before the server is started; a sparse restore is not a whole
    # backup, so it gets none.
    if req.only is None:
        write_pg_manifest(target, manifest, written)
    try:
        restorer.finish()  # pg_control, last
    except PgkuraError as exc:
        raise _incomplete(exc, target) from None
    owner = owner_for(manifest, target)  # run as root: the server's user gets it all
    if owner is not None:
        give_to(owner, [target, *plan.tablespaces.values()])
    recovers = manifest.method != "offline" and req.standby is None
    return RestoreResult(
        manifest, target, stats, recovery_files, note,
        recovery_target=req.target if recovers else None,
        standby=req.standby is not None,
        delta=req.delta,
        owner=owner.pw_name if owner is not None else None,
    )  # fmt: skip


def _incomplete(exc: PgkuraError, target: Path) -> PgkuraError:
    """The error of a restore that stopped after it began writing: it says so."""
    cls = CorruptionError if isinstance(exc, CorruptionError) else PgkuraError
    again = (
        "run the restore again with --delta (it keeps what was written), or restore another "
        "backup into it with --delta"
    )
    out = cls(
        f"{exc.message}; {target} is incomplete: global/pg_control was not written, so it "
        "will not start",
        # The cause's own hint says what to fix (an S3 endpoint, a full disk); how to finish
        # the restore then is said in any case.
        hint=f"{exc.hint}; then {again}" if exc.hint else f"fix the cause, then {again}",
    )
    out.exit_code = exc.exit_code
    return out


def _check_blocks_present(
    index: BlockIndex, manifest: Manifest, only: frozenset[str] | None
) -> None:
    """Refuse before writing anything when the repository lacks a block the backup needs, or
    the pack that holds it, or the pack is shorter than the block's place in it."""
    sizes = index.pack_sizes()
    for f in manifest.files:
        if only is not None and f.path not in only:
            continue
        for b in f.blocks:
            loc = index.get(bytes.fromhex(b))
            if loc is None:
                problem = "is missing from the repository"
            elif loc.pack_id not in sizes:
                problem = f"is in pack {loc.pack_id}, which is missing"
            elif sizes[loc.pack_id] < loc.offset + loc.length:
                problem = f"is in pack {loc.pack_id}, which is truncated"
            else:
                continue
            raise CorruptionError(
                f"backup {manifest.id} cannot be restored: a block of {f.path} {problem}; "
                "nothing was written",
                hint="run pgkura verify, and restore another backup",
            )


def _check_wal_present(repo: Repository, archive: str, manifest: Manifest) -> None:
    """Refuse before writing anything when WAL the backup needs to become consistent is not
    in its generation's ``archive``: the restored cluster could never start."""
    from pgkura.wal.names import parse_lsn, segments_between

    if manifest.start_lsn is None or manifest.stop_lsn is None or manifest.timeline is None:
        return
    start, stop = parse_lsn(manifest.start_lsn), parse_lsn(manifest.stop_lsn)
    seg_size = int(manifest.extra.get("wal_segment_size", 16 * 1024 * 1024))
    for name in segments_between(manifest.timeline, start, max(stop - 1, start), seg_size):
        if not repo.wal.exists(archive, name):
            raise IncompleteArchiveError(
                f"backup {manifest.id} cannot be restored: WAL segment {name}, needed to make "
                "it consistent, is not in the archive; nothing was written",
                hint="push the segment from the server's pg_wal with pgkura archive-push if it "
                "is still there, or restore another backup",
            )


def _write_backup_files(manifest: Manifest, plan: RestorePlan) -> dict[str, bytes]:
    """backup_label and tablespace_map as pg_backup_stop returned them (the map pointing at
    the locations chosen for this restore), and an empty pg_wal for the archive's WAL.
    Returns what was written, for the PostgreSQL-format backup_manifest."""
    target = plan.target
    written: dict[str, bytes] = {}
    if manifest.backup_label:
        _write_file(target / "backup_label", manifest.backup_label)
        written["backup_label"] = manifest.backup_label.encode()
    if manifest.tablespace_map is not None or plan.tablespaces:
        lines = [f"{oid} {loc}" for oid, loc in sorted(plan.tablespaces.items())]
        if lines:
            text = "\n".join(lines) + "\n"
            _write_file(target / "tablespace_map", text)
            written["tablespace_map"] = text.encode()
    (target / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True, mode=0o700)
    return written


def _append_auto_conf(target: Path, line: str) -> None:
    auto = target / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    _write_file(auto, text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")


def _write_file(path: Path, text: str) -> None:
    write_file(path, text.encode(), mode=0o600)
