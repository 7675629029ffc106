"""The CPU that verify's checks cost on one core, for every block of a repository.

    .venv/bin/python bench/verify_floor.py --repo DIR

Reads every pack into memory first, then times each check alone over all the blocks: zstd
decompression, the keyed BLAKE3 of the content, CRC-32C, and the data page checksum over large
batches of pages. Their sum, halved for two cores, is a floor for `pgkura verify` on this
machine whatever its code does (docs/benchmarks.md, "Why verify cannot reach 1.0x").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import blake3
import google_crc32c

from pgkura.codec.compression import ZSTD, decompress
from pgkura.commands import open_repository
from pgkura.config import load_config
from pgkura.pg.checksum import verify_pages
from pgkura.pg.relfile import BLCKSZ
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex
from pgkura.repository.sealed import HEADER, HEADER_SIZE

BATCH_BYTES = 8 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()
    repo = open_repository(load_config({"repo": args.repo}, None))
    by_pack: dict[str, list[tuple[int, int]]] = {}
    for _block_id, loc in BlockIndex(repo).load().items():
        by_pack.setdefault(loc.pack_id, []).append((loc.offset, loc.length))
    payloads = []
    stored = 0
    for pack_id, locs in by_pack.items():
        data = memoryview(repo.storage.get(layout.pack_key(pack_id)))
        for offset, length in locs:
            _magic, codec, _flags, _, raw_length, _payload, _digest = HEADER.unpack_from(
                data, offset
            )
            payloads.append((codec, data[offset + HEADER_SIZE : offset + length], raw_length))
            stored += length

    def timed(label: str, work: Callable[[], int]) -> None:
        start = time.perf_counter()
        done = work()
        seconds = time.perf_counter() - start
        print(f"  {label:<22} {seconds:6.3f} s  {done / seconds / 1e9:5.2f} GB/s", flush=True)

    def decompress_all() -> int:
        n = 0
        for codec, payload, raw_length in payloads:
            n += len(decompress(codec, payload, raw_length))  # dropped at once, as verify does
        return n

    raws = [decompress(codec, payload, raw_length) for codec, payload, raw_length in payloads]

    def hash_all() -> int:
        for raw in raws:
            blake3.blake3(raw, key=repo.key).digest()
        return sum(len(r) for r in raws)

    def crc_all() -> int:
        for raw in raws:
            google_crc32c.value(raw)
        return sum(len(r) for r in raws)

    pages = memoryview(b"".join(r for r in raws if len(r) % BLCKSZ == 0))

    def page_checksums() -> int:
        for start in range(0, len(pages), BATCH_BYTES):
            verify_pages(pages[start : start + BATCH_BYTES], 0)
        return len(pages)

    zstd_blocks = sum(1 for codec, _payload, _raw in payloads if codec == ZSTD)
    print(f"{len(raws)} blocks ({zstd_blocks} zstd), {sum(map(len, raws)) / 1e6:.0f} MB of "
          f"content, {stored / 1e6:.1f} MB stored; one core:")  # fmt: skip
    timed("zstd decompression", decompress_all)
    timed("keyed BLAKE3", hash_all)
    timed("CRC-32C", crc_all)
    timed("page checksums", page_checksums)


if __name__ == "__main__":
    main()
