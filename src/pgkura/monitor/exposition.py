"""The Prometheus exposition of a repository's facts (monitor/facts.py), built with
prometheus_client: a custom collector whose families are read afresh at each collection.

Labels are few and bounded: ``stanza``, ``kind`` and ``method`` (and ``timeline`` for the WAL
archive's per-timeline families); backup ids and LSNs never become labels, so a new backup
updates a series instead of starting one. Times are seconds since the epoch
(``*_timestamp_seconds``): an alert computes an age as ``time() - metric``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pgkura.errors import PgkuraError
from pgkura.monitor.facts import RepositoryFacts, RunFacts, StanzaFacts

#: family name (without pgkura_) -> (help, MethodFacts attribute), per stanza, kind and method
_BACKUP_FAMILIES = {
    "backups": ("Backups and dumps in the repository", "count"),
    "backup_last_success_timestamp_seconds": (
        "When the newest successful backup of this kind and method finished",
        "last_finished",
    ),
    "backup_last_duration_seconds": ("How long the newest backup took", "last_duration_seconds"),
    "backup_last_size_bytes": ("Logical size of the newest backup", "last_size_bytes"),
    "backup_last_stored_bytes": (
        "Stored (compressed, deduplicated) bytes the newest backup references",
        "last_stored_bytes",
    ),
    "backup_last_new_bytes": ("Bytes the newest backup added to the repository", "last_new_bytes"),
    "backup_last_checksum_failures": (
        "Data pages whose checksum failed when the newest backup read them",
        "last_checksum_failures",
    ),
}


class _Families:
    """Gauges (and counters) by name, filled stanza by stanza."""

    def __init__(self) -> None:
        self._all: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(
        self,
        name: str,
        help_text: str,
        value: float | bool | None,
        labels: dict[str, str] | None = None,
        *,
        counter: bool = False,
    ) -> None:
        if value is None:
            return
        labels = labels or {}
        family = self._all.get(name)
        if family is None:
            kind: Any = CounterMetricFamily if counter else GaugeMetricFamily
            family = kind(f"pgkura_{name}", help_text, labels=list(labels))
            self._all[name] = family
        family.add_metric(list(labels.values()), float(value))

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._all.values())


def families(facts: RepositoryFacts) -> list[Metric]:
    """Every family of ``facts``."""
    out = _Families()
    out.add("collected_timestamp_seconds", "When these metrics were read", facts.collected)
    out.add("repository_bytes", "Stored bytes of all packs", facts.pack_bytes)
    out.add("repository_packs", "Packs in the repository", facts.packs)
    out.add(
        "repository_doomed_bytes",
        "Bytes of packs gc has listed for deletion once running commands end",
        facts.doomed_pack_bytes,
    )
    out.add(
        "repository_unused_bytes",
        "Bytes no backup references (what gc would reclaim), as the last gc measured them, "
        "with the packs it listed for deletion",
        facts.unused_bytes,
    )
    if facts.unused_bytes is not None and facts.pack_bytes:
        out.add(
            "repository_unused_ratio",
            "Share of the pack bytes no backup references",
            facts.unused_bytes / facts.pack_bytes,
        )
    _runs(out, facts.gc, "gc", {})
    for stanza in facts.stanzas:
        _stanza(out, stanza, facts.collected)
    return list(out)


def _runs(out: _Families, run: RunFacts | None, verb: str, labels: dict[str, str]) -> None:
    if run is None:
        return
    out.add(f"{verb}_last_timestamp_seconds", f"When the last {verb} ended", run.finished, labels)
    out.add(f"{verb}_last_success", f"1 when the last {verb} succeeded, else 0", run.ok, labels)
    if verb == "verify" and isinstance(run.facts.get("problems"), int):
        out.add(
            "verify_last_problems", "Problems the last verify found", run.facts["problems"], labels
        )


def _stanza(out: _Families, s: StanzaFacts, now: float) -> None:
    by = {"stanza": s.stanza}
    for b in s.backups:
        labels = {**by, "kind": b.kind, "method": b.method}
        for name, (help_text, attr) in _BACKUP_FAMILIES.items():
            out.add(name, help_text, getattr(b, attr), labels)
    out.add("backup_damaged_manifests", "Manifests that cannot be read", s.damaged_manifests, by)
    out.add(
        "pitr_window_available",
        "1 when point-in-time recovery is possible (the current generation)",
        s.window_start is not None,
        by,
    )
    out.add("pitr_window_start_timestamp_seconds", "Oldest recoverable point", s.window_start, by)
    out.add(
        "pitr_window_end_timestamp_seconds",
        "Newest recoverable point: when the last WAL segment replay reaches was archived",
        s.window_end,
        by,
    )
    for tl in s.timelines:
        labels = {**by, "timeline": str(tl.timeline)}
        out.add("wal_segments", "Archived WAL segments", tl.segments, labels)
        out.add("wal_gaps", "Holes between archived WAL segments", tl.gaps, labels)
        out.add("wal_missing_segments", "WAL segments the holes miss", tl.missing_segments, labels)
    out.add(
        "wal_last_archived_timestamp_seconds",
        "When the newest WAL segment was archived",
        s.wal_last_archived,
        by,
    )
    _drills(out, s, by, now)
    _runs(out, s.verify, "verify", by)
    _runs(out, s.expire, "expire", by)
    if s.server is not None or s.server_error is not None:
        out.add(
            "server_up", "1 when the server (--dbconn) answered, else 0", s.server is not None, by
        )
    if s.server is not None:
        _server(out, s, by)


def _drills(out: _Families, s: StanzaFacts, by: dict[str, str], now: float) -> None:
    d = s.drills
    if d.last_finished is not None:
        out.add("drill_last_timestamp_seconds", "When the latest drill ended", d.last_finished, by)
        out.add("drill_last_success", "1 when the latest drill passed", d.last_passed, by)
    out.add(
        "drill_last_restore_seconds", "Restore time of the latest drill", d.last_restore_seconds, by
    )
    out.add(
        "drill_last_recovery_seconds",
        "WAL recovery time of the latest drill",
        d.last_recovery_seconds,
        by,
    )
    if d.last_restore_seconds is not None and d.last_recovery_seconds is not None:
        out.add(
            "drill_last_rto_seconds",
            "Restore plus recovery time of the latest drill: a measured RTO",
            d.last_restore_seconds + d.last_recovery_seconds,
            by,
        )
    out.add(
        "drill_last_success_timestamp_seconds",
        "When the newest drill that passed ended",
        d.last_passed_finished,
        by,
    )
    if d.proven_backup_started is not None:
        out.add(
            "drill_proven_backup_timestamp_seconds",
            "When the newest backup a drill proved restorable started",
            d.proven_backup_started,
            by,
        )
        out.add(
            "drill_proven_backup_age_seconds",
            "Age of the newest backup a drill proved restorable",
            max(0.0, now - d.proven_backup_started),
            by,
        )


def _server(out: _Families, s: StanzaFacts, by: dict[str, str]) -> None:
    srv = s.server
    assert srv is not None
    out.add(
        "archive_lag_bytes",
        "Finished WAL the server has and the repository's archive lacks",
        srv.archive_lag_bytes,
        by,
    )
    out.add(
        "archive_lag_seconds",
        "How long the oldest finished segment not in the archive has waited",
        srv.archive_lag_seconds,
        by,
    )
    out.add(
        "archiver_archived",
        "Segments archived (pg_stat_archiver)",
        srv.archived_count,
        by,
        counter=True,
    )
    out.add(
        "archiver_failed",
        "Failed archive_command runs (pg_stat_archiver)",
        srv.failed_count,
        by,
        counter=True,
    )
    out.add(
        "archiver_last_failed_timestamp_seconds",
        "When archive_command last failed (pg_stat_archiver)",
        srv.last_failed_time,
        by,
    )


class FactsCollector(Collector):
    """A collector that reads the facts afresh at each collection (``read``). A read that
    fails gives ``pgkura_up 0`` alone, and its error to ``failed``: a scrape of a repository
    that cannot be read answers, and says so."""

    def __init__(
        self,
        read: Callable[[], RepositoryFacts],
        failed: Callable[[PgkuraError], None] | None = None,
    ) -> None:
        self._read, self._failed = read, failed

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pgkura_up", "1 when the repository could be read, else 0")
        if self._failed is None:
            facts = self._read()
        else:
            try:
                facts = self._read()
            except PgkuraError as exc:
                self._failed(exc)
                up.add_metric([], 0.0)
                yield up
                return
        up.add_metric([], 1.0)
        yield up
        yield from families(facts)


def registry_of(
    read: Callable[[], RepositoryFacts], failed: Callable[[PgkuraError], None] | None = None
) -> CollectorRegistry:
    """A registry holding only pgkura's collector (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactsCollector(read, failed))
    return registry


def exposition(facts: RepositoryFacts) -> bytes:
    """The text exposition of ``facts``."""
    from prometheus_client import generate_latest

    return bytes(generate_latest(registry_of(lambda: facts)))


def serve(
    read: Callable[[], RepositoryFacts],
    host: str,
    port: int,
    failed: Callable[[PgkuraError], None],
) -> Any:
    """Serve ``/metrics`` on ``host:port`` from a thread; the server (``shutdown()`` stops
    it). Each scrape reads the facts again; one that fails answers ``pgkura_up 0``."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry_of(read, failed))
    return server
