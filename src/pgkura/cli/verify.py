"""`pgkura verify`: read back what backups need; with --restore, the drill that proves a
backup restores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgkura.cli.context import config
from pgkura.cli.options import jobs_option, output_option, target_options, workers
from pgkura.cli.output import print_json, say
from pgkura.cli.plain import verify_failed, verify_lines
from pgkura.errors import PgkuraError, UsageError

if TYPE_CHECKING:
    from pgkura.commands.drill import DrillResult
    from pgkura.commands.verify import VerifyReport
    from pgkura.physical.targets import TargetArgs


@click.command()
@click.argument("backup_id", required=False)
@click.option("--restore", "drill", is_flag=True, help="drill: restore into a sandbox and check it")
@click.option(
    "--quick",
    is_flag=True,
    help="check every stored object as it is stored (its tag or stored digest), without "
    "decompressing, and that every block and WAL segment a backup needs is there",
)
@click.option(
    "--pages/--no-pages",
    default=False,
    help="also recompute every data page checksum from the stored blocks; without, the "
    "failures each backup found as it read the pages are reported (default)",
)
@click.option("--all", "all_backups", is_flag=True, help="with --restore: drill every backup")
@click.option("--keep", is_flag=True, help="with --restore: leave the sandbox running")
@target_options(restore=False, help_prefix="with --restore: ")
@jobs_option()
@output_option
@click.pass_context
def verify(
    ctx: click.Context,
    backup_id: str | None,
    drill: bool,
    quick: bool,
    pages: bool,
    all_backups: bool,
    keep: bool,
    target: TargetArgs,
    jobs: int | None,
    output: str,
) -> None:
    """Read back every block, file and WAL file a backup needs (all backups if no ID); with
    --quick, check them as stored; with --restore, prove it restores: sandbox, recovery,
    checks."""
    from pgkura.commands.verify import run_verify

    if quick and (drill or pages):
        other = "--restore" if drill else "--pages"
        raise UsageError(
            f"--quick checks the stored bytes only, not with {other}",
            hint=f"drop --quick or {other}",
        )
    if drill:
        _drills(ctx, backup_id, all_backups, keep, output, target)
        return
    if all_backups or keep or target.point_in_time:
        raise UsageError(
            "--all, --keep and --to-* belong to a drill", hint="add --restore, or drop them"
        )
    report = run_verify(config(ctx), backup_id, workers(jobs), pages, quick=quick)
    if output == "json":
        print_json(report)
    else:
        _show_verify(report, whole_archive=backup_id is None)
    if report.problems:
        raise verify_failed(report)


def _show_verify(report: VerifyReport, *, whole_archive: bool) -> None:
    for line in verify_lines(report, whole_archive=whole_archive):
        click.echo(line)


def _drills(
    ctx: click.Context,
    backup_id: str | None,
    all_backups: bool,
    keep: bool,
    output: str,
    target: TargetArgs,
) -> None:
    from pgkura.commands.drill import DrillsReport, drill, drill_candidates

    cfg = config(ctx)
    recovery = target.sandbox_target(default_immediate=True)
    if all_backups:
        if backup_id:
            raise UsageError("give a backup id or --all, not both", hint="drop one of them")
        ids: list[str | None] = list(drill_candidates(cfg))
    else:
        ids = [backup_id]
    results = []
    for one in ids:
        if output != "json":
            timed = target.point_in_time and not target.to_immediate
            chosen = "(the one the target needs)" if timed else "latest"
            say(f"drill: restoring backup {one or chosen} into a sandbox")
        result = drill(cfg, one, recovery, keep=keep, say=say)
        results.append(result)
        if output != "json":
            _show_drill(result)
    report = DrillsReport(tuple(results))
    if output == "json":
        print_json(report)
    failed = report.failed
    if failed:
        raise PgkuraError(
            f"{len(failed)} of {len(results)} drill(s) failed",
            hint="the problem lines say why; that backup cannot be relied on",
        )


def _show_drill(result: DrillResult) -> None:
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    verdict = "PASSED" if result.passed else "FAILED"
    click.echo(f"backup {result.backup}: {verdict} ({times})")
    for problem in result.problems:
        click.echo(f"problem: {problem}")
    if result.passed:
        counts = result.row_counts or {}
        tables = sum(len(v) for v in counts.values())
        click.echo(
            f"  {len(counts)} databases, {tables} tables counted, "
            f"pg_amcheck {result.amcheck}, {result.pages_checked or 0} pages checked"
        )


COMMANDS: list[click.Command] = [verify]
