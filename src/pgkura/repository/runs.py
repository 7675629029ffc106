"""Run records: when the last verify, expire and gc ended and how (docs/repository-format.md,
"Run records"), written at the end of each run and read by `pgkura metrics` and `check`.

A record is a report about the repository, never needed to restore anything: plain JSON in an
unencrypted repository, sealed in an encrypted one (``repo.put_record``), one per stanza and
verb (gc's is the repository's: it works for every stanza), each run replacing the last.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pgkura.errors import ObjectNotFound, PgkuraError
from pgkura.repository import layout
from pgkura.repository.repo import iso, utc_now

if TYPE_CHECKING:
    from pgkura.repository.repo import Repository

log = logging.getLogger("pgkura")

#: The verbs that leave a run record; gc's is per repository, the others' per stanza.
VERBS = ("verify", "expire", "gc")


@dataclass(frozen=True)
class RunRecord:
    """How one run of ``verb`` ended: ``ok`` is false when it found problems or failed
    (``error`` then says why); ``facts`` are the run's figures (verify: backups checked and
    problems; gc: repository and unused bytes)."""

    verb: str
    stanza: str | None
    started: str
    finished: str
    ok: bool
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "stanza": self.stanza,
            "started": self.started,
            "finished": self.finished,
            "ok": self.ok,
            "error": self.error,
            "facts": dict(self.facts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        if data.get("verb") not in VERBS or not isinstance(data.get("finished"), str):
            raise ValueError(f"not a run record: {data!r:.200}")
        facts = data.get("facts")
        return cls(
            verb=data["verb"],
            stanza=data.get("stanza"),
            started=str(data.get("started", data["finished"])),
            finished=data["finished"],
            ok=bool(data.get("ok")),
            error=data.get("error"),
            facts=dict(facts) if isinstance(facts, dict) else {},
        )


def _stanza_of(verb: str, stanza: str | None) -> str | None:
    return None if verb == "gc" else stanza


def record_run(repo: Repository, record: RunRecord) -> None:
    """Keep ``record`` as the last run of its verb (replacing the one before)."""
    key = layout.run_key(_stanza_of(record.verb, record.stanza), record.verb)
    repo.put_record(key, json.dumps(record.to_json(), indent=1).encode())


def last_run(repo: Repository, verb: str, stanza: str | None) -> RunRecord | None:
    """The last run of ``verb`` (of ``stanza``; gc's is the repository's), None when there was
    none or its record cannot be read."""
    try:
        data = json.loads(repo.get_record(layout.run_key(_stanza_of(verb, stanza), verb)))
        return RunRecord.from_json(data)
    except (ObjectNotFound, ValueError, TypeError, AttributeError):
        return None


class _Report(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Report)


def facts_of(report: _Report) -> dict[str, Any]:
    """The figures of a command's report worth keeping: its scalar fields, and the length of
    its lists (verify's ``problems``: how many)."""
    out: dict[str, Any] = {}
    for name, value in report.to_json().items():
        if isinstance(value, bool | int | float | str):
            out[name] = value
        elif isinstance(value, list):
            out[name] = len(value)
    return out


class Recorded:
    """What :func:`recorded` yields: :meth:`done` records a run's report; a run that raises
    is recorded as failed, with its error."""

    def __init__(self, repo: Repository, verb: str, stanza: str | None, dry_run: bool) -> None:
        self._repo, self._verb, self._stanza, self._dry_run = repo, verb, stanza, dry_run
        self._started = iso(utc_now())

    def done(self, report: R, *, gc: _Report | None = None) -> R:
        """Record ``report`` as the run's result (``ok`` is its own, when it has one) and
        ``gc``'s as the repository's last gc (expire runs one); return ``report``."""
        if not self._dry_run:
            self._keep(self._verb, report)
            if gc is not None:
                self._keep("gc", gc)
        return report

    def _keep(self, verb: str, report: _Report) -> None:
        facts = facts_of(report)
        ok = bool(facts.pop("ok", True))
        self._write(RunRecord(verb, self._stanza, self._started, iso(utc_now()), ok, None, facts))

    def _write(self, record: RunRecord) -> None:
        # A record that cannot be written must not turn a verify that held into a failure
        # (a read-only store can be verified); metrics show the older record's age instead.
        try:
            record_run(self._repo, record)
        except (PgkuraError, OSError) as exc:
            log.warning("the result of %s could not be recorded: %s", record.verb, exc)

    def __enter__(self) -> Recorded:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or self._dry_run or not isinstance(exc, PgkuraError):
            return
        self._write(
            RunRecord(self._verb, self._stanza, self._started, iso(utc_now()), False, exc.message)
        )


def recorded(repo: Repository, verb: str, stanza: str | None, *, dry_run: bool = False) -> Recorded:
    """Record how this run of ``verb`` ends (``with recorded(...) as run: return
    run.done(report)``); a dry run records nothing."""
    return Recorded(repo, verb, stanza, dry_run)
