"""A restore run as root (sudo, root's cron) gives the restored cluster to its OS user, so that
the server starts: PostgreSQL runs neither as root nor on a data directory its user does not
own."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from runner import run_pgkura


def _owners(root: Path) -> set[int]:
    return {p.lstat().st_uid for p in [root, *root.rglob("*")]}


def test_a_restore_as_root_gives_the_files_to_the_clusters_user_and_starts(
    make_server: Any, server_factory: Any, pg_bin: Path, work_dir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root: it restores as root and starts the server as its user")
    user = pwd.getpwuid(work_dir.stat().st_uid)
    assert user.pw_uid != 0
    src = make_server("src")
    src.sql("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 3000) g")
    expected = src.sql("SELECT count(*), sum(g) FROM t")
    src.stop()
    # Everything as root: a repository root owns, root's backup, root's restore.
    repo = str(work_dir / "root-repo")
    run_pgkura("--repo", repo, "init", user=None)
    run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup", "--type", "offline",
               user=None)  # fmt: skip
    # Into a directory root owns: the user comes from the manifest, not from the parent.
    parent = work_dir / "root-owned"
    parent.mkdir()
    assert parent.stat().st_uid == 0
    target = parent / "restored"
    done = run_pgkura("--repo", repo, "restore", "--target-dir", str(target), user=None)
    assert _owners(target) == {user.pw_uid}
    assert f"the restored files belong to {user.pw_name}" in done.stderr
    os.chown(parent, user.pw_uid, user.pw_gid)  # the server's user must reach its directory
    restored = server_factory("restored", bin_dir=pg_bin, pgdata=target, init=False)
    assert restored.sql("SELECT count(*), sum(g) FROM t") == expected


def test_the_user_without_a_recorded_one_is_the_parents_when_not_root(
    make_server: Any, work_dir: Path, repo: str
) -> None:
    """Manifests written before the owner was recorded: the owner of the directory the target
    is made in, unless that is root (then nobody is named, and the restore says what to do)."""
    from pgkura.physical.restore_owner import owner_for
    from pgkura.repository.manifest import read_manifest
    from pgkura.repository.repo import Repository
    from pgkura.storage.posix import PosixStorage

    if os.geteuid() != 0:
        pytest.fail("this test needs root: only a restore run as root changes owners")
    src = make_server("src", start=False)
    backup_id = run_pgkura("--repo", repo, "--pgdata", str(src.pgdata), "backup",
                           "--type", "offline").stdout.strip()  # fmt: skip
    manifest = read_manifest(Repository.open(PosixStorage(repo)), "main", backup_id)
    user = pwd.getpwuid(src.pgdata.stat().st_uid)
    assert manifest.extra["pgdata_owner"] == user.pw_name
    older = manifest.with_changes(
        extra={k: v for k, v in manifest.extra.items() if k != "pgdata_owner"}
    )
    found = owner_for(older, work_dir / "restored")  # work_dir: the server's user's
    assert found is not None and found.pw_uid == user.pw_uid
    rooted = work_dir / "root-owned"
    rooted.mkdir()
    assert owner_for(older, rooted / "restored") is None
    gone = manifest.with_changes(extra={**manifest.extra, "pgdata_owner": "no-such-user-here"})
    assert owner_for(gone, rooted / "restored") is None
