"""S3 repositories: the settings, the credentials, and what a user sees when the bucket, the
credentials, the endpoint or its certificate are wrong — one line naming the setting to fix,
a non-zero exit, nothing written. All against a real SeaweedFS."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pgkura.errors import ConfigError, StorageError
from pgkura.storage.s3_config import S3Options, parse_location, resolve_credentials
from runner import os_user, run_pgkura
from seaweed import ACCESS_KEY, SECRET_KEY, S3Repo, free_ports


def one_error(stderr: str) -> tuple[str, str]:
    """The error line and the hint line pgkura printed, and nothing else."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith("pgkura: error: ") and lines[1].startswith("hint: "), stderr
    return lines[0], lines[1]


def keys_under(repo: S3Repo) -> list[str]:
    return [o.key for o in repo.store().list("")]


def test_init_refuses_a_bucket_that_does_not_exist(s3_repo: S3Repo) -> None:
    url = "s3://no-such-bucket/db1"
    result = run_pgkura("--config", str(s3_repo.config), "--repo", url, "init", check=False)
    assert result.returncode != 0
    error, hint = one_error(result.stderr)
    assert "bucket 'no-such-bucket' does not exist" in error
    assert "--repo" in hint
    from pgkura.storage.s3 import S3Storage

    options = S3Options(endpoint=s3_repo.server.endpoint, credentials_file=str(s3_repo.credentials))
    with pytest.raises(StorageError, match="does not exist"):  # and init did not make it
        list(S3Storage(url, options).list(""))


def test_wrong_credentials_are_one_line_that_never_shows_the_secret(s3_repo: S3Repo) -> None:
    wrong = "not-the-secret-" + os.urandom(8).hex()
    s3_repo.credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {wrong}\n"
    )
    result = run_pgkura(*s3_repo.args, "init", check=False)
    assert result.returncode != 0
    error, hint = one_error(result.stderr)
    assert "refused the S3 credentials" in error and "s3-credentials-file" in hint
    assert wrong not in result.stderr and SECRET_KEY not in result.stderr
    s3_repo.credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    assert keys_under(s3_repo) == []  # nothing written (listed with the right credentials)


def test_an_endpoint_that_does_not_answer_fails_within_the_retry_budget(s3_repo: S3Repo) -> None:
    (port,) = free_ports(1)
    s3_repo.write_config(retry_seconds=2)
    text = s3_repo.config.read_text().replace(s3_repo.server.endpoint, f"http://127.0.0.1:{port}")
    s3_repo.config.write_text(text)
    started = time.monotonic()
    result = run_pgkura(*s3_repo.args, "init", check=False)
    assert result.returncode != 0
    assert time.monotonic() - started < 30  # the budget, not forever
    error, hint = one_error(result.stderr)
    assert f"127.0.0.1:{port}" in error and "did not answer" in error
    assert "--s3-endpoint" in hint


def test_a_certificate_that_does_not_verify_is_refused_and_a_ca_file_fixes_it(
    s3_repo: S3Repo,
) -> None:
    server = s3_repo.server
    s3_repo.write_config(retry_seconds=1)
    s3_repo.config.write_text(
        s3_repo.config.read_text().replace(server.endpoint, server.tls_endpoint)
    )
    result = run_pgkura(*s3_repo.args, "init", check=False)
    assert result.returncode != 0
    error, hint = one_error(result.stderr)
    assert "does not verify" in error and "--s3-ca-file" in hint and "--s3-verify-tls" in hint
    assert keys_under(s3_repo) == []

    # The CA that signed it, given as a setting: the same command works over TLS.
    run_pgkura("--s3-ca-file", str(server.ca), *s3_repo.args, "init")
    assert keys_under(s3_repo) == ["pgkura.json"]
    # And a test server's certificate can be taken unverified when the user says so.
    other = S3Repo(server, s3_repo.config.parent / "noverify", "t/noverify", owner=os_user())
    other.config.write_text(other.config.read_text().replace(server.endpoint, server.tls_endpoint))
    run_pgkura("--s3-verify-tls", "off", *other.args, "init")
    run_pgkura("--s3-verify-tls", "off", *other.args, "info")


def test_a_credentials_file_others_can_read_is_refused(s3_repo: S3Repo) -> None:
    s3_repo.credentials.chmod(0o644)
    result = run_pgkura(*s3_repo.args, "init", check=False)
    assert result.returncode != 0
    error, hint = one_error(result.stderr)
    assert (
        "is open to other users (mode 0644)" in error
        and hint == f"hint: chmod 600 {s3_repo.credentials}"
    )
    assert SECRET_KEY not in result.stderr


def test_the_credentials_file_is_not_a_command_line_option(s3_repo: S3Repo) -> None:
    result = run_pgkura("--s3-credentials-file", str(s3_repo.credentials), "--repo",
                        s3_repo.url, "init", check=False)  # fmt: skip
    assert result.returncode != 0 and "No such option" in result.stderr


def test_credentials_come_from_the_environment_or_the_shared_file(
    s3_repo: S3Repo, work_dir: Path
) -> None:
    endpoint = ("--s3-endpoint", s3_repo.server.endpoint, "--repo", s3_repo.url)
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "HOME": "/nonexistent",
    }
    run_pgkura(*endpoint, "init", env=env)
    # ~/.aws/credentials, profile from AWS_PROFILE.
    home = work_dir / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n\n"
        f"[backup]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    # As the invoking user itself (runuser would set HOME to the server user's home).
    env = {"HOME": str(home), "AWS_PROFILE": "backup"}
    info = run_pgkura(*endpoint, "info", env=env, user=None)
    assert info.returncode == 0
    nothing = run_pgkura(*endpoint, "info", env={"HOME": "/nonexistent"}, check=False, user=None)
    error, hint = one_error(nothing.stderr)
    assert "no S3 credentials" in error and "AWS_ACCESS_KEY_ID" in hint


