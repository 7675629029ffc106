"""One module per verb; each is a thin function over the layers below."""

from __future__ import annotations

from pgkura.config import Config
from pgkura.repository.repo import Repository
from pgkura.storage import open_storage


def open_repository(cfg: Config) -> Repository:
    return Repository.open(open_storage(cfg.require_repo()))
