"""The retention policy engine: which backups each rule keeps, and why (no I/O: the backups'
times are given, so backups "days apart" need no waiting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgkura.config import load_config
from pgkura.errors import ConfigError, UsageError
from pgkura.repository.retention import Candidate, Policy, decide, parse_duration, policy_of

# Backups every 12 hours from Monday 2026-11-02 00:00 UTC for five weeks (70 backups).
START = datetime(2026, 11, 2, tzinfo=UTC)
TIMES = [START + timedelta(hours=12 * i) for i in range(70)]


def backups(kind: str = "physical", pinned: frozenset[int] = frozenset()) -> list[Candidate]:
    return [
        Candidate(f"{kind[0]}{i:02d}", kind, t, pinned=i in pinned) for i, t in enumerate(TIMES)
    ]


def kept(decisions: list) -> list[str]:  # type: ignore[type-arg]
    return [d.id for d in decisions if d.keep]


def test_keep_last_keeps_the_newest_n_and_says_so() -> None:
    out = decide(backups(), Policy(keep_last=3))
    assert kept(out) == ["p67", "p68", "p69"]
    by_id = {d.id: d for d in out}
    assert by_id["p69"].describe() == "kept: newest, last 3"
    assert by_id["p67"].describe() == "kept: last 3"
    assert by_id["p10"].describe() == "expired"


def test_keep_daily_keeps_the_newest_backup_of_each_recent_day() -> None:
    out = decide(backups(), Policy(keep_daily=3))
    # Days 2026-12-06, -05, -04: the 12:00 backup of each (the newest that day).
    assert kept(out) == ["p65", "p67", "p69"]
    assert {d.id: d.describe() for d in out}["p65"] == "kept: daily 2026-12-04"


def test_keep_weekly_uses_iso_weeks_in_utc() -> None:
    out = decide(backups(), Policy(keep_weekly=2))
    # Week 2026-W49 (Nov 30 - Dec 6) ends with p69; week W48 (Nov 23-29) with p55.
    assert kept(out) == ["p55", "p69"]
    assert {d.id: d.describe() for d in out}["p55"] == "kept: weekly 2026-W48"


def test_keep_monthly_keeps_the_newest_of_each_month() -> None:
    out = decide(backups(), Policy(keep_monthly=6))
    # November's last backup is 2026-11-30 12:00 (p57); December's is p69. Only two months.
    assert kept(out) == ["p57", "p69"]
    assert {d.id: d.describe() for d in out}["p57"] == "kept: monthly 2026-11"


def test_keep_within_counts_from_the_newest_backup_not_from_now() -> None:
    out = decide(backups(), Policy(keep_within=timedelta(days=2)))
    assert kept(out) == ["p65", "p66", "p67", "p68", "p69"]


def test_rules_combine_and_each_reason_is_listed() -> None:
    out = decide(backups(), Policy(keep_last=1, keep_weekly=2))
    assert {d.id: d.describe() for d in out}["p69"] == "kept: newest, last 1, weekly 2026-W49"


def test_pinned_and_pitr_window_backups_are_kept_whatever_the_policy() -> None:
    out = decide(backups(pinned=frozenset({3})), Policy(keep_last=1), pitr_backup="p40")
    assert kept(out) == ["p03", "p40", "p69"]
    by_id = {d.id: d.describe() for d in out}
    assert by_id["p03"] == "kept: pinned"
    assert by_id["p40"] == "kept: pitr window"


def test_physical_backups_and_dumps_are_judged_separately() -> None:
    mixed = backups("physical")[:5] + backups("logical")[:3]
    out = decide(mixed, Policy(keep_last=2))
    assert kept(out) == ["p03", "p04", "l01", "l02"]
    # The newest of each kind is always kept, even by a policy of one kind's count.
    assert {d.id: d.describe() for d in out}["l02"] == "kept: newest, last 2"


@pytest.mark.parametrize(
    ("text", "seconds"), [("14d", 14 * 86400), ("12h", 43200), ("2w", 14 * 86400), ("30m", 1800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "--keep-within").total_seconds() == seconds


@pytest.mark.parametrize("text", ["14", "d", "1.5d", "-2d", "3y", "14 days"])
def test_a_malformed_duration_is_one_line_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_duration(text, "--keep-within")
    assert err.value.message == f"--keep-within {text!r} is not a duration"
    assert err.value.hint and "14d" in err.value.hint


def test_a_zero_duration_is_refused_as_zero_and_a_policy_shows_durations_as_given() -> None:
    with pytest.raises(UsageError) as err:
        parse_duration("0d", "--keep-within")
    assert err.value.message == "--keep-within '0d' is a duration of zero"
    assert err.value.hint and "14d" in err.value.hint
    shown = {
        text: policy_of(
            keep_last=None,
            keep_daily=None,
            keep_weekly=None,
            keep_monthly=None,
            keep_within=text,
            pitr_window=None,
        ).describe()
        for text in ("10s", "90s", "30m", "2h", "3d", "2w")
    }
    assert shown == {t: f"keep-within {t}" for t in shown}, shown


def test_a_policy_that_keeps_nothing_is_refused() -> None:
    with pytest.raises(UsageError) as err:
        policy_of(
            keep_last=None,
            keep_daily=None,
            keep_weekly=None,
            keep_monthly=None,
            keep_within=None,
            pitr_window=None,
        )
    assert "no retention policy" in err.value.message
    assert err.value.hint and "--keep-last" in err.value.hint


def test_retention_settings_come_from_flags_environment_and_config(tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "pgkura.toml"
    config.write_text('keep-weekly = 4\npitr-window = "7d"\nexpire-auto = true\n')
    cfg = load_config({"keep_last": "3"}, str(config), {"PGKURA_KEEP_DAILY": "5"})
    assert (cfg.keep_last, cfg.keep_daily, cfg.keep_weekly) == (3, 5, 4)
    assert (cfg.pitr_window, cfg.expire_auto, cfg.max_unused) == ("7d", True, 5.0)


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_malformed_count_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"keep_last": value}, None, {})
    assert "keep-last" in err.value.message and err.value.hint


def test_a_bad_duration_is_named_as_it_was_given(tmp_path: Any) -> None:
    """PGKURA_KEEP_WITHIN=3q is reported as the variable, a config file's value with the
    file, a flag as the flag: each with an example in the same form."""
    from pgkura.commands.expire import policy_from

    conf = tmp_path / "pgkura.toml"
    conf.write_text('pitr-window = "0d"\n')
    cases = [
        ({"keep_within": "14"}, None, {}, "--keep-within '14' is not a duration",
         "--keep-within 14d"),
        ({}, None, {"PGKURA_KEEP_WITHIN": "3q"}, "PGKURA_KEEP_WITHIN '3q' is not a duration",
         "PGKURA_KEEP_WITHIN=14d"),
        ({}, str(conf), {}, f"pitr-window '0d' in config file {conf} is a duration of zero",
         'pitr-window = "14d"'),
    ]  # fmt: skip
    for flags, config_file, environ, message, example in cases:
        cfg = load_config(flags, config_file, environ)
        with pytest.raises(UsageError) as err:
            policy_from(cfg)
        assert err.value.message == message
        assert err.value.hint is not None and err.value.hint.endswith(example)
