"""What every verb asks of the invocation: its settings and a progress display."""

from __future__ import annotations

import logging
import sys

import click

from pgkura.config import Config, load_config
from pgkura.errors import ConfigError
from pgkura.progress import Progress

log = logging.getLogger("pgkura")


def config(ctx: click.Context) -> Config:
    """The settings of this invocation (flags, PGKURA_* environment, config file), loaded
    once; the first call also sets up logging and sweeps scratch left by dead runs."""
    obj = ctx.find_root().obj
    cfg: Config | None = obj.get("config")
    if cfg is None:
        cfg = obj["config"] = load_config(obj["flags"], obj["config_file"])
        level = getattr(logging, cfg.log_level.upper(), None)
        if not isinstance(level, int):
            raise ConfigError(
                f"unknown log level {cfg.log_level!r}", hint="use debug, info, warning or error"
            )
        logging.basicConfig(level=level, format="pgkura: %(message)s", stream=sys.stderr)
        from pgkura.scratch import sweep_scratch

        for path in sweep_scratch():
            log.info("removed %s, left by a pgkura run that is gone", path)
    return cfg


def progress() -> Progress:
    """A rich bar on a terminal, plain log lines otherwise."""
    from pgkura.cli.progress import make_progress

    return make_progress()
