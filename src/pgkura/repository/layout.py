"""Object keys of the repository, in one place (docs/repository-format.md, "Layout")."""

from __future__ import annotations

from pgkura.config import STANZA_RE as STANZA_RE

CONFIG_KEY = "pgkura.json"


STANZA_PREFIX = "stanzas/"


def stanza_key(stanza: str) -> str:
    return f"stanzas/{stanza}.json"


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


INDEX_PREFIX = "index/"
MERGED_INDEX_PREFIX = "index/merged/"


def index_key(pack_id: str) -> str:
    """The index object of one pack, as its writer stores it."""
    return f"index/{pack_id}"


def merged_index_key(merged_id: str) -> str:
    """An index object that covers many packs (repository/index_files.py)."""
    return f"index/merged/{merged_id}"


def snapshot_prefix(stanza: str) -> str:
    return f"snapshots/{stanza}/"


def snapshot_key(stanza: str, backup_id: str) -> str:
    return f"snapshots/{stanza}/{backup_id}"


def wal_archive(stanza: str, generation: int) -> str:
    """The WAL archive of one generation of a stanza (docs/repository-format.md, "Stanza
    generations"): the stanza's name for the first, ``<stanza>@<n>`` after each upgrade. '@'
    is not allowed in stanza names, so no stanza's archive is another's."""
    return stanza if generation == 1 else f"{stanza}@{generation}"


def describe_archive(archive: str) -> str:
    """A WAL archive as messages name it: "stanza 'main'", "stanza 'main' (generation 2)"."""
    stanza, _, generation = archive.partition("@")
    return f"stanza {stanza!r}" + (f" (generation {generation})" if generation else "")


def wal_prefix(archive: str) -> str:
    """Where the WAL ``archive`` (a wal_archive) lives."""
    return f"wal/{archive}/"


def wal_key(archive: str, wal_name: str) -> str:
    """The key of ``wal_name`` in ``archive`` (a wal_archive: a stanza name for a stanza
    that was never upgraded)."""
    if wal_name.endswith(".history"):
        return f"wal/{archive}/history/{wal_name}"
    return f"wal/{archive}/{wal_name[:16]}/{wal_name}"


def lock_key(name: str) -> str:
    return f"locks/{name}.lock"


def drill_key(stanza: str, backup_id: str) -> str:
    """The result of the latest restore drill of a backup (replaced by each new drill)."""
    return f"drills/{stanza}/{backup_id}.json"


def drill_prefix(stanza: str) -> str:
    return f"drills/{stanza}/"


def pin_prefix(stanza: str) -> str:
    return f"pins/{stanza}/"


def pin_key(stanza: str, backup_id: str) -> str:
    """A pin: the backup is kept whatever the retention policy says."""
    return f"pins/{stanza}/{backup_id}.json"


def expire_key(stanza: str) -> str:
    """What an expire of the stanza deleted and has not finished cleaning up after (its WAL)."""
    return f"expire/{stanza}.json"


DOOMED_PREFIX = "gc/"


def doomed_key(marker_id: str) -> str:
    """A list of packs gc will delete once no command that may use them still runs."""
    return f"gc/{marker_id}.json"


def run_key(stanza: str | None, verb: str) -> str:
    """How the last ``verb`` (verify, expire, gc) ended: per stanza, or the repository's for
    gc (``stanza`` None)."""
    return f"runs/{verb}.json" if stanza is None else f"runs/{stanza}/{verb}.json"
