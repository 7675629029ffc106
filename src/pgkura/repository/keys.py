"""The keys of an encrypted repository: the master key and the key slots that wrap it.

docs/repository-format.md, "Encryption". The master key is 64 random bytes, the data key
(objects are encrypted under keys derived from it) and the hash key (block ids and checksums).
It is stored only wrapped, in the ``key_slots`` of pgkura.json: each slot holds it encrypted
(AES-256-GCM) under a key derived from one passphrase with Argon2id. Adding or removing a slot
changes who can open the repository and rewrites nothing else. ``cryptography`` is imported
only by the functions here, which only encrypted repositories call.
"""

from __future__ import annotations

import os

from pgkura.errors import ConfigError, RepositoryError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MASTER_KEY_SIZE = 64  # data key (32) + hash key (32)
CIPHER = "aes-256-gcm"
# RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes): about 0.25 s here.
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_ITERATIONS = 3
ARGON2_LANES = 4
ARGON2ID, RAW = "argon2id", "raw"  # how a slot's key is derived from its key file
RAW_KEY_MIN = 32  # bytes a raw key file holds at least
_RAW_CONTEXT = "pgkura raw key slot v1"


class WrongKeyError(RepositoryError):
    """The key file given does not open the repository."""


class KeySlot:
    """One way to open the repository: the master key wrapped under the key derived from one
    key file's content. ``kdf`` "argon2id": the file holds a passphrase, stretched with
    Argon2id; "raw": it holds a random key of 32 bytes or more (keyed BLAKE3 derives the slot
    key, in microseconds: for archive-push, which opens the repository once per segment)."""

    __slots__ = ("added", "kdf", "nonce", "params", "salt", "slot_id", "wrapped")

    def __init__(
        self,
        slot_id: str,
        kdf: str,
        salt: bytes,
        nonce: bytes,
        wrapped: bytes,
        added: str,
        params: tuple[int, int, int] = (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES),
    ) -> None:
        self.slot_id, self.kdf, self.salt, self.nonce = slot_id, kdf, salt, nonce
        self.wrapped, self.added = wrapped, added
        self.params = params  # Argon2id's memory (KiB), iterations and lanes

    def describe(self) -> str:
        if self.kdf == RAW:
            return "raw key"
        memory, iterations, lanes = self.params
        return f"argon2id m={memory}KiB t={iterations} p={lanes}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.slot_id, "kdf": self.kdf}
        if self.kdf == ARGON2ID:
            out["memory_kib"], out["iterations"], out["lanes"] = self.params
        out.update(salt=self.salt.hex(), nonce=self.nonce.hex(), wrapped=self.wrapped.hex())
        out["added"] = self.added
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySlot:
        kdf = data.get("kdf")
        if kdf not in (ARGON2ID, RAW):
            raise RepositoryError(
                f"key slot {data.get('id')} uses an unknown kdf {kdf!r}", hint="upgrade pgkura"
            )
        params = (0, 0, 0)
        if kdf == ARGON2ID:
            params = (int(data["memory_kib"]), int(data["iterations"]), int(data["lanes"]))
        return cls(
            slot_id=str(data["id"]),
            kdf=kdf,
            salt=bytes.fromhex(data["salt"]),
            nonce=bytes.fromhex(data["nonce"]),
            wrapped=bytes.fromhex(data["wrapped"]),
            added=str(data["added"]),
            params=params,
        )

    def _slot_key(self, secret: bytes) -> bytes:
        if self.kdf == RAW:
            import blake3

            return blake3.blake3(self.salt + secret, derive_key_context=_RAW_CONTEXT).digest()
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        memory, iterations, lanes = self.params
        return Argon2id(
            salt=self.salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory
        ).derive(secret)

    def open(self, secret: bytes, repo_id: str) -> bytes | None:
        """The master key, or None when ``secret`` is not this slot's."""
        from pgkura.repository.sealed import aesgcm, invalid_tag

        if self.kdf == RAW and len(secret) < RAW_KEY_MIN:
            return None
        try:
            return aesgcm()(self._slot_key(secret)).decrypt(
                self.nonce, self.wrapped, _slot_associated(repo_id, self.slot_id)
            )
        except invalid_tag():
            return None


def _slot_associated(repo_id: str, slot_id: str) -> bytes:
    # A slot is bound to its repository and its id: it cannot be moved to another.
    return f"pgkura key slot {repo_id} {slot_id}".encode()


def new_master_key() -> bytes:
    return os.urandom(MASTER_KEY_SIZE)


def split_master_key(master: bytes) -> tuple[bytes, bytes]:
    """(data key, hash key) of a master key."""
    if len(master) != MASTER_KEY_SIZE:
        raise RepositoryError("the repository's master key has the wrong length")
    return master[:32], master[32:]


def new_slot(
    master: bytes, secret: bytes, repo_id: str, added: str, *, raw: bool = False
) -> KeySlot:
    """A key slot that opens with ``secret`` (a passphrase; with ``raw``, a random key)."""
    from pgkura.repository.sealed import aesgcm

    if raw and len(secret) < RAW_KEY_MIN:
        raise UsageError(
            f"a raw key file holds {len(secret)} bytes: fewer than {RAW_KEY_MIN}",
            hint="make one with: head -c 32 /dev/urandom | base64 > FILE",
        )
    kdf = RAW if raw else ARGON2ID
    slot = KeySlot(os.urandom(4).hex(), kdf, os.urandom(16), os.urandom(12), b"", added)
    slot.wrapped = aesgcm()(slot._slot_key(secret)).encrypt(
        slot.nonce, master, _slot_associated(repo_id, slot.slot_id)
    )
    return slot


