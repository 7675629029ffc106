"""What monitoring asks of a repository, per stanza: the catalog (backups per kind and method,
their times and sizes), the WAL archive (gaps, the last archived segment, the recoverable
window), the restore drills, and how the last verify, expire and gc ended (`pgkura metrics`
and `pgkura check --max-age`).

Everything comes from what the repository already holds: manifests, the WAL archive's
listing, drill records and run records (repository/runs.py). Nothing here writes. Times are
seconds since the epoch (UTC), as Prometheus takes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from pgkura.errors import PgkuraError
from pgkura.monitor.server import ServerFacts
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.doomed import doomed_packs
from pgkura.repository.manifest import Manifest, list_stanzas
from pgkura.repository.manifest_heads import manifest_heads
from pgkura.repository.repo import Repository
from pgkura.repository.runs import RunRecord, last_run
from pgkura.wal.catalog import ArchiveCatalog, load_catalog, newest_archived_time
from pgkura.wal.retention import seg_size_of


def timestamp(text: str | None) -> float | None:
    """An ISO 8601 time of a record as seconds since the epoch (no zone: UTC)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def rfc3339(ts: float | None) -> str | None:
    """A time of the facts as the JSON output writes times (docs/json-output.md): RFC 3339 in
    UTC, to the millisecond."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _plain(obj: Any, times: tuple[str, ...] = ()) -> dict[str, Any]:
    """``obj``'s fields as JSON; those named in ``times`` (seconds since the epoch, as the
    exposition has them) as RFC 3339 text, as every command's JSON writes times."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in times:
            value = rfc3339(value)
        elif hasattr(value, "to_json"):
            value = value.to_json()
        elif isinstance(value, tuple):
            value = [v.to_json() if hasattr(v, "to_json") else v for v in value]
        out[f.name] = value
    return out


@dataclass(frozen=True)
class MethodFacts:
    """The backups of one kind and method (physical/online, logical/pg_dump, ...): how many,
    and what the newest one's manifest says (``last_*``)."""

    kind: str
    method: str
    count: int
    last_id: str
    last_started: float
    last_finished: float
    last_duration_seconds: float
    last_size_bytes: int
    last_stored_bytes: int
    last_new_bytes: int
    #: pages whose checksum failed when the newest backup read them
    last_checksum_failures: int

    def to_json(self) -> dict[str, Any]:
        return _plain(self, ("last_started", "last_finished"))


