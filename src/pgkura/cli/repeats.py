"""An option of one value given twice is refused, not silently taken at its last value.

click keeps the last value of an option given twice: ``--repo A ... --repo B`` writes to B,
``--keep-last 1 --keep-last 2`` keeps two, ``backup --type offline --type online`` takes an
online backup; nothing says so. :func:`refuse_repeats` reads the command line against the
application's own options (the group's, then the chosen command's, level by level) before
click runs it. Options that take several values (``multiple``) and counted or flag options are
not judged; anything it cannot follow (an unknown option, ``--``) is left to click.
"""

from __future__ import annotations

import click

from pgkura.errors import UsageError


def refuse_repeats(command: click.Command, args: list[str]) -> None:
    """UsageError naming the first option of one value that ``args`` give twice."""
    level: click.Command | None = command
    rest = list(args)
    while level is not None:
        level, rest = _one_level(level, rest)


def _one_level(command: click.Command, args: list[str]) -> tuple[click.Command | None, list[str]]:
    """Judge the options of ``command`` in ``args``; return the subcommand ``args`` name and
    what follows it (None: none)."""
    options = {
        name: p
        for p in command.params
        if isinstance(p, click.Option)
        for name in (*p.opts, *p.secondary_opts)
    }
    given: dict[str, tuple[str, str | None]] = {}
    n = 0
    while n < len(args):
        word = args[n]
        n += 1
        if word == "--":
            return None, []
        if not word.startswith("-") or word == "-":
            if isinstance(command, click.Group):
                return command.commands.get(word), args[n:]
            continue
        name, eq, text = word.partition("=")
        value: str | None = text
        option = options.get(name)
        if option is None:
            continue  # unknown (click says so), or short options run together
        if option.is_flag or option.count:
            continue
        if not eq:
            value = args[n] if n < len(args) else None
            n += 1
        if option.multiple:
            continue
        key = option.name or name
        if key in given:
            first_name, first = given[key]
            raise UsageError(
                f"{name} was given twice ({first_name} {first}, then {name} {value}): pgkura "
                "would not know which you meant",
                hint=f"give {name} once",
            )
        given[key] = (name, value)
    return None, []
