"""Object keys of the repository, in one place (docs/repository-format.md, "Layout")."""

from __future__ import annotations

from pgkura.config import STANZA_RE as STANZA_RE

CONFIG_KEY = "pgkura.json"


def stanza_key(stanza: str) -> str:
    return f"stanzas/{stanza}.json"


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    return f"index/{pack_id}"


def snapshot_prefix(stanza: str) -> str:
    return f"snapshots/{stanza}/"


def snapshot_key(stanza: str, backup_id: str) -> str:
    return f"snapshots/{stanza}/{backup_id}"


def wal_prefix(stanza: str) -> str:
    return f"wal/{stanza}/"


def wal_key(stanza: str, wal_name: str) -> str:
    if wal_name.endswith(".history"):
        return f"wal/{stanza}/history/{wal_name}"
    return f"wal/{stanza}/{wal_name[:16]}/{wal_name}"


def lock_key(name: str) -> str:
    return f"locks/{name}.lock"


def drill_key(stanza: str, backup_id: str) -> str:
    """The result of the latest restore drill of a backup (replaced by each new drill)."""
    return f"drills/{stanza}/{backup_id}.json"