def test_s3_settings_are_checked_when_read() -> None:
    with pytest.raises(ConfigError, match="does not name an S3 bucket"):
        parse_location("s3://Bad_Bucket/x")
    assert parse_location("s3://bkt/a/b/") == ("bkt", "a/b")
    assert parse_location("s3://bkt") == ("bkt", "")
    with pytest.raises(ConfigError, match="no S3 credentials"):
        resolve_credentials(
            S3Options(), {"HOME": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/x"}
        )
    env = {"AWS_ACCESS_KEY_ID": "KEYID", "AWS_SECRET_ACCESS_KEY": "SECRETVALUE"}
    found = resolve_credentials(S3Options(), env)
    assert (found.key_id, found.secret, found.source) == ("KEYID", "SECRETVALUE", "environment")
    assert "SECRETVALUE" not in repr(found)
    result = run_pgkura("--repo", "s3://bkt/x", "--s3-uri-style", "virtual", "info", check=False)
    error, _hint = one_error(result.stderr)
    assert "s3-uri-style" in error and "path or host" in error


def test_a_write_succeeds_when_the_server_comes_back_within_the_budget(
    private_seaweedfs: Any, tmp_path: Path
) -> None:
    store = S3Repo(private_seaweedfs, tmp_path, "t/retry", owner=None).store(retry_seconds=60)
    assert store.put_if_absent("before", b"1")
    private_seaweedfs.stop()
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(store.put_if_absent("wal/main/segment", b"pushed while down"))
        except Exception as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(2)
    assert outcome == []  # still retrying
    private_seaweedfs.start()
    writer.join(60)
    assert outcome == [True]
    assert store.get("wal/main/segment") == b"pushed while down"
    assert not store.put_if_absent("wal/main/segment", b"again")


def test_when_the_budget_runs_out_the_error_names_the_object(
    private_seaweedfs: Any, tmp_path: Path
) -> None:
    store = S3Repo(private_seaweedfs, tmp_path, "t/budget", owner=None).store(retry_seconds=2)
    private_seaweedfs.stop()
    with pytest.raises(StorageError) as caught:
        store.put_if_absent("packs/ab/abcdef.pack", b"x")
    assert "cannot write packs/ab/abcdef.pack in s3://pgkura-test/t/budget" in caught.value.message
    assert "retried for 2 s" in caught.value.message
    assert caught.value.hint and "--s3-retry-seconds" in caught.value.hint


def test_archive_push_imports_obstore_only_for_an_s3_repository(
    make_server: Any, work_dir: Path, repo: str, s3_repo: S3Repo
) -> None:
    """archive-push starts once per WAL segment: the S3 client's native module is loaded
    only when the repository is in a bucket."""
    from test_archive import HEAVY_MODULES, modules_after, one_segment

    src = make_server("src", extra_conf={"wal_level": "replica"})
    run_pgkura("--repo", repo, "archive-push", str(one_segment(src)))  # the stanza exists
    posix = modules_after(work_dir, "--repo", repo, "archive-push", str(one_segment(src)))
    assert "pgkura.wal.archive" in posix and not any(m.startswith("obstore") for m in posix)
    run_pgkura(*s3_repo.args, "init")
    segment = one_segment(src)
    s3 = modules_after(work_dir, *s3_repo.args, "archive-push", str(segment))
    assert "obstore._obstore" in s3
    assert s3_repo.store().exists(f"wal/main/{segment.name[:16]}/{segment.name}")
    # obstore itself imports typing and takes its retry times as datetime.timedelta; the
    # config file (which holds the S3 settings) needs tomllib.
    assert s3 & (HEAVY_MODULES - {"typing", "datetime", "tomllib"}) == set()


def test_archive_push_compresses_while_the_repository_opens_and_a_wrong_guess_costs_nothing(
    make_server: Any, work_dir: Path, s3_repo: S3Repo
) -> None:
    """On S3, archive-push compresses its segment with the codec the location had at its last
    push while pgkura.json and the stanza are fetched (wal/early.py): a guess that is not the
    repository's codec is not used and is set right, and every segment comes back byte for
    byte."""
    from pgutil import chown
    from test_archive import one_segment

    src = make_server("src", extra_conf={"wal_level": "replica"})
    cache = work_dir / "cache"
    cache.mkdir()
    chown(cache)
    args = (*s3_repo.args, "--cache-dir", str(cache))
    run_pgkura(*args, "init", "--compress", "zstd:3")
    first = one_segment(src)
    run_pgkura(*args, "archive-push", str(first))  # no guess yet: one is written
    (hint,) = (cache / "archive-codec").iterdir()
    assert hint.read_text() == "zstd:3"
    hint.write_text("lz4:1")  # e.g. another repository was at this location before
    second = one_segment(src)
    run_pgkura(*args, "archive-push", str(second))
    assert hint.read_text() == "zstd:3"
    written = hint.stat().st_mtime_ns
    third = one_segment(src)
    run_pgkura(*args, "archive-push", str(third))  # the right guess: used, not rewritten
    assert hint.stat().st_mtime_ns == written
    dest = work_dir / "got"
    dest.mkdir()
    chown(dest)
    for segment in (first, second, third):
        run_pgkura(*args, "archive-get", segment.name, str(dest / segment.name))
        assert (dest / segment.name).read_bytes() == segment.read_bytes()
