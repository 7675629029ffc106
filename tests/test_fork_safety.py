"""Forked worker processes and native thread pools: a process forked after its parent used
BLAKE3's thread pool gets the pool's state without its threads, and a parallel hash there
waits for ever (an online backup hung so at its 49th backup, once the merged index object it
unsealed was over 4 MiB). The hashes a worker makes must finish; run in a fresh interpreter
with a deadline, so that a hang fails the test instead of stopping the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os
    from pgkura.codec.compression import LARGE_OBJECT
    from pgkura.physical.units import forked_workers
    from pgkura.repository.blocks import BlockLocation, stored_digests
    from pgkura.repository.sealed import keyed_digest

    KEY = bytes(range(32))
    BIG = os.urandom(2 * LARGE_OBJECT)
    ENTRIES = [(b"x" * 32, BlockLocation("p", 0, len(BIG), len(BIG)))]

    def in_worker(_n):
        return keyed_digest(KEY, BIG), stored_digests(KEY, BIG, ENTRIES)["blocks_digest"]

    expected = in_worker(0)  # the parent's parallel hashes start BLAKE3's pool
    with forked_workers(2) as pool:
        got = list(pool.map(in_worker, range(4)))
    assert got == [expected] * 4, got
    print("hashed in workers")
    """
)


def test_workers_forked_after_a_parallel_hash_hash_large_objects_and_finish() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung workers too
        proc.communicate()
        raise AssertionError("a worker forked after a parallel hash hung hashing") from None
    assert proc.returncode == 0 and out.strip() == "hashed in workers", err
