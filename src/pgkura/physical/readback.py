"""Reading back stored files to check them, in one pass over each block: it is fetched,
unsealed (decompressed, its keyed BLAKE3 compared with its id), fed to its file's CRC-32C and,
for relation files, to the data page checksum.

The work is cut into units of about ``UNIT_BYTES`` of file content, whatever the files: one big
relation file (pgbench_accounts is most of a pgbench cluster) is spread over every worker, and
hundreds of small catalog files share a unit, so the pool's costs per call are paid per unit,
not per file. Units run in forked worker processes: numpy's page checksum (before the C kernel)
held the GIL for much of its time (with threads, two workers were no faster than one), and even
without it the Python work around each block's zstd and BLAKE3 calls did (two threads took
0.40 s where two processes take 0.28 s on the scale-50 bench repository). A unit returns the
CRC-32C and size of each run of a file's blocks it read; the parent joins them with
``crc32c_combine``.

A block that several files (or one file, several times) hold is read and checked once: its
other places are references whose CRC-32C and size the parent takes from the one read. Not so
for files whose pages are checked, since a page's checksum depends on where it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import google_crc32c

from pgkura.codec.crc import crc32c_combine
from pgkura.errors import PgkuraError
from pgkura.pg.relfile import BLCKSZ
from pgkura.physical.units import cancelling, forked_workers, worker_result
from pgkura.repository.blocks import BlockReader

UNIT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class FileToCheck:
    path: str
    size: int
    crc32c: str | None
    blocks: tuple[str, ...]
    #: Block number of the file's first page when its page checksums are checked, else None.
    first_page: int | None = None
    #: Pages at or past this LSN may be torn (online backups): their failures do not count.
    start_lsn: int | None = None


@dataclass
class FileResult:
    size: int = 0
    crc32c: int = 0
    error: str | None = None
    bad_pages: list[int] = field(default_factory=list)

    def problems(self, f: FileToCheck) -> list[str]:
        """What is wrong with ``f``, in words that name the file (the caller adds the backup)."""
        if self.error is not None:
            return [f"{f.path}: {self.error}"]
        out = []
        if self.size != f.size:
            out.append(f"{f.path}: {self.size} bytes read back, the manifest says {f.size}")
        elif f.crc32c is not None and f"{self.crc32c:08x}" != f.crc32c:
            out.append(
                f"{f.path}: CRC-32C {self.crc32c:08x} does not match the manifest's {f.crc32c}"
            )
        if self.bad_pages:
            bad = sorted(self.bad_pages)
            out.append(page_failures(f.path, bad[:5], len(bad)))
        return out


def page_failures(path: str, shown: Sequence[int], count: int) -> str:
    """``path: data page checksum failures in block(s) 3, 7 and 2 more``."""
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    return f"{path}: data page checksum failures in block(s) {', '.join(map(str, shown))}{more}"


# (file number, index of the first block, index past the last block, byte offset in the file)
Piece = tuple[int, int, int, int]
# (file number, index of the first block, CRC-32C, bytes, error, page failures)
PieceResult = tuple[int, int, int, int, str | None, list[int]]
# A block read elsewhere: (file number, index of the block, block id)
Ref = tuple[int, int, str]
# What a unit returns: its pieces, and the CRC-32C and size of each shared block it read.
UnitResult = tuple[list[PieceResult], dict[str, tuple[int, int]]]

# What forked workers inherit: set by check_files before the pool starts.
_reader: BlockReader | None = None
_files: Sequence[FileToCheck] = ()
_shared: set[str] = set()  # ids of blocks that are also referenced from elsewhere


def check_files(
    reader: BlockReader,
    files: Sequence[FileToCheck],
    jobs: int,
    meanwhile: Callable[[], None] | None = None,
) -> list[FileResult]:
    """Read back every block of ``files``; one result per file, in order. ``meanwhile`` runs in
    this process while the workers read (it is called once in any case)."""
    global _reader, _files, _shared
    refs: list[Ref] = []
    shared: set[str] = set()
    units = _units(reader, files, shared, refs)
    pieces: list[list[PieceResult]] = [[] for _ in files]
    block_sums: dict[str, tuple[int, int]] = {}
    _reader, _files, _shared = reader, files, shared
    jobs = reader.repo.workers_for(jobs)
    try:
        if jobs <= 1 or len(units) <= 1 or not reader.repo.fork_safe:
            for unit in units:
                _collect(pieces, block_sums, _check_unit(unit))
            if meanwhile is not None:
                meanwhile()
        else:
            # Forked: the workers inherit the index and the file list instead of unpickling
            # them. Every worker is forked at the first submit, before ``meanwhile`` starts
            # threads.
            with cancelling(forked_workers(min(jobs, len(units)))) as pool:
                futures = [pool.submit(_check_unit, unit) for unit in units]
                if meanwhile is not None:
                    meanwhile()
                for future in futures:
                    done = worker_result(
                        future,
                        "the check did not finish",
                        "run it again, with fewer --jobs if memory is short",
                    )
                    _collect(pieces, block_sums, done)
    finally:
        _reader, _files, _shared = None, (), set()
    for file_no, index, hex_id in refs:
        crc_size = block_sums.get(hex_id)
        if crc_size is None:  # its read failed, and that file's problem says how
            message = f"block {hex_id[:16]} cannot be read (it is shared with another file)"
            pieces[file_no].append((file_no, index, 0, 0, message, []))
        else:
            pieces[file_no].append((file_no, index, *crc_size, None, []))
    results = [FileResult() for _ in files]
    for result, parts in zip(results, pieces, strict=True):
        for _file_no, _first, crc, size, error, bad in sorted(parts, key=lambda p: p[1]):
            if error is not None:
                result.error = result.error or error
            result.crc32c = crc32c_combine(result.crc32c, crc, size)
            result.size += size
            result.bad_pages += bad
    return results


def _collect(
    pieces: list[list[PieceResult]], block_sums: dict[str, tuple[int, int]], done: UnitResult
) -> None:
    for piece in done[0]:
        pieces[piece[0]].append(piece)
    block_sums.update(done[1])


def _units(
    reader: BlockReader, files: Sequence[FileToCheck], shared: set[str], refs: list[Ref]
) -> list[list[Piece]]:
    """Runs of consecutive blocks, about UNIT_BYTES of content per unit. A block met again is
    left out of the runs and listed in ``refs``; ``shared`` gets the ids of such blocks."""
    block_size = reader.repo.config.block_size
    uses = Counter(b for f in files if f.first_page is None for b in f.blocks)
    units: list[list[Piece]] = []
    unit: list[Piece] = []
    unit_bytes = 0
    for file_no, f in enumerate(files):
        first = 0
        offset = start = 0
        for i, hex_id in enumerate(f.blocks):
            loc = reader.index.get(bytes.fromhex(hex_id))
            raw = loc.raw_length if loc is not None else block_size
            offset += raw
            if f.first_page is None and uses[hex_id] > 1:
                if hex_id in shared:
                    if first < i:
                        unit.append((file_no, first, i, start))
                    refs.append((file_no, i, hex_id))
                    first, start = i + 1, offset
                    continue
                shared.add(hex_id)
            unit_bytes += raw
            if unit_bytes >= UNIT_BYTES:
                unit.append((file_no, first, i + 1, start))
                units.append(unit)
                unit, unit_bytes = [], 0
                first, start = i + 1, offset
        if first < len(f.blocks) or not f.blocks:
            unit.append((file_no, first, len(f.blocks), start))
    if unit:
        units.append(unit)
    return units


def _check_unit(unit: list[Piece]) -> UnitResult:
    """Read, unseal and checksum the blocks of one unit; runs in a worker."""
    assert _reader is not None
    out: list[PieceResult] = []
    block_sums: dict[str, tuple[int, int]] = {}
    pages: list[bytes] = []  # the unit's relation pages, checked in one call at the end
    page_runs: list[tuple[int, int, int]] = []  # (piece number in out, first blkno, pages)
    for file_no, first, last, offset in unit:
        f = _files[file_no]
        ids = [bytes.fromhex(b) for b in f.blocks[first:last]]
        keep = f.first_page is not None
        held: list[bytes] = []
        crc = 0
        size = 0
        try:
            for hex_id, block in zip(
                f.blocks[first:last], _reader.iter_many(ids, f.path), strict=True
            ):
                if hex_id in _shared:
                    block_sums[hex_id] = (google_crc32c.value(block), len(block))
                crc = google_crc32c.extend(crc, block)
                size += len(block)
                if keep:
                    held.append(block)
        except PgkuraError as exc:
            out.append((file_no, first, 0, 0, exc.message, []))
            continue
        out.append((file_no, first, crc, size, None, []))
        if f.first_page is not None and size and size % BLCKSZ == 0 and offset % BLCKSZ == 0:
            pages += held
            page_runs.append((len(out) - 1, f.first_page + offset // BLCKSZ, size // BLCKSZ))
    if page_runs:
        _check_pages(out, pages, page_runs)
    return out, block_sums


def _check_pages(
    out: list[PieceResult], pages: list[bytes], page_runs: list[tuple[int, int, int]]
) -> None:
    from pgkura.pg.checksum import verify_pages_at

    blknos: list[int] = []
    owner: list[int] = []  # which run each page belongs to
    for run, (_, blkno, n) in enumerate(page_runs):
        blknos += range(blkno, blkno + n)
        owner += [run] * n
    buf = pages[0] if len(pages) == 1 else b"".join(pages)
    for failure in verify_pages_at(buf, blknos):
        piece_no = page_runs[owner[failure.index]][0]
        start_lsn = _files[out[piece_no][0]].start_lsn
        if start_lsn is None or failure.lsn < start_lsn:
            out[piece_no][5].append(failure.blkno)