def open_master_key(
    slots: list[KeySlot], secret: bytes, repo_id: str, where: str, key_file: str
) -> tuple[bytes, str]:
    """(master key, id of the slot that opened it); WrongKeyError when none does. Raw slots
    are tried first: trying one costs microseconds, an Argon2id slot a quarter second."""
    for slot in sorted(slots, key=lambda s: s.kdf != RAW):
        master = slot.open(secret, repo_id)
        if master is not None:
            return master, slot.slot_id
    raise WrongKeyError(
        f"the key in {key_file} does not open the repository at {where}",
        hint="give the key file of one of its key slots (pgkura key list shows them)",
    )


def read_key_file(path: str, what: str = "--key-file", *, raw: bool = False) -> bytes:
    """The passphrase a key file holds (one trailing newline dropped). The file must be
    readable by its owner only: a passphrase others can read protects nothing."""
    from pgkura.secret_file import check_private

    unreadable = "give a key file that exists and that this user may read"
    check_private(path, f"the key file {path} ({what})", unreadable)
    try:
        with open(path, "rb") as f:
            secret = f.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key file {path} ({what}): {exc.strerror}", hint=unreadable
        ) from None
    if secret.endswith(b"\n"):
        secret = secret[:-1]
        if secret.endswith(b"\r"):
            secret = secret[:-1]
    if raw and len(secret) < RAW_KEY_MIN:
        raise UsageError(
            f"the raw key file {path} ({what}) holds {len(secret)} bytes: fewer than {RAW_KEY_MIN}",
            hint="make one with: head -c 32 /dev/urandom | base64 > FILE",
        )
    if len(secret) < 8:
        raise UsageError(
            f"the key file {path} ({what}) holds {len(secret)} bytes: too short for a passphrase",
            hint="put a passphrase of at least 8 characters (better: 32 random ones) in it",
        )
    return secret


def need_key_error(where: str) -> UsageError:
    return UsageError(
        f"the repository at {where} is encrypted, and no key file was given",
        hint="give --key-file FILE (or PGKURA_KEY_FILE, or key-file in the config file)",
    )


# -- data keys: key rotation (docs/repository-format.md, "Key rotation") ------------------
# Generation 1 is the first half of the master key. Each `key rotate` draws a new random
# data key, stored in pgkura.json wrapped (AES-256-GCM) under a key derived from the master
# key: every slot opens every generation, and key add/remove still rewrite nothing.
_WRAP_CONTEXT = "pgkura data key wrap v1"


class DataKey:
    """One rotated data key (generation 2 and later), as pgkura.json holds it: wrapped."""

    __slots__ = ("added", "generation", "nonce", "wrapped")

    def __init__(self, generation: int, nonce: bytes, wrapped: bytes, added: str) -> None:
        self.generation, self.nonce, self.wrapped, self.added = generation, nonce, wrapped, added

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "nonce": self.nonce.hex(),
                "wrapped": self.wrapped.hex(), "added": self.added}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataKey:
        generation = int(data["generation"])
        if not 2 <= generation <= 0xFFFF:
            raise RepositoryError(f"pgkura.json names a data key of generation {generation}")
        return cls(generation, bytes.fromhex(data["nonce"]), bytes.fromhex(data["wrapped"]),
                   str(data["added"]))  # fmt: skip


def _wrap_key(master: bytes) -> bytes:
    import blake3

    return blake3.blake3(master, derive_key_context=_WRAP_CONTEXT).digest()


def _data_key_associated(repo_id: str, generation: int) -> bytes:
    # Bound to its repository and generation: an entry cannot be renumbered or moved.
    return f"pgkura data key {repo_id} {generation}".encode()


def new_data_key(master: bytes, repo_id: str, generation: int, added: str) -> DataKey:
    """A fresh random data key of ``generation``, wrapped under the master key."""
    from pgkura.repository.sealed import aesgcm

    if generation > 0xFFFF:
        raise UsageError("the repository has had 65535 data keys: no more can be rotated in")
    nonce = os.urandom(12)
    wrapped = aesgcm()(_wrap_key(master)).encrypt(
        nonce, os.urandom(32), _data_key_associated(repo_id, generation)
    )
    return DataKey(generation, nonce, wrapped, added)


def open_data_keys(master: bytes, repo_id: str, entries: list[DataKey]) -> dict[int, bytes]:
    """generation -> data key of the rotated data keys; RepositoryError when one does not
    open (pgkura.json was altered)."""
    from pgkura.repository.sealed import aesgcm, invalid_tag

    aead = aesgcm()(_wrap_key(master))
    out = {}
    for entry in entries:
        try:
            out[entry.generation] = aead.decrypt(
                entry.nonce, entry.wrapped, _data_key_associated(repo_id, entry.generation)
            )
        except invalid_tag():
            raise RepositoryError(
                f"data key {entry.generation} in pgkura.json does not open: the file was altered",
                hint="put pgkura.json back from a copy of the repository",
            ) from None
    return out
