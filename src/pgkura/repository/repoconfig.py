"""pgkura.json, the repository's configuration record (docs/repository-format.md)."""

from __future__ import annotations

from pgkura.errors import RepositoryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pgkura.repository.keys import DataKey, KeySlot

FORMAT = "pgkura-repository"
# 2: stanza generations; 3: merged index objects (docs/repository-format.md). A version 2
# repository is raised to 3 before its first merged index object is written.
VERSION = 3
# An encrypted repository (docs/repository-format.md, "Encryption") has this version, which
# also implies every unencrypted version's layout; an unencrypted one keeps VERSION, so older
# pgkura still read it.
ENCRYPTED_VERSION = 4
# An encrypted repository with stanza catalogs or a rotated data key (docs/repository-format.md,
# "Catalogs", "Key rotation"): version 4 readers would write manifests no catalog lists, and
# open every object with the first data key.
ENCRYPTED_V5 = 5


class RepoConfig:
    """pgkura.json. With ``key_slots`` the repository is encrypted: its hash key is not
    stored (it is half of the master key the slots wrap) and is set once a slot opened."""

    __slots__ = (
        "block_size",
        "compression",
        "created",
        "data_keys",
        "dropped_data_keys",
        "hash_key",
        "key_slots",
        "repo_id",
        "version",
    )

    def __init__(
        self,
        repo_id: str,
        created: str,
        block_size: int,
        compression: str,
        hash_key: bytes,
        version: int = VERSION,
        key_slots: list[KeySlot] | None = None,
        data_keys: list[DataKey] | None = None,
        dropped_data_keys: list[int] | None = None,
    ) -> None:
        self.repo_id, self.created, self.block_size = repo_id, created, block_size
        self.compression, self.hash_key, self.version = compression, hash_key, version
        self.key_slots = key_slots
        #: the rotated data keys (generation 2 and later), wrapped; generation 1 is the
        #: master key's first half
        self.data_keys: list[DataKey] = data_keys or []
        #: generations gc --rewrite-keys dropped: no object is sealed under them any more
        self.dropped_data_keys: list[int] = dropped_data_keys or []

    @property
    def encrypted(self) -> bool:
        return self.key_slots is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "id": self.repo_id,
            "created": self.created,
            "block_size": self.block_size,
            "compression": self.compression,
            "hash": "blake3-keyed",
        }
        if self.key_slots is None:
            out["hash_key"] = self.hash_key.hex()
        else:
            from pgkura.repository.keys import CIPHER

            out["encryption"] = CIPHER
            out["key_slots"] = [slot.to_json() for slot in self.key_slots]
            if self.data_keys or self.dropped_data_keys:
                out["data_keys"] = [k.to_json() for k in self.data_keys]
                out["dropped_data_keys"] = sorted(self.dropped_data_keys)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoConfig:
        slots = None
        data_keys = None
        if "key_slots" in data:
            from pgkura.repository.keys import CIPHER, DataKey, KeySlot

            if data.get("encryption") != CIPHER:
                raise RepositoryError(
                    f"the repository is encrypted with {data.get('encryption')!r}, which this "
                    "pgkura does not know",
                    hint="upgrade pgkura",
                )
            slots = [KeySlot.from_json(s) for s in data["key_slots"]]
            data_keys = [DataKey.from_json(k) for k in data.get("data_keys", ())]
            if (data_keys or data.get("dropped_data_keys")) and int(data["version"]) < 5:
                raise RepositoryError(  # rotated keys came with version 5: it was lowered
                    f"pgkura.json names rotated data keys but format version {data['version']}",
                    hint="put pgkura.json back from a copy of the repository",
                )
        return cls(
            repo_id=data["id"],
            created=data["created"],
            block_size=int(data["block_size"]),
            compression=data["compression"],
            hash_key=bytes.fromhex(data["hash_key"]) if slots is None else b"",
            version=int(data["version"]),
            key_slots=slots,
            data_keys=data_keys,
            dropped_data_keys=[int(g) for g in data.get("dropped_data_keys", ())],
        )
