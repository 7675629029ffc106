"""Options several verbs take, each declared once here.

- ``--output text|json`` (:data:`output_option`);
- ``--jobs N`` (:func:`jobs_option`), checked by one validator as the command line is parsed,
  before anything else runs; :func:`workers` turns "not given" into one worker per core;
- the recovery target, ``--to-time``/``--to-lsn``/``--to-xid``/``--to-name`` and, for a
  restore, ``--to-immediate``/``--exclusive``/``--target-action``/``--target-timeline``
  (:func:`target_options`), handed to the command as one
  :class:`~pgkura.physical.targets.TargetArgs` that parses itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from pgkura.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

output_option = click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", help="output format"
)


class JobsType(click.ParamType[int]):
    """A number of parallel workers: an integer of at least 1."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        jobs = int(click.INT.convert(value, param, ctx))
        if jobs < 1:
            raise UsageError(
                f"--jobs must be at least 1, not {jobs}",
                hint="give a number of parallel workers, such as --jobs 2, or leave it out "
                "(one per core)",
            )
        return jobs


def jobs_option(help: str = "parallel workers (default: cores)") -> Callable[[F], F]:
    """``--jobs N`` / ``-j N``: None when not given."""
    return click.option("--jobs", "-j", type=JobsType(), default=None, metavar="N", help=help)


def workers(jobs: int | None) -> int:
    """``--jobs`` as given, or one worker per core this process may run on."""
    return jobs or len(os.sched_getaffinity(0))


_TARGET_POINTS = (
    ("--to-time", "TIME", "recover to this time (no zone: local time)"),
    ("--to-lsn", "LSN", "recover to this WAL location (X/X)"),
    ("--to-xid", "XID", "recover to this transaction id"),
    ("--to-name", "NAME", "recover to this restore point"),
)
_TARGET_RESTORE_ONLY = (
    click.option("--to-immediate", is_flag=True, help="stop as soon as the backup is consistent"),
    click.option("--exclusive", is_flag=True, help="stop just before the target, not after it"),
    click.option(
        "--target-action",
        "action",
        type=click.Choice(["promote", "pause", "shutdown"]),
        default="promote",
        show_default=True,
    ),
    click.option(
        "--target-timeline",
        "timeline",
        default=None,
        metavar="latest|current|N",
        help="timeline to recover along  [default: latest]",
    ),
)
_TARGET_NAMES = (
    "to_time",
    "to_lsn",
    "to_xid",
    "to_name",
    "to_immediate",
    "exclusive",
    "action",
    "timeline",
)


def target_options(*, restore: bool, help_prefix: str = "") -> Callable[[F], F]:
    """The recovery target options, passed to the command as ``target: TargetArgs``.

    ``restore`` adds what only a restore's recovery takes (--to-immediate, --exclusive,
    --target-action, --target-timeline); ``help_prefix`` says when the others apply."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            from pgkura.physical.targets import TargetArgs

            given = {name: kwargs.pop(name) for name in _TARGET_NAMES if name in kwargs}
            return func(*args, target=TargetArgs(**given), **kwargs)

        options = [
            click.option(flag, default=None, metavar=metavar, help=help_prefix + text)
            for flag, metavar, text in _TARGET_POINTS
        ]
        if restore:
            options += _TARGET_RESTORE_ONLY
        decorated: Callable[..., Any] = command
        for option in reversed(options):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate
