"""Compression codecs as byte-to-byte transforms: zstd (default), lz4, none.

A codec is named by a spec string, ``"zstd"``, ``"zstd:3"``, ``"lz4"``, ``"lz4:1"`` or
``"none"``. Each stored object records its codec id, so objects written with different
settings live side by side. Compressor objects are not thread-safe; one is kept per thread.
"""

from __future__ import annotations

import threading

from pgkura.errors import ConfigError

TYPE_CHECKING = False  # archive-push imports this once per WAL segment: no typing at run time
if TYPE_CHECKING:
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
            # A whole WAL segment is one object: zstd's own threads halve its latency.
            threads = 2 if PARALLEL_LARGE and memoryview(data).nbytes >= LARGE_OBJECT else 0
            return bytes(_zstd_compressor(self.level, threads).compress(data))
        if self.codec_id == LZ4:
            import lz4.block

            return bytes(lz4.block.compress(data, store_size=False, compression=self.level))
        return bytes(data)


# Objects at least this large (WAL segments) are compressed and hashed with several threads.
LARGE_OBJECT = 4 * 1024 * 1024
# False where several large objects are processed at once (the async pusher): one thread each
# uses the cores better than several threads each.
PARALLEL_LARGE = True


def parse_codec(spec: str) -> Codec:
    """Parse ``"zstd:3"``-style specs; a bad spec is a configuration error, not a crash."""
    name, _, level_text = spec.strip().lower().partition(":")
    if name not in _NAMES:
        raise ConfigError(
            f"unknown compression {spec!r}",
            hint="use zstd[:1-19], lz4[:0-16] or none",
        )
    codec_id = _NAMES[name]
    if not level_text:
        return Codec(codec_id, _DEFAULT_LEVEL[codec_id])
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
            return bytes(_zstd_decompressor().decompress(data, max_output_size=raw_length))
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


def zstd() -> Any:
    """python-zstandard's C backend, loaded without the package's ``__init__``.

    ``import zstandard`` first imports platform and typing to pick a backend: about 6 ms of
    archive-push's cold start, against 1 ms for the extension module itself. It exports the
    same ZstdCompressor, ZstdDecompressor, ZstdCompressionParameters and ZstdError; where it
    cannot be loaded this way, the package is imported as usual."""
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


# A WAL segment compressed with two threads is cut into jobs of this size: with 8 MiB jobs (the
# default at level 3) one half often takes much longer than the other.
_JOB_SIZE = 2 * 1024 * 1024


def _zstd_compressor(level: int, threads: int = 0) -> Any:
    cache: dict[tuple[int, int], Any] = _local.__dict__.setdefault("zc", {})
    comp = cache.get((level, threads))
    if comp is None:
        z = zstd()
        if threads:
            params = z.ZstdCompressionParameters.from_level(
                level, threads=threads, job_size=_JOB_SIZE
            )
            comp = z.ZstdCompressor(compression_params=params)
        else:
            comp = z.ZstdCompressor(level=level)
        cache[level, threads] = comp
    return comp


def _zstd_decompressor() -> Any:
    dec = getattr(_local, "zd", None)
    if dec is None:
        dec = _local.zd = zstd().ZstdDecompressor()
    return dec
