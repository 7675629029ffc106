"""The ``pgkura`` console script.

PostgreSQL starts ``archive-push`` and ``archive-get`` once per WAL segment, so their cold start
is the archiving latency. They take a fast path here that parses the few arguments they have by
hand and never imports click, rich, logging or psycopg; every other command (and any
``--help``) goes through the full CLI in :mod:`pgkura.cli.app`.

``verify --quick`` takes one too (:func:`_split_verify`): at 50 MB stored, the full CLI's
cold start (click and every verb module) was a tenth of the whole check. Only a command line
made of what it knows (``--quick``, ``--output text|json``, ``--jobs N``, a backup id) is
taken; anything else, a bad value included, goes through click, which explains it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported on archive-push's path
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import TextIO

FAST_COMMANDS = {"archive-push": 1, "archive-get": 2, "archive-daemon": 1}
# Options of the fast commands themselves (each takes a value).
FAST_OPTIONS = {"archive-get": {"--stop-after": "stop_after"}}


def _split_fast(args: list[str]) -> tuple[dict[str, str], str, list[str]] | None:
    """``(flags, command, positional)`` when ``args`` is a plain archive command, else None."""
    from pgkura.config import split_global

    try:
        flags, config_file, command, rest = split_global(args)
    except ValueError:
        return None  # --help, an unknown option...: let the full CLI explain
    if command not in FAST_COMMANDS:
        return None
    if config_file is not None:
        flags["config"] = config_file
    options = FAST_OPTIONS.get(command, {})
    positional: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if not word.startswith("-"):
            positional.append(word)
            i += 1
            continue
        name, sep, value = word.partition("=")
        if name not in options or options[name] in flags:  # unknown or twice: click says so
            return None
        if not sep:
            if i + 1 >= len(rest):
                return None
            i += 1
            value = rest[i]
        flags[options[name]] = value
        i += 1
    if len(positional) != FAST_COMMANDS[command]:
        return None
    return flags, command, positional


def _run_fast(flags: dict[str, str], command: str, rest: list[str]) -> None:
    from pgkura.config import load_config
    from pgkura.errors import PgkuraError

    try:
        config_file = flags.pop("config", None)
        stop_after = flags.pop("stop_after", None)
        cfg = load_config(flags, config_file)
        if command == "archive-push":
            from pgkura.commands.archive import run_archive_push

            result = run_archive_push(cfg, rest[0])
            if result is not None and cfg.log_level.lower() in ("info", "debug"):
                note = "" if result.written else ", already archived with the same content"
                sys.stderr.write(
                    f"pgkura: archived {result.name} ({result.raw_size} -> "
                    f"{result.stored_size} bytes){note}\n"
                )
        elif command == "archive-get":
            from pgkura.commands.archive import run_archive_get

            run_archive_get(cfg, rest[0], rest[1], stop_after)
        else:  # the background process of --archive-async
            from pgkura.commands.archive import run_archive_daemon

            run_archive_daemon(cfg, rest[0])
    except PgkuraError as exc:
        if exc.exit_code == 1:  # archive-get of an absent file: PostgreSQL's normal probing
            sys.stderr.write(f"pgkura: {exc.message}\n")
            sys.exit(1)
        sys.stderr.write(f"pgkura: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        sys.exit(fast_exit_code(command, exc.exit_code))
    except KeyboardInterrupt:
        sys.stderr.write("pgkura: interrupted\n")
        sys.exit(130)
    except Exception as exc:
        # Python's own exit status for an uncaught error is 1, which archive-get must never
        # return for anything but "not in the archive".
        sys.stderr.write(f"pgkura: error: unexpected {type(exc).__name__}: {exc}\n")
        sys.exit(fast_exit_code(command, 2))


def fast_exit_code(command: str, code: int) -> int:
    """archive-get's failures other than "not in the archive" exit above 125: PostgreSQL
    takes any other non-zero status for the end of the archive and would end recovery early
    (src/backend/access/transam/xlogarchive.c); above 125 it stops recovery instead."""
    from pgkura.errors import ExitCode

    if command == "archive-get" and code != ExitCode.NOT_FOUND:
        return ExitCode.ABORT_RECOVERY
    return code


def _split_verify(args: list[str]) -> tuple[dict[str, str], str | None, dict[str, str]] | None:
    """``(flags, config file, options)`` when ``args`` is ``verify --quick`` with nothing but
    the options the fast path knows, valid (``options``: output, jobs, backup_id); else None."""
    from pgkura.config import split_global

    try:
        flags, config_file, command, rest = split_global(args)
    except ValueError:
        return None
    if command != "verify" or "--quick" not in rest:
        return None
    options: dict[str, str] = {}
    positional: list[str] = []
    quick = False
    words = iter(rest)
    for word in words:
        if word == "--":
            positional += words
        elif word == "--quick":
            quick = True
        elif word.startswith("-") and word != "-":
            name, value = _option(word, words)
            if name is None or value is None or name in options:  # twice: click says so
                return None
            options[name] = value
        else:
            positional.append(word)
    if not quick or len(positional) > 1 or options.get("output", "text") not in ("text", "json"):
        return None
    if "jobs" in options and _jobs(options["jobs"]) is None:
        return None
    if positional:
        options["backup_id"] = positional[0]
    return flags, config_file, options


def _jobs(value: str) -> int | None:
    """``--jobs``'s value as click takes it (an integer of at least 1), else None."""
    try:
        jobs = int(value)
    except ValueError:
        return None
    return jobs if jobs >= 1 else None


