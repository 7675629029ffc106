"""A backup_manifest in PostgreSQL's own format, left in every restored data directory so
that ``pg_verifybackup -n DIR`` can check the restore before it is started.

The format is what pg_basebackup of the backup's major writes: one JSON object per file on its
own line, CRC-32C checksums as the hex of the checksum's bytes in memory (little-endian), the
WAL ranges the backup needs, and a SHA-256 of everything before the "Manifest-Checksum" key.
Version 2 (PostgreSQL 17 and newer, ``Capabilities.backup_manifest_version``) adds the
cluster's System-Identifier, which pg_verifybackup then compares with pg_control; older
pg_verifybackups know only version 1.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

import google_crc32c

from pgkura.pg.versions import capabilities
from pgkura.repository.manifest import Manifest

# Written or changed by restore, or ignored by pg_verifybackup anyway.
_LEFT_OUT = ("pg_wal/", "postgresql.auto.conf", "recovery.signal", "standby.signal")


def _line(path: str, size: int, mtime: float, crc_le_hex: str) -> str:
    modified = time.strftime("%Y-%m-%d %H:%M:%S GMT", time.gmtime(mtime))
    return (
        f'{{ "Path": {json.dumps(path)}, "Size": {size}, "Last-Modified": "{modified}", '
        f'"Checksum-Algorithm": "CRC32C", "Checksum": "{crc_le_hex}" }}'
    )


def _le(crc_be_hex: str) -> str:
    return int(crc_be_hex, 16).to_bytes(4, "little").hex()


def render(manifest: Manifest, written: Iterable[tuple[str, bytes]]) -> str:
    """The manifest text; ``written`` are files restore wrote itself (backup_label, ...)."""
    lines = []
    for name, content in written:
        crc = google_crc32c.value(content)
        lines.append(_line(name, len(content), time.time(), crc.to_bytes(4, "little").hex()))
    for f in manifest.files:
        if f.type != "file" or f.crc32c is None or f.path.startswith(_LEFT_OUT):
            continue
        if f.path in _LEFT_OUT:
            continue
        lines.append(_line(f.path, f.size, f.mtime, _le(f.crc32c)))
    timeline = manifest.timeline or 1
    start = manifest.start_lsn or "0/0"
    end = manifest.stop_lsn or start
    version = capabilities(manifest.pg_version).backup_manifest_version
    head = f'{{ "PostgreSQL-Backup-Manifest-Version": {version},\n'
    if version >= 2:
        head += f'"System-Identifier": {int(manifest.system_identifier)},\n'
    body = (
        head
        + '"Files": [\n'
        + ",\n".join(lines)
        + "\n],\n"
        + '"WAL-Ranges": [\n'
        + f'{{ "Timeline": {timeline}, "Start-LSN": "{start}", "End-LSN": "{end}" }}\n'
        + "],\n"
    )
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body + f'"Manifest-Checksum": "{digest}"}}\n'


def write_pg_manifest(target: Path, manifest: Manifest, written: dict[str, bytes]) -> None:
    from pgkura.durable import write_file

    write_file(target / "backup_manifest", render(manifest, written.items()).encode(), mode=0o600)
