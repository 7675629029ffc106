"""The one pool of forked workers (pgkura.physical.units): state is handed to it explicitly,
reaches each worker without being pickled, stays per worker, and is absent elsewhere."""

from __future__ import annotations

import ast
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgkura.physical.units import cancelling, forked_workers, worker_state


@dataclass
class Work:
    name: str
    # A lock cannot be pickled: the state reaches the workers through fork, not a pipe.
    lock: threading.Lock = field(default_factory=threading.Lock)
    counted: int = 0


def _in_worker(n: int) -> tuple[int, str, int, int]:
    work = worker_state(Work)
    with work.lock:
        work.counted += 1  # this worker's own copy
    return os.getpid(), work.name, n * n, work.counted


def _wrong_kind(_: int) -> None:
    worker_state(dict)


def test_workers_get_the_state_they_are_handed_without_pickling_it() -> None:
    work = Work("restore of backup X")
    with cancelling(forked_workers(2, work)) as pool:
        results = [f.result() for f in [pool.submit(_in_worker, n) for n in range(20)]]
    assert {r[1] for r in results} == {"restore of backup X"}
    assert [r[2] for r in results] == [n * n for n in range(20)]
    pids = {r[0] for r in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # Each worker counted only its own units, and the caller's state was not touched.
    per_worker = {pid: max(r[3] for r in results if r[0] == pid) for pid in pids}
    assert sum(per_worker.values()) == 20
    assert work.counted == 0


def test_two_pools_each_see_their_own_state() -> None:
    with cancelling(forked_workers(1, Work("first"))) as one:
        with cancelling(forked_workers(1, Work("second"))) as two:
            assert two.submit(_in_worker, 1).result()[1] == "second"
        assert one.submit(_in_worker, 1).result()[1] == "first"


def test_the_state_is_absent_outside_workers_and_of_the_wrong_kind() -> None:
    with pytest.raises(RuntimeError, match="no Work for this process"):
        worker_state(Work)
    with (
        cancelling(forked_workers(1, Work("x"))) as pool,
        pytest.raises(RuntimeError, match="no dict for this process"),
    ):
        pool.submit(_wrong_kind, 0).result()


def test_no_engine_hands_state_to_workers_through_a_global() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "pgkura"
    offending = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        if "forked_workers" not in text or path.name == "units.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Global):
                offending.append(f"{path.relative_to(src)}:{node.lineno}: global {node.names}")
    assert offending == []
    users = [p.name for p in src.rglob("*.py") if "forked_workers(" in p.read_text()]
    assert {"store.py", "readback.py", "restore.py"} <= set(users)
