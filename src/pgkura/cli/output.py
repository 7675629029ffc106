"""Output: data (ids, JSON) on stdout, messages for people on stderr.

With ``--output json`` a command prints one JSON object, its result record's ``to_json()``
with :data:`JSON_SCHEMA_VERSION` as ``schema_version`` in front; docs/json-output.md
describes each command's object and docs/json/ holds their JSON Schemas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import click

#: The version of the JSON objects the commands print (docs/json-output.md, "Stability"):
#: raised only when a field is removed, renamed or changes meaning; new fields come without.
JSON_SCHEMA_VERSION = 1


class Result(Protocol):
    """A command's typed result: what ``--output json`` prints."""

    def to_json(self) -> dict[str, Any]: ...


def say(line: str) -> None:
    """A message for the person running pgkura (stderr)."""
    click.echo(line, err=True)


def print_json(result: Result) -> None:
    """``result`` as the one JSON object of ``--output json`` on stdout."""
    click.echo(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **result.to_json()}, indent=2))


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
