"""Where a physical backup is restored to: the target directory and each tablespace's
location, checked before anything is written (physical/restore.py writes them).

Every path of the manifest is checked, because a manifest is data, and data can be hostile or
damaged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pgkura.errors import CorruptionError, PgkuraError, UsageError
from pgkura.repository.manifest import Manifest

# Present while a restore writes the directory (before any file, removed after pg_control):
# --delta may then finish a directory that has no PG_VERSION yet.
IN_PROGRESS = "pgkura_restore_in_progress"
_TABLESPACE_DIR = re.compile(r"PG_[0-9]+_[0-9]+")


@dataclass(frozen=True)
class RestorePlan:
    target: Path
    #: tablespace oid → location it is restored to
    tablespaces: dict[int, Path]


def parse_tablespace_map(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(
                f"--tablespace-map {item!r} is not OID_OR_NAME=DIR",
                hint="for example --tablespace-map ts1=/srv/restore/ts1",
            )
        if not os.path.isabs(value):
            raise UsageError(f"--tablespace-map {item!r}: the directory must be absolute")
        out[key] = value
    return out


def plan_restore(manifest: Manifest, target: Path, mapping: Mapping[str, str]) -> RestorePlan:
    """Decide where each tablespace goes, refusing mappings that name no tablespace."""
    oids = {ts.oid for ts in manifest.tablespaces}
    for f in manifest.files:
        parts = safe_relpath(f.path)  # every path, before anything is written
        if len(parts) >= 2 and parts[0] == "pg_tblspc" and parts[1].isdigit():
            oid = int(parts[1])
        elif f.type == "tablespace":
            oid = -1
        else:
            continue
        if oid not in oids:
            raise CorruptionError(
                f"the manifest of backup {manifest.id} links {f.path} to no tablespace it "
                "lists; nothing was written",
                hint="the manifest is damaged or was tampered with: restore another backup",
            )
    used: set[str] = set()
    locations: dict[int, Path] = {}
    for ts in manifest.tablespaces:
        chosen = ts.location
        for key in (str(ts.oid), ts.name):
            if key is not None and key in mapping:
                chosen = mapping[key]
                used.add(key)
        locations[ts.oid] = Path(chosen)
    unknown = set(mapping) - used
    if unknown:
        known = ", ".join(f"{t.oid} ({t.name or 'name unknown'})" for t in manifest.tablespaces)
        raise UsageError(
            f"--tablespace-map names no tablespace of backup {manifest.id}: "
            f"{', '.join(sorted(unknown))}",
            hint=f"the backup's tablespaces are: {known or 'none'}",
        )
    all_paths = [target.resolve(), *(p.resolve() for p in locations.values())]
    for i, a in enumerate(all_paths):
        for b in all_paths[i + 1 :]:
            if a == b or a in b.parents or b in a.parents:
                raise UsageError(
                    f"restore locations overlap: {a} and {b}",
                    hint="map each tablespace to its own directory outside the data directory",
                )
    return RestorePlan(target, locations)


def _is_empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def check_targets(plan: RestorePlan, delta: bool) -> None:
    """Refuse locations that are not directories, non-empty ones without --delta, and, with
    --delta, non-empty ones that are not the cluster's: --delta deletes what the backup does
    not list, so it only works in a data directory (PG_VERSION, or a restore of pgkura's
    that was interrupted) and in tablespace locations that hold PG_<major>_<catversion>."""
    for what, path, is_data in [
        ("target directory", plan.target, True),
        *((f"tablespace {oid} location", p, False) for oid, p in plan.tablespaces.items()),
    ]:
        if path.exists() and not path.is_dir():
            raise UsageError(f"the {what} {path} exists and is not a directory")
        if _is_empty_dir(path):
            continue
        if not delta:
            raise UsageError(
                f"the {what} {path} is not empty",
                hint="restore into an empty directory, or pass --delta to rewrite only the "
                "files that differ",
            )
        if is_data and not ((path / "PG_VERSION").is_file() or (path / IN_PROGRESS).exists()):
            raise UsageError(
                f"the {what} {path} is not empty and is not a PostgreSQL data directory (no "
                "PG_VERSION): --delta would delete what it holds; nothing was changed",
                hint="restore into an empty directory, or point --target-dir at the data "
                "directory to rewrite",
            )
        if not is_data and not any(_TABLESPACE_DIR.fullmatch(e.name) for e in path.iterdir()):
            raise UsageError(
                f"the {what} {path} is not empty and holds no PostgreSQL tablespace "
                "(PG_<major>_<catversion>): --delta would delete what it holds; nothing was "
                "changed",
                hint="map the tablespace to an empty directory with --tablespace-map, or to "
                "its own location",
            )


def safe_relpath(path: str) -> list[str]:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PgkuraError(
            f"the backup's manifest holds an unsafe path {path!r}; nothing was written there",
            hint="the manifest is damaged or was tampered with: restore another backup",
        )
    return parts


class Destinations:
    """Where each path of a backup's manifest goes under a plan, never outside its roots."""

    def __init__(self, plan: RestorePlan) -> None:
        self.plan = plan
        self._realpaths: dict[str, str] | None = None

    def settle(self) -> None:
        """The directories are all made and will not change any more (the files' phase):
        from here on each directory's real path is looked up once."""
        self._realpaths = {}

    def of(self, path: str) -> Path:
        """Map a manifest path to the file system, never outside the allowed roots."""
        parts = safe_relpath(path)
        if len(parts) >= 3 and parts[0] == "pg_tblspc" and parts[1].isdigit():
            root = self.plan.tablespaces.get(int(parts[1]))
            if root is None:
                raise PgkuraError(f"the manifest lists {path} for an unknown tablespace")
            dest = root.joinpath(*parts[2:])
        else:
            root = self.plan.target
            dest = root.joinpath(*parts)
        real_parent = self._realpath(dest.parent)
        real_root = self._realpath(root)
        if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
            raise PgkuraError(
                f"restoring {path} would write outside {root} (through a symbolic link); "
                "nothing was written there",
                hint="remove links from the restore target, or restore into an empty directory",
            )
        return dest

    def _realpath(self, path: Path) -> str:
        """os.path.realpath; once per directory after :meth:`settle` (a restore's files
        share a few hundred)."""
        if self._realpaths is None:
            return os.path.realpath(path)
        key = str(path)
        real = self._realpaths.get(key)
        if real is None:
            real = self._realpaths[key] = os.path.realpath(path)
        return real

    def unlisted(self, wanted: set[str], rewritten: frozenset[str]) -> Iterator[Path]:
        """What the target holds that is neither in ``wanted`` (the backup's paths) nor
        ``rewritten`` (written by every restore), for --delta to remove; a directory yielded
        is not descended into (the caller removes it before asking for the next)."""
        roots = [(self.plan.target, "")] + [
            (loc, f"pg_tblspc/{oid}") for oid, loc in self.plan.tablespaces.items()
        ]
        for root, prefix in roots:
            # os.walk does not descend into links, so pg_tblspc/<oid> is judged as one entry.
            for dirpath, dirnames, filenames in os.walk(root):
                rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
                base = prefix if rel_dir == "." else "/".join(p for p in (prefix, rel_dir) if p)
                for name in [*dirnames, *filenames]:
                    rel = f"{base}/{name}" if base else name
                    if prefix and rel_dir == ".":
                        # A tablespace location may hold other clusters' or versions'
                        # PG_<major>_<catversion> directories: only the backup's own are
                        # this restore's to rewrite.
                        if rel not in wanted and name in dirnames:
                            dirnames.remove(name)
                        continue
                    if rel not in wanted and rel not in rewritten:
                        yield Path(dirpath) / name
                        if name in dirnames:
                            dirnames.remove(name)
