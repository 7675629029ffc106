"""Sealed objects: the envelope every block, index, manifest and WAL file is stored in.

See docs/repository-format.md, "Sealed objects" and "Encryption". The header makes each object
self-checking: a reader needs only the repository's hash key to tell intact content from
damaged content. In an encrypted repository the payload is also encrypted and authenticated
(AES-256-GCM), with the header and the object's identity as associated data.
"""

from __future__ import annotations

import os
import struct

import blake3

from pgkura.codec import compression
from pgkura.codec.compression import LARGE_OBJECT, Codec, decompress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PGK1"
HEADER = struct.Struct("<4sBBHQQ32s")
HEADER_SIZE = HEADER.size  # 56
ENCRYPTED = 1  # header flag: the payload is salt + AES-256-GCM ciphertext + tag
SALT_SIZE = 24  # random per object; the object's own key is derived from it
TAG_SIZE = 16
_SUBKEY_CONTEXT = b"pgkura object key\x00"


def aesgcm() -> type[AESGCM]:
    """cryptography's AES-GCM class. Taken from the Rust binding that its public module
    (``cryptography.hazmat.primitives.ciphers.aead``) re-exports it from: that module's
    package imports typing and the cipher base classes, 6-8 ms of an encrypted
    archive-push's 55-65 ms, for nothing the class needs. When the binding is laid out
    otherwise (another release of cryptography), the public module's class, the same one
    (tests/test_encryption.py checks they are one class)."""
    try:
        from cryptography.hazmat.bindings._rust import openssl

        found: type[AESGCM] = openssl.aead.AESGCM
        return found
    except (ImportError, AttributeError):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM as public

        return public


def invalid_tag() -> type[Exception]:
    """cryptography's InvalidTag, which a failed decryption raises. Named in ``except
    invalid_tag():``, whose expression Python evaluates only when an exception is on its
    way: its module (and typing with it) is imported then, not by every command that only
    decrypts what is sound."""
    from cryptography.exceptions import InvalidTag

    return InvalidTag


