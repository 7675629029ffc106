"""`pgkura metrics`: the Prometheus text exposition of every stanza (stdout, a file for
node_exporter's textfile collector, or served over HTTP), or the same facts as JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.output import say
from pgkura.errors import UsageError

if TYPE_CHECKING:
    from pgkura.commands.metrics import RepositoryFacts


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--listen {text!r} is not HOST:PORT",
            hint="give an address and a port, such as --listen 127.0.0.1:9187",
        )
    return host.strip("[]"), int(port)


@click.command()
@click.option(
    "--output",
    type=click.Choice(["prometheus", "json"]),
    default="prometheus",
    help="the Prometheus text exposition, or the same facts as JSON",
)
@click.option(
    "--output-file",
    metavar="FILE",
    default=None,
    help="write to FILE atomically instead of stdout (node_exporter's textfile collector)",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default=None,
    help="serve /metrics over HTTP on HOST:PORT until stopped; each scrape reads afresh",
)
@click.pass_context
def metrics(ctx: click.Context, output: str, output_file: str | None, listen: str | None) -> None:
    """Backups, WAL, drills, verify, expire and gc of every stanza, for monitoring; with
    --dbconn also the server's archive lag and pg_stat_archiver's failures."""
    address = _listen_address(listen) if listen else None
    if address and (output_file or output == "json"):
        raise UsageError(
            "--listen serves the Prometheus exposition; it takes no --output-file or --output json",
            hint="run pgkura metrics --output json (or --output-file FILE) separately",
        )
    from pgkura.commands.metrics import exposition_of, metrics_reader, write_output_file

    read = metrics_reader(config(ctx))
    if address:
        _serve(read, *address)
        return
    facts = read()
    for stanza in facts.stanzas:
        if stanza.server_error:
            say(f"pgkura: warning: stanza {stanza.stanza}: {stanza.server_error}")
    if output == "json":
        import json

        from pgkura.cli.output import JSON_SCHEMA_VERSION

        # The same object print_json prints, for stdout or the file.
        body = {"schema_version": JSON_SCHEMA_VERSION, **facts.to_json()}
        data = (json.dumps(body, indent=2) + "\n").encode()
    else:
        data = exposition_of(facts)
    if output_file:
        write_output_file(output_file, data)
    else:
        click.echo(data.decode(), nl=False)


def _serve(read: Callable[[], RepositoryFacts], host: str, port: int) -> None:
    import signal
    import threading

    from pgkura.commands.metrics import serve_metrics
    from pgkura.errors import PgkuraError

    def failed(exc: PgkuraError) -> None:
        say(f"pgkura: error: a scrape could not read the repository: {exc.message}")

    server = serve_metrics(read, host, port, failed)
    say(f"serving metrics on http://{host}:{port}/metrics")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    finally:
        server.shutdown()


COMMANDS: list[click.Command] = [metrics]
