"""The README's first command: the demo runs end to end and proves its restores."""

from __future__ import annotations

from runner import run_pgkura


def test_demo_restores_identical_data() -> None:
    result = run_pgkura("demo", user=None, timeout=600)
    log = result.stderr
    assert log.count("-> identical") == 3, log  # delta, PITR and table restore
    assert "demo finished" in log
    assert "DIFFERENT" not in log
