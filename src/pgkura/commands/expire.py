"""`pgkura expire`, `delete`, `pin` and `unpin`: retention, by policy or by hand (the work
is physical/expire.py's; every setting is checked before the repository is touched)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.errors import PgkuraError, UsageError
from pgkura.physical.expire import ExpireReport as ExpireReport
from pgkura.physical.expire import delete_backup, existing_backup, expire
from pgkura.repository.manifest import resolve_backup_id
from pgkura.repository.pins import pin, unpin
from pgkura.repository.prune import checked_max_unused
from pgkura.repository.repo import Repository
from pgkura.repository.retention import Policy, policy_of
from pgkura.repository.runs import recorded


def policy_from(cfg: Config) -> Policy:
    return policy_of(
        keep_last=cfg.keep_last,
        keep_daily=cfg.keep_daily,
        keep_weekly=cfg.keep_weekly,
        keep_monthly=cfg.keep_monthly,
        keep_within=cfg.keep_within,
        pitr_window=cfg.pitr_window,
        named=cfg.named,
    )


def run_expire(cfg: Config, dry_run: bool = False) -> ExpireReport:
    policy = policy_from(cfg)  # refused before the repository is touched
    max_unused = checked_max_unused(cfg.max_unused)
    with (
        locked_repository(cfg, "maintenance") as repo,
        recorded(repo, "expire", cfg.stanza, dry_run=dry_run) as run,  # for pgkura metrics
    ):
        report = expire(repo, cfg.stanza, policy, max_unused, dry_run)
        return run.done(report, gc=report.gc)


def _named(repo: Repository, stanza: str, backup_id: str) -> str:
    """The id ``backup_id`` names: ``latest`` the newest; any other as it is (the caller's
    existing_backup checks it is there, one listing only)."""
    return resolve_backup_id(repo, stanza, None) if backup_id == "latest" else backup_id


def run_delete(cfg: Config, backup_id: str, *, force: bool, dry_run: bool) -> ExpireReport:
    max_unused = checked_max_unused(cfg.max_unused)
    with locked_repository(cfg, "maintenance") as repo:
        backup_id = _named(repo, cfg.stanza, backup_id)
        report = delete_backup(
            repo, cfg.stanza, backup_id, force=force, max_unused=max_unused, dry_run=dry_run
        )
        if report.gc is not None:  # the gc it ended with is the repository's last one
            recorded(repo, "gc", None, dry_run=dry_run).done(report.gc)
        return report


@dataclass(frozen=True)
class PinResult:
    backup_id: str
    pinned: bool
    pitr: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.backup_id, "pinned": self.pinned, "pitr": self.pitr}


def run_pin(cfg: Config, backup_id: str, *, pitr: bool) -> PinResult:
    with locked_repository(
        cfg, "maintenance"
    ) as repo:  # an expire running now decides on the pins it read
        backup_id = _named(repo, cfg.stanza, backup_id)
        m = existing_backup(repo, cfg.stanza, backup_id)
        if m.kind != "physical":
            raise UsageError(
                f"backup {backup_id} is a logical dump: pins keep physical backups and their WAL",
                hint="dumps are kept by --keep-last and the other --keep-* settings; pin a "
                "physical backup",
            )
        done = pin(repo, cfg.stanza, backup_id, pitr=pitr)
        return PinResult(done.backup_id, True, done.pitr)


def run_unpin(cfg: Config, backup_id: str) -> PinResult:
    with locked_repository(cfg, "maintenance") as repo:
        backup_id = resolve_backup_id(repo, cfg.stanza, backup_id)
        if not unpin(repo, cfg.stanza, backup_id):
            raise UsageError(
                f"backup {backup_id} is not pinned", hint="list the pins with: pgkura info"
            )
        return PinResult(backup_id, False)


def expire_after(cfg: Config, what: str) -> ExpireReport | None:
    """expire-auto: the expire that follows a successful backup or dump ``what``."""
    if not cfg.expire_auto:
        return None
    try:
        return run_expire(cfg)
    except PgkuraError as exc:
        exc.message = f"{what} was stored, but expire-auto could not run: {exc.message}"
        raise
