"""Space comes back: delete packs no backup references, repack partly used ones, and never
delete a pack a running command may still use (docs/repository-format.md, "Two-phase
deletion").

One run of :func:`prune`, under the maintenance lock:

1. Earlier doomed lists (repository.doomed) whose waited-for commands have all ended are
   *ready*. Only then are the manifests read: a writer that committed before its lock ended is
   counted.
2. Each ready list's packs are deleted (index object first, then the pack), except a pack
   holding a block that some manifest references and no pack outside the doomed lists holds:
   that one is rescued (struck from the list). Then the list goes.
3. Among the other packs, those holding no referenced block are doomed; when unused bytes
   still exceed ``max_unused`` percent of the repository, the packs with the largest unused
   share are repacked: their live blocks are copied, sealed as they are (so every stored size
   stays true), into new packs with their index objects, and the old packs are doomed.
4. The new doomed list is written, then the shared locks live at that moment are added to it.
   When there are none, it is ready at once and step 2 runs for it (reading the manifests
   again); otherwise a later gc deletes its packs.

Killed at any point, the repository holds every block a manifest references (a copy is
deleted only when another is stored, or the block is unreferenced), and the next run finishes
the work: leftover new packs are unreferenced duplicates, a doomed list without its locks gets
them, a half-deleted list is deleted again.
"""

from __future__ import annotations

import gc as collector
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pgkura.errors import CorruptionError, ObjectNotFound, UsageError
from pgkura.repository import layout
from pgkura.repository.blocks import BlockIndex, PackWriter, read_pack_index
from pgkura.repository.doomed import (
    DoomedList,
    doomed_lists,
    new_doomed_list,
    remove_doomed,
    write_doomed,
)
from pgkura.repository.index_files import consolidate, forget_packs
from pgkura.repository.index_parsed import Entries, parsing_once
from pgkura.repository.live_share import LiveShares
from pgkura.repository.locks import live_shared_locks, lock_ended
from pgkura.repository.manifest import list_stanzas, listed_backups
from pgkura.repository.manifest_refs import PackedIds, forget_unlisted, referenced_ids
from pgkura.repository.repo import Repository
from pgkura.repository.sealed import SealError


@dataclass
class PruneReport:
    dry_run: bool = False
    packs_deleted: int = 0
    bytes_deleted: int = 0
    packs_repacked: int = 0
    #: sealed bytes of live blocks copied into new packs
    bytes_repacked: int = 0
    #: packs listed for deletion that wait for commands still running (deleted by a later gc)
    packs_waiting: int = 0
    commands_waited_for: int = 0
    packs_kept: int = 0
    #: bytes of blocks in the kept packs that no manifest references (at most max_unused
    #: percent of repository_bytes)
    unreferenced_bytes_kept: int = 0
    #: bytes of all packs, and of the blocks manifests reference, after this run
    repository_bytes: int = 0
    referenced_bytes: int = 0
    #: packs whose index object was missing and was written again from the pack's own copy
    indexes_rebuilt: list[str] = field(default_factory=list)
    #: packs kept because what they hold cannot be read (verify names the damage)
    unreadable_kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _References:
    """The blocks the manifests reference. Manifests never change, so each backup's blocks
    are read once per run, from the compact copy in the local cache when it was made from the
    listed manifest (repository/manifest_refs.py), else from the manifest itself. Only a
    manifest's own files say which blocks it needs: a head (repository/manifest_heads.py) is
    never counted, since the blocks it does not list would be deleted."""

    def __init__(self, repo: Repository, gone: set[tuple[str, str]] | None = None) -> None:
        self.repo = repo
        self.gone = gone or set()  # (stanza, id) of manifests a dry run counts as deleted
        self._seen: dict[tuple[str, str], PackedIds | frozenset[bytes]] = {}
        #: the manifests counted by the last read (stanza, id, listed size), and their blocks
        self._last: tuple[list[tuple[str, str, int]], set[bytes]] | None = None

    def read(self) -> set[bytes]:
        """Every referenced block, read now. A manifest that cannot be read stops gc: its
        blocks are unknown, so nothing may be judged unreferenced. When the listings show the
        very manifests the last read counted, at the same sizes, their blocks are the same
        set (a manifest never changes while its key is listed; each backup's blocks are read
        once per run anyway): that set is given again, not a second union of them all (the
        union of a hundred backups' ids is about 20 ms). The caller must not change it."""
        counted: list[tuple[str, str, int]] = []
        for stanza in list_stanzas(self.repo):
            listed_at = time.time()
            listed = listed_backups(self.repo, stanza)
            counted += [
                (stanza, b, size)
                for b, size in sorted(listed.items())
                if (stanza, b) not in self.gone
            ]
            forget_unlisted(self.repo, stanza, set(listed), listed_at)
        if self._last is not None and self._last[0] == counted:
            return self._last[1]
        out: set[bytes] = set()
        for stanza, backup_id, size in counted:
            key = (stanza, backup_id)
            if key not in self._seen:
                self._seen[key] = referenced_ids(self.repo, stanza, backup_id, size)
            out.update(self._seen[key])  # no set per backup: one set of them all
        self._last = (counted, out)
        return out