class Cipher:
    """The data keys of an encrypted repository. Each object is encrypted under a key of its
    own, keyed BLAKE3 (a PRF) of a data key over a random 192-bit salt stored in front of the
    ciphertext: a key encrypts one object, so no nonce is ever used twice under one key
    (docs/repository-format.md, "Encryption"). New objects are sealed under the current
    (newest) data key, whose generation the header records; older objects are opened with the
    generation their header names, as long as the repository still holds it (``key rotate``
    adds one, ``gc --rewrite-keys`` drops the retired ones). ``cryptography`` is imported
    only here, only for an encrypted repository."""

    __slots__ = ("_aead", "_subkeys", "current", "dropped")

    def __init__(
        self,
        data_key: bytes,
        more: dict[int, bytes] | None = None,
        dropped: frozenset[int] = frozenset(),
    ) -> None:
        keys = {} if 1 in dropped else {1: data_key}
        keys.update(more or {})
        self._aead = aesgcm()
        # Per generation, the keyed hash with the context already absorbed: each object key
        # copies it (half the cost of keying a new hasher, which is paid once per block).
        self._subkeys = {g: blake3.blake3(_SUBKEY_CONTEXT, key=k) for g, k in keys.items()}
        self.current = max(keys)  # the generation new objects are sealed under
        self.dropped = dropped

    @property
    def generations(self) -> list[int]:
        """The generations of the data keys held, oldest first."""
        return sorted(self._subkeys)

    def header_field(self) -> int:
        """The header's key generation field for new objects: 0 for generation 1, so that
        objects of a repository never rotated are the ones format version 4 wrote."""
        return 0 if self.current == 1 else self.current

    def _object_key(self, salt: bytes | memoryview, generation: int) -> bytes:
        hasher = self._subkeys.get(generation)
        if hasher is None:
            held = ", ".join(map(str, self.generations))
            if generation in self.dropped:
                raise SealError(
                    f"it is sealed under data key {generation}, which gc --rewrite-keys "
                    f"retired and dropped (the repository holds data key {held})"
                )
            raise SealError(f"it is sealed under data key {generation}, which this repository "
                            f"does not hold (it holds data key {held})")  # fmt: skip
        subkey = hasher.copy()
        subkey.update(salt)
        return subkey.digest()

    def encrypt(self, payload: bytes | memoryview, associated: bytes) -> bytes:
        salt = os.urandom(SALT_SIZE)
        aead = self._aead(self._object_key(salt, self.current))
        return salt + aead.encrypt(salt[:12], payload, associated)

    def decrypt(
        self, sealed_payload: bytes | memoryview, associated: bytes, generation: int = 1
    ) -> bytes:
        view = memoryview(sealed_payload)
        if len(view) < SALT_SIZE + TAG_SIZE:
            raise SealError(f"truncated ciphertext ({len(view)} bytes)")
        salt = bytes(view[:SALT_SIZE])
        try:
            return self._aead(self._object_key(salt, generation)).decrypt(
                salt[:12], view[SALT_SIZE:], associated
            )
        except invalid_tag():
            raise SealError(
                "authentication failed: the object was altered, truncated, or stored under "
                "another name"
            ) from None

    def check_tag(self, data: bytes | memoryview, digest: bytes, identity: bytes) -> bool:
        """Whether the encrypted sealed object ``data`` whose header records ``digest``, bound
        to ``identity``, is sound as stored: its header and its tag (:meth:`failed_tags` of
        one object)."""
        view = memoryview(data)
        return not self.failed_tags(view, 0, [(digest, ("", 0, len(view), 0))], identity)

    def failed_tags(
        self,
        view: memoryview,
        base: int,
        objects: Iterable[tuple[bytes, tuple[str, int, int, int]]],
        identity: bytes,
    ) -> list[bytes]:
        """The digests of ``objects`` that are not sound as stored: each is (the digest its
        header must record, (_, its offset, its length, _)), its bytes in ``view`` from offset
        ``base``, bound to ``identity``; sound when its header is an encrypted one of the
        right length recording that digest and its AES-GCM tag holds. verify --quick checks
        every block of a pack in this one loop, in a sixth less time than
        :func:`authenticate`, whose layers say what is wrong with one that fails (a block
        cut off by the end of ``view`` fails too)."""
        aead, unpack, subkeys = self._aead, HEADER.unpack_from, self._subkeys
        shortest, salt_end, nonce_end = (
            HEADER_SIZE + SALT_SIZE + TAG_SIZE,
            HEADER_SIZE + SALT_SIZE,
            HEADER_SIZE + 12,
        )
        failed = []
        for digest, (_, offset, length, _) in objects:
            piece = view[offset - base : offset - base + length]
            if length < shortest or len(piece) != length:
                failed.append(digest)
                continue
            magic, _, flags, field, _, payload_len, recorded = unpack(piece, 0)
            hasher = subkeys.get(field or 1)
            if (
                magic != MAGIC
                or flags != ENCRYPTED
                or length - HEADER_SIZE != payload_len
                or hasher is None
                or recorded != digest
            ):
                failed.append(digest)
                continue
            subkey = hasher.copy()
            subkey.update(piece[HEADER_SIZE:salt_end])
            try:
                aead(subkey.digest()).decrypt(
                    piece[HEADER_SIZE:nonce_end],
                    piece[salt_end:],
                    piece[:HEADER_SIZE].tobytes() + identity,
                )
            except invalid_tag():
                failed.append(digest)
        return failed


def key_generation(data: bytes | memoryview) -> int | None:
    """The data key generation an encrypted sealed object's header names (None: the object
    is not an encrypted sealed object). Nothing is verified: the tag covers the field."""
    if len(data) < HEADER_SIZE or bytes(data[:4]) != MAGIC:
        return None
    _, _, flags, field, *_ = HEADER.unpack_from(data, 0)
    if flags != ENCRYPTED:
        return None
    return field or 1


def _associated(header: bytes | memoryview, identity: bytes) -> bytes:
    """What an encrypted object's tag covers besides its ciphertext: its header (codec,
    lengths, digest) and its identity ("block" for a block, whose id is the header's digest;
    "object <key>" for any other object)."""
    return bytes(header) + identity


class SealError(ValueError):
    """The bytes are not an intact sealed object."""


class Sealed:
    """A sealed object: its digest, and ``data`` (header + payload) ready to store."""

    __slots__ = ("data", "digest")  # not a dataclass: imported by archive-push per segment

    def __init__(self, digest: bytes, data: bytes) -> None:
        self.digest = digest
        self.data = data

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()


