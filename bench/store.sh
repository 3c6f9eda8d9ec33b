#!/usr/bin/env bash
# The controller's store at N members (default 10,000), one line per store:
# saves one at a time, each durable before the next as an API write is
# (median and p99 latency, saves per second), a cold load of them all,
# parsed (ms), and the space used. Stores: vnet-controller's JSON files,
# its SQLite database (the default: WAL, synchronous=FULL, a transaction
# per save), and, when PostgreSQL's server is installed, its PostgreSQL
# store on a throwaway cluster (Unix socket only, started and removed here). The files and SQLite live in a temporary directory under
# target/ (a disk, not tmpfs: fsync must cost what it costs). Run as root
# (the cluster runs as the postgres user), alone (2-core machine).
#   bench/store.sh                      10,000 members
#   MEMBERS=N bench/store.sh
#   VNET_BIN_DIR=/some/target/release   another build's binaries
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MEMBERS=${MEMBERS:-10000}
if [ -n "${VNET_BIN_DIR:-}" ]; then
  BIN=$VNET_BIN_DIR
else
  cargo build --release --locked -p vnet-loadgen --bin vnet-storebench >/dev/null
  BIN=$REPO/target/release
fi
mkdir -p "$REPO/target"
WORK=$(mktemp -d "$REPO/target/vnet-storebench.XXXXXX")
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
PGDIR=""

cleanup() {
  if [ -n "$PGDIR" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [ -n "$PGDIR" ] && rm -rf "$PGDIR"
  rm -rf "$WORK"
}
trap cleanup EXIT

PG_ARGS=()
if [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ]; then
  PGDIR=$(mktemp -d /tmp/vnet-storebench-pg.XXXXXX)
  chmod 755 "$PGDIR"
  chown postgres:postgres "$PGDIR"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDIR/data" -A trust -U postgres -E UTF8 >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
    -o "-c listen_addresses='' -c unix_socket_directories='$PGDIR' -c fsync=on" start >/dev/null
  runuser -u postgres -- "$PG_BIN/createdb" -h "$PGDIR" vnet
  PG_ARGS=(--postgres "host=$PGDIR user=postgres dbname=vnet")
else
  echo "(PostgreSQL's server is not installed: its line is left out)" >&2
fi

"$BIN/vnet-storebench" --members "$MEMBERS" --dir "$WORK/stores" "${PG_ARGS[@]}"
