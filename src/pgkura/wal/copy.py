"""Copying archived WAL and history files into another repository (`pgkura copy`): which
files copied backups need, and the copying itself, each file read back once it is written.

Without ``--wal`` a copied online backup takes the segments that make it consistent (its
start to its stop segment) and its timeline's history file; with ``--wal``, every file the
retention rules keep for point-in-time recovery from it onward (wal/retention.py: its
timeline from its start segment, and the timelines that branched from it after), and every
history file of the archive.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pgkura.errors import CorruptionError
from pgkura.repository.manifest import Manifest
from pgkura.repository.repo import Repository
from pgkura.repository.walstore import SealError
from pgkura.wal.catalog import archived_files
from pgkura.wal.names import DEFAULT_SEG_SIZE, history_file_name, segments_between
from pgkura.wal.retention import anchor_of, seg_size_of, unneeded_wal


def consistency_wal(source: Repository, archive: str, m: Manifest) -> list[str]:
    """The archived files backup ``m`` needs to become consistent: none for an offline
    backup or a dump."""
    anchor = anchor_of(m, False)
    if anchor is None:
        return []
    seg = int(m.extra.get("wal_segment_size", DEFAULT_SEG_SIZE))
    stop = max(anchor.stop_lsn - 1, anchor.start_lsn)
    names = segments_between(anchor.timeline, anchor.start_lsn, stop, seg)
    if anchor.timeline > 1 and source.wal.exists(archive, history_file_name(anchor.timeline)):
        names.append(history_file_name(anchor.timeline))
    return names


def pitr_wal(source: Repository, archive: str, manifests: list[Manifest]) -> list[str]:
    """Every archived file point-in-time recovery from the online backups ``manifests`` may
    read (all history files of the archive among them); none when none is online."""
    anchors = [a for a in (anchor_of(m, True) for m in manifests) if a is not None]
    if not anchors:
        return []
    seg = seg_size_of(manifests)
    unneeded = {name for name, _size in unneeded_wal(source, archive, anchors, seg)}
    archived = archived_files(source, archive, seg)
    return sorted(w.name for w, _size in archived if w.name not in unneeded)


@dataclass
class WalCopied:
    files: int = 0  # files written into the destination
    bytes: int = 0  # their stored (sealed) bytes


class WalCopier:
    """Copies archived files from one repository's archive into another's, skipping what the
    destination holds; the destination's listing of each archive is read once."""

    def __init__(self, source: Repository, dest: Repository, jobs: int) -> None:
        self.source, self.dest = source, dest
        self.workers = min(source.workers_for(jobs), dest.workers_for(jobs))
        self._present: dict[str, set[str]] = {}
        self.copied = WalCopied()

    def copy(self, source_archive: str, dest_archive: str, names: list[str]) -> None:
        present = self._present.get(dest_archive)
        if present is None:
            present = self._present[dest_archive] = {
                f.name for f in self.dest.wal.list(dest_archive)
            }
        todo = [n for n in dict.fromkeys(names) if n not in present]
        if not todo:
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="pgkura-wal-copy") as pool:
            sizes = pool.map(lambda n: self._one(source_archive, dest_archive, n), todo)
            for name, size in zip(todo, sizes, strict=True):
                present.add(name)
                self.copied.files += 1 if size else 0
                self.copied.bytes += size

    def _one(self, source_archive: str, dest_archive: str, name: str) -> int:
        """Copy ``name``; the bytes written (0: the destination had it, with this content)."""
        stored = self.source.wal.find(source_archive, name)
        if stored is None:
            raise CorruptionError(
                f"WAL file {name}, which a copied backup needs, is missing from the source's "
                "archive",
                hint="run pgkura verify on the source; copy the backups it reports ok",
            )
        try:
            raw = stored.content()
        except SealError as exc:
            raise CorruptionError(
                f"WAL file {stored.key} in the source is damaged: {exc}",
                hint="run pgkura verify on the source; copy the backups it reports ok",
            ) from None
        digest = self.dest.digest(raw)
        written = self.dest.wal.put_if_absent(dest_archive, name, raw, digest)
        back = self.dest.wal.get(dest_archive, name)
        try:  # read back what was written, or check what was there is this content
            if not back.claims(digest):
                raise SealError("it holds other content than the source's")
            back.check()
        except SealError as exc:
            raise CorruptionError(
                f"WAL file {back.key} in the destination does not read back: {exc}",
                hint="run pgkura verify on the destination",
            ) from None
        return written or 0
