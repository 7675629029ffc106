"""The recoverable window of a stanza generation: how far its archived WAL lets its online
backups be recovered, per timeline (`pgkura info`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pgkura.errors import PgkuraError
from pgkura.repository.repo import Repository
from pgkura.wal.names import DEFAULT_SEG_SIZE, format_lsn


def wal_facts(
    repo: Repository, archive: str, manifests: list[Any], catalog: Any = None
) -> dict[str, Any]:
    """The WAL in ``archive`` (one generation's) per timeline, ranges and gaps, and the
    recoverable window from the generation's backups ``manifests``; ``catalog``: the
    archive's catalog when the caller has loaded it already."""
    from pgkura.physical.choose import consistency_lsn, consistency_time, left_out_wal
    from pgkura.wal.catalog import describe_runs, load_catalog, timeline_history
    from pgkura.wal.names import parse_lsn

    online = [m for m in manifests if m.kind == "physical" and m.method != "offline"]
    seg_size = (
        int(online[-1].extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
        if online
        else (DEFAULT_SEG_SIZE)
    )
    if catalog is None:
        catalog = load_catalog(repo, archive, seg_size)
    facts: dict[str, Any] = {"timelines": describe_runs(catalog), "window": None}
    if not online:
        return facts
    first = online[0]
    latest = max(catalog.latest_timeline(), first.timeline or 1)
    try:
        history = timeline_history(repo, archive, latest)
    except PgkuraError as exc:
        facts["window_problem"] = exc.message
        return facts
    start = parse_lsn(first.start_lsn) if first.start_lsn else consistency_lsn(first)
    end_lsn, end_time = catalog.replay_end(history, start)
    if end_lsn < consistency_lsn(first):
        facts["window_problem"] = (
            f"the oldest online backup {first.id} cannot become consistent: archived WAL ends "
            f"at {format_lsn(end_lsn)}"
        )
        return facts
    facts["window"] = {
        "timeline": latest,
        "from_backup": first.id,
        "from_lsn": first.stop_lsn,
        "from_time": consistency_time(first).isoformat(),
        "to_lsn": format_lsn(end_lsn),
        "to_time": datetime.fromtimestamp(end_time, UTC).isoformat() if end_time else None,
    }
    left_out = left_out_wal(history, catalog, first.timeline or 1)
    if left_out is not None:
        facts["window_warning"] = f"{left_out.message}; {left_out.hint}"
    return facts
