"""The restore drill that proves a backup restores (`pgkura verify --restore`).

The backup is restored into a sandbox, WAL is replayed to its consistency point (or a --to-*
target), and the running server is checked: every database accepts connections, pg_amcheck
finds nothing, the restored data pages pass their checksums, and each table's row count is
recorded. The result, with timings, is kept in the repository (repository/drills.py) so that
`info` shows when each backup was last proven restorable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgkura.config import Config
from pgkura.errors import MissingProgramsError, PgkuraError, UnsupportedVersionError
from pgkura.physical.recovery import RecoveryTarget
from pgkura.repository.repo import iso, open_repository, utc_now

_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2"
)


@dataclass(frozen=True)
class DrillResult:
    """One drill: the record kept in the repository (``to_json``) and shown by the CLI.

    ``row_counts``, ``amcheck`` and ``pages_checked`` are None when the drill did not get as
    far as checking the server (and the last when the cluster has no data checksums)."""

    backup: str | None
    target: str
    started: str
    finished: str
    passed: bool
    problems: tuple[str, ...]
    timings: Mapping[str, float]
    row_counts: Mapping[str, Mapping[str, int]] | None = None
    amcheck: str | None = None
    pages_checked: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrillResult:
        return cls(
            backup=data["backup"],
            target=data["target"],
            started=data["started"],
            finished=data["finished"],
            passed=bool(data["passed"]),
            problems=tuple(data["problems"]),
            timings=dict(data["timings"]),
            row_counts=data.get("row_counts"),
            amcheck=data.get("amcheck"),
            pages_checked=data.get("pages_checked"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backup": self.backup,
            "target": self.target,
            "started": self.started,
            "problems": list(self.problems),
            "timings": dict(self.timings),
        }
        checked = {"row_counts": self.row_counts, "amcheck": self.amcheck,
                   "pages_checked": self.pages_checked}  # fmt: skip
        out.update({k: v for k, v in checked.items() if v is not None})
        out.update(passed=self.passed, finished=self.finished)
        return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check(sandbox: Any, result: dict[str, Any]) -> None:
    from pgkura.pg.process import run
    from pgkura.pg.scan import scan

    problems: list[str] = result["problems"]
    started = time.monotonic()
    databases = [r[0] for r in sandbox.sql(
        "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]  # fmt: skip
    counts: dict[str, dict[str, int]] = {}
    for db in databases:
        try:
            tables = sandbox.sql(_TABLES, dbname=db)
            counts[db] = {
                f"{s}.{t}": int(
                    sandbox.sql(f"SELECT count(*) FROM {_ident(s)}.{_ident(t)}", dbname=db)[0][0]
                )
                for s, t in tables
            }
        except Exception as exc:  # any failure here is the drill's finding
            problems.append(f"database {db}: {str(exc).strip().splitlines()[0]}")
    result["row_counts"] = counts
    amcheck = sandbox.server.bin_dir / "pg_amcheck"
    if amcheck.exists():
        proc = run(
            [str(amcheck), "-h", str(sandbox.server.socket_dir), "-p", str(sandbox.server.port),
             "-U", sandbox.superuser(), "--all", "--install-missing"],
            user=sandbox.server.user, check=False,
        )  # fmt: skip
        result["amcheck"] = "passed" if proc.returncode == 0 else "failed"
        if proc.returncode != 0:
            detail = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
            problems.append("pg_amcheck: " + (detail[0] if detail else f"exit {proc.returncode}"))
    else:
        result["amcheck"] = "not available"
    if sandbox.backup.data_checksums:
        sandbox.sql("CHECKPOINT")
        pages, failures = scan(sandbox.server.pgdata, 2)
        result["pages_checked"] = pages
        problems += [f"data page checksum failure: {f}" for f in failures[:10]]
    result["timings"]["checks"] = round(time.monotonic() - started, 2)


def drill_backup(cfg: Config, backup_id: str | None, target: RecoveryTarget, keep: bool = False,
                 say: Any = None) -> DrillResult:  # fmt: skip
    """Restore ``backup_id`` (None: the one ``target`` needs) into a sandbox, check the
    running server, and record the result in the repository (repository/drills.py)."""
    from pgkura.physical.sandbox import Sandbox

    result: dict[str, Any] = {
        "backup": backup_id,
        "target": target.describe(),
        "started": iso(utc_now()),
        "problems": [],
        "timings": {},
    }
    sandbox = Sandbox(cfg, target, backup_id=backup_id, keep=keep, say=say)
    try:
        with sandbox:
            result["backup"] = sandbox.backup.id
            result["target"] = sandbox.describe_target()
            result["timings"].update({k: round(v, 2) for k, v in sandbox.timings.items()})
            _check(sandbox, result)
    except (MissingProgramsError, UnsupportedVersionError):
        raise  # nothing was tried: not a finding about the backup
    except PgkuraError as exc:
        if sandbox.backup is not None:
            result["backup"] = sandbox.backup.id
        result["problems"].append(exc.message)
        result["timings"].update({k: round(v, 2) for k, v in sandbox.timings.items()})
    result["passed"] = not result["problems"]
    result["finished"] = iso(utc_now())
    done = DrillResult.from_json(result)
    if done.backup is not None:
        open_repository(cfg).drills.record(cfg.stanza, done.backup, done.to_json())
    return done
