"""Where a full backup's CPU goes, stage by stage, on one core: read, page checksums, CRC-32C,
keyed hash, compression, framing and writing, each timed alone over the same files, then the
real store path (FileStorer with one job) over them for the total, so that what the stages
leave out (Python around each block, the index, the manifest's pieces, cache misses between
stages) shows as "the rest".

    .venv/bin/python bench/stages.py PGDATA [--compress zstd:3] [--json FILE]

PGDATA is a cluster that does not change while this runs (stopped, or idle after a
CHECKPOINT); its files should be in the page cache (the first pass over them reads them).
CPU time is this thread's (time.thread_time), so other processes on a busy machine do not
count; the write stage also reports its wall time, which includes waiting for fsync.
Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import google_crc32c

from pgkura.codec.compression import parse_codec
from pgkura.pg import checksum
from pgkura.pg.relfile import BLCKSZ, RELSEG_BLOCKS, is_relation_file
from pgkura.physical.source import SourceFile
from pgkura.physical.store import READ_BYTES, FileStorer, PageCheck
from pgkura.repository.blocks import PACK_TARGET_SIZE, BlockIndex, BlockLocation, stored_digests
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import frame_parts, keyed_digest
from pgkura.storage.posix import PosixStorage, write_atomic

BLOCK = 64 * 1024


def files_of(pgdata: str) -> list[SourceFile]:
    out = []
    for root, _dirs, names in os.walk(pgdata):
        for name in names:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if os.path.isfile(path) and "pg_wal" not in path and name != "postmaster.pid":
                rel = os.path.relpath(path, pgdata)
                out.append(SourceFile(rel, path, "file", 0o600, st.st_size, st.st_mtime))
    return sorted(out, key=lambda s: -s.size)


def chunks(files: list[SourceFile]) -> Iterator[tuple[SourceFile, int, bytes]]:
    """Each file read as the store reads it: (file, offset, chunk)."""
    for src in files:
        try:
            f = open(src.abspath, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            continue  # a running server's file that went away (pg_internal.init, temp files)
        with f:
            offset = 0
            while chunk := f.read(READ_BYTES):
                yield src, offset, chunk
                offset += len(chunk)


def timed_stage(files: list[SourceFile], work: Callable[[SourceFile, int, bytes], None]) -> float:
    """CPU seconds ``work`` takes over every chunk (reading the chunks is not counted)."""
    spent = 0
    for src, offset, chunk in chunks(files):
        start = time.thread_time_ns()
        work(src, offset, chunk)
        spent += time.thread_time_ns() - start
    return spent / 1e9


def read_stage(files: list[SourceFile]) -> float:
    start = time.thread_time()
    for _ in chunks(files):
        pass
    return time.thread_time() - start


def page_stage(files: list[SourceFile], verify: Callable[[bytes, int], object]) -> float:
    def work(src: SourceFile, offset: int, chunk: bytes) -> None:
        found = is_relation_file(src.path)
        if found is not None and len(chunk) % BLCKSZ == 0:
            verify(chunk, found[1] * RELSEG_BLOCKS + offset // BLCKSZ)

    return timed_stage(files, work)


def per_block(files: list[SourceFile], fn: Callable[[memoryview], object]) -> float:
    def work(_src: SourceFile, _offset: int, chunk: bytes) -> None:
        view = memoryview(chunk)
        for i in range(0, len(chunk), BLOCK):
            fn(view[i : i + BLOCK])

    return timed_stage(files, work)


def seal_stages(files: list[SourceFile], codec_spec: str, key: bytes) -> dict[str, float]:
    """One pass over every block: compress it, frame it (header and payload, as the pack
    writer does), gather the sealed blocks into packs and write them as it does (join, write,
    fsync, link). CPU seconds of each, and the writing's wall seconds (waiting for the disk)."""
    codec = parse_codec(codec_spec)
    compress = codec.block_compressor(BLOCK)
    out = tempfile.mkdtemp(prefix="pgkura-stages-", dir="/var/tmp")
    spent = {"compress": 0.0, "frame": 0.0, "digests": 0.0, "write": 0.0, "write wall": 0.0}
    pending: list[bytes | memoryview] = []
    size = 0
    clock = time.thread_time
    try:
        for _src, _offset, chunk in chunks(files):
            view = memoryview(chunk)
            for i in range(0, len(chunk), BLOCK):
                raw = view[i : i + BLOCK]
                t0 = clock()
                compressed = compress(raw)
                t1 = clock()
                header, payload = frame_parts(raw, compressed, codec.codec_id, b"\0" * 32)
                spent["compress"] += t1 - t0
                spent["frame"] += clock() - t1
                pending += (header, bytes(payload))  # the pack writer copies it so
                size += len(header) + len(payload)
                if size >= PACK_TARGET_SIZE:
                    _write(out, pending, spent, key)
                    pending, size = [], 0
        if pending:
            _write(out, pending, spent, key)
    finally:
        shutil.rmtree(out)
    return spent


