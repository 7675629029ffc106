"""`pgkura repair index`: write back index objects that are missing, from the packs' own copies.

Every pack ends with a copy of its index (docs/repository-format.md, "Blocks and packs"), so a
lost ``index/<pack>`` object loses nothing: readers fall back to the copy, and this writes the
object again (put-if-absent, the very bytes of the copy). It takes only the shared lock:
backups may run meanwhile, since an index object is never anything but that copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pgkura.commands import locked_repository
from pgkura.config import Config
from pgkura.repository.blocks import BlockIndex


@dataclass(frozen=True)
class RepairReport:
    rebuilt: list[str] = field(default_factory=list)
    #: packs whose index object and own copy are both unreadable: nothing to rebuild from
    unrepairable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_repair_index(cfg: Config) -> RepairReport:
    with locked_repository(cfg, "shared") as repo:
        index = BlockIndex(repo).load(write_back=True, fresh=True)
    return RepairReport(rebuilt=list(index.unindexed), unrepairable=list(index.damaged))
