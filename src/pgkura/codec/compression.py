"""Compression codecs as byte-to-byte transforms: zstd (default), lz4, none.

A codec is named by a spec string, ``"zstd"``, ``"zstd:3"``, ``"lz4"``, ``"lz4:1"`` or
``"none"``. Each stored object records its codec id, so objects written with different
settings live side by side. Compressor objects are not thread-safe; one is kept per thread.
"""

from __future__ import annotations

import os
import threading

from pgkura.errors import ConfigError

TYPE_CHECKING = False  # archive-push imports this once per WAL segment: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

NONE, ZSTD, LZ4 = 0, 1, 2
_NAMES = {"none": NONE, "zstd": ZSTD, "lz4": LZ4}
_DEFAULT_LEVEL = {NONE: 0, ZSTD: 3, LZ4: 0}
_local = threading.local()


class Codec:
    __slots__ = ("codec_id", "level")  # not a dataclass: imported by archive-push per segment

    def __init__(self, codec_id: int, level: int) -> None:
        self.codec_id = codec_id
        self.level = level

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and (other.codec_id, other.level) == (
            self.codec_id,
            self.level,
        )

    def __hash__(self) -> int:
        return hash((self.codec_id, self.level))

    @property
    def spec(self) -> str:
        name = next(n for n, i in _NAMES.items() if i == self.codec_id)
        return name if self.codec_id == NONE else f"{name}:{self.level}"

    def compress(self, data: bytes | memoryview) -> bytes:
        if self.codec_id == ZSTD:
            if PARALLEL_LARGE and memoryview(data).nbytes >= LARGE_OBJECT:
                return _zstd_frames(self.level, data)
            return bytes(_zstd_compressor(self.level).compress(data))
        if self.codec_id == LZ4:
            import lz4.block

            return bytes(lz4.block.compress(data, store_size=False, compression=self.level))
        return bytes(data)

    def block_compressor(self, size: int) -> Callable[[bytes | memoryview], bytes]:
        """:meth:`compress` for pieces of at most ``size`` bytes, in this thread: for zstd
        its compressor's own method (the same bytes, one Python call per block less)."""
        if self.codec_id == ZSTD and not (PARALLEL_LARGE and size >= LARGE_OBJECT):
            compress: Callable[[bytes | memoryview], bytes] = _zstd_compressor(self.level).compress
            return compress
        return self.compress


# Objects at least this large (WAL segments) are compressed and hashed with several threads.
LARGE_OBJECT = 4 * 1024 * 1024
# A large object is compressed as independent zstd frames of this much content, two threads
# taking them in turn. zstd's own threads (one frame, jobs of 2 MiB) were slower: 19-26 ms for a
# pgbench segment against 14-18 ms, as they copy their input into fresh buffers.
FRAME_BYTES = 2 * 1024 * 1024
# False where several large objects are processed at once (the async pusher): one thread each
# uses the cores better than several threads each.
PARALLEL_LARGE = True


class _Fork:
    """Whether this process was forked (from one that may have used BLAKE3's thread pool)."""

    child = False


def _after_fork_in_child() -> None:
    _Fork.child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def hash_threads() -> int:
    """``max_threads`` for BLAKE3 on a large object: its thread pool (rayon's, started at its
    first parallel hash), except in a forked process, which gets a copy of the pool's state
    but not its threads: a parallel hash there waits for ever. (A backup's store workers hung
    so once the parent had unsealed a merged index of 4 MiB or more: every pack's stored
    digest is a large hash.) Forked workers hash on their own thread; they are one of
    several already."""
    return 1 if _Fork.child else -1  # blake3.blake3.AUTO


def parse_codec(spec: str) -> Codec:
    """Parse ``"zstd:3"``-style specs; a bad spec is a configuration error, not a crash."""
    name, _, level_text = spec.strip().lower().partition(":")
    if name not in _NAMES:
        raise ConfigError(
            f"unknown compression {spec!r}",
            hint="use zstd[:-7..22] (default level 3), lz4[:0..16] or none",
        )
    codec_id = _NAMES[name]
    if not level_text:
        return Codec(codec_id, _DEFAULT_LEVEL[codec_id])
    if codec_id == NONE:
        raise ConfigError(f"compression {spec!r}: none takes no level", hint="use none")
    try:
        level = int(level_text)
    except ValueError:
        raise ConfigError(f"compression level {level_text!r} is not a number") from None
    limits = {NONE: (0, 0), ZSTD: (-7, 22), LZ4: (0, 16)}[codec_id]
    if not limits[0] <= level <= limits[1]:
        raise ConfigError(
            f"compression level {level} is out of range for {name}",
            hint=f"use a level from {limits[0]} to {limits[1]}",
        )
    return Codec(codec_id, level)


