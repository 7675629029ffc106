"""What the CLI does without click, shared by the full CLI and the fast paths of
:mod:`pgkura.entry`: the start of an invocation (logging, the sweep of dead runs' scratch),
the JSON document of ``--output json``, and verify's report as text. Importing this module
imports nothing but the standard library's json and logging: a fast path must print, byte
for byte, what the full CLI prints."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Protocol

from pgkura.errors import ConfigError, CorruptionError

if TYPE_CHECKING:
    from pgkura.commands.verify import VerifyReport
    from pgkura.config import Config

log = logging.getLogger("pgkura")

#: The version of the JSON objects the commands print (docs/json-output.md, "Stability"):
#: raised only when a field is removed, renamed or changes meaning; new fields come without.
JSON_SCHEMA_VERSION = 1
#: The names scratch.make_scratch gives (scratch._NAME matches the same).
_SCRATCH_NAME = re.compile(r"pgkura-[a-z]+-[0-9]+-")


class Result(Protocol):
    """A command's typed result: what ``--output json`` prints."""

    def to_json(self) -> dict[str, Any]: ...


def json_document(result: Result) -> str:
    """``result`` as the one JSON object of ``--output json`` (without the final newline)."""
    return json.dumps({"schema_version": JSON_SCHEMA_VERSION, **result.to_json()}, indent=2)


def start_invocation(cfg: Config) -> None:
    """Set up logging at ``cfg``'s level and remove the scratch directories of runs that are
    gone (only when the scratch parent holds something that may be one: the sweep's imports
    cost a fast path more than its listing)."""
    level = getattr(logging, cfg.log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(
            f"unknown log level {cfg.log_level!r}", hint="use debug, info, warning or error"
        )
    logging.basicConfig(level=level, format="pgkura: %(message)s", stream=sys.stderr)
    if not _may_hold_scratch():
        return
    from pgkura.scratch import sweep_scratch

    for path in sweep_scratch():
        log.info("removed %s, left by a pgkura run that is gone", path)


def _may_hold_scratch() -> bool:
    """False only when the scratch parent is the default one, /tmp, and it holds nothing
    named as a scratch directory is (scratch.make_scratch: ``pgkura-<kind>-<pid>-...``).
    With $TMPDIR (or what else tempfile asks) set, or /tmp unusable, the sweep decides."""
    if any(os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")):
        return True
    try:
        if not os.access("/tmp", os.W_OK | os.X_OK):
            return True
        return any(_SCRATCH_NAME.match(name) for name in os.listdir("/tmp"))
    except OSError:
        return True  # let the sweep find out what is wrong


def verify_lines(report: VerifyReport, *, whole_archive: bool) -> list[str]:
    """What ``pgkura verify`` (not a drill) prints for ``report`` on stdout, line by line."""
    out = [f"backup {b.id}: {'ok' if b.ok else 'PROBLEMS'}" for b in report.backups]
    if whole_archive:
        full = f", {report.wal_checked_in_full} unsealed in full" if report.quick else ""
        out.append(f"WAL archive: {report.wal_checked} files checked{full}")
    if report.quick:
        out.append(
            f"stored blocks: {report.blocks_checked} checked as stored "
            f"({report.stored_bytes_read / 1e6:.1f} MB read), without decompressing"
        )
        if report.blocks_checked_in_full:
            out.append(
                f"  of which {report.blocks_checked_in_full} unsealed in full: their packs "
                "record no digest of their stored bytes (written before pgkura did, or that "
                "record is damaged)"
            )
    elif report.pages_recomputed:
        out.append("data page checksums: recomputed from the stored blocks")
    else:
        out.append("data page checksums: as each backup found them when it read the pages")
    out += [f"problem: {problem}" for problem in report.problems]
    return out


def verify_failed(report: VerifyReport) -> CorruptionError:
    """The error verify exits with when it found problems (exit 7)."""
    return CorruptionError(
        f"verify found {len(report.problems)} problem(s)",
        hint="restore from a backup verify reports ok; take a new backup",
    )
