"""Stanza catalogs: what tells a current manifest from one replayed from an older copy of the
repository (docs/repository-format.md, "Catalogs").

Whoever holds the bucket of an encrypted repository cannot forge an object, but can put back
one it saw earlier: a manifest that expire deleted, or an older state of a stanza. A catalog
is the sealed list of a stanza's committed backups, each with its manifest's keyed digest,
numbered by an epoch that grows by one at each commit or deletion. Each epoch is its own
object, ``catalogs/<stanza>/<epoch>``, written with put-if-absent (two writers racing for an
epoch: one wins, the other reads it and takes the next one), so no update is lost and none is
ever replaced. The newest epoch is the catalog.

A backup's catalog epoch is written *before* its manifest, a deletion's *after* the manifest
is deleted: so a manifest the newest catalog does not list, or lists with another digest, is
never one pgkura wrote last; reading it is refused, naming it. An epoch that lists a backup
whose manifest is absent (a backup killed before its commit, a deletion killed before its
epoch) is harmless, and the next commit leaves such entries out.

Only encrypted repositories have catalogs: in an unencrypted one whoever holds the bucket can
write any object, so a replay is no threat worth a check there.
"""

from __future__ import annotations

import json
import weakref

from pgkura.errors import CorruptionError, ObjectNotFound
from pgkura.repository import layout
from pgkura.repository.catalog_mark import check_not_rolled_back, remember
from pgkura.repository.layout import catalog_key as epoch_key
from pgkura.repository.layout import catalog_prefix
from pgkura.repository.repo import Repository, iso, utc_now
from pgkura.repository.sealed import HEADER_SIZE, SealError, sealed_digest

#: Older epochs kept besides the newest (readers racing a writer still find theirs).
KEEP_EPOCHS = 3


class Catalog:
    """One epoch of a stanza's catalog: backup id -> the keyed digest of its manifest."""

    __slots__ = ("backups", "epoch", "stanza")

    def __init__(self, stanza: str, epoch: int, backups: dict[str, str]) -> None:
        self.stanza, self.epoch, self.backups = stanza, epoch, backups

    @property
    def key(self) -> str:
        return epoch_key(self.stanza, self.epoch)

    def to_json(self) -> bytes:
        doc = {"stanza": self.stanza, "epoch": self.epoch, "written": iso(utc_now()),
               "backups": dict(sorted(self.backups.items()))}  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes) -> Catalog:
        doc = json.loads(raw)
        catalog = cls(str(doc["stanza"]), int(doc["epoch"]), dict(doc["backups"]))
        if catalog.key != key:  # the tag binds the key already; this is the content's word
            raise ValueError(f"it holds epoch {catalog.epoch} of stanza {catalog.stanza!r}")
        return catalog


# The newest catalog a repository object read, per stanza: manifests are read many at a time.
_SEEN: weakref.WeakKeyDictionary[Repository, dict[str, Catalog | None]] = (
    weakref.WeakKeyDictionary()
)


def _epochs(repo: Repository, stanza: str) -> list[int]:
    prefix = catalog_prefix(stanza)
    out = []
    for obj in repo.storage.list(prefix):
        name = obj.key[len(prefix) :]
        if len(name) == 16 and all(c in "0123456789abcdef" for c in name):
            out.append(int(name, 16))
    return sorted(out)


