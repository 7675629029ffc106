"""The README's first command: the demo runs end to end and proves its restores."""

from __future__ import annotations

from pathlib import Path

from runner import run_pgkura


def test_demo_restores_identical_data(pg_bin: Path) -> None:
    result = run_pgkura("--pg-bin", str(pg_bin), "demo", user=None, timeout=600)
    log = result.stderr
    assert log.count("-> identical") == 3, log  # delta, PITR and table restore
    assert "demo finished" in log
    assert "DIFFERENT" not in log
