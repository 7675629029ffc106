"""One module per verb; each is a thin function over the layers below.

Nothing is imported at package level: archive-push imports this package once per WAL segment.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported on archive-push's path
if TYPE_CHECKING:
    from pgkura.config import Config
    from pgkura.repository.repo import Repository


def open_repository(cfg: Config) -> Repository:
    from pgkura.repository.repo import Repository
    from pgkura.storage import open_storage

    return Repository.open(open_storage(cfg.require_repo(), cfg))
