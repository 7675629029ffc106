"""The ``pgkura`` console script.

PostgreSQL starts ``archive-push`` and ``archive-get`` once per WAL segment, so their cold start
is the archiving latency. They take a fast path here that parses the few arguments they have by
hand and never imports click, rich, logging or psycopg; every other command (and any
``--help``) goes through the full CLI in :mod:`pgkura.cli.app`.
"""

from __future__ import annotations

import sys

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
        if name not in options:
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


def main() -> None:
    fast = _split_fast(sys.argv[1:])
    if fast is not None:
        _run_fast(*fast)
        sys.exit(0)
    from pgkura.cli.app import main as full_main

    full_main()


if __name__ == "__main__":  # python -m pgkura.entry: how the spool starts its daemons
    main()
