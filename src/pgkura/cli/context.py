"""What every verb asks of the invocation: its settings and a progress display."""

from __future__ import annotations

import click

from pgkura.cli.plain import start_invocation
from pgkura.config import Config, load_config
from pgkura.progress import Progress


def config(ctx: click.Context) -> Config:
    """The settings of this invocation (flags, PGKURA_* environment, config file), loaded
    once; the first call also sets up logging and sweeps scratch left by dead runs."""
    obj = ctx.find_root().obj
    cfg: Config | None = obj.get("config")
    if cfg is None:
        cfg = obj["config"] = load_config(obj["flags"], obj["config_file"])
        start_invocation(cfg)
    return cfg


def progress() -> Progress:
    """A rich bar on a terminal, plain log lines otherwise."""
    from pgkura.cli.progress import make_progress

    return make_progress()
