"""`pgkura metrics`: what monitoring needs to know about every stanza of the repository (the
facts are monitor/facts.py's; their Prometheus exposition monitor/exposition.py's)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pgkura.commands import open_repository
from pgkura.config import Config
from pgkura.errors import PgkuraError
from pgkura.monitor.facts import RepositoryFacts as RepositoryFacts
from pgkura.monitor.facts import repository_facts
from pgkura.repository.manifest import list_stanzas
from pgkura.repository.stanzas import recorded_stanzas


def metrics_reader(cfg: Config) -> Callable[[], RepositoryFacts]:
    """A function that reads the facts afresh each time it is called (one per scrape), on a
    repository opened once (an encrypted one's key is derived once). With a database
    connection (``dbconn``), the stanza ``cfg.stanza`` also gets the server's archiving
    facts."""
    repo = open_repository(cfg)
    lock = threading.Lock()  # scrapes may come at once; each reads on its own
    server: Any = None
    if cfg.dbconn:
        from pgkura.monitor.server import server_facts

        def server(stanza: str, catalog: Any) -> Any:
            return server_facts(cfg.dbconn, catalog) if stanza == cfg.stanza else None

    def read() -> RepositoryFacts:
        with lock:
            # Archiving, maybe with no backup yet: the stanza record says so.
            stanzas = set(list_stanzas(repo)) | set(recorded_stanzas(repo))
            if cfg.dbconn:
                stanzas.add(cfg.stanza)
            return repository_facts(repo, stanzas, server)

    return read


def run_metrics(cfg: Config) -> RepositoryFacts:
    """The facts, read once."""
    return metrics_reader(cfg)()


def exposition_of(facts: RepositoryFacts) -> bytes:
    """The Prometheus text exposition of ``facts``."""
    from pgkura.monitor.exposition import exposition

    return exposition(facts)


def write_output_file(path: str, data: bytes) -> None:
    """``data`` into ``path`` atomically (node_exporter's textfile collector never reads a
    half-written file: the temporary name does not end in .prom), readable by all: the
    collector runs as another user."""
    from pgkura.durable import write_file

    write_file(path, data, mode=0o644)


def serve_metrics(
    read: Callable[[], RepositoryFacts],
    host: str,
    port: int,
    failed: Callable[[PgkuraError], None],
) -> Any:
    """Serve ``/metrics`` on ``host:port`` from a thread (monitor/exposition.py); the server,
    whose ``shutdown()`` stops it. A scrape whose read fails answers ``pgkura_up 0``."""
    from pgkura.monitor.exposition import serve

    try:
        return serve(read, host, port, failed)
    except OSError as exc:
        raise PgkuraError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose a free port, or an address of this machine",
        ) from None