def _option(word: str, words: Iterator[str]) -> tuple[str | None, str | None]:
    """(name, value) of the option ``word`` of verify's fast path (its value attached, or the
    next word); (None, None) for any other."""
    if word.startswith("-j") and not word.startswith("--") and len(word) > 2:
        return "jobs", word[2:]
    name, sep, value = word.partition("=")
    known = {"--output": "output", "--jobs": "jobs", "-j": "jobs"}.get(name)
    if known is None or (sep and name == "-j"):
        return None, None
    return known, value if sep else next(words, None)


def _run_verify(flags: dict[str, str], config_file: str | None, options: dict[str, str]) -> None:
    """``verify --quick`` as :mod:`pgkura.cli.verify` runs it, printing the same bytes and
    exiting with the same status, without click."""
    import gc

    from pgkura.errors import ExitCode, PgkuraError

    # The index and the manifests are hundreds of thousands of tuples and lists, none of
    # them garbage in a cycle; the cyclic collector would walk them all again and again
    # (a tenth of the check's CPU at scale 200). The process ends with the check.
    gc.disable()
    try:
        from pgkura.cli.plain import json_document, start_invocation, verify_failed, verify_lines
        from pgkura.commands.verify import run_verify
        from pgkura.config import load_config
        from pgkura.repository.locks import set_command

        set_command("verify")
        cfg = load_config(flags, config_file)
        start_invocation(cfg)
        backup_id = options.get("backup_id")
        jobs = _jobs(options.get("jobs", "")) or len(os.sched_getaffinity(0))
        report = run_verify(cfg, backup_id, jobs, False, quick=True)
        if options.get("output") == "json":
            _echo(json_document(report))
        else:
            _echo("\n".join(verify_lines(report, whole_archive=backup_id is None)))
        if report.problems:
            raise verify_failed(report)
    except PgkuraError as exc:
        _echo(f"pgkura: error: {exc.message}", sys.stderr)
        if exc.hint:
            _echo(f"hint: {exc.hint}", sys.stderr)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        _echo("pgkura: interrupted; nothing was committed", sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except BrokenPipeError:
        os._exit(int(ExitCode.ERROR))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _echo(f"pgkura: error: {exc.strerror or exc}{where}", sys.stderr)
        _echo("hint: check the path's permissions and free space", sys.stderr)
        sys.exit(int(ExitCode.ERROR))


def _echo(text: str, stream: TextIO | None = None) -> None:
    """``text`` and a newline, as click.echo writes them: flushed, and without terminal
    escape sequences when the stream is no terminal."""
    stream = stream or sys.stdout
    if "\x1b" in text and not stream.isatty():
        import re

        text = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", text)
    stream.write(text + "\n")
    stream.flush()


def main() -> None:
    from pgkura.commands import as_command_line

    as_command_line()
    verify = _split_verify(sys.argv[1:]) if "verify" in sys.argv else None
    if verify is not None:
        _run_verify(*verify)
        sys.exit(0)
    fast = _split_fast(sys.argv[1:])
    if fast is not None:
        _run_fast(*fast)
        sys.exit(0)
    from pgkura.cli.app import main as full_main

    full_main()


if __name__ == "__main__":  # python -m pgkura.entry: how the spool starts its daemons
    main()
