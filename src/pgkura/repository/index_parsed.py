"""Within one gc run, each index object is parsed once (repository/index_files.py reads the
index for gc's load, for the deletions of each doomed list and for its consolidation).

An index object never changes while its key exists, and the local cache already trusts a
listed key of the listed size to name the bytes it holds: so, inside :func:`parsing_once`, an
object listed again under the same key at the same size says what it said when this process
parsed (or wrote) it. Parsing the merged objects again each time cost gc a multiple of the
index. Outside it nothing is kept.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

from pgkura.repository.blocks import BlockLocation
from pgkura.repository.repo import Repository

Entries = list[tuple[bytes, BlockLocation]]

#: Within :func:`parsing_once`: what each index object read or written says, by repository:
#: key -> (size, packs). Entries are shared, never changed in place.
_PARSED: weakref.WeakKeyDictionary[Repository, dict[str, tuple[int, dict[str, Entries]]]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def parsing_once(repo: Repository) -> Iterator[None]:
    """Within, each index object of ``repo`` is parsed once (the module's docstring)."""
    _PARSED[repo] = {}
    try:
        yield
    finally:
        _PARSED.pop(repo, None)


def remember_parsed(repo: Repository, key: str, size: int, docs: dict[str, Entries]) -> None:
    """Within parsing_once, keep what the object ``key`` of ``size`` bytes says."""
    parsed = _PARSED.get(repo)
    if parsed is not None:
        parsed[key] = (size, docs)


def parsed_before(
    repo: Repository, listed: dict[str, int]
) -> dict[str, tuple[int, dict[str, Entries]]]:
    """Within parsing_once, the objects parsed before, narrowed to the keys ``listed`` (a
    deleted object is forgotten); else nothing."""
    parsed = _PARSED.get(repo)
    if parsed is None:
        return {}
    for key in [k for k in parsed if k not in listed]:
        del parsed[key]
    return parsed
