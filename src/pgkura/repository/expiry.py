"""What an expire or delete removed and has not finished cleaning up after (docs/
repository-format.md, "Expiry record").

WAL is deleted only when a backup was (or the PITR window says so). The manifests go first,
so a run killed before it deleted the WAL would leave no trace of having deleted a backup, and
the next run would keep that WAL for ever. The record, written before the first manifest is
deleted and removed once the WAL is cleaned up, is that trace: the next run does the WAL
cleanup of the generations it names.
"""

from __future__ import annotations

import json

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.repo import Repository, iso, utc_now


def pending_generations(repo: Repository, stanza: str) -> set[str]:
    """The system identifiers of the generations whose WAL cleanup an earlier run left."""
    try:
        data = json.loads(repo.get_record(layout.expire_key(stanza)))
        return {str(s) for s in data.get("system_identifiers", ())}
    except ObjectNotFound:
        return set()
    except (ValueError, AttributeError, TypeError):
        return set()


def record_pending(repo: Repository, stanza: str, system_identifiers: set[str]) -> None:
    body = {"system_identifiers": sorted(system_identifiers), "written": iso(utc_now())}
    repo.put_record(layout.expire_key(stanza), json.dumps(body).encode())


def clear_pending(repo: Repository, stanza: str) -> None:
    repo.storage.delete(layout.expire_key(stanza))