def decompress(codec_id: int, data: bytes | memoryview, raw_length: int) -> bytes:
    """Decompress a payload written by the codec ``codec_id``; raises ValueError when damaged."""
    if codec_id == NONE:
        return bytes(data)
    if codec_id == ZSTD:
        try:
            if zstd().frame_content_size(data) == raw_length:  # one frame: the usual case
                return bytes(_zstd_decompressor().decompress(data, max_output_size=raw_length))
            return _zstd_decompress_frames(data, raw_length)
        except zstd().ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from None
    if codec_id == LZ4:
        import lz4.block

        try:
            return bytes(lz4.block.decompress(data, uncompressed_size=raw_length))
        except lz4.block.LZ4BlockError as exc:
            raise ValueError(f"lz4: {exc}") from None
    raise ValueError(f"unknown codec id {codec_id}")


_zstd_module: Any = None
_zstd_lock = threading.Lock()


def zstd() -> Any:
    """python-zstandard's C backend, loaded without the package's ``__init__``.

    ``import zstandard`` first imports platform and typing to pick a backend: about 6 ms of
    archive-push's cold start, against 1 ms for the extension module itself. It exports the
    same ZstdCompressor, ZstdDecompressor, ZstdCompressionParameters and ZstdError; where it
    cannot be loaded this way, the package is imported as usual."""
    if _zstd_module is not None:
        return _zstd_module
    with _zstd_lock:  # two threads' first calls must not load the extension twice
        return _load_zstd()


def _load_zstd() -> Any:
    global _zstd_module
    if _zstd_module is None:
        import sys

        module = sys.modules.get("zstandard.backend_c")
        if module is None:
            try:
                from importlib.machinery import PathFinder

                package = PathFinder.find_spec("zstandard")
                if package is None:
                    raise ImportError("zstandard not found")
                spec = PathFinder.find_spec(
                    "zstandard.backend_c", package.submodule_search_locations
                )
                if spec is None or spec.loader is None:
                    raise ImportError("zstandard.backend_c not found")
                created = spec.loader.create_module(spec)
                if created is None:
                    raise ImportError("zstandard.backend_c is not an extension module")
                spec.loader.exec_module(created)
                # Registered, so that a later ``import zstandard`` reuses it: a C extension
                # module of this kind must not be initialised twice.
                module = sys.modules["zstandard.backend_c"] = created
            except ImportError:
                import zstandard as module
        _zstd_module = module
    return _zstd_module


def _zstd_compressor(level: int) -> Any:
    cache: dict[int, Any] = _local.__dict__.setdefault("zc", {})
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstd().ZstdCompressor(level=level)
    return comp


def _zstd_frames(level: int, data: bytes | memoryview) -> bytes:
    """``data`` as consecutive zstd frames of FRAME_BYTES of content, made by two threads."""
    view = memoryview(data)
    parts = [view[i : i + FRAME_BYTES] for i in range(0, len(view), FRAME_BYTES)]
    out: list[bytes] = [b""] * len(parts)
    taken = iter(range(len(parts)))
    lock = threading.Lock()
    failed: list[BaseException] = []

    def work() -> None:
        compressor = _zstd_compressor(level)  # one per thread
        try:
            while True:
                with lock:
                    i = next(taken, None)
                if i is None or failed:
                    return
                out[i] = compressor.compress(parts[i])
        except BaseException as exc:  # handed to the caller: a frame left out is corruption
            failed.append(exc)

    helper = threading.Thread(target=work, name="pgkura-compress", daemon=True)
    helper.start()
    work()
    helper.join()
    if failed:
        raise failed[0]
    return b"".join(out)


def _zstd_decompress_frames(data: bytes | memoryview, raw_length: int) -> bytes:
    """Decompress consecutive zstd frames (see _zstd_frames), at most ``raw_length`` bytes.

    A stream reader fills one buffer across the frames: half the time of decompressing frame
    by frame and joining the pieces, and no second copy of a 16 MiB segment in memory."""
    reader = _zstd_decompressor().stream_reader(data, read_across_frames=True)
    pieces: list[bytes] = []
    total = 0
    while True:
        piece = reader.read(raw_length + 1 - total)  # one byte more: too long is damage
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
        if total > raw_length:
            raise ValueError(f"more than the {raw_length} bytes expected")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _zstd_decompressor() -> Any:
    dec = getattr(_local, "zd", None)
    if dec is None:
        dec = _local.zd = zstd().ZstdDecompressor()
    return dec
