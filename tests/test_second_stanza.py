"""One cluster, one stanza: a mistyped --stanza is refused instead of starting a stanza of its
own, and `stanza create` makes a second stanza of one cluster on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pgutil import archiving_conf
from runner import run_pgkura
from test_archive import one_segment


def _tree(repo: str) -> dict[str, int]:
    return {
        str(p.relative_to(repo)): p.stat().st_size for p in Path(repo).rglob("*") if p.is_file()
    }


def _refused(result: Any, typo: str) -> None:
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()
    assert f"stanza {typo!r} does not exist" in error[0], result.stderr
    assert "backed up as stanza 'main' of this repository, which archives its WAL" in error[0]
    assert f"pgkura --stanza {typo} --pgdata DIR stanza create" in result.stderr


def test_a_mistyped_stanza_is_refused_and_stanza_create_makes_a_second_one(
    make_server: Any, repo: str
) -> None:
    empty = run_pgkura("--repo", repo, "info")  # a repository with no stanza yet: not an error
    assert "no backups yet" in empty.stdout
    src = make_server("src", extra_conf=archiving_conf(repo))
    env = {**src.libpq_env(), "PGKURA_PGDATA": str(src.pgdata)}
    first = run_pgkura("--repo", repo, "backup", env=env).stdout.strip()

    # An online backup, a segment pushed and (with the server stopped) an offline backup,
    # each into a stanza nobody created: refused, and nothing of the repository changes
    # (locks and run records aside: what a refused command leaves is gone when it ends).
    before = _tree(repo)
    _refused(run_pgkura("--repo", repo, "--stanza", "mian", "backup", env=env, check=False), "mian")
    segment = one_segment(src)
    pushed = run_pgkura(
        "--repo", repo, "--stanza", "mian", "archive-push", str(segment), check=False
    )
    _refused(pushed, "mian")
    src.stop()
    offline = run_pgkura(
        "--repo", repo, "--stanza", "mian", "--pgdata", str(src.pgdata), "backup",
        "--type", "offline", check=False,
    )  # fmt: skip
    _refused(offline, "mian")
    after = _tree(repo)
    new = {k for k in after.keys() - before.keys() if not k.startswith(("locks/", "runs/", "wal/"))}
    assert new == set(), new
    assert not any("mian" in k for k in after)
    listed = json.loads(run_pgkura("--repo", repo, "info", "--output", "json").stdout)
    assert [b["id"] for b in listed["backups"]] == [first]
    # info of the mistyped stanza names the real one instead of "no backups yet".
    typo = run_pgkura("--repo", repo, "--stanza", "mian", "info", check=False)
    assert typo.returncode != 0 and "no backups yet" not in typo.stdout
    assert "stanza 'mian' does not exist" in typo.stderr and "use --stanza main" in typo.stderr

    # On purpose: `stanza create` binds the second stanza, which then takes backups.
    made = run_pgkura("--repo", repo, "--stanza", "copy", "--pgdata", str(src.pgdata),
                      "stanza", "create")  # fmt: skip
    assert "stanza copy is bound to the cluster" in made.stdout
    again = run_pgkura("--repo", repo, "--stanza", "copy", "--pgdata", str(src.pgdata),
                       "stanza", "create", "--output", "json")  # fmt: skip
    assert json.loads(again.stdout)["added"] is False
    second = run_pgkura("--repo", repo, "--stanza", "copy", "--pgdata", str(src.pgdata),
                        "backup", "--type", "offline").stdout.strip()  # fmt: skip
    copy = json.loads(run_pgkura("--repo", repo, "--stanza", "copy", "info", "--output",
                                 "json").stdout)  # fmt: skip
    assert [b["id"] for b in copy["backups"]] == [second]

    # Another cluster into a new stanza is no mistake: created by its first backup as before;
    # and a stanza of its dumps only (no WAL) does not keep its archiving out of another.
    other = make_server("other", extra_conf={"wal_level": "replica"})
    run_pgkura("--repo", repo, "--stanza", "dumps", "dump", "-d", "postgres",
               env=other.libpq_env())  # fmt: skip
    run_pgkura("--repo", repo, "--stanza", "other", "archive-push", str(one_segment(other)))
    other.stop()
    run_pgkura("--repo", repo, "--stanza", "other", "--pgdata", str(other.pgdata), "backup",
               "--type", "offline")  # fmt: skip
    assert len(list(Path(repo, "snapshots", "other").iterdir())) == 1
