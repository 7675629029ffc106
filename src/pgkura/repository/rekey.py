"""`gc --rewrite-keys`: reseal what retired data keys sealed under the current one, then drop
the retired keys (docs/repository-format.md, "Key rotation").

One run, under the maintenance lock, before gc's own work:

1. Every object but the packs (index objects, manifests, catalogs, WAL and history files, the
   small records) whose header names a retired data key is unsealed, checked, sealed again
   under the current key (its compressed payload encrypted anew: sealed.reseal) and stored
   under its own name with an atomic replace (``put``):
   readers see the old object or the new one, and both open while the old key is held.
2. Every pack holding a block (or an index copy) sealed under a retired key is copied, each
   block unsealed, checked and sealed again under the same id, into new packs with their
   index objects; then the old packs go into a doomed list that waits for the shared locks
   live now, like gc's repacks (repository/doomed.py). gc's run that follows deletes them
   when no command may still read them, and the index objects with them.
3. A retired key is dropped from pgkura.json only by a run whose scan found nothing sealed
   under it (a run that rewrote something leaves the key to the next run), and only when no
   lock live now was taken before the newest key was rotated in (a command that opened the
   repository before may still seal under the old key).

Killed at any point, every backup stays restorable: a replaced object is whole in one
version or the other, the new packs are written before the old ones are doomed, a doomed pack
is deleted only after its blocks are in another pack, and the old key is kept until a later
run finds nothing under it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from pgkura.errors import CorruptionError, ObjectNotFound, UsageError
from pgkura.repository import layout
from pgkura.repository.blocks import PACK_TRAILER, PACK_TRAILER_MAGIC, BlockIndex, PackWriter
from pgkura.repository.doomed import DoomedList, doomed_packs, new_doomed_list, write_doomed
from pgkura.repository.index_cache import IndexCache
from pgkura.repository.locks import live_shared_locks, lock_ended
from pgkura.repository.repo import BLOCK_IDENTITY, Repository, _named
from pgkura.repository.sealed import HEADER_SIZE, SealError, key_generation, reseal

#: Where the sealed objects other than packs live; pgkura.json and the locks are plain JSON.
RESEALED_PREFIXES = ("index/", "snapshots/", "catalogs/", "wal/", "stanzas/", "pins/", "runs/",
                     "drills/", "expire/", "gc/")  # fmt: skip


@dataclass
class RekeyReport:
    current: int = 1
    #: generations of the data keys retired when the run began
    retired: list[int] = field(default_factory=list)
    objects_rewritten: int = 0
    packs_rewritten: int = 0
    #: sealed bytes of the blocks sealed again into new packs
    bytes_rewritten: int = 0
    #: generation -> objects (a pack counts once) found sealed under it by this run's scan
    found: dict[int, int] = field(default_factory=dict)
    #: retired generations this run dropped from pgkura.json
    dropped: list[int] = field(default_factory=list)
    #: why a retired generation was kept
    kept: list[str] = field(default_factory=list)
    #: objects that could not be unsealed, and so were left as they are (verify names them)
    unreadable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_encrypted(repo: Repository) -> None:
    """UsageError unless the repository is encrypted (has data keys to rewrite)."""
    if repo.cipher is None:
        raise UsageError(
            f"the repository at {repo.location} is not encrypted: it has no data keys to rewrite",
            hint="run pgkura gc without --rewrite-keys",
        )


def rewrite_keys(repo: Repository) -> RekeyReport:
    """Steps 1 and 2 (the module's docstring); the caller holds the maintenance lock."""
    check_encrypted(repo)
    cipher = repo.cipher
    assert cipher is not None
    report = RekeyReport(current=cipher.current)
    report.retired = [g for g in cipher.generations if g != cipher.current]
    if not report.retired:
        return report
    retired = set(report.retired)
    for prefix in RESEALED_PREFIXES:
        for obj in repo.storage.list(prefix):
            _reseal_object(repo, obj.key, retired, report)
    _rewrite_packs(repo, retired, report)
    return report


def _resealed(
    repo: Repository,
    data: bytes | memoryview,
    expect_digest: bytes | None = None,
    *,
    name: str | None = None,
) -> bytes:
    """The sealed object stored as ``name`` (no name: the block ``expect_digest``), checked
    and sealed again under the current data key (sealed.reseal)."""
    assert repo.cipher is not None
    identity = BLOCK_IDENTITY if name is None else _named(name)
    return reseal(data, repo.key, repo.cipher, identity, expect_digest)


def _count(report: RekeyReport, generation: int) -> None:
    report.found[generation] = report.found.get(generation, 0) + 1


def _reseal_object(repo: Repository, key: str, retired: set[int], report: RekeyReport) -> None:
    try:
        generation = key_generation(repo.storage.get(key, 0, HEADER_SIZE))
        if generation not in retired:
            return
        assert generation is not None
        _count(report, generation)
        data = repo.storage.get(key)
        sealed = _resealed(repo, data, name=key)
    except ObjectNotFound:
        return  # deleted since the listing (a WAL cleanup, a consolidation)
    except SealError as exc:
        report.unreadable.append(f"{key}: {exc}")
        return
    # Replaced only if it is still the version read: a record a command rewrote meanwhile
    # (a drill, a stanza upgrade) is newer, and already sealed under the current key.
    if repo.storage.get(key, 0, HEADER_SIZE) != data[:HEADER_SIZE]:
        return
    repo.storage.put(key, sealed)
    if key.startswith((layout.INDEX_PREFIX, layout.SNAPSHOTS_PREFIX)):  # the cache's copy too
        IndexCache.of(repo).put(key, sealed)
    report.objects_rewritten += 1


def _pack_generations(data: memoryview, offsets: list[tuple[int, int]]) -> set[int | None]:
    """The key generations of a pack's sealed blocks (``offsets``: offset, length) and of its
    trailer's index copy."""
    gens = {key_generation(data[o : o + HEADER_SIZE]) for o, _length in offsets}
    if len(data) >= PACK_TRAILER.size:
        index_offset, magic = PACK_TRAILER.unpack(data[len(data) - PACK_TRAILER.size :])
        if magic == PACK_TRAILER_MAGIC and index_offset < len(data):
            gens.add(key_generation(data[index_offset : index_offset + HEADER_SIZE]))
    return gens


def _rewrite_packs(repo: Repository, retired: set[int], report: RekeyReport) -> None:
    index = BlockIndex(repo).load(keep_packs=True, fresh=True)
    doomed = doomed_packs(repo)
    writer = PackWriter(BlockIndex(repo), keep_published=True)  # its own empty index
    done = []
    for pack_id in sorted(index.pack_sizes()):
        entries = index.pack_entries.get(pack_id)
        try:
            data = memoryview(repo.storage.get(layout.pack_key(pack_id)))
        except ObjectNotFound:
            continue
        offsets = [(loc.offset, loc.length) for _b, loc in entries or ()]
        old = _pack_generations(data, offsets) & retired
        for generation in old:
            _count(report, generation)  # type: ignore[arg-type]
        if not old or pack_id in doomed:
            continue  # current already, or going: gc deletes it once its list is ready
        if entries is None:
            report.unreadable.append(f"{layout.pack_key(pack_id)}: its index cannot be read")
            continue
        try:
            blocks = [
                (block_id, _resealed(repo, data[loc.offset : loc.offset + loc.length], block_id),
                 loc.raw_length)
                for block_id, loc in entries
            ]  # fmt: skip
        except (SealError, CorruptionError, struct.error) as exc:
            report.unreadable.append(f"{layout.pack_key(pack_id)}: {exc}")
            continue  # kept whole: a copy must not spread damage
        for block_id, sealed, raw_length in blocks:
            report.bytes_rewritten += writer.add_sealed(block_id, sealed, raw_length)
        done.append(pack_id)
        del data, blocks
    writer.close()
    report.packs_rewritten = len(done)
    if done:
        d = new_doomed_list(done)
        write_doomed(repo, d)  # first without its locks: a run killed here lists them next time
        write_doomed(repo, DoomedList(d.marker_id, d.created, d.packs,
                                      tuple(live_shared_locks(repo))))  # fmt: skip


def drop_retired(repo: Repository, report: RekeyReport) -> RekeyReport:
    """Step 3 (the module's docstring), after gc's run deleted what it could."""
    if not report.retired:
        return report
    rotated = max((k.added for k in repo.config.data_keys), default="")
    early = _locks_taken_before(repo, rotated)
    drop = []
    for generation in report.retired:
        if report.found.get(generation):
            report.kept.append(
                f"data key {generation}: this run found {report.found[generation]} object(s) "
                "sealed under it; the next gc --rewrite-keys drops it once none is left"
            )
        elif early:
            report.kept.append(
                f"data key {generation}: {early[0]} has held its lock since before the "
                "rotation and may still seal under it; run gc --rewrite-keys again after it ends"
            )
        else:
            drop.append(generation)
    if drop:
        repo.config.data_keys = [k for k in repo.config.data_keys if k.generation not in drop]
        repo.config.dropped_data_keys = sorted({*repo.config.dropped_data_keys, *drop})
        repo.write_config()
        repo.reload_keys()
        report.dropped = drop
    return report


def _locks_taken_before(repo: Repository, when: str) -> list[str]:
    """The live shared locks (every command that reads or writes blocks holds one) taken
    before ``when``, described."""
    out = []
    for key, token in live_shared_locks(repo):
        try:
            record = json.loads(repo.storage.get(key))
        except (ObjectNotFound, ValueError):
            continue
        if str(record.get("created", "")) < when and not lock_ended(repo, key, token):
            out.append(f"{record.get('command', '?')} (pid {record.get('pid')} on "
                       f"{record.get('host')})")  # fmt: skip
    return out
