"""Stored digests of sealed objects (docs/repository-format.md, "Stored digests of WAL objects").

An unencrypted, zstd-compressed object may end with a zstd skippable frame that holds the
keyed BLAKE3 of every byte before it: verify --quick checks it without decompressing. Every
zstd decoder skips such a frame, so readers that predate it read these objects unchanged.
"""

from __future__ import annotations

import struct

import blake3

from pgkura.codec import compression
from pgkura.repository.sealed import HEADER, HEADER_SIZE, SealError
from pgkura.repository.sealed import _header as sealed_header

STORED_DIGEST_FRAME = struct.Struct("<II4s16s")
_SKIPPABLE_MAGIC = 0x184D2A5B  # one of zstd's sixteen skippable frame magics
_STORED_DIGEST_TAG = b"PGKD"


def with_stored_digest(data: bytes, key: bytes) -> bytes:
    """``data``, an unencrypted sealed object, with the stored digest frame appended when its
    payload is zstd (an encrypted one has its tag, an uncompressed one no zstd stream)."""
    fields = HEADER.unpack_from(data, 0)
    if fields[1] != compression.ZSTD or fields[2] != 0:
        return data
    size = STORED_DIGEST_FRAME.size
    header = HEADER.pack(*fields[:5], fields[5] + size, fields[6])
    payload = memoryview(data)[HEADER_SIZE:]
    hasher = blake3.blake3(header, key=key)
    hasher.update(payload)
    digest = hasher.digest(STORED_DIGEST_FRAME.size - 12)
    trailer = STORED_DIGEST_FRAME.pack(_SKIPPABLE_MAGIC, size - 8, _STORED_DIGEST_TAG, digest)
    return b"".join((header, payload, trailer))


def check_stored_digest(data: bytes | memoryview, key: bytes) -> bool:
    """Whether the unencrypted sealed object ``data`` ends with a stored digest frame that
    matches its bytes (False: it has none, and must be unsealed to be checked); SealError
    when its header is unsound or the frame does not match."""
    codec_id = sealed_header(data, None)[0]
    size = STORED_DIGEST_FRAME.size
    if codec_id != compression.ZSTD or len(data) < HEADER_SIZE + size:
        return False
    magic, length, tag, recorded = STORED_DIGEST_FRAME.unpack_from(data, len(data) - size)
    if magic != _SKIPPABLE_MAGIC or length != size - 8 or tag != _STORED_DIGEST_TAG:
        return False
    view = memoryview(data)[: len(data) - size]
    if blake3.blake3(view, key=key).digest(len(recorded)) != recorded:
        raise SealError("its stored bytes do not match their recorded digest")
    return True
