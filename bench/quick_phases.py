"""Where `pgkura verify --quick` spends its CPU, phase by phase, in one process:

    .venv/bin/python bench/quick_phases.py --repo DIR [--stanza bench] [--key-file FILE]

Times (CPU seconds of the process, time.process_time, which a busy machine inflates least)
the imports of the quick path, opening the repository, loading the index from the store (as
BlockIndex, and lean: repository/index_lean.py, which a whole check uses), reading the
manifests, reading and hashing the packs (the read-ahead, which verify_quick runs
while it parses the index), checking every pack one after another, and checking the WAL
archive; then the whole engine once (its threads overlap the packs and the WAL). The command's own
cold start (the interpreter, click and every verb module) comes on top: `pgkura verify --help`
measures it. Timings are for docs/benchmarks.md; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import time

clock = time.process_time
start = clock()

from pgkura.commands import open_repository  # noqa: E402
from pgkura.config import load_config  # noqa: E402
from pgkura.physical import quick_verify  # noqa: E402
from pgkura.repository.blocks import BlockIndex  # noqa: E402
from pgkura.repository.index_lean import read_lean_index  # noqa: E402
from pgkura.repository.manifest import list_backup_ids, read_manifest  # noqa: E402
from pgkura.repository.stored_check import ReadAhead, check_pack  # noqa: E402
from pgkura.wal.verify import ArchiveCheck, verify_archives  # noqa: E402

IMPORTS = clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--stanza", default="bench")
    parser.add_argument("--key-file")
    args = parser.parse_args()
    print(f"  {'imports':<28} {IMPORTS:7.4f} s")
    last = clock()

    def phase(label: str) -> None:
        nonlocal last
        now = clock()
        print(f"  {label:<28} {now - last:7.4f} s", flush=True)
        last = now

    settings = {"repo": args.repo, "stanza": args.stanza}
    if args.key_file:
        settings["key_file"] = args.key_file
    repo = open_repository(load_config(settings, None))
    phase("open the repository")
    index = BlockIndex(repo).load(keep_packs=True, fresh=True)
    phase(f"index, BlockIndex ({len(index)} blocks)")
    lean = read_lean_index(repo, 2)
    phase(f"index, lean ({'read' if lean is not None else 'not its common form'})")
    manifests = [read_manifest(repo, args.stanza, b) for b in list_backup_ids(repo, args.stanza)]
    phase(f"manifests ({len(manifests)})")
    packs = quick_verify._packs_to_check(index, set(), True)
    with ReadAhead(repo, 2) as ahead:  # what verify_quick does while it parses the index
        for read in ahead.futures.values():
            read.result()
        phase(f"packs read and hashed ahead ({len(ahead.futures)})")
        stored = 0
        for pack in packs:
            early, own = ahead.take(pack.pack_id), pack.pack_id in ahead.own_index
            stored += check_pack(repo, pack, early, own).bytes_read
    phase(f"packs checked ({len(packs)}, {stored / 1e6:.1f} MB)")
    wal = ArchiveCheck()
    verify_archives(repo, [args.stanza], wal, 2, {}, quick=True)
    phase(f"WAL ({wal.checked} files, {wal.checked_in_full} unsealed)")
    report = quick_verify.verify_quick(repo, args.stanza, None, 2)
    phase(f"verify_quick, --jobs 2 ({'ok' if not report.problems else 'PROBLEMS'})")


if __name__ == "__main__":
    main()
