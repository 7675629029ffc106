"""The ``pgkura`` console script.

PostgreSQL starts ``archive-push`` and ``archive-get`` once per WAL segment, so their cold start
is the archiving latency. They take a fast path here that parses the few arguments they have by
hand and never imports click, rich, logging or psycopg; every other command (and any
``--help``) goes through the full CLI in :mod:`pgkura.cli`.
"""

from __future__ import annotations

import sys

FAST_COMMANDS = {"archive-push": 1, "archive-get": 2, "archive-daemon": 1}


def _split_fast(args: list[str]) -> tuple[dict[str, str], str, list[str]] | None:
    """``(flags, command, positional)`` when ``args`` is a plain archive command, else None."""
    from pgkura.config import SETTINGS

    by_flag = {s.flag: s.name for s in SETTINGS}
    by_flag["--config"] = "config"
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if word in FAST_COMMANDS:
            rest = args[i + 1 :]
            if len(rest) != FAST_COMMANDS[word] or any(r.startswith("-") for r in rest):
                return None  # --help, a missing argument...: let the full CLI explain
            return flags, word, rest
        name, sep, value = word.partition("=")
        if name not in by_flag:
            return None
        if not sep:
            if i + 1 >= len(args):
                return None
            i += 1
            value = args[i]
        flags[by_flag[name]] = value
        i += 1
    return None


def _run_fast(flags: dict[str, str], command: str, rest: list[str]) -> None:
    from pgkura.config import load_config
    from pgkura.errors import PgkuraError

    try:
        config_file = flags.pop("config", None)
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

            run_archive_get(cfg, rest[0], rest[1])
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
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        sys.stderr.write("pgkura: interrupted\n")
        sys.exit(130)


def main() -> None:
    fast = _split_fast(sys.argv[1:])
    if fast is not None:
        _run_fast(*fast)
        sys.exit(0)
    from pgkura.cli import main as full_main

    full_main()


if __name__ == "__main__":  # python -m pgkura.entry: how the spool starts its daemons
    main()
