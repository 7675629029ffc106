#!/usr/bin/env bash
# A/B of two commits on one repository, alternated: restore and verify of an offline backup of
# pgbench scale 50 (--jobs 2, 3 rounds), and archive-get of one 16 MiB segment (5 rounds).
# Run as root. PY is a pgkura venv's python (its checkout is "new"); OLD_SRC is the src/
# directory of a checkout of the other commit ("old"), readable by postgres, with the compiled
# pgkura/pg/_pagesum*.so copied into it. Timings are for docs/benchmarks.md, never a test.
#
#   PY=/path/new/.venv/bin/python OLD_SRC=/path/old/src bench/ab_commits.sh
set -euo pipefail
: "${PY:?set PY to the new checkout venv python}" "${OLD_SRC:?set OLD_SRC to the old checkout src}"
PG=${PG:-/usr/lib/postgresql/15/bin}
MAIN="import sys; from pgkura.entry import main; sys.argv[0]='pgkura'; main()"
new() { runuser -u postgres -- "$PY" -c "$MAIN" "$@"; }
old() { runuser -u postgres -- env PYTHONPATH="$OLD_SRC" "$PY" -c "$MAIN" "$@"; }
B=$(mktemp -d /var/tmp/pgkura-ab-XXXX); chown postgres "$B"
trap 'runuser -u postgres -- $PG/pg_ctl -D $B/pgdata -m immediate stop >/dev/null 2>&1 || true; rm -rf "$B"' EXIT
sql() { runuser -u postgres -- $PG/psql -h "$B" -p 54997 -U postgres -Atqc "$1" postgres; }
runuser -u postgres -- $PG/initdb -D "$B/pgdata" -A trust -U postgres --data-checksums >/dev/null
printf "port = 54997\nunix_socket_directories = '%s'\nlisten_addresses = ''\nwal_keep_size = 1GB\n" \
  "$B" >> "$B/pgdata/postgresql.conf"
runuser -u postgres -- $PG/pg_ctl -D "$B/pgdata" -w -l "$B/log" start >/dev/null
runuser -u postgres -- $PG/pgbench -h "$B" -p 54997 -U postgres -i -q -s 50 postgres >/dev/null 2>&1
seg=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
sql "SELECT pg_switch_wal()" >/dev/null
runuser -u postgres -- $PG/pg_ctl -D "$B/pgdata" -w -m fast stop >/dev/null
new --repo "$B/repo" init --compress zstd:3 >/dev/null
new --repo "$B/repo" --pgdata "$B/pgdata" archive-push "$B/pgdata/pg_wal/$seg"
new --repo "$B/repo" --pgdata "$B/pgdata" backup --type offline --jobs 2 >/dev/null
timed() { local s e; sync; sleep 1; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
for i in 1 2 3; do
  for v in old new; do
    rm -rf "$B/r"
    echo "$v restore $i: $(timed $v --repo "$B/repo" restore --target-dir "$B/r" --jobs 2) s"
  done
done
for i in 1 2 3; do
  for v in old new; do echo "$v verify $i: $(timed $v --repo "$B/repo" verify --jobs 2) s"; done
done
for i in 1 2 3 4 5; do
  for v in old new; do
    rm -f "$B/seg"
    echo "$v archive-get $i: $(timed $v --repo "$B/repo" archive-get "$seg" "$B/seg") s"
  done
done