def checked_max_unused(value: float) -> float:
    """``value`` as --max-unused takes it: a percentage strictly between 0 and 100."""
    if not 0 < value < 100:
        raise UsageError(
            f"--max-unused {value:g} is not a percentage between 0 and 100",
            hint="give the share of the repository that may stay unused, such as --max-unused 5",
        )
    return value


def prune(
    repo: Repository,
    *,
    max_unused: float,
    dry_run: bool = False,
    gone: set[tuple[str, str]] | None = None,
) -> PruneReport:
    """One gc run (the module's docstring); the caller holds the maintenance lock. A dry run
    of an expire counts the manifests ``gone`` (stanza, id) as deleted."""
    # The referenced ids, the index's columns and the live shares are a few hundred thousand
    # objects, none of them garbage in a cycle; the cyclic collector would walk them again
    # and again (about a tenth of an expire's CPU at a hundred backups). Paused, not off: a
    # long-running caller gets it back.
    was_enabled = collector.isenabled()
    collector.disable()
    try:
        with parsing_once(repo):  # the index is read up to four times: parsed once
            return _prune(repo, max_unused, dry_run, gone)
    finally:
        if was_enabled:
            collector.enable()


def _prune(
    repo: Repository, max_unused: float, dry_run: bool, gone: set[tuple[str, str]] | None
) -> PruneReport:
    report = PruneReport(dry_run=dry_run)
    if not dry_run:
        report.bytes_deleted += repo.storage.remove_incomplete()
    earlier = doomed_lists(repo)
    if not dry_run:  # a list whose gc was killed before it listed the locks gets them now
        earlier = [_with_waiting(repo, d) if d.waiting_for is None else d for d in earlier]
    ready = [d for d in earlier if _ready(repo, d)]
    refs = _References(repo, gone if dry_run else None)
    shares = LiveShares(refs.read())  # after the readiness checks: see step 1
    # The index is read once: what this run deletes and writes is known to it, and every
    # later step works from that, so its reads grow with the repository's packs only once.
    # As columns (index_parsed.PackEntries): a location per block is made only for the
    # packs repacked and the merged objects written again.
    index = BlockIndex(repo).load(columns_only=True)
    sizes = index.pack_sizes()
    entries = dict(index.pack_columns)
    doomed_now = set(index.doomed)
    if not dry_run:
        for d in ready:
            gone_packs = _delete_ready(repo, d, shares, entries, sizes, doomed_now, report)
            sizes = {p: n for p, n in sizes.items() if p not in gone_packs}
    waiting = {p for d in earlier if d not in ready for p in d.packs}
    report.packs_waiting = len(waiting & set(sizes))
    planned = dict(entries)  # _plan narrows a repacked pack's entries to the copies it keeps
    planned_shares = shares
    doom, repack, planned_live = _plan(shares, planned, sizes, waiting, max_unused, report)
    rebuild = [p for p in index.unindexed if p in sizes and p not in set(doom + repack) | waiting]
    if dry_run:
        report.packs_deleted += len(doom) + len(repack)
        report.bytes_deleted += sum(sizes[p] for p in doom + repack)
        report.packs_repacked = len(repack)
        report.bytes_repacked = sum(loc.length for p in repack for _b, loc in planned[p])
        known = None if repack else planned_live
        return _totals(report, sizes, shares, entries, set(doom + repack) | waiting, known)
    # An index whose pack is gone: if a backup needs its blocks that is damage for verify to
    # report, not garbage.
    forget_packs(
        repo,
        {
            p
            for p in set(entries) - set(sizes) - index.doomed
            if not shares.holds_referenced(p, entries[p])
        },
    )
    for pack_id in rebuild:  # a referenced pack whose index object is lost gets it back
        repo.storage.put_if_absent(layout.index_key(pack_id), read_pack_index(repo, pack_id))
        report.indexes_rebuilt.append(pack_id)
    copied, fresh = _repack(repo, repack, planned, report)
    for pack_id, held in fresh.items():  # the new packs: one size request each
        entries[pack_id] = held
        sizes[pack_id] = repo.storage.size(layout.pack_key(pack_id)) or 0
    going = set(waiting)
    doomed = doom + copied
    if doomed:
        d = new_doomed_list(doomed)
        write_doomed(repo, d)
        d = _with_waiting(repo, d)
        if d.waiting_for:
            report.packs_waiting += len(d.packs)
            report.commands_waited_for = len(d.waiting_for)
            going |= set(d.packs)
        else:
            shares = shares.again(refs.read())  # writers that committed since count
            # Packs a writer stored since the index was read are not in ``entries``: their
            # copies do not count as "elsewhere", so at worst a pack is rescued, never lost.
            doomed_now |= set(d.packs) | waiting
            gone_packs = _delete_ready(repo, d, shares, entries, sizes, doomed_now, report)
            sizes = {p: n for p, n in sizes.items() if p not in gone_packs}
    consolidate(repo, at_least=2, redundant=True)  # the next command reads a few index objects
    known = planned_live if shares is planned_shares and not repack else None
    return _totals(report, sizes, shares, entries, going, known)


