"""Asynchronous archiving: a background process per stanza that pushes WAL segments several at
a time, and one that prefetches segments for recovery.

PostgreSQL's archiver runs archive_command once per segment, one after another; with a cold
start and a durable write each, that caps WAL throughput. With ``--archive-async on``:

push  The foreground archive-push looks for ``out/<name>.ok`` in the spool. If it is there, the
      segment is already durable in the repository (the background pusher wrote the .ok only
      after the push returned) and the command exits 0 at once. Otherwise it makes sure the
      pusher runs and waits for the .ok (or an .error, or --archive-timeout). The pusher reads
      ``pg_wal/archive_status/*.ready`` and pushes what is ready, ``jobs`` at a time, oldest
      first, so it runs ahead of the archiver. A segment is never acknowledged before it is
      durable: the .ok records the file's identity (size, mtime, inode) so that an .ok for an
      older file of the same name is not taken for the new one.
get   The foreground archive-get serves ``in/<name>`` from the spool when the prefetcher has
      already fetched (and verified) it; otherwise it fetches the file itself. Then it asks the
      prefetcher to fetch the next segments on the same timeline.

Background processes hold an flock on their lock file, so only one of each runs per spool; they
exit after a few idle seconds.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
import zlib

from pgkura.config import Config
from pgkura.errors import PgkuraError, RepositoryError

# Imports stay minimal: the foreground archive-push of async mode runs once per segment, so
# its paths are strings (pathlib costs about 4 ms to import); the daemons use pathlib.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

IDLE_EXIT_SECONDS = 5.0
PREFETCH_SEGMENTS = 8
PUSH_JOBS = 4
PREFETCH_JOBS = 4
POLL = 0.005


def spool_dir(cfg: Config) -> str:
    if cfg.spool_path:
        base = cfg.spool_path
    else:
        tag = f"{zlib.crc32(f'{cfg.repo}|{cfg.stanza}'.encode()):08x}"
        tmp = os.environ.get("TMPDIR") or "/tmp"
        base = os.path.join(tmp, f"pgkura-spool-{os.geteuid()}-{tag}")
    for sub in ("out", "in"):
        os.makedirs(os.path.join(base, sub), mode=0o700, exist_ok=True)
    return base


def _inbox(spool: str) -> str:
    """The prefetched segments of the cluster being recovered here (the working directory is
    its data directory): one inbox per cluster, since restores of two generations of a stanza
    ask for segments of the same names (pgkura.wal.archive.recovering_archive)."""
    from pgkura.pg.controlfile import read_system_identifier

    sysid = read_system_identifier(".")
    path = os.path.join(spool, "in" if sysid is None else f"in-{sysid}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _identity(path: str | Path) -> str:
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


def _read_small(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_small(path: str | Path, text: str) -> None:
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _spawn(cfg: Config, role: str, cwd: str) -> None:
    """Start ``pgkura archive-daemon ROLE`` detached from the caller (PostgreSQL must not wait
    for it), unless its lock shows it already runs."""
    fd = os.open(_lock_path(spool_dir(cfg), role), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # running
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    import subprocess

    from pgkura.invocation import child_args

    args = [sys.executable, "-m", "pgkura.entry", *child_args(cfg, spool_path=spool_dir(cfg))]
    subprocess.Popen(
        [*args, "archive-daemon", role],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(spool_dir(cfg), f"{role}.log"), "ab"),  # noqa: SIM115 - to the child
        start_new_session=True,
    )


def _lock_path(spool: str, role: str) -> str:
    """One pusher per spool; one prefetcher per cluster being recovered (its inbox)."""
    return os.path.join(_inbox(spool) if role == "get" else spool, f"{role}.lock")


def push_async(cfg: Config, path: str) -> bool:
    """Archive ``path`` through the background pusher; True when it was already done."""
    spool = spool_dir(cfg)
    name = os.path.basename(path)
    ok = os.path.join(spool, "out", f"{name}.ok")
    error = os.path.join(spool, "out", f"{name}.error")
    identity = _identity(path)
    deadline = time.monotonic() + cfg.archive_timeout
    started = False
    while True:
        if _read_small(ok) == identity:
            _unlink(ok)
            return not started
        message = _read_small(error)
        if message is not None:
            _unlink(error)
            raise RepositoryError(message, hint="see the server log; PostgreSQL will retry")
        if not started:
            # archive_command runs in the data directory: pg_wal/archive_status is there.
            _spawn(cfg, "push", os.getcwd())
            started = True
        if time.monotonic() > deadline:
            raise PgkuraError(
                f"the background pusher did not archive {name} within {cfg.archive_timeout:g} s",
                hint=f"see {os.path.join(spool, 'push.log')}; PostgreSQL will retry",
            )
        time.sleep(POLL)


def _unlink(path: str | Path) -> None:
    try:  # noqa: SIM105 - contextlib is one more import on the per-segment path
        os.unlink(path)
    except FileNotFoundError:
        pass


def _is_segment(name: str) -> bool:
    """A plain 24-hex-digit segment name (what the prefetcher can fetch ahead of)."""
    return len(name) == 24 and all(c in "0123456789ABCDEF" for c in name)


def get_async(cfg: Config, wal_name: str, dest: str) -> bool:
    """Serve ``wal_name`` from the prefetch spool (True) or fetch it directly; either way
    ask the prefetcher for what follows. False when the archive does not have it."""
    inbox = _inbox(spool_dir(cfg))
    cached = os.path.join(inbox, wal_name)
    found = False
    try:
        # The prefetcher verified it when it fetched it: serving it costs one rename, and
        # this path imports no repository code (recovery calls restore_command per segment).
        os.replace(cached, dest)
        found = True
    except FileNotFoundError:
        from pathlib import Path

        from pgkura.repository.repo import open_repository
        from pgkura.wal.archive import get_wal, recovering_archive

        repo = open_repository(cfg)
        archive = recovering_archive(repo, cfg.stanza)
        found = get_wal(repo, archive, wal_name, Path(dest), durable=False)
    except OSError:  # another file system: copy durably
        from pathlib import Path

        from pgkura.wal.archive import write_file_atomic

        with open(cached, "rb") as f:
            write_file_atomic(Path(dest), f.read())
        _unlink(cached)
        found = True
    if found and _is_segment(wal_name):
        _write_small(os.path.join(inbox, ".want"), wal_name)
        _spawn(cfg, "get", os.getcwd())
    return found


def run_daemon(cfg: Config, role: str) -> None:
    """The background process: holds the role's lock while it works; exits when idle."""
    from pathlib import Path

    spool = Path(spool_dir(cfg))
    fd = os.open(_lock_path(str(spool), role), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return
    try:
        if role == "push":
            _push_loop(cfg, spool)
        elif role == "get":
            _get_loop(cfg, spool)
        else:
            raise PgkuraError(f"unknown archive daemon role {role!r}")
    finally:
        os.close(fd)


def _push_loop(cfg: Config, spool: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from pgkura.codec import compression
    from pgkura.repository.repo import open_repository
    from pgkura.wal.archive import push_wal

    compression.PARALLEL_LARGE = False  # PUSH_JOBS segments at once already fill the cores
    repo = open_repository(cfg)
    jobs = repo.workers_for(PUSH_JOBS)
    status = Path("pg_wal") / "archive_status"
    idle_since = time.monotonic()

    def push_one(name: str) -> None:
        path = Path("pg_wal") / name
        try:
            identity = _identity(path)
            # Mapped: a segment with a .ready file stays as it is until archive_command has
            # succeeded for it, which waits for this push.
            push_wal(repo, cfg.stanza, path, mapped=True)
        except FileNotFoundError:
            return  # archived and removed meanwhile
        except PgkuraError as exc:
            _write_small(spool / "out" / f"{name}.error", exc.message)
            return
        _write_small(spool / "out" / f"{name}.ok", identity)

    with ThreadPoolExecutor(jobs, thread_name_prefix="pgkura-push") as pool:
        while time.monotonic() - idle_since < IDLE_EXIT_SECONDS:
            ready = sorted(
                p.name[: -len(".ready")]
                for p in status.glob("*.ready")
                if not (spool / "out" / (p.name[: -len(".ready")] + ".ok")).exists()
                and not (spool / "out" / (p.name[: -len(".ready")] + ".error")).exists()
            )
            if not ready:
                time.sleep(0.02)
                continue
            list(pool.map(push_one, ready[: jobs * 4]))
            idle_since = time.monotonic()


def _get_loop(cfg: Config, spool: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pgkura.repository.repo import open_repository
    from pgkura.wal.archive import get_wal, recovering_archive
    from pgkura.wal.names import is_segment_name, next_segment_name

    repo = open_repository(cfg)
    archive = recovering_archive(repo, cfg.stanza)
    inbox = Path(_inbox(str(spool)))
    idle_since = time.monotonic()
    done_for = ""
    while time.monotonic() - idle_since < IDLE_EXIT_SECONDS:
        try:
            wanted = (inbox / ".want").read_text().strip()
        except FileNotFoundError:
            wanted = ""
        if not wanted or wanted == done_for:
            time.sleep(0.02)
            continue
        done_for = wanted
        idle_since = time.monotonic()
        upcoming = []
        name = wanted
        for _ in range(PREFETCH_SEGMENTS):
            name = next_segment_name(name)
            upcoming.append(name)
        # Files older than what recovery asks for now will not be asked for again.
        for old in inbox.iterdir():
            if is_segment_name(old.name) and old.name <= wanted:
                old.unlink(missing_ok=True)

        def fetch(seg: str) -> None:
            if not (inbox / seg).exists():
                get_wal(repo, archive, seg, inbox / seg)

        with ThreadPoolExecutor(
            repo.workers_for(PREFETCH_JOBS), thread_name_prefix="pgkura-prefetch"
        ) as pool:
            list(pool.map(fetch, upcoming))
