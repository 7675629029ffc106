"""Freshness checks (`pgkura check --max-age`): is the newest backup, the newest archived WAL
segment and the newest drill that passed recent enough? Each limit that does not hold is one
problem naming what is old and by how much ("the newest backup is 27 h old")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pgkura.monitor.facts import StanzaFacts
from pgkura.repository.retention import parse_duration


@dataclass(frozen=True)
class Freshness:
    """The limits given; None: not checked."""

    max_age: timedelta | None = None
    max_wal_age: timedelta | None = None
    require_drill_age: timedelta | None = None

    @classmethod
    def parse(
        cls, max_age: str | None, max_wal_age: str | None, require_drill_age: str | None
    ) -> Freshness:
        """The limits from their command-line text; a UsageError naming a bad one."""
        return cls(
            None if max_age is None else parse_duration(max_age, "--max-age"),
            None if max_wal_age is None else parse_duration(max_wal_age, "--max-wal-age"),
            None
            if require_drill_age is None
            else parse_duration(require_drill_age, "--require-drill-age"),
        )

    def any(self) -> bool:
        return any(v is not None for v in (self.max_age, self.max_wal_age, self.require_drill_age))


def describe_age(seconds: float) -> str:
    """An age as people say it: 40 s, 12 min, 27 h, 8 days."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _limit(limit: timedelta) -> str:
    return f"limit {describe_age(limit.total_seconds())}"


def judge_freshness(
    facts: StanzaFacts, limits: Freshness, now: float
) -> tuple[list[str], list[str]]:
    """(what held, what did not) of ``limits`` for the stanza ``facts``, at time ``now``."""
    passed: list[str] = []
    problems: list[str] = []
    newest = facts.newest_backup()
    if limits.max_age is not None:
        if newest is None:
            problems.append(f"stanza {facts.stanza!r} has no backup ({_limit(limits.max_age)})")
        else:
            age = now - newest.last_finished
            what = (
                f"the newest backup is {describe_age(age)} old ({newest.last_id}, {newest.kind} "
                f"{newest.method}; {_limit(limits.max_age)})"
            )
            (problems if age > limits.max_age.total_seconds() else passed).append(what)
    if limits.max_wal_age is not None:
        last = facts.wal_last_archived
        if last is None:
            problems.append(f"no WAL has been archived ({_limit(limits.max_wal_age)})")
        else:
            age = now - last
            if age > limits.max_wal_age.total_seconds():
                problems.append(f"no WAL archived for {describe_age(age)} "
                                f"({_limit(limits.max_wal_age)})")  # fmt: skip
            else:
                passed.append(
                    f"WAL archived {describe_age(age)} ago ({_limit(limits.max_wal_age)})"
                )
    if limits.require_drill_age is not None:
        last = facts.drills.last_passed_finished
        limit = _limit(limits.require_drill_age)
        if last is None:
            problems.append(f"no drill has passed yet ({limit}; run pgkura verify --restore)")
        else:
            age = now - last
            if age > limits.require_drill_age.total_seconds():
                problems.append(f"no drill passed in {describe_age(age)} ({limit})")
            else:
                passed.append(f"a drill passed {describe_age(age)} ago ({limit})")
    return passed, problems