def _ready(repo: Repository, d: DoomedList) -> bool:
    return d.waiting_for is not None and all(lock_ended(repo, k, t) for k, t in d.waiting_for)


def _with_waiting(repo: Repository, d: DoomedList) -> DoomedList:
    """The list with the shared locks live now, written back. Any command that loads the
    index from now on sees the list."""
    d = DoomedList(d.marker_id, d.created, d.packs, tuple(live_shared_locks(repo)))
    write_doomed(repo, d)
    return d


def _delete_ready(
    repo: Repository,
    d: DoomedList,
    shares: LiveShares,
    entries: dict[str, Entries],
    sizes: dict[str, int],
    doomed: set[str],
    report: PruneReport,
) -> set[str]:
    """Delete the packs of a ready list that no referenced block needs, rescue the others;
    return the ids of the packs deleted."""
    elsewhere = shares.held_ids(entries, [p for p in entries if p not in doomed and p in sizes])
    rescued = []
    going = []
    deleted: set[str] = set()
    for pack_id in d.packs:
        blocks = entries.get(pack_id)
        if pack_id in sizes and blocks is None:
            rescued.append(pack_id)  # its content cannot be read now: keep it
            continue
        if blocks and shares.needs(pack_id, blocks, elsewhere):
            rescued.append(pack_id)
            continue
        going.append(pack_id)
    # The index first (every index object that names them): a pack without an index is still
    # in the list, deleted next time.
    forget_packs(repo, set(going), absorb_all_but=doomed)
    for pack_id in going:
        if pack_id in sizes:
            repo.storage.delete(layout.pack_key(pack_id))
            report.packs_deleted += 1
            report.bytes_deleted += sizes[pack_id]
            deleted.add(pack_id)
    remove_doomed(repo, d)
    report.packs_kept += len(rescued)
    return deleted


