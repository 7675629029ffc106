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

from pgkura.pg.binaries import find_pg_bin
from pgkura.pg.server import LocalServer, free_port, make_owned_dir
from runner import os_user, run_pgkura

KEEP = os.environ.get("PGKURA_KEEP_TEST_DIRS") == "1"


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    return find_pg_bin(os.environ.get("PGKURA_TEST_PG_BIN"))


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
def make_server(work_dir: Path, socket_dir: Path, pg_bin: Path) -> Iterator[Any]:
    servers: list[LocalServer] = []

    def factory(
        name: str,
        *,
        checksums: bool = True,
        extra_conf: dict[str, str] | None = None,
        start: bool = True,
        pgdata: Path | None = None,
        init: bool = True,
        initdb_args: list[str] | None = None,
    ) -> LocalServer:
        server = LocalServer(pgdata or work_dir / name, free_port(), socket_dir, pg_bin, os_user())
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
