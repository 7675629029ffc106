"""`pgkura key add|list|remove|rotate`: who can open an encrypted repository, and which data
key seals new objects.

Each key slot in pgkura.json wraps the repository's master key under one passphrase
(repository/keys.py). Adding or removing a slot rewrites pgkura.json (atomically) and nothing
else: no object is encrypted under a slot's key. Rotating adds a data key (wrapped under the
master key) that new objects are sealed under; `gc --rewrite-keys` reseals the old ones and
then drops the retired key (repository/rekey.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgkura.commands import locked_repository, open_repository
from pgkura.config import Config
from pgkura.errors import UsageError
from pgkura.repository import keys
from pgkura.repository.repo import Repository, iso, utc_now


@dataclass(frozen=True)
class KeySlotInfo:
    """A key slot as `key list` shows it (nothing secret)."""

    slot_id: str
    added: str
    kdf: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.slot_id, "added": self.added, "kdf": self.kdf}


@dataclass(frozen=True)
class DataKeyInfo:
    """A data key as `key list` shows it: its generation, when it was added (None: with the
    repository) and whether new objects are sealed under it (else it is retired)."""

    generation: int
    added: str | None
    current: bool

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "added": self.added, "current": self.current}


@dataclass(frozen=True)
class KeySlots:
    """The key slots and data keys of a repository after a `key` command; ``changed`` is the
    slot added or removed, or the generation rotated in (None for list)."""

    slots: list[KeySlotInfo]
    changed: str | None = None
    data_keys: list[DataKeyInfo] | None = None

    def to_json(self) -> dict[str, Any]:
        keys = [k.to_json() for k in self.data_keys or ()]
        return {"slots": [s.to_json() for s in self.slots], "changed": self.changed,
                "data_keys": keys}  # fmt: skip


def _slots(repo: Repository, changed: str | None = None) -> KeySlots:
    assert repo.config.key_slots is not None and repo.cipher is not None
    infos = [KeySlotInfo(s.slot_id, s.added, s.describe()) for s in repo.config.key_slots]
    added = {k.generation: k.added for k in repo.config.data_keys}
    current = repo.cipher.current
    data = [DataKeyInfo(g, added.get(g), g == current) for g in repo.cipher.generations]
    return KeySlots(infos, changed, data)


def _require_encrypted(repo: Repository) -> list[keys.KeySlot]:
    if repo.config.key_slots is None or repo.master_key is None:
        raise UsageError(
            f"the repository at {repo.location} is not encrypted: it has no keys",
            hint="create an encrypted repository with: pgkura init --encrypt --key-file FILE",
        )
    return repo.config.key_slots


def run_key_list(cfg: Config) -> KeySlots:
    repo = open_repository(cfg)
    _require_encrypted(repo)
    return _slots(repo)


def run_key_add(cfg: Config, new_key_file: str, raw: bool = False) -> KeySlots:
    """A new key slot opened by the passphrase in ``new_key_file`` (with ``raw``: by the
    random key it holds)."""
    secret = keys.read_key_file(new_key_file, "--new-key-file", raw=raw)
    # The maintenance lock: two key commands at once would each rewrite pgkura.json from
    # what they read, and one's slot would be lost.
    with locked_repository(cfg, "maintenance") as repo:
        slots = _require_encrypted(repo)
        assert repo.master_key is not None
        slot = keys.new_slot(repo.master_key, secret, repo.config.repo_id, iso(utc_now()), raw=raw)
        slots.append(slot)
        repo.write_config()
        return _slots(repo, slot.slot_id)


def run_key_remove(cfg: Config, slot_id: str) -> KeySlots:
    """Remove the key slot ``slot_id``; never the last one."""
    with locked_repository(cfg, "maintenance") as repo:
        slots = _require_encrypted(repo)
        ids = [s.slot_id for s in slots]
        if slot_id not in ids:
            raise UsageError(
                f"the repository has no key slot {slot_id!r} (it has {', '.join(ids)})",
                hint="list them with: pgkura key list",
            )
        if len(slots) == 1:
            raise UsageError(
                f"key slot {slot_id} is the repository's only one: removing it would leave "
                "nothing that opens the repository",
                hint="add another first: pgkura key add --new-key-file FILE",
            )
        slots[:] = [s for s in slots if s.slot_id != slot_id]
        repo.write_config()
        return _slots(repo, slot_id)


def run_key_rotate(cfg: Config) -> KeySlots:
    """A new data key for new objects: the others become retired (still read, until
    `gc --rewrite-keys` reseals what they sealed and drops them)."""
    from pgkura.repository.catalog import adopt_all
    from pgkura.repository.repo import ENCRYPTED_V5

    with locked_repository(cfg, "maintenance") as repo:
        _require_encrypted(repo)
        assert repo.master_key is not None and repo.cipher is not None
        used = [*repo.cipher.generations, *repo.config.dropped_data_keys]
        generation = max(used) + 1
        entry = keys.new_data_key(repo.master_key, repo.config.repo_id, generation, iso(utc_now()))
        repo.config.data_keys.append(entry)
        # Readers of version 4 would open every object with the first data key; version 5
        # means every stanza with manifests has a catalog (repository/catalog.py).
        if repo.config.version < ENCRYPTED_V5:
            adopt_all(repo)
        repo.config.version = max(repo.config.version, ENCRYPTED_V5)
        repo.write_config()
        repo.reload_keys()
        return _slots(repo, str(generation))
