"""`pgkura dump`: a logical dump."""

from __future__ import annotations

import click

from pgkura.cli.context import config, progress
from pgkura.cli.options import jobs_option, output_option, workers
from pgkura.cli.output import emit


@click.command()
@click.option("--dbname", "-d", "dbname", default=None, metavar="NAME", help="database to dump")
@click.option("--all", "all_databases", is_flag=True, help="dump every database (and the globals)")
@click.option(
    "--format",
    "-F",
    "dump_format",
    type=click.Choice(["custom", "directory", "tar", "plain"]),
    default="custom",
    show_default=True,
    help="pg_dump's output format",
)
@click.option(
    "--schema", "-n", multiple=True, metavar="NAME", help="dump only this schema (repeatable)"
)
@click.option(
    "--table", "-t", multiple=True, metavar="NAME", help="dump only this table (repeatable)"
)
@click.option(
    "--exclude-table", "-T", multiple=True, metavar="NAME", help="leave this table out (repeatable)"
)
@jobs_option(help="parallel pg_dump workers (directory format)")
@output_option
@click.pass_context
def dump(
    ctx: click.Context,
    dbname: str | None,
    all_databases: bool,
    dump_format: str,
    schema: tuple[str, ...],
    table: tuple[str, ...],
    exclude_table: tuple[str, ...],
    jobs: int | None,
    output: str,
) -> None:
    """Take a logical dump (pg_dump, plus pg_dumpall --globals-only) into the repository."""
    from pgkura.commands.dump import run_dump

    if dump_format == "directory" and jobs is None:
        jobs = workers(None)
    taken = run_dump(
        config(ctx),
        dbname=dbname,
        all_databases=all_databases,
        format=dump_format,
        jobs=jobs,
        schemas=schema,
        tables=table,
        exclude_tables=exclude_table,
        progress=progress(),
    )
    emit(output, taken, lambda: taken.id)
    from pgkura.cli.retention import expire_auto

    expire_auto(config(ctx), f"dump {taken.id}")


COMMANDS: list[click.Command] = [dump]
