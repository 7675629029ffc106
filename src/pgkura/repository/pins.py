"""Pins: backups kept whatever the retention policy says (docs/repository-format.md, "Pins").

One small plain JSON object per pinned backup, ``pins/<stanza>/<backup-id>.json``, written and
deleted whole: pinning two backups at once never loses one of them to a read-modify-write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.repo import Repository, iso, utc_now


@dataclass(frozen=True)
class Pin:
    backup_id: str
    #: also keep every WAL segment after the backup (point-in-time recovery from it onward)
    pitr: bool
    pinned: str  # when, UTC

    def to_json(self) -> bytes:
        data = {"backup": self.backup_id, "pitr": self.pitr, "pinned": self.pinned}
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, backup_id: str, raw: bytes) -> Pin:
        try:
            data = json.loads(raw)
            return cls(backup_id, bool(data.get("pitr", False)), str(data.get("pinned", "?")))
        except (ValueError, AttributeError):
            # A damaged pin still pins: keeping a backup too long loses nothing.
            return cls(backup_id, True, "?")


def pins(repo: Repository, stanza: str) -> dict[str, Pin]:
    """The stanza's pins by backup id."""
    prefix = layout.pin_prefix(stanza)
    out = {}
    for obj in repo.storage.list(prefix):
        name = obj.key[len(prefix) :]
        if "/" in name or not name.endswith(".json"):
            continue
        backup_id = name[: -len(".json")]
        try:
            raw = repo.get_record(obj.key)
        except ObjectNotFound:
            continue  # unpinned meanwhile
        except ValueError:  # does not unseal: damaged, and still pins
            raw = b""
        out[backup_id] = Pin.from_json(backup_id, raw)
    return out


def pin(repo: Repository, stanza: str, backup_id: str, *, pitr: bool) -> Pin:
    record = Pin(backup_id, pitr, iso(utc_now()))
    repo.put_record(layout.pin_key(stanza, backup_id), record.to_json())
    return record


def unpin(repo: Repository, stanza: str, backup_id: str) -> bool:
    """Remove the pin; whether there was one."""
    key = layout.pin_key(stanza, backup_id)
    if repo.storage.size(key) is None:
        return False
    repo.storage.delete(key)
    return True


def copy_pin(source: Repository, dest: Repository, stanza: str, backup_id: str) -> bool:
    """Pin ``backup_id`` in ``dest`` as it is pinned in ``source`` (pgkura copy); whether it
    was."""
    found = pins(source, stanza).get(backup_id)
    if found is not None:
        dest.put_record(layout.pin_key(stanza, backup_id), found.to_json())
    return found is not None
