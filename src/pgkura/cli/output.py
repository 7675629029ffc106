"""Output: data (ids, JSON) on stdout, messages for people on stderr.

With ``--output json`` a command prints one JSON object, its result record's ``to_json()``
with :data:`JSON_SCHEMA_VERSION` as ``schema_version`` in front; docs/json-output.md
describes each command's object and docs/json/ holds their JSON Schemas.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from pgkura.cli.plain import JSON_SCHEMA_VERSION as JSON_SCHEMA_VERSION
from pgkura.cli.plain import Result as Result
from pgkura.cli.plain import json_document


def say(line: str) -> None:
    """A message for the person running pgkura (stderr)."""
    click.echo(line, err=True)


def print_json(result: Result) -> None:
    """``result`` as the one JSON object of ``--output json`` on stdout."""
    click.echo(json_document(result))


def emit(output: str, result: Result, text: Callable[[], str]) -> None:
    """``result`` on stdout: its JSON with ``--output json``, else the text ``text()`` renders."""
    if output == "json":
        print_json(result)
    else:
        click.echo(text())


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
