"""Which backups a retention policy keeps, and why: a pure function of the backups' kinds,
times and pins (no I/O), so that every rule can be tested on backups "days apart" without
waiting days.

The calendar rules follow restic's ``forget``: ``keep_daily N`` keeps the newest backup of
each of the N most recent UTC days that have a backup (``keep_weekly`` ISO weeks,
``keep_monthly`` months); ``keep_within D`` keeps every backup taken within D of the newest
one (not of now: a repository nobody backed up for a month does not lose everything). The
policy applies to physical backups and to logical dumps separately; the newest of each kind and
every pinned one are always kept. The PITR window's backup is chosen by the caller from the
archived WAL (``repository.walretention``) and handed in as ``pitr_backup``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pgkura.errors import UsageError

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|min|m|h|d|w)\s*$")
_UNITS = {"s": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, setting: str) -> timedelta:
    """``14d``, ``12h``, ``2w``, ``30m`` (or ``30min``), ``30s`` as a timedelta; a UsageError
    naming ``setting`` as it was given (``--keep-within``, ``PGKURA_KEEP_WITHIN``, or
    ``keep-within in config file PATH``: Config.named). Every duration pgkura takes is read
    here (retention, check's freshness limits)."""
    key, _, where = setting.partition(" in ")
    shown = f"{key} {text!r}" + (f" in {where}" if where else "")
    example = (
        f'{key} = "14d"' if where else f"{key}=14d" if key.startswith("PGKURA_") else f"{key} 14d"
    )
    m = _DURATION_RE.match(text)
    if not m:
        raise UsageError(
            f"{shown} is not a duration",
            hint=f"give a whole number and a unit, s, min (or m), h, d or w: {example}",
        )
    if int(m.group(1)) == 0:
        raise UsageError(f"{shown} is a duration of zero", hint=f"give a longer one: {example}")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_within: timedelta | None = None
    pitr_window: timedelta | None = None

    def keeps_anything(self) -> bool:
        return any(
            v is not None
            for v in (
                self.keep_last,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_within,
                self.pitr_window,
            )
        )

    def describe_window(self) -> str:
        return _short(self.pitr_window) or "-"

    def describe(self) -> str:
        parts = [
            f"{name} {value}"
            for name, value in (
                ("keep-last", self.keep_last),
                ("keep-daily", self.keep_daily),
                ("keep-weekly", self.keep_weekly),
                ("keep-monthly", self.keep_monthly),
                ("keep-within", _short(self.keep_within)),
                ("pitr-window", _short(self.pitr_window)),
            )
            if value is not None
        ]
        return ", ".join(parts)


def _short(delta: timedelta | None) -> str | None:
    if delta is None:
        return None
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # as given: 10s is no 0m, 90s no 1m


def policy_of(
    *,
    keep_last: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_within: str | None,
    pitr_window: str | None,
    named: Callable[[str], str] = lambda name: "--" + name.replace("_", "-"),
) -> Policy:
    """The policy of the settings; refused when it keeps nothing. ``named`` says how a
    message names a setting (Config.named: as it was given)."""
    policy = Policy(
        keep_last=keep_last,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_within=None
        if keep_within is None
        else parse_duration(keep_within, named("keep_within")),
        pitr_window=None
        if pitr_window is None
        else parse_duration(pitr_window, named("pitr_window")),
    )
    if not policy.keeps_anything():
        raise UsageError(
            "no retention policy is set: expire would keep only the newest backup of each kind",
            hint="give at least one of --keep-last N, --keep-daily N, --keep-weekly N, "
            "--keep-monthly N, --keep-within DURATION, --pitr-window DURATION (or their "
            "PGKURA_* variables or config keys)",
        )
    return policy


@dataclass(frozen=True)
class Candidate:
    """A committed backup or dump, as the policy sees it."""

    id: str
    kind: str  # "physical" or "logical"
    time: datetime  # when it was taken (UTC)
    pinned: bool = False


@dataclass(frozen=True)
class Decision:
    id: str
    kind: str
    reasons: tuple[str, ...]  # empty: expired

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def describe(self) -> str:
        return "kept: " + ", ".join(self.reasons) if self.reasons else "expired"

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "keep": self.keep, "why": self.describe()}


def decide(
    candidates: Iterable[Candidate], policy: Policy, pitr_backup: str | None = None
) -> list[Decision]:
    """A decision for each candidate, in the order given; the newest of each kind and the
    pinned ones are always kept, and ``pitr_backup`` (the PITR window's start) too."""
    given = list(candidates)
    reasons: dict[str, list[str]] = {c.id: [] for c in given}
    for kind in ("physical", "logical"):
        of_kind = sorted((c for c in given if c.kind == kind), key=lambda c: c.time, reverse=True)
        for c, why in _reasons(of_kind, policy):
            reasons[c.id].append(why)
    for c in given:
        if c.id == pitr_backup:
            reasons[c.id].append("pitr window")
        if c.pinned:
            reasons[c.id].append("pinned")
    return [Decision(c.id, c.kind, tuple(reasons[c.id])) for c in given]


def _reasons(newest_first: Sequence[Candidate], policy: Policy) -> list[tuple[Candidate, str]]:
    if not newest_first:
        return []
    out: list[tuple[Candidate, str]] = [(newest_first[0], "newest")]
    if policy.keep_last is not None:
        out += [(c, f"last {policy.keep_last}") for c in newest_first[: policy.keep_last]]
    for count, label, bucket in (
        (policy.keep_daily, "daily", _day),
        (policy.keep_weekly, "weekly", _week),
        (policy.keep_monthly, "monthly", _month),
    ):
        if count is None:
            continue
        seen: set[str] = set()
        for c in newest_first:
            b = bucket(c.time)
            if b in seen:
                continue
            if len(seen) == count:
                break
            seen.add(b)
            out.append((c, f"{label} {b}"))
    if policy.keep_within is not None:
        limit = newest_first[0].time - policy.keep_within
        out += [
            (c, f"within {_short(policy.keep_within)}") for c in newest_first if c.time >= limit
        ]
    return out


def _day(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d")


def _week(t: datetime) -> str:
    year, week, _ = t.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _month(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m")