def keyed_digest(key: bytes, raw: bytes | memoryview) -> bytes:
    if compression.PARALLEL_LARGE and memoryview(raw).nbytes >= LARGE_OBJECT:
        # A WAL segment: BLAKE3's tree hashes in parallel.
        return blake3.blake3(raw, key=key, max_threads=compression.hash_threads()).digest()
    return blake3.blake3(raw, key=key).digest()


def seal(
    raw: bytes | memoryview,
    codec: Codec,
    key: bytes,
    digest: bytes | None = None,
    cipher: Cipher | None = None,
    identity: bytes = b"",
) -> Sealed:
    """Compress and frame ``raw``; falls back to no compression when it does not pay."""
    if digest is None:
        digest = keyed_digest(key, raw)
    return Sealed(digest, frame(raw, codec, digest, cipher, identity))


def frame(
    raw: bytes | memoryview,
    codec: Codec,
    digest: bytes,
    cipher: Cipher | None = None,
    identity: bytes = b"",
) -> bytes:
    """The sealed object (header + payload) of ``raw`` whose keyed digest is ``digest``;
    encrypted with ``cipher``, bound to ``identity``. ``raw`` may be a view of a buffer that
    is reused afterwards: the result is a copy."""
    compressed = codec.compress(raw)
    header, payload = frame_parts(raw, compressed, codec.codec_id, digest, cipher, identity)
    return header + payload


def frame_parts(
    raw: bytes | memoryview,
    compressed: bytes,
    codec_id: int,
    digest: bytes,
    cipher: Cipher | None = None,
    identity: bytes = b"",
) -> tuple[bytes, bytes | memoryview]:
    """:func:`frame`'s header and payload apart, ``raw`` already compressed by the codec
    ``codec_id``: a pack writer appends both to its pack, without the copy that joining them
    costs. The payload is ``raw`` itself when compressing does not pay (and there is no
    cipher): the caller must copy it before ``raw``'s buffer is reused."""
    payload: bytes | memoryview = compressed
    if len(payload) >= len(raw):
        payload, codec_id = raw, 0
    if cipher is None:
        return HEADER.pack(MAGIC, codec_id, 0, 0, len(raw), len(payload), digest), payload
    stored_len = SALT_SIZE + len(payload) + TAG_SIZE
    generation = cipher.header_field()
    header = HEADER.pack(MAGIC, codec_id, ENCRYPTED, generation, len(raw), stored_len, digest)
    return header, cipher.encrypt(payload, _associated(header, identity))


def _payload(
    data: bytes | memoryview, cipher: Cipher | None, identity: bytes
) -> bytes | memoryview:
    """The (compressed) payload of a sealed object whose header is sound: decrypted and
    authenticated when ``cipher`` is given."""
    view = memoryview(data)
    if cipher is None:
        return view[HEADER_SIZE:]
    generation = HEADER.unpack_from(view, 0)[3] or 1
    return cipher.decrypt(view[HEADER_SIZE:], _associated(view[:HEADER_SIZE], identity), generation)


def _header(
    data: bytes | memoryview, expect_digest: bytes | None, cipher: Cipher | None = None
) -> tuple[int, int, bytes]:
    """(codec id, raw length, digest) of a sealed object whose header is sound."""
    if len(data) < HEADER_SIZE:
        raise SealError(f"truncated header ({len(data)} bytes)")
    magic, codec_id, flags, _, raw_len, payload_len, digest = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise SealError("bad magic")
    # An encrypted repository takes nothing unencrypted: a plain object put in its place
    # would otherwise be read without any key.
    if flags != (ENCRYPTED if cipher is not None else 0):
        if flags == ENCRYPTED:
            raise SealError("the object is encrypted, the repository is not")
        raise SealError("the object is not encrypted" if cipher else f"unsupported flags {flags}")
    if len(data) - HEADER_SIZE != payload_len:
        raise SealError(f"payload is {len(data) - HEADER_SIZE} bytes, header says {payload_len}")
    if expect_digest is not None and digest != expect_digest:
        raise SealError("object is not the one its name says")
    return codec_id, raw_len, digest


def authenticate(
    data: bytes | memoryview,
    expect_digest: bytes | None = None,
    cipher: Cipher | None = None,
    identity: bytes = b"",
) -> None:
    """Check what can be checked of a sealed object without decompressing it (verify
    --quick): its header and, encrypted, its tag; SealError when anything is off. The
    content of an unencrypted object is not checked (its stored digest is the caller's)."""
    _header(data, expect_digest, cipher)
    if cipher is not None:
        _payload(data, cipher, identity)


