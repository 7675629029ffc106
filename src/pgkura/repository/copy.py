"""Copying stored backups into another repository (`pgkura copy`): the repository-level half.

Each repository has its own hash key, so a block's id in the destination is not its id in
the source: a block is read from the source (unsealed and checked against its source id),
named again with the destination's keyed digest and sealed into the destination's packs
unless the destination already has it. Manifests are rewritten with the destination's ids.
What the destination has is known without reading the source again from the backups both
repositories hold: their manifests list the same files with the same blocks in the same
order, so the pair of them translates each source id into its destination id
(docs/repository-format.md, "Copies").

The engine (physical/copy.py) decides what to copy and in which order; this module opens the
destination, binds its stanza and moves blocks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from pgkura.errors import NotARepositoryError, RepositoryError
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, BlockReader, PackWriter
from pgkura.repository.manifest import FileEntry, Manifest
from pgkura.repository.repo import Repository, iso, utc_now
from pgkura.repository.stanzas import StanzaInfo
from pgkura.storage.base import Storage

#: The key of a copied manifest's ``extra`` that says where it was copied from.
COPIED_FROM = "copied_from"


def open_destination(storage: Storage, source: Repository) -> tuple[Repository, bool]:
    """The repository at ``storage``, and whether this call created it: an empty location
    becomes a repository of its own (a new hash key; the source's compression and block
    size); a location that holds anything else is refused, and nothing is written."""
    try:
        return Repository.open(storage), False
    except NotARepositoryError:
        held = next(iter(storage.list("")), None)
        if held is not None:
            raise NotARepositoryError(
                f"--to {storage.location} is not a pgkura repository and is not empty (it "
                f"holds {held.key})",
                hint="give --to an empty location (copy creates the repository) or one made "
                "by pgkura init",
            ) from None
    created = Repository.create(
        storage, compression=source.config.compression, block_size=source.config.block_size
    )
    return created, True


def adopt_stanza(dest: Repository, info: StanzaInfo, clusters: set[str]) -> StanzaInfo:
    """The destination's record of stanza ``info.name``, made to know each cluster (system
    identifier) of ``clusters``: written as the source's when the destination has none,
    extended by the source's later generations when the destination's are where the source
    began. A destination stanza of another cluster is refused."""
    key = layout.stanza_key(info.name)
    body = json.dumps(info.to_json(), indent=2).encode()
    mine = dest.stanza(info.name)
    if mine is None:
        dest.storage.put_if_absent(key, body)
        mine = dest.stanza(info.name)
        assert mine is not None
    theirs = [g.system_identifier for g in info.generations]
    ours = [g.system_identifier for g in mine.generations]
    if len(theirs) > len(ours) and theirs[: len(ours)] == ours:
        dest.storage.put(key, body)  # the source's stanza was upgraded since the last copy
        mine = info
    for cluster in sorted(clusters):
        if mine.generation_of(cluster) is None:
            raise RepositoryError(
                f"stanza {info.name!r} in {dest.location} belongs to another cluster "
                f"({mine.describe()}), not the one with system identifier {cluster}",
                hint="copy into an empty location or into a repository whose stanza is this "
                "cluster's",
            )
    return mine


def copied_manifest(manifest: Manifest, source: Repository) -> Manifest:
    """``manifest`` as the destination records it: its ``extra`` says where it came from."""
    origin = {"repository": source.config.repo_id, "at": iso(utc_now())}
    extra = {**manifest.extra, COPIED_FROM: origin}
    return manifest.with_changes(extra=extra)


def _copied_from(manifest: Manifest) -> str | None:
    origin = manifest.extra.get(COPIED_FROM)
    return origin.get("repository") if isinstance(origin, dict) else None


def same_backup(source: Manifest, dest: Manifest, source_id: str, dest_id: str) -> bool:
    """Whether ``dest`` is a copy of ``source`` (or the other way round): one was copied
    from the other's repository, and they list the same files with as many blocks each."""
    if _copied_from(dest) != source_id and _copied_from(source) != dest_id:
        return False
    ours = (source.id, source.started, source.system_identifier, len(source.files))
    if ours != (dest.id, dest.started, dest.system_identifier, len(dest.files)):
        return False
    return all(
        (a.path, a.type, a.size, a.crc32c, len(a.blocks))
        == (b.path, b.type, b.size, b.crc32c, len(b.blocks))
        for a, b in zip(source.files, dest.files, strict=True)
    )


