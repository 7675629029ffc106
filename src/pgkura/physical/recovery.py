"""Recovery settings for a restored cluster, per PostgreSQL version.

PostgreSQL 12 replaced recovery.conf: since then a signal file (``recovery.signal``, the
version's ``Capabilities.recovery_signal``) asks for archive recovery and the settings live in
the normal configuration (pgkura appends them to postgresql.auto.conf, which is read last).
Every major pgkura supports works so (pgkura.pg.versions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgkura.config import Config
from pgkura.durable import write_file
from pgkura.invocation import command_line
from pgkura.pg.versions import capabilities

MARKER = "# Recovery settings written by pgkura restore"
# Settings of an earlier recovery that a backup's postgresql.auto.conf may still hold (a cluster
# restored before, or set by ALTER SYSTEM): left in, an old recovery_target_name beside a new
# --to-lsn makes the server refuse to start ("multiple recovery targets specified").
RECOVERY_SETTINGS = frozenset(
    {
        "restore_command",
        "recovery_end_command",
        "recovery_target",
        "recovery_target_time",
        "recovery_target_lsn",
        "recovery_target_xid",
        "recovery_target_name",
        "recovery_target_inclusive",
        "recovery_target_action",
        "recovery_target_timeline",
    }
)


@dataclass(frozen=True)
class RecoveryTarget:
    """What recovery stops at; ``kind`` is none (end of WAL), immediate, time, lsn, xid, name."""

    kind: str = "none"
    value: str | None = None
    inclusive: bool = True
    action: str = "promote"
    timeline: str = "latest"
    #: whether --target-timeline was given (a restore along the latest timeline by default
    #: refuses to leave out WAL an older timeline archived past its branch point)
    timeline_given: bool = False

    def describe(self) -> str:
        """The target as the user gave it, for messages."""
        if self.kind == "none":
            return "the end of the archived WAL"
        if self.kind == "immediate":
            return "the consistency point (--to-immediate)"
        return f"--to-{self.kind} {self.value}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "inclusive": self.inclusive,
            "action": self.action,
            "timeline": self.timeline,
        }

    def settings(self) -> dict[str, str]:
        out: dict[str, str] = {"recovery_target_timeline": self.timeline}
        if self.kind == "none":
            return out
        if self.kind == "immediate":
            out["recovery_target"] = "immediate"
        else:
            assert self.value is not None
            out[f"recovery_target_{self.kind}"] = self.value
            if self.kind in ("time", "lsn", "xid"):
                out["recovery_target_inclusive"] = "true" if self.inclusive else "false"
        out["recovery_target_action"] = self.action
        return out


@dataclass(frozen=True)
class Standby:
    """A restore that becomes a standby (``restore --type standby``): standby.signal instead of
    recovery.signal, no recovery target (a standby follows its WAL source for good), and
    ``primary_conninfo`` to stream from a primary, if given; without it the standby goes on
    fetching WAL from the repository with archive-get."""

    primary_conninfo: str | None = None

    def settings(self) -> dict[str, str]:
        out = {"recovery_target_timeline": "latest"}
        if self.primary_conninfo is not None:
            out["primary_conninfo"] = self.primary_conninfo
        return out


# Settings of the backup's own replication, replaced by what a standby restore is told: a
# backup taken from a standby (or by pg_basebackup -R) may hold the old primary's.
STANDBY_SETTINGS = frozenset({"primary_conninfo", "primary_slot_name"})


def restore_command(cfg: Config, stop_after: str | None = None) -> str:
    """The restore_command that fetches WAL from this repository and stanza; with
    ``stop_after``, segments past that one are answered "not in the archive" unread (the
    restore proved the target lies before them, and read-ahead must not trip over them)."""
    tail = ["archive-get"] + (["--stop-after", stop_after] if stop_after else [])
    return command_line(cfg, tail) + ' %f "%p"'


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def write_recovery_settings(
    target_dir: Path,
    pg_version: int,
    cfg: Config,
    target: RecoveryTarget,
    *,
    archive_mode_off: bool = False,
    stop_after: str | None = None,
    standby: Standby | None = None,
) -> list[str]:
    """Write the files that make the restored cluster recover from the archive, or, with
    ``standby``, run as a standby of the archive or of a primary.

    Returns the names of the files written, for the restore's report.
    """
    caps = capabilities(pg_version)
    recovery = standby.settings() if standby is not None else target.settings()
    settings = {"restore_command": restore_command(cfg, stop_after), **recovery}
    lines = [MARKER] + [f"{k} = {_conf_value(v)}" for k, v in settings.items()]
    if archive_mode_off:
        lines.append("archive_mode = 'off'")
    auto = target_dir / "postgresql.auto.conf"
    replaced = RECOVERY_SETTINGS | (STANDBY_SETTINGS if standby is not None else frozenset())
    existing = _without_settings(auto.read_text() if auto.exists() else "", replaced)
    _write(auto, existing + "\n".join(lines) + "\n")
    signal = caps.standby_signal if standby is not None else caps.recovery_signal
    _write(target_dir / signal, "")
    return ["postgresql.auto.conf", signal]


def _without_settings(text: str, replaced: frozenset[str]) -> str:
    """``text`` of postgresql.auto.conf with earlier values of ``replaced`` commented out."""
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip().lower()
        if "=" in line and key in replaced:
            line = f"# {line}  # replaced by pgkura restore"
        lines.append(line)
    return "".join(line + "\n" for line in lines)


def _write(path: Path, text: str) -> None:
    # Replaced whole (a crash leaves the old postgresql.auto.conf or the new one), mode 0600
    # as PostgreSQL writes its own configuration files.
    write_file(path, text.encode(), mode=0o600)