# unseal_to hands content over in pieces of this size.
PIECE_BYTES = 1024 * 1024


def unseal_to(
    data: bytes | memoryview,
    key: bytes,
    write: Callable[[memoryview], None],
    cipher: Cipher | None = None,
    identity: bytes = b"",
) -> None:
    """:func:`unseal`, handing the content to ``write`` piece by piece instead of returning it.

    For a WAL segment going to a file: no 16 MiB buffer is filled only to be copied out (fresh
    memory costs about 10 ms per segment on a small VM). ``write`` may have had content when a
    SealError is raised at the end: the caller must then discard all it wrote."""
    codec_id, raw_len, digest = _header(data, None, cipher)
    payload = _payload(data, cipher, identity)
    hasher = blake3.blake3(key=key)
    total = 0
    if codec_id == compression.ZSTD:
        buffer = bytearray(PIECE_BYTES)
        view = memoryview(buffer)
        try:
            reader = (
                compression.zstd()
                .ZstdDecompressor()
                .stream_reader(payload, read_across_frames=True)
            )
            while total <= raw_len:
                n = reader.readinto(buffer)
                if not n:
                    break
                hasher.update(view[:n])
                write(view[:n])
                total += n
        except compression.zstd().ZstdError as exc:
            raise SealError(f"cannot decompress: zstd: {exc}") from None
    else:
        try:
            raw = memoryview(decompress(codec_id, payload, raw_len))
        except ValueError as exc:
            raise SealError(f"cannot decompress: {exc}") from None
        hasher.update(raw)
        for start in range(0, len(raw), PIECE_BYTES):
            write(raw[start : start + PIECE_BYTES])
        total = len(raw)
    if total != raw_len:
        raise SealError(f"content is at least {total} bytes, header says {raw_len}")
    if hasher.digest() != digest:
        raise SealError("content does not match its checksum")


def unseal(
    data: bytes | memoryview,
    key: bytes,
    expect_digest: bytes | None = None,
    cipher: Cipher | None = None,
    identity: bytes = b"",
) -> bytes:
    """Return the raw content of a sealed object, raising SealError if anything is off."""
    codec_id, raw_len, digest = _header(data, expect_digest, cipher)
    payload = _payload(data, cipher, identity)
    try:
        raw = decompress(codec_id, payload, raw_len)
    except ValueError as exc:
        raise SealError(f"cannot decompress: {exc}") from None
    if len(raw) != raw_len:
        raise SealError(f"content is {len(raw)} bytes, header says {raw_len}")
    if keyed_digest(key, raw) != digest:
        raise SealError("content does not match its checksum")
    return raw


def reseal(
    data: bytes | memoryview,
    key: bytes,
    cipher: Cipher,
    identity: bytes,
    expect_digest: bytes | None = None,
) -> bytes:
    """The encrypted sealed object ``data`` sealed again under the current data key: checked
    in full first (tag, decompression, keyed digest), then its compressed payload encrypted
    anew. Only the header's key generation, the salt, the ciphertext and the tag change: the
    object keeps its size, and is not compressed again (gc --rewrite-keys)."""
    codec_id, raw_len, digest = _header(data, expect_digest, cipher)
    payload = _payload(data, cipher, identity)
    raw = decompress(codec_id, payload, raw_len) if codec_id else bytes(payload)
    if len(raw) != raw_len or keyed_digest(key, raw) != digest:
        raise SealError("content does not match its checksum")
    header = HEADER.pack(
        MAGIC, codec_id, ENCRYPTED, cipher.header_field(), raw_len,
        SALT_SIZE + len(payload) + TAG_SIZE, digest,
    )  # fmt: skip
    return header + cipher.encrypt(payload, _associated(header, identity))


def claims(data: bytes | memoryview, digest: bytes) -> bool:
    """Whether the header of ``data`` records ``digest`` as its content's (nothing else is
    checked: a damaged object may still claim the right content)."""
    return len(data) >= HEADER_SIZE and data[HEADER_SIZE - 32 : HEADER_SIZE] == digest


def sealed_digest(data: bytes) -> bytes:
    """The digest recorded in a sealed object's header (no verification)."""
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        raise SealError("bad header")
    return bytes(HEADER.unpack_from(data, 0)[6])
