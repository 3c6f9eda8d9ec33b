#!/usr/bin/env bash
# Issue 13's scale benchmark: one root (vnet-planet) on loopback and
# vnet-loadgen simulating N nodes against it, each from its own 127.1.x.y
# address (real identities, cached in target/loadgen/identities: the first
# run makes them, about 0.2 s each on one core). Per scenario one line:
# peers, time to admit them all, the root's RSS idle and with them, per peer,
# its CPU keeping them alive (% of a core, and per 1,000 peers), and the time
# a restarted root takes to hold them all again. Run alone (2-core machine:
# no build or other benchmark at the same time). Nothing leaves loopback.
#   bench/scale.sh                     the root scenario with 1,000, 2,000 and 5,000 peers
#   SCALE_PEERS=N bench/scale.sh       the root scenario alone with N peers
#   VNET_BIN_DIR=/some/target/release  another build's binaries
#   WINDOW_S=30                        seconds of keepalive CPU measured
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
if [ -n "${VNET_BIN_DIR:-}" ]; then
  BIN=$VNET_BIN_DIR
else
  cargo build --release --locked -p vnet-planet -p vnet-idtool -p vnet-loadgen --bins >/dev/null
  BIN=$REPO/target/release
fi
PORT=${PORT:-29993}
WINDOW_S=${WINDOW_S:-30}
WORK=$(mktemp -d /tmp/vnet-scale.XXXXXX)

stop_root() {
  local pid
  pid=$(cat "$WORK/root.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$WORK/root.pid"
}
trap 'stop_root; rm -rf "$WORK"' EXIT

# start_root: vnet-planet serve on $PORT from $WORK/root; waits for its API.
start_root() {
  "$BIN/vnet-planet" serve -d "$WORK/root" -p "$PORT" </dev/null >/dev/null 2>>"$WORK/root.log" &
  echo $! >"$WORK/root.pid"
  for _ in $(seq 100); do
    if [ -f "$WORK/root/authtoken.secret" ] && curl -fs -o /dev/null \
      -H "X-VNet-Auth: $(cat "$WORK/root/authtoken.secret")" "http://127.0.0.1:$PORT/status"; then
      return 0
    fi
    sleep 0.1
  done
  echo "the root did not start: $(tail -3 "$WORK/root.log")" >&2
  exit 1
}

# make_root: a fresh root identity and a one-root planet at 127.0.0.1:$PORT.
make_root() {
  rm -rf "$WORK/root"
  mkdir -p "$WORK/root"
  (cd "$WORK/root" && "$BIN/vnet-idtool" generate identity.secret identity.public >/dev/null)
  "$BIN/vnet-planet" initplanet "$WORK/root/identity.public" >"$WORK/planet.json"
  sed -i "s|\"stableEndpoints\": \[\]|\"stableEndpoints\": [\"127.0.0.1/$PORT\"]|" "$WORK/planet.json"
  "$BIN/vnet-planet" mkworld "$WORK/planet.json" -o "$WORK/root/planet" >/dev/null
  # New identities are checked as fast as one core does (the default
  # budget, 20 a second, is for a root under attack).
  echo '{"settings": {"identityChecksPerSecond": 1000}}' >"$WORK/root/local.conf"
}

# root_scenario N: prints the loadgen's line.
root_scenario() {
  stop_root
  make_root
  start_root
  # The restart: a clean stop (as systemctl restart does), then the same home.
  {
    echo '#!/usr/bin/env bash'
    echo 'set -euo pipefail'
    declare -p WORK BIN PORT
    declare -f stop_root start_root
    echo 'stop_root; start_root'
  } >"$WORK/restart.sh"
  chmod +x "$WORK/restart.sh"
  "$BIN/vnet-loadgen" --peers "$1" --planet "$WORK/root/planet" \
    --root-pid "$(cat "$WORK/root.pid")" --root-home "$WORK/root" --root-port "$PORT" \
    --identities "$REPO/target/loadgen/identities" --window-s "$WINDOW_S" \
    --restart-cmd "$WORK/restart.sh"
}

echo "date: $(date -Is); kernel $(uname -r); $(nproc) cores; vnet from $BIN" >&2
if [ -n "${SCALE_PEERS:-}" ]; then
  root_scenario "$SCALE_PEERS"
else
  for n in 1000 2000 5000; do
    root_scenario "$n"
  done
fi