def _write(
    out: str, pending: list[bytes | memoryview], spent: dict[str, float], key: bytes
) -> None:
    data = b"".join(pending)
    entries, offset = [], 0
    for i in range(0, len(pending), 2):  # header, payload
        length = len(pending[i]) + len(pending[i + 1])
        entries.append((b"", BlockLocation("", offset, length, 0)))
        offset += length
    c = time.thread_time()
    stored_digests(key, data, entries)
    spent["digests"] += time.thread_time() - c
    c, w = time.thread_time(), time.perf_counter()
    write_atomic(os.path.join(out, os.urandom(16).hex()), data, replace=False)
    spent["write"] += time.thread_time() - c
    spent["write wall"] += time.perf_counter() - w


def store_stage(files: list[SourceFile], codec_spec: str) -> tuple[float, float, float]:
    """The real store path, one job, into a new repository: (CPU s, wall s, peak RSS MiB)."""
    out = tempfile.mkdtemp(prefix="pgkura-stages-repo-", dir="/var/tmp")
    try:
        repo = Repository.create(PosixStorage(os.path.join(out, "repo")), compression=codec_spec)
        storer = FileStorer(BlockIndex(repo).load(), 1, PageCheck(True))
        c, w = time.process_time(), time.perf_counter()
        storer.store(files)
        cpu, wall = time.process_time() - c, time.perf_counter() - w
    finally:
        shutil.rmtree(out)
    return cpu, wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def profile(pgdata: str, codec_spec: str) -> dict[str, float]:
    files = files_of(pgdata)
    gb = sum(f.size for f in files) / 1e9
    key = os.urandom(32)
    read_stage(files)  # into the page cache, untimed
    result: dict[str, float] = {"gb": gb}
    result["read"] = read_stage(files)
    result["page checksums"] = page_stage(files, checksum.failing_pages)
    try:
        from pgkura.pg import checksum_numpy

        result["page checksums (numpy, before)"] = page_stage(files, checksum_numpy.verify_pages)
    except ImportError:
        pass
    result["crc32c"] = timed_stage(files, lambda _s, _o, c: google_crc32c.extend(0, c))
    result["hash (keyed blake3)"] = per_block(files, lambda b: keyed_digest(key, b))
    sealing = seal_stages(files, codec_spec, key)
    result[f"compress ({codec_spec})"] = sealing["compress"]
    result["framing"] = sealing["frame"]
    result["stored digests"] = sealing["digests"]
    result["write (cpu)"], result["write (wall)"] = sealing["write"], sealing["write wall"]
    result["store, 1 job (cpu)"], result["store, 1 job (wall)"], result["peak rss mib"] = (
        store_stage(files, codec_spec)
    )
    stages = [
        "read",
        "page checksums",
        "crc32c",
        "hash (keyed blake3)",
        f"compress ({codec_spec})",
        "framing",
        "stored digests",
        "write (cpu)",
    ]
    result["the rest (store less stages)"] = result["store, 1 job (cpu)"] - sum(
        result[s] for s in stages
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pgdata")
    parser.add_argument("--compress", default="zstd:3")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = profile(args.pgdata, args.compress)
    gb = result["gb"]
    loop = checksum.kernel_loop()
    print(f"== stages on one core: {gb:.2f} GB, page checks by {checksum.IMPLEMENTATION} ({loop})")
    for name, value in result.items():
        if name in ("gb", "peak rss mib"):
            continue
        print(f"  {name:<34} {value:7.2f} s   {value / gb:6.3f} s/GB   {gb / value:6.2f} GB/s"
              if value > 0 else f"  {name:<34} {value:7.2f} s")  # fmt: skip
    print(f"  peak RSS {result['peak rss mib']:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
