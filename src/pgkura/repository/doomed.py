"""Lists of packs gc will delete (docs/repository-format.md, "Two-phase deletion").

gc does not delete a pack the moment it finds it unneeded: a backup that loaded the index
earlier may be about to reference blocks in it. It first writes a *doomed list* naming the
packs, then the shared locks live at that moment; it deletes the packs only once every one of
those locks has ended. Commands that load the index after the list exists see it: writers never
reuse a block that only a doomed pack holds (they store it again), readers prefer another copy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from pgkura.errors import ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.repo import Repository, iso, utc_now


@dataclass(frozen=True)
class DoomedList:
    marker_id: str
    created: str
    packs: tuple[str, ...]
    #: (lock key, token) of the shared locks live when the list was written; None until gc
    #: has listed them (a gc killed in between: the next one lists them again)
    waiting_for: tuple[tuple[str, str], ...] | None

    def to_json(self) -> bytes:
        waiting = None if self.waiting_for is None else [list(w) for w in self.waiting_for]
        return json.dumps(
            {"created": self.created, "packs": list(self.packs), "waiting_for": waiting}
        ).encode()

    @classmethod
    def from_json(cls, marker_id: str, raw: bytes) -> DoomedList:
        data = json.loads(raw)
        waiting = data.get("waiting_for")
        return cls(
            marker_id,
            str(data.get("created", "?")),
            tuple(str(p) for p in data.get("packs", ())),
            None if waiting is None else tuple((str(k), str(t)) for k, t in waiting),
        )


def new_doomed_list(packs: list[str]) -> DoomedList:
    return DoomedList(os.urandom(8).hex(), iso(utc_now()), tuple(sorted(packs)), None)


def doomed_lists(repo: Repository) -> list[DoomedList]:
    """Every doomed list; one that cannot be parsed is kept as dooming nothing (its packs stay:
    keeping a pack loses nothing)."""
    out = []
    for obj in repo.storage.list(layout.DOOMED_PREFIX):
        name = obj.key[len(layout.DOOMED_PREFIX) :]
        if "/" in name or not name.endswith(".json"):
            continue
        try:
            out.append(DoomedList.from_json(name[: -len(".json")], repo.get_record(obj.key)))
        except ObjectNotFound:
            continue
        except (ValueError, TypeError, AttributeError):
            continue
    return out


def doomed_packs(repo: Repository) -> set[str]:
    return {p for d in doomed_lists(repo) for p in d.packs}


def write_doomed(repo: Repository, doomed: DoomedList) -> None:
    repo.put_record(layout.doomed_key(doomed.marker_id), doomed.to_json())


def remove_doomed(repo: Repository, doomed: DoomedList) -> None:
    repo.storage.delete(layout.doomed_key(doomed.marker_id))