@dataclass(frozen=True)
class TimelineFacts:
    """One timeline of the current generation's WAL archive."""

    timeline: int
    segments: int
    #: holes between archived segments, and how many segments they miss
    gaps: int
    missing_segments: int

    def to_json(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class DrillFacts:
    """The stanza's restore drills: the latest one (of any backup), and the newest backup a
    drill proved restorable (its latest drill passed)."""

    last_finished: float | None
    last_passed: bool
    last_backup: str | None
    #: measured restore and recovery seconds of the latest drill: a measured RTO
    last_restore_seconds: float | None
    last_recovery_seconds: float | None
    proven_backup: str | None
    proven_backup_started: float | None
    #: when the newest drill that passed finished (of any backup)
    last_passed_finished: float | None

    def to_json(self) -> dict[str, Any]:
        return _plain(self, ("last_finished", "proven_backup_started", "last_passed_finished"))


@dataclass(frozen=True)
class RunFacts:
    """How the last verify, expire or gc ended (repository/runs.py)."""

    verb: str
    finished: float | None
    ok: bool
    error: str | None
    facts: dict[str, Any]

    @classmethod
    def of(cls, record: RunRecord) -> RunFacts:
        return cls(record.verb, timestamp(record.finished), record.ok, record.error, record.facts)

    def to_json(self) -> dict[str, Any]:
        return _plain(self, ("finished",))


@dataclass(frozen=True)
class StanzaFacts:
    stanza: str
    backups: tuple[MethodFacts, ...]
    damaged_manifests: int
    timelines: tuple[TimelineFacts, ...]
    wal_last_archived: float | None
    #: the recoverable window of the current generation (None: there is none)
    window_start: float | None
    window_end: float | None
    window_problem: str | None
    drills: DrillFacts
    verify: RunFacts | None
    expire: RunFacts | None
    server: ServerFacts | None = None
    #: why the server (--dbconn) could not be asked, when it could not
    server_error: str | None = None

    def newest_backup(self) -> MethodFacts | None:
        """The backup (of any kind) that finished last."""
        return max(self.backups, key=lambda b: b.last_finished, default=None)

    def to_json(self) -> dict[str, Any]:
        return _plain(self, ("wal_last_archived", "window_start", "window_end"))


@dataclass(frozen=True)
class RepositoryFacts:
    """Everything `pgkura metrics` shows, as ``metrics --output json`` prints it."""

    repository: str
    collected: float
    #: stored bytes of all packs, and of the packs a gc has listed for deletion
    pack_bytes: int
    packs: int
    doomed_pack_bytes: int
    #: bytes no backup references, as the last gc measured them, plus the doomed packs'
    unused_bytes: int | None
    gc: RunFacts | None
    stanzas: tuple[StanzaFacts, ...]

    def to_json(self) -> dict[str, Any]:
        return _plain(self, ("collected",))


def repository_facts(
    repo: Repository, stanzas: Iterable[str] | None = None, server: Any = None
) -> RepositoryFacts:
    """The facts of ``stanzas`` (default: every stanza with a backup, a stanza record or
    run records); ``server(stanza, catalog)`` gives a stanza's ServerFacts (``--dbconn``)."""
    names = sorted(set(stanzas) if stanzas is not None else set(list_stanzas(repo)))
    sizes = BlockIndex(repo).pack_sizes()
    doomed = doomed_packs(repo)
    gc = last_run(repo, "gc", None)
    doomed_bytes = sum(n for p, n in sizes.items() if p in doomed)
    unused = None
    if gc is not None and gc.ok and isinstance(gc.facts.get("unreferenced_bytes_kept"), int):
        unused = int(gc.facts["unreferenced_bytes_kept"]) + doomed_bytes
    return RepositoryFacts(
        repository=repo.location,
        collected=datetime.now(UTC).timestamp(),
        pack_bytes=sum(sizes.values()),
        packs=len(sizes),
        doomed_pack_bytes=doomed_bytes,
        unused_bytes=unused,
        gc=RunFacts.of(gc) if gc is not None else None,
        stanzas=tuple(stanza_facts(repo, s, server) for s in names),
    )


def _manifests(repo: Repository, stanza: str) -> tuple[list[Manifest], int]:
    """The stanza's manifests without their files (cached: repository/manifest_heads.py),
    oldest first, and how many could not be read."""
    heads, damaged = manifest_heads(repo, stanza)
    return heads, len(damaged)


def _method_facts(manifests: list[Manifest]) -> tuple[MethodFacts, ...]:
    groups: dict[tuple[str, str], list[Manifest]] = {}
    for m in manifests:
        groups.setdefault((m.kind, m.method), []).append(m)
    out = []
    for (kind, method), group in sorted(groups.items()):
        last = max(group, key=lambda m: (timestamp(m.finished) or 0.0, m.id))
        started, finished = timestamp(last.started) or 0.0, timestamp(last.finished) or 0.0
        out.append(
            MethodFacts(
                kind, method, len(group), last.id, started, finished,
                round(max(finished - started, 0.0), 3), last.size_bytes, last.stored_bytes,
                last.new_bytes, sum(int(f.get("count", 0)) for f in last.checksum_failures),
            )
        )  # fmt: skip
    return tuple(out)


def _timeline_facts(catalog: ArchiveCatalog, gaps_from: int | None) -> tuple[TimelineFacts, ...]:
    """Per timeline: its segments and the holes between them, except holes that end before
    segment ``gaps_from``, which expire left on purpose beside a backup pinned without
    --pitr (the rule verify judges gaps by: physical/verify.py, gaps_matter_from)."""
    out = []
    for tli in sorted(catalog.timelines):
        runs = catalog.timelines[tli].runs()
        holes = [
            (a[1] + 1, b[0] - 1)
            for a, b in pairwise(runs)
            if gaps_from is None or b[0] - 1 >= gaps_from
        ]
        missing = sum(last - first + 1 for first, last in holes)
        out.append(TimelineFacts(tli, len(catalog.timelines[tli].segnos), len(holes), missing))
    return tuple(out)


def _gaps_from(repo: Repository, stanza: str, manifests: list[Manifest], seg: int) -> int | None:
    """The first segment from which a hole in the archive matters: the start of the oldest
    online backup that keeps point-in-time recovery after it (None: every hole does)."""
    from pgkura.repository.pins import pins
    from pgkura.wal.names import parse_lsn

    pinned = pins(repo, stanza)
    starts = [
        parse_lsn(m.start_lsn) // int(m.extra.get("wal_segment_size", seg))
        for m in manifests
        if m.kind == "physical" and m.method != "offline" and m.start_lsn
        and not (m.id in pinned and not pinned[m.id].pitr)
    ]  # fmt: skip
    return min(starts, default=None)


def _drill_facts(repo: Repository, stanza: str, manifests: list[Manifest]) -> DrillFacts:
    records = repo.drills.all(stanza)
    started = {m.id: timestamp(m.started) for m in manifests}
    latest = max(records.values(), key=lambda r: str(r.get("finished") or ""), default=None)
    passed = [r for r in records.values() if r.get("passed")]
    proven = max(
        (bid for bid, r in records.items() if r.get("passed") and bid in started),
        key=lambda bid: started[bid] or 0.0,
        default=None,
    )
    timings = latest.get("timings") if latest else None
    timings = timings if isinstance(timings, dict) else {}
    return DrillFacts(
        last_finished=timestamp(latest.get("finished")) if latest else None,
        last_passed=bool(latest and latest.get("passed")),
        last_backup=latest.get("backup") if latest else None,
        last_restore_seconds=_seconds(timings.get("restore")),
        last_recovery_seconds=_seconds(timings.get("recovery")),
        proven_backup=proven,
        proven_backup_started=started.get(proven) if proven else None,
        last_passed_finished=max(
            (t for r in passed if (t := timestamp(r.get("finished"))) is not None), default=None
        ),
    )


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stanza_facts(repo: Repository, stanza: str, server: Any = None) -> StanzaFacts:
    """The facts of one stanza (the module's docstring)."""
    from pgkura.physical.window import wal_facts

    manifests, damaged = _manifests(repo, stanza)
    info = repo.stanza(stanza)
    sysid = info.system_identifier if info is not None else None
    current = [m for m in manifests if sysid is None or m.system_identifier == sysid]
    archive = info.archive(info.current) if info is not None else stanza
    catalog = load_catalog(repo, archive, seg_size_of(current))
    wal = wal_facts(repo, archive, current, catalog)
    window = wal.get("window") or {}
    verify, expire = last_run(repo, "verify", stanza), last_run(repo, "expire", stanza)
    asked, server_error = None, None
    if server is not None:
        try:  # a server that is down must not hide what the repository says
            asked = server(stanza, catalog)
        except PgkuraError as exc:
            server_error = exc.message
    return StanzaFacts(
        stanza=stanza,
        backups=_method_facts(manifests),
        damaged_manifests=damaged,
        timelines=_timeline_facts(catalog, _gaps_from(repo, stanza, current, catalog.seg_size)),
        wal_last_archived=newest_archived_time(catalog),
        window_start=timestamp(window.get("from_time")),
        window_end=timestamp(window.get("to_time")),
        window_problem=wal.get("window_problem"),
        drills=_drill_facts(repo, stanza, manifests),
        verify=RunFacts.of(verify) if verify is not None else None,
        expire=RunFacts.of(expire) if expire is not None else None,
        server=asked,
        server_error=server_error,
    )
