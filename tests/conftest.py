"""Fixtures: real PostgreSQL servers in private directories, run as postgres when we are root."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from pgversions import DEFAULT_MAJOR, RUN_MAJORS, bin_of
from runner import os_user, run_pgkura

KEEP = os.environ.get("PGKURA_KEEP_TEST_DIRS") == "1"
# (test, PostgreSQL major it needs, majors of this run it does not run on, why)
NOT_RUN: list[tuple[str, int, list[int], str]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "matrix: version-sensitive; runs on every PostgreSQL major of the matrix"
    )
    config.addinivalue_line(
        "markers", "min_pg(major, reason): needs PostgreSQL `major` or newer (a feature it has)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that starts a server runs on the default major, and the ``matrix`` ones on
    each major of the matrix; the id names it (``[pg18]``). A ``min_pg`` test runs only where
    its feature exists, on the oldest major of the run that has it when the default lacks it,
    and where it does not run is reported at the end of the run (skipped, with the reason,
    when no major of the run has the feature: with --pg N)."""
    if "pg_major" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    majors = RUN_MAJORS if node.get_closest_marker("matrix") else [DEFAULT_MAJOR]
    params: list[Any] = list(majors)
    needs = node.get_closest_marker("min_pg")
    if needs is not None:
        low, reason = int(needs.args[0]), str(needs.kwargs.get("reason", ""))
        left_out = [m for m in majors if m < low]
        params = [m for m in majors if m >= low] or [m for m in RUN_MAJORS if m >= low][:1]
        if left_out:
            NOT_RUN.append((node.nodeid, low, left_out, reason))
        if not params:
            covered = ", ".join(str(m) for m in RUN_MAJORS)
            why = f"needs PostgreSQL {low}+ ({reason}); this run covers {covered}"
            params = [pytest.param(low, marks=pytest.mark.skip(reason=why))]
    metafunc.parametrize("pg_major", params, ids=lambda m: f"pg{m}", indirect=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not NOT_RUN:
        return
    terminalreporter.section("needs a newer PostgreSQL")
    for nodeid, low, left_out, reason in NOT_RUN:
        names = ", ".join(f"pg{m}" for m in left_out)
        terminalreporter.write_line(
            f"{nodeid}: needs PostgreSQL {low}+ ({reason}); not run on {names}"
        )


@pytest.fixture
def pg_major(request: pytest.FixtureRequest) -> int:
    """The PostgreSQL major this test runs on (see pytest_generate_tests)."""
    return int(request.param)


@pytest.fixture
def pg_bin(pg_major: int) -> Path:
    return bin_of(pg_major)


@pytest.fixture
def work_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory the server's OS user owns (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="pgkura-test-"))
    make_owned_dir(base, os_user(), mode=0o755)
    yield base
    if not KEEP:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: keep this one short.
    path = Path(tempfile.mkdtemp(prefix="pgk-"))
    make_owned_dir(path, os_user(), mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_factory(work_dir: Path, socket_dir: Path) -> Iterator[Any]:
    """Servers of any installed major (``bin_dir``), stopped after the test."""
    servers: list[LocalServer] = []

    def factory(
        name: str,
        *,
        bin_dir: Path,
        checksums: bool = True,
        extra_conf: dict[str, str] | None = None,
        start: bool = True,
        pgdata: Path | None = None,
        init: bool = True,
        initdb_args: list[str] | None = None,
    ) -> LocalServer:
        server = LocalServer(pgdata or work_dir / name, free_port(), socket_dir, bin_dir, os_user())
        servers.append(server)
        if init:
            server.initdb(checksums=checksums, extra_conf=extra_conf, initdb_args=initdb_args or [])
        if start:
            server.start()
        return server

    yield factory
    for server in servers:
        server.stop(mode="immediate")


@pytest.fixture
def make_server(server_factory: Any, pg_bin: Path) -> Any:
    """Servers of the test's PostgreSQL major (pg_major)."""

    def factory(name: str, **kwargs: Any) -> LocalServer:
        return server_factory(name, bin_dir=kwargs.pop("bin_dir", pg_bin), **kwargs)

    return factory


@pytest.fixture
def repo(work_dir: Path) -> str:
    """An empty repository made with `pgkura init`, as a user would."""
    path = str(work_dir / "repo")
    run_pgkura("--repo", path, "init")
    return path


# -- S3: one SeaweedFS for the session, a prefix of its bucket per test ---------------------


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[Any]:
    """A real S3 server (SeaweedFS) shared by the session; tests never stop this one."""
    from seaweed import SeaweedFS

    base = Path(tempfile.mkdtemp(prefix="pgkura-s3-"))
    server = SeaweedFS(base)
    server.start()
    yield server
    server.stop()
    if not KEEP:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_seaweedfs() -> Iterator[Any]:
    """A SeaweedFS of this test's own, which the test may stop and start again."""
    from seaweed import SeaweedFS

    base = Path(tempfile.mkdtemp(prefix="pgkura-s3p-"))
    server = SeaweedFS(base)
    server.start()
    yield server
    server.stop()
    if not KEEP:
        shutil.rmtree(base, ignore_errors=True)


def _s3_prefix(request: pytest.FixtureRequest) -> str:
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"t/{name}-{os.urandom(4).hex()}"


@pytest.fixture
def s3_repo(seaweedfs: Any, work_dir: Path, request: pytest.FixtureRequest) -> Any:
    """An S3 location of its own (not initialised) on the session's SeaweedFS."""
    from seaweed import S3Repo

    return S3Repo(seaweedfs, work_dir / "s3", _s3_prefix(request), owner=os_user())
