"""Running the real ``pgkura`` command the way a DBA does: as the cluster's OS user."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PGKURA = str(Path(sys.executable).with_name("pgkura"))


def os_user() -> str | None:
    """The user servers and pgkura run as: postgres when the suite runs as root."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        return self.stderr.strip()


def run_pgkura(
    *args: str,
    env: Mapping[str, str] | None = None,
    user: str | None = "default",
    check: bool = True,
    timeout: float = 300,
    input: str | None = None,
) -> Result:
    """Run ``pgkura ARGS`` (as postgres when root, unless ``user=None``) and return its output.

    With ``check`` a non-zero exit fails the test with pgkura's own stderr in the message.
    """
    runas = os_user() if user == "default" else user
    cmd = [PGKURA, *args]
    if runas is not None and os.geteuid() == 0:
        cmd = ["runuser", "-u", runas, "--", *cmd]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PGKURA_", "PG"))}
    # Where the test matrix's PostgreSQL majors are, when not on pgkura's default search path.
    if os.environ.get("PGKURA_PG_SEARCH_PATH"):
        full_env["PGKURA_PG_SEARCH_PATH"] = os.environ["PGKURA_PG_SEARCH_PATH"]
    full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env.get('PATH', '/usr/bin:/bin')}"
    full_env.setdefault("LANG", "C.UTF-8")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        cmd, env=full_env, capture_output=True, text=True, timeout=timeout, input=input, cwd="/"
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pgkura {' '.join(args)} exited {proc.returncode}\n--- stderr:\n{proc.stderr}"
            f"\n--- stdout:\n{proc.stdout}"
        )
    return result
