"""archive-push on an object store compresses its segment while the repository opens.

Opening a repository on S3 is two round trips before the segment can be sealed (pgkura.json,
with the TLS handshake, then the stanza record), and compressing 16 MiB is about as long: so
the push starts compressing at once, with the codec this location had at its last push (a
hint in the local cache), while the main thread opens the repository. The hint is only a
guess: the compressed bytes are used only when the opened repository's codec is the same,
else the segment is compressed again with the right one and the hint rewritten. Compressing
is a function of the bytes and the codec alone (no key), so a guess can cost time, never
correctness.
"""

from __future__ import annotations

import os
import threading

from pgkura.codec.compression import Codec, parse_codec
from pgkura.errors import PgkuraError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pgkura.config import Config


class EarlyCompression:
    """``raw`` being compressed with ``codec`` in a thread of its own."""

    def __init__(self, raw: bytes | memoryview, codec: Codec) -> None:
        self.codec = codec
        self._result: bytes | None = None
        self._thread = threading.Thread(
            target=self._run, args=(raw,), name="pgkura-early-compress", daemon=True
        )
        self._thread.start()

    def _run(self, raw: bytes | memoryview) -> None:
        try:
            self._result = self.codec.compress(raw)
        except Exception:  # compressed again by the caller, which reports what fails
            self._result = None

    def result_for(self, codec: Codec) -> bytes | None:
        """The compressed bytes when ``codec`` is the one guessed (waits for them), else
        None."""
        self._thread.join()
        return self._result if codec == self.codec else None


def _hint_path(cfg: Config) -> str | None:
    from pgkura.cache_root import cache_root

    root = cache_root(cfg.cache_dir)
    if root is None or not cfg.repo:
        return None
    import blake3

    name = blake3.blake3(cfg.repo.encode()).hexdigest()[:32]
    return os.path.join(root, "archive-codec", name)


def start(cfg: Config, raw: bytes | memoryview) -> EarlyCompression | None:
    """Compression of ``raw`` started with the codec this object-store location had last;
    None for a local repository (it opens in well under a millisecond) or without a hint."""
    if not cfg.repo or "://" not in cfg.repo:
        return None
    path = _hint_path(cfg)
    try:
        if path is None:
            return None
        with open(path, encoding="ascii") as f:
            codec = parse_codec(f.read(32))
    except (OSError, ValueError, PgkuraError):  # no hint yet, or not one this version reads
        return None
    return EarlyCompression(raw, codec)


def remember(cfg: Config, codec: Codec, early: EarlyCompression | None) -> None:
    """Keep ``codec`` as this location's hint unless it is the one guessed. A cache that
    cannot be written only costs the next push its head start."""
    if early is not None and early.codec == codec:
        return
    path = _hint_path(cfg)
    if path is None or "://" not in (cfg.repo or ""):
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temp = f"{path}.{os.getpid()}.tmp"
        with open(temp, "w", encoding="ascii") as f:
            f.write(codec.spec)
        os.replace(temp, path)
    except OSError:
        return