class BlockCopier:
    """Translates the blocks of source manifests into destination blocks, storing those the
    destination lacks. The files of a manifest are copied by ``workers`` threads, each with
    a PackWriter of its own (at most two packs in memory each); the destination's index
    lets one of them store a block that several meet."""

    def __init__(self, source_index: BlockIndex, dest_index: BlockIndex, workers: int = 1) -> None:
        self.source = source_index.repo
        self.dest = dest_index.repo
        self.reader = BlockReader(source_index)
        self.dest_index = dest_index
        self.workers = max(1, workers)
        self._local = threading.local()
        self._writers: list[PackWriter] = []
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}  # source id -> destination id, from copied manifests
        self._this_run: dict[str, str] = {}  # the same, for blocks this copy stored or found
        self.blocks_read = 0  # blocks read from the source
        self.blocks_stored = 0  # blocks the destination lacked

    def learn(self, source: Manifest, dest: Manifest) -> None:
        """Remember the destination ids of the blocks of a backup both repositories hold."""
        if not same_backup(source, dest, self.source.config.repo_id, self.dest.config.repo_id):
            return
        for a, b in zip(source.files, dest.files, strict=True):
            self._known.update(zip(a.blocks, b.blocks, strict=True))

    def translate(
        self, manifest: Manifest, advance: Callable[[int], None] | None = None
    ) -> Manifest:
        """``manifest`` with the destination's block ids, each block stored in the
        destination unless it has it; call :meth:`finish` before committing it. ``advance``
        is told the size of each file done."""

        def one(entry: FileEntry) -> FileEntry:
            copied = self._file(entry, manifest.id)
            if advance is not None and entry.size:
                with self._lock:
                    advance(entry.size)
            return copied

        if self.workers == 1:
            return manifest.with_changes(files=tuple(map(one, manifest.files)))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="pgkura-copy") as pool:
            return manifest.with_changes(files=tuple(pool.map(one, manifest.files)))

    def _writer(self) -> PackWriter:
        """This thread's PackWriter."""
        writer: PackWriter | None = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = PackWriter(self.dest_index, background=True)
            with self._lock:
                self._writers.append(writer)
        return writer

    def _dest_id(self, source_id: str) -> str | None:
        known = self._this_run.get(source_id)
        if known is not None:
            return known
        known = self._known.get(source_id)
        if known is not None and bytes.fromhex(known) in self.dest_index:
            return known
        return None

    def _file(self, entry: FileEntry, backup_id: str) -> FileEntry:
        if entry.type != "file" or not entry.blocks:
            return entry
        missing = list(dict.fromkeys(b for b in entry.blocks if self._dest_id(b) is None))
        if missing:
            context = f"{entry.path} of backup {backup_id}"
            raws = self.reader.iter_many([bytes.fromhex(b) for b in missing], context)
            writer, stored = self._writer(), 0
            for source_id, raw in zip(missing, raws, strict=True):
                digest, added = writer.add(raw, self.dest.digest(raw))
                self._this_run[source_id] = digest.hex()
                stored += 1 if added else 0
            with self._lock:
                self.blocks_read += len(missing)
                self.blocks_stored += stored
        blocks = tuple(self._this_run.get(b) or self._known[b] for b in entry.blocks)
        return replace(entry, blocks=blocks)

    def finish(self) -> None:
        """Store the pending packs and wait until every pack and its index is stored: the
        blocks are known to the destination after. Called between translations, by the
        thread that calls :meth:`translate`."""
        for writer in self._writers:
            writer.close()

    @property
    def bytes_written(self) -> int:
        """The sealed bytes of the blocks stored so far."""
        return sum(w.bytes_written for w in self._writers)

    def stored_bytes(self, manifest: Manifest) -> int:
        """The sealed size of the distinct destination blocks ``manifest`` references."""
        total = 0
        for hex_id in {b for f in manifest.files for b in f.blocks}:
            loc = self.dest_index.get(bytes.fromhex(hex_id))
            total += loc.length if loc is not None else 0
        return total
