"""The one local durable writer (pgkura.durable): every byte written despite short writes,
the file and its directory fsynced, the mode asked for, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgkura import durable
from pgkura.errors import PgkuraError


class Trickle:
    """An unbuffered file that takes at most ``step`` bytes per write, as a pipe, a signal or
    NFS may make os.write do."""

    def __init__(self, step: int) -> None:
        self.step, self.data, self.calls = step, bytearray(), 0

    def write(self, view: memoryview) -> int:
        self.calls += 1
        taken = bytes(view[: self.step])
        self.data += taken
        return len(taken)


def test_write_all_finishes_short_writes() -> None:
    out = Trickle(3)
    payload = bytes(range(256)) * 4
    durable.write_all(out, payload)
    assert bytes(out.data) == payload
    assert out.calls == -(-len(payload) // 3)


def test_write_all_refuses_a_write_that_takes_nothing() -> None:
    with pytest.raises(OSError, match="wrote nothing"):
        durable.write_all(Trickle(0), b"abc")


def test_write_all_through_a_real_pipe_larger_than_its_buffer(tmp_path: Path) -> None:
    # A real pipe drained in small reads by another process: os.write may take part only.
    read_end, write_end = os.pipe()
    payload = os.urandom(300_000)  # larger than the 64 KiB pipe buffer
    pid = os.fork()
    if pid == 0:  # the reader, in a child
        os.close(write_end)
        got = bytearray()
        while chunk := os.read(read_end, 7919):
            got += chunk
        (tmp_path / "got").write_bytes(bytes(got))
        os._exit(0)
    os.close(read_end)
    durable.write_all(write_end, payload)
    os.close(write_end)
    assert os.waitpid(pid, 0)[1] == 0
    assert (tmp_path / "got").read_bytes() == payload


def _fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what each real os.fsync call syncs (by the path of its descriptor)."""
    seen: list[str] = []
    real = os.fsync

    def observed(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", observed)
    return seen


def test_write_file_fsyncs_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _fsynced_paths(monkeypatch)
    path = tmp_path / "backup_manifest"
    durable.write_file(path, b"new content", mode=0o640)
    assert path.read_bytes() == b"new content"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()
    # The temporary file (renamed since) first, then the directory that holds the new name.
    assert len(seen) == 2 and seen[1] == str(tmp_path)
    assert seen[0].startswith(str(tmp_path / ".backup_manifest."))
    assert os.listdir(tmp_path) == ["backup_manifest"]


def test_write_file_replaces_whole_with_the_default_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "postgresql.auto.conf"
    path.write_text("old setting = 1\n" * 1000)
    durable.write_file(path, b"new = 2\n")
    assert path.read_bytes() == b"new = 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_streamed_write_that_fails_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "000000010000000000000003"
    path.write_bytes(b"old")

    def fill(fd: int) -> None:
        durable.write_all(fd, b"partial")
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum mismatch"):
        durable.write_file(path, fill)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == [path.name]


def test_not_durable_skips_fsync_but_still_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _fsynced_paths(monkeypatch)
    path = tmp_path / "RECOVERYXLOG"
    durable.write_file(path, lambda fd: durable.write_all(fd, b"wal"), durable=False)
    assert path.read_bytes() == b"wal" and seen == []


def test_a_missing_directory_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "file"
    with pytest.raises(PgkuraError, match=f"cannot write {path}"):
        durable.write_file(path, b"x")


def test_engines_do_not_take_file_writing_from_the_posix_backend() -> None:
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "pgkura"
    offending = []
    for path in sorted(src.rglob("*.py")):
        if path.parent.name == "storage":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pgkura.storage.posix":
                names = {a.name for a in node.names}
                if names & {"fsync_dir", "write_all", "write_atomic"}:
                    offending.append(str(path.relative_to(src)))
    assert offending == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
