"""Parsing and checking recovery targets given on the command line.

The CLI collects the ``--to-*`` and ``--target-*`` options into one :class:`TargetArgs` (the
texts as given) and asks it for the :class:`RecoveryTarget`; nothing else parses a target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pgkura.errors import UsageError
from pgkura.physical.recovery import RecoveryTarget

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def parse_time(text: str) -> datetime:
    """A time with or without a zone; without one it is the local time zone of this machine
    (the TZ environment variable), and the result always carries an explicit offset so that
    the server does not read it in its own time zone."""
    cleaned = text.strip().replace(" ", "T", 1) if "T" not in text else text.strip()
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1] + "+00:00"
    if re.search(r"[+-]\d\d$", cleaned):
        cleaned += ":00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise UsageError(
            f"--to-time {text!r} is not a time",
            hint="use ISO form, for example --to-time '2025-01-01 12:00:00+01'",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time zone
    return parsed


def parse_target(
    *,
    to_time: str | None = None,
    to_lsn: str | None = None,
    to_xid: str | None = None,
    to_name: str | None = None,
    to_immediate: bool = False,
    exclusive: bool = False,
    action: str = "promote",
    timeline: str | None = None,
) -> RecoveryTarget:
    given = [
        flag
        for flag, value in (
            ("--to-time", to_time),
            ("--to-lsn", to_lsn),
            ("--to-xid", to_xid),
            ("--to-name", to_name),
            ("--to-immediate", to_immediate or None),
        )
        if value is not None
    ]
    chosen = timeline is not None
    timeline = "latest" if timeline is None else timeline
    _refuse_combinations(given, timeline, action, exclusive and not (to_time or to_lsn or to_xid))
    inclusive = not exclusive
    if to_time is not None:
        return RecoveryTarget(
            "time",
            parse_time(to_time).isoformat(sep=" "),
            inclusive,
            action,
            timeline,
            timeline_given=chosen,
        )
    if to_lsn is not None:
        if not _LSN.match(to_lsn.strip()):
            raise UsageError(
                f"--to-lsn {to_lsn!r} is not an LSN", hint="use the X/X form, for example 0/3000060"
            )
        return RecoveryTarget(
            "lsn", to_lsn.strip().upper(), inclusive, action, timeline, timeline_given=chosen
        )
    if to_xid is not None:
        if not to_xid.strip().isdigit() or int(to_xid) < 3:
            raise UsageError(
                f"--to-xid {to_xid!r} is not a transaction id",
                hint="use a number such as the one txid_current() returned",
            )
        return RecoveryTarget(
            "xid", str(int(to_xid)), inclusive, action, timeline, timeline_given=chosen
        )
    if to_name is not None:
        if not to_name or len(to_name) >= 64:
            raise UsageError(f"--to-name {to_name!r} is not a restore point name")
        return RecoveryTarget(
            "name", to_name, action=action, timeline=timeline, timeline_given=chosen
        )
    if to_immediate:
        return RecoveryTarget("immediate", action=action, timeline=timeline, timeline_given=chosen)
    return RecoveryTarget(timeline=timeline, timeline_given=chosen)


def _refuse_combinations(given: list[str], timeline: str, action: str, exclusive: bool) -> None:
    """UsageError for options that do not go together: two targets (``given``), a timeline
    or action that is none, an action without a target, or ``exclusive`` without a target
    it applies to."""
    if len(given) > 1:
        raise UsageError(
            f"{' and '.join(given)} were both given; recovery has one target",
            hint="keep one of --to-time, --to-lsn, --to-xid, --to-name, --to-immediate",
        )
    if timeline not in ("latest", "current") and not timeline.isdigit():
        raise UsageError(
            f"--target-timeline {timeline!r} is not latest, current or a number",
            hint="for example --target-timeline 2",
        )
    if action not in ("promote", "pause", "shutdown"):
        raise UsageError(f"--target-action {action!r} is not promote, pause or shutdown")
    if action != "promote" and not given:
        raise UsageError(
            f"--target-action {action} applies to a --to-* target only: without one, recovery "
            "replays all the archived WAL and promotes",
            hint="add --to-time, --to-lsn, --to-xid, --to-name or --to-immediate, or leave "
            "--target-action out",
        )
    if exclusive:
        raise UsageError("--exclusive applies to --to-time, --to-lsn and --to-xid only")


@dataclass(frozen=True)
class TargetArgs:
    """A recovery target as the command line gave it, not yet checked."""

    to_time: str | None = None
    to_lsn: str | None = None
    to_xid: str | None = None
    to_name: str | None = None
    to_immediate: bool = False
    exclusive: bool = False
    action: str = "promote"
    timeline: str | None = None  # None: not given (latest)

    @property
    def point_in_time(self) -> bool:
        """Whether any ``--to-*`` target was given."""
        return any((self.to_time, self.to_lsn, self.to_xid, self.to_name, self.to_immediate))

    def parse(self) -> RecoveryTarget:
        """The checked target of a restore: a :class:`UsageError` for anything malformed."""
        return parse_target(
            to_time=self.to_time,
            to_lsn=self.to_lsn,
            to_xid=self.to_xid,
            to_name=self.to_name,
            to_immediate=self.to_immediate,
            exclusive=self.exclusive,
            action=self.action,
            timeline=self.timeline,
        )

    def sandbox_target(self, *, default_immediate: bool = False) -> RecoveryTarget:
        """The target of a sandbox (a table restore, a drill), which always promotes along
        the latest timeline; with ``default_immediate`` (a drill) no ``--to-*`` target means
        the consistency point rather than the end of the archived WAL."""
        return parse_target(
            to_time=self.to_time,
            to_lsn=self.to_lsn,
            to_xid=self.to_xid,
            to_name=self.to_name,
            to_immediate=self.to_immediate or (default_immediate and not self.point_in_time),
            exclusive=self.exclusive,
            timeline="latest",  # a sandbox has no --target-timeline to choose another
        )
