"""The ``pgkura`` application: global options, the verbs, errors turned into exit codes.

Only the CLI prints and exits. Data (ids, JSON) goes to stdout; messages, progress and
errors go to stderr, an error line followed by a ``hint:`` line. Heavy modules are imported
inside the commands: every verb module is imported to build the application, and ``--help``
should not wait for psycopg. (archive-push and archive-get do not come here at all when
their arguments are plain: :mod:`pgkura.entry` runs them without click.)

Adding a verb
-------------
1. Write ``src/pgkura/cli/<verb>.py`` with the click command(s), declared with
   ``@click.command("<name>")`` (or ``@click.group``), and a module-level
   ``COMMANDS = [<command>, ...]``. Take the settings with ``context.config(ctx)``; take the
   shared options (``--output``, ``--jobs``, recovery targets) from :mod:`pgkura.cli.options`
   instead of declaring them again; import the ``commands/`` function inside the command.
2. The command calls one ``commands/`` function, which returns a typed result (a frozen
   dataclass with ``to_json()``); the verb module renders it (``context.emit`` for
   text/json) and raises a :class:`~pgkura.errors.PgkuraError` for a failed outcome.
3. Add ``"<verb>"`` to :data:`VERB_MODULES`. tests/test_cli_structure.py checks that each
   module listed registers a command and that ``pgkura --help`` lists it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from pgkura.config import DEFAULT_CONFIG, SETTINGS
from pgkura.errors import ExitCode, PgkuraError

F = TypeVar("F", bound=Callable[..., Any])

#: The modules of pgkura.cli that hold verbs, each with a list COMMANDS.
VERB_MODULES = (
    "init",
    "backup",
    "dump",
    "restore",
    "info",
    "archive",
    "verify",
    "maintenance",
    "retention",
    "check",
    "metrics",
    "stanza",
    "key",
    "copy",
    "demo",
)


def _settings_options(func: F) -> F:
    for s in reversed([s for s in SETTINGS if s.on_command_line]):
        func = click.option(s.flag, s.name, default=None, help=s.help_line(), metavar=s.metavar)(
            func
        )
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help=f"TOML config file (default: {DEFAULT_CONFIG} when it exists) [env PGKURA_CONFIG]",
)
@_settings_options
@click.version_option(package_name="pgkura")
@click.pass_context
def cli(ctx: click.Context, /, config_file: str | None, **flags: Any) -> None:
    """Backup and point-in-time recovery for PostgreSQL."""
    from pgkura.repository.locks import set_command

    ctx.obj = {"flags": flags, "config_file": config_file}
    set_command(ctx.invoked_subcommand or "")


def verb_commands(module: str) -> list[click.Command]:
    """The commands the verb module ``pgkura.cli.<module>`` declares."""
    commands: list[click.Command] = importlib.import_module(f"pgkura.cli.{module}").COMMANDS
    return commands


for _module in VERB_MODULES:
    for _command in verb_commands(_module):
        cli.add_command(_command)


def _fail(exc: PgkuraError) -> NoReturn:
    click.echo(f"pgkura: error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(int(exc.exit_code))


def main(argv: list[str] | None = None) -> None:
    """Run the command line ``argv`` (default: the process's) and exit with its status."""
    from pgkura.cli.repeats import refuse_repeats

    try:
        refuse_repeats(cli, sys.argv[1:] if argv is None else argv)
        cli.main(args=argv, prog_name="pgkura", standalone_mode=False)
    except PgkuraError as exc:
        _fail(exc)
    except click.exceptions.Abort:
        click.echo("pgkura: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        click.echo(f"pgkura: error: {exc.format_message()}", err=True)
        click.echo("hint: see pgkura --help", err=True)
        sys.exit(int(ExitCode.USAGE))
    except KeyboardInterrupt:
        click.echo("pgkura: interrupted; nothing was committed", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except BrokenPipeError:
        os._exit(int(ExitCode.ERROR))
    except OSError as exc:
        # An I/O failure nothing below turned into a PgkuraError: still one clear line.
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"pgkura: error: {exc.strerror or exc}{where}", err=True)
        click.echo("hint: check the path's permissions and free space", err=True)
        sys.exit(int(ExitCode.ERROR))
    sys.exit(0)