def _plan(
    shares: LiveShares,
    entries: dict[str, Entries],
    sizes: dict[str, int],
    waiting: set[str],
    max_unused: float,
    report: PruneReport,
) -> tuple[list[str], list[str], dict[str, int]]:
    """(packs to doom as they are, packs to repack, the live bytes of each pack judged)
    among the packs not already waiting."""
    readable = {p for p in sizes if p in entries and p not in waiting}
    report.unreadable_kept = sorted(p for p in sizes if p not in entries)
    live, chosen = shares.owners(entries, readable)
    doom = sorted(p for p in readable if live[p] == 0)
    kept = sorted(p for p in readable if live[p] > 0)
    total = sum(sizes[p] for p in kept) + sum(sizes[p] for p in sizes if p not in readable)
    # Unused: the bytes of blocks no manifest needs from this pack. A pack's own copy of its
    # index is not counted: every pack has one, so repacking would never make it smaller.
    unused = {p: shares.stored_bytes(p, entries[p]) - live[p] for p in kept}
    # Repacking a pack takes its unused bytes out of the repository as well: the share is
    # judged against what the repository will hold.
    left = sum(unused.values())
    repack: list[str] = []
    for pack_id in sorted(kept, key=lambda p: unused[p] / sizes[p], reverse=True):
        if left <= total * max_unused / 100 or unused[pack_id] / sizes[pack_id] * 100 <= max_unused:
            break
        repack.append(pack_id)
        left -= unused[pack_id]
        total -= unused[pack_id]
    # Only the chosen copy of a duplicated block is copied by a repack.
    for pack_id in repack:
        entries[pack_id] = [
            e for e, keep in zip(entries[pack_id], chosen[pack_id], strict=True) if keep
        ]
    return doom, repack, live


def _repack(
    repo: Repository,
    packs: list[str],
    entries: dict[str, Entries],
    report: PruneReport,
) -> tuple[list[str], dict[str, Entries]]:
    """Copy the live blocks of ``packs`` into new packs (index objects included); return the
    packs whose copy is complete, now to be doomed, and the new packs' entries. A pack with a
    damaged live block is kept whole: verify reports it, and a copy must not spread the
    damage."""
    # Its own empty index: every block is written.
    writer = PackWriter(BlockIndex(repo), keep_published=True)
    done = []
    for pack_id in packs:
        live = sorted(entries[pack_id], key=lambda e: e[1].offset)  # its chosen copies
        try:
            data = memoryview(repo.storage.get(layout.pack_key(pack_id)))
        except ObjectNotFound:
            continue
        pieces = []
        try:
            for block_id, loc in live:
                piece = data[loc.offset : loc.offset + loc.length]
                repo.unseal(piece, expect_digest=block_id)
                pieces.append((block_id, piece, loc.raw_length))
        except (SealError, CorruptionError):
            report.unreadable_kept.append(pack_id)
            continue
        for block_id, piece, raw_length in pieces:
            report.bytes_repacked += writer.add_sealed(block_id, piece, raw_length)
        done.append(pack_id)
        del data, pieces
    writer.close()
    report.packs_repacked = len(done)
    return done, dict(writer.take_published())


def _totals(
    report: PruneReport,
    sizes: dict[str, int],
    shares: LiveShares,
    entries: dict[str, Entries],
    going: set[str],
    known_live: dict[str, int] | None = None,
) -> PruneReport:
    """The report's sizes of what stays. ``known_live``: the plan's live bytes per pack,
    still true when the referenced blocks are the plan's and nothing was repacked: the packs
    gone since owned no copy (a doomed pack's live bytes are 0), so no other pack's choice of
    copies changed, and each staying pack was judged by the plan."""
    staying = [p for p in sizes if p not in going]
    judged = {p for p in staying if p in entries}
    if known_live is not None and judged <= known_live.keys():
        live = {p: known_live[p] for p in judged}
    else:
        live, _chosen = shares.owners(entries, judged)
    blocks = sum(shares.stored_bytes(p, entries[p]) for p in staying if p in entries)
    report.repository_bytes = sum(sizes[p] for p in staying)
    report.referenced_bytes = sum(live.values())
    report.packs_kept = len(staying)
    report.unreferenced_bytes_kept = blocks - report.referenced_bytes
    return report