def latest(repo: Repository, stanza: str) -> Catalog | None:
    """The stanza's newest catalog (None: it has none: a stanza of an unencrypted repository,
    or one whose manifests an earlier pgkura wrote); CorruptionError when it does not open."""
    for _attempt in range(3):
        epochs = _epochs(repo, stanza)
        if not epochs:
            found = None
            break
        key = epoch_key(stanza, epochs[-1])
        try:
            found = Catalog.from_json(key, repo.get_record(key))
            break
        except ObjectNotFound:
            continue  # an older epoch a writer deleted just now: list again
        except (SealError, ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(
                f"the catalog {key} of stanza {stanza!r} is damaged: {exc}",
                hint="run pgkura verify; restore the object from a copy of the repository",
            ) from None
    else:  # the newest epoch listed vanished three times: never take that for "none"
        raise CorruptionError(
            f"the newest catalog of stanza {stanza!r} cannot be read: it is listed, then gone",
            hint="run the command again; run pgkura verify",
        )
    _SEEN.setdefault(repo, {})[stanza] = found
    return found


def _newest(repo: Repository, stanza: str) -> int:
    """The newest epoch of the stanza's catalog in the store now (0: none)."""
    current = latest(repo, stanza)
    return current.epoch if current else 0


def _raise_version(repo: Repository) -> None:
    """Version 5 before the first epoch: a version 4 pgkura would write manifests no catalog
    lists (refused afterwards as replayed). pgkura.json is read again first, so that only its
    version changes (a key command may have rewritten it since this command opened it)."""
    from pgkura.repository.repoconfig import ENCRYPTED_V5

    if repo.config.version >= ENCRYPTED_V5:
        return
    adopt_all(repo)
    doc = json.loads(repo.storage.get(layout.CONFIG_KEY))
    repo.config.version = ENCRYPTED_V5
    if int(doc.get("version", 0)) < ENCRYPTED_V5:
        doc["version"] = ENCRYPTED_V5
        repo.storage.put(layout.CONFIG_KEY, json.dumps(doc, indent=2).encode())


def adopt_all(repo: Repository) -> None:
    """Before an encrypted repository goes to version 5: every stanza with manifests gets its
    first epoch (listing them), so that from then on a stanza with manifests and no catalog
    is one whose catalog was removed."""
    from pgkura.repository.manifest import list_stanzas

    for stanza in list_stanzas(repo):
        while not _epochs(repo, stanza):
            first = Catalog(stanza, 1, _adopt(repo, stanza))
            if repo.put_record_if_absent(first.key, first.to_json()):
                break


def _write_next(repo: Repository, stanza: str, change: dict[str, str | None]) -> None:
    """Write the next epoch: the newest one with ``change`` (id -> digest; None removes)."""
    _raise_version(repo)
    while True:
        current = latest(repo, stanza)
        what = f"cannot change the catalog {catalog_prefix(stanza)}"
        check_not_rolled_back(
            repo, stanza, current.epoch if current else 0, what, lambda: _newest(repo, stanza)
        )
        backups = dict(current.backups) if current else _adopt(repo, stanza)
        for backup_id, digest in change.items():
            if digest is None:
                backups.pop(backup_id, None)
            else:
                backups[backup_id] = digest
        epoch = (current.epoch if current else 0) + 1
        new = Catalog(stanza, epoch, backups)
        if repo.put_record_if_absent(new.key, new.to_json()):
            break  # else another writer took this epoch: build on top of its
    _SEEN.setdefault(repo, {})[stanza] = new
    remember(repo, stanza, epoch)
    old = [epoch_key(stanza, e) for e in _epochs(repo, stanza) if e < epoch - KEEP_EPOCHS]
    if old:
        repo.storage.delete_many(old)


def _manifests(repo: Repository, stanza: str) -> dict[str, str]:
    """id -> key of the manifests stored now."""
    prefix = layout.snapshot_prefix(stanza)
    keys = (o.key for o in repo.storage.list(prefix))
    return {k[len(prefix) :]: k for k in keys if "/" not in k[len(prefix) :]}


def _adopt(repo: Repository, stanza: str) -> dict[str, str]:
    """The first catalog of a stanza whose manifests an earlier pgkura wrote: it lists them
    as they are (their headers' digests)."""
    out = {}
    for backup_id, key in _manifests(repo, stanza).items():
        try:
            out[backup_id] = sealed_digest(repo.storage.get(key, 0, HEADER_SIZE)).hex()
        except (ObjectNotFound, SealError):
            continue
    return out


def record_commit(repo: Repository, stanza: str, backup_id: str, digest: bytes) -> None:
    """Before a backup's manifest is written (under the stanza's backup lock): the catalog
    lists it. Entries whose manifest is gone are left out (see the module's docstring)."""
    if repo.cipher is None:
        return
    present = _manifests(repo, stanza)
    if backup_id in present:
        return  # the manifest's put-if-absent refuses it: the catalog keeps the stored one
    current = latest(repo, stanza)
    listed = current.backups if current else {}
    gone: dict[str, str | None] = {b: None for b in listed if b not in present}
    _write_next(repo, stanza, {**gone, backup_id: digest.hex()})


def record_deletion(repo: Repository, stanza: str, backup_id: str) -> None:
    """After a backup's manifest was deleted: the catalog no longer lists it."""
    if repo.cipher is None:
        return
    _write_next(repo, stanza, {backup_id: None})


def _check_no_catalog(repo: Repository, stanza: str, backup_id: str, key: str) -> None:
    """A stanza without catalog is one of a version 4 repository; in version 5 every stanza
    with manifests has one (adopt_all), so its catalog was removed."""
    from pgkura.repository.repoconfig import ENCRYPTED_V5

    if repo.config.version < ENCRYPTED_V5:
        return
    raise CorruptionError(
        f"the manifest of backup {backup_id} ({key}) has no catalog to be checked against: "
        f"{layout.catalog_prefix(stanza)} is empty in a repository of format version "
        f"{repo.config.version}; its catalog was removed, or the manifest was put back from an "
        "older copy of the repository",
        hint="do not trust this repository's store; restore the catalog from a copy you trust",
    )


def check_manifest(repo: Repository, stanza: str, backup_id: str, key: str, data: bytes) -> None:
    """Raise CorruptionError, naming the manifest, when the stanza's newest catalog does not
    list it as this version (it was replayed from an older copy of the repository)."""
    if repo.cipher is None:
        return
    seen = _SEEN.get(repo, {})
    digest = sealed_digest(data).hex()
    catalog = seen[stanza] if stanza in seen else latest(repo, stanza)
    if catalog is None or catalog.backups.get(backup_id) != digest:
        catalog = latest(repo, stanza)  # a commit since it was read
    what = f"the manifest of backup {backup_id} ({key})"
    if catalog is None:
        _check_no_catalog(repo, stanza, backup_id, key)
        # A repository of version 4: every epoch gone and the version lowered, if this host
        # has seen one.
        check_not_rolled_back(repo, stanza, 0, what, lambda: _newest(repo, stanza))
        return
    if catalog.backups.get(backup_id) == digest:
        check_not_rolled_back(repo, stanza, catalog.epoch, what, lambda: _newest(repo, stanza))
        return
    why = (
        "is not the version its catalog lists"
        if backup_id in catalog.backups
        else "is not in its catalog (the backup was deleted, or the catalog is older than it)"
    )
    raise CorruptionError(
        f"the manifest of backup {backup_id} ({key}) {why}, {catalog.key}: a snapshot "
        "replayed from an older copy of the repository",
        hint="do not trust this repository's store; restore from another backup, and compare "
        "the store with a copy you trust",
    )
