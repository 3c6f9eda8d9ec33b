#!/usr/bin/env bash
# Issue 13's scale benchmark: one root (vnet-planet) on loopback and
# vnet-loadgen simulating N nodes against it, each from its own 127.1.x.y
# address (real identities, cached in target/loadgen/identities: the first
# run makes them, about 0.2 s each on one core). Per scenario one line:
# peers, time to admit them all, the root's RSS idle and with them, per peer,
# its CPU keeping them alive (% of a core, and per 1,000 peers), and the time
# a restarted root takes to hold them all again. Run alone (2-core machine:
# no build or other benchmark at the same time). Nothing leaves loopback.
# The join scenario adds a controller (vnet-controller on loopback): every
# simulated node joins one private network (pre-authorized through the
# controller's API); one line: time to configure them all, the largest
# config, the controller's CPU and RSS with them all online (WINDOW_S, at
# least a certificate refresh and a config pull), ARP to a member never seen
# before against the round trip to the root, how many members a broadcast
# reaches (the network's multicastLimit, 32), the root's subscriptions.
#   bench/scale.sh                     the root scenario with 1,000, 2,000 and 5,000 peers,
#                                      then the join scenario with 5,000 members
#   SCALE_PEERS=N bench/scale.sh       the root scenario alone with N peers
#   SCALE_JOIN=N bench/scale.sh        the join scenario alone with N members
#   VNET_BIN_DIR=/some/target/release  another build's binaries
#   WINDOW_S=30                        seconds of keepalive CPU measured
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
if [ -n "${VNET_BIN_DIR:-}" ]; then
  BIN=$VNET_BIN_DIR
else
  cargo build --release --locked -p vnet-planet -p vnet-idtool -p vnet-loadgen -p vnet-controller --bins >/dev/null
  BIN=$REPO/target/release
fi
PORT=${PORT:-29993}
CTL_PORT=${CTL_PORT:-29994}
WINDOW_S=${WINDOW_S:-30}
WORK=$(mktemp -d /tmp/vnet-scale.XXXXXX)

stop_controller() {
  local pid
  pid=$(cat "$WORK/ctl.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$WORK/ctl.pid"
}

stop_root() {
  local pid
  pid=$(cat "$WORK/root.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$WORK/root.pid"
}
trap 'stop_controller; stop_root; rm -rf "$WORK"' EXIT

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

# api PORT HOME METHOD PATH [BODY]: the daemon's local API.
api() {
  curl -fsS -X "$3" -H "X-VNet-Auth: $(cat "$2/authtoken.secret")" \
    ${5:+-H 'Content-Type: application/json' -d "$5"} "http://127.0.0.1:$1$4"
}

# join_scenario N: a root, a controller with one private network, N members.
join_scenario() {
  stop_controller
  stop_root
  make_root
  start_root
  rm -rf "$WORK/ctl"
  mkdir -p "$WORK/ctl"
  cp "$WORK/root/planet" "$WORK/ctl/planet"
  # Nothing leaves loopback: no UPnP or NAT-PMP gateway search. New
  # members' identities are checked as fast as a core does (the default
  # budget, 20 a second, is for a controller under attack).
  echo '{"settings": {"portMappingEnabled": false, "identityChecksPerSecond": 1000}}' >"$WORK/ctl/local.conf"
  "$BIN/vnet-controller" -d "$WORK/ctl" -p "$CTL_PORT" </dev/null >/dev/null 2>>"$WORK/ctl.log" &
  echo $! >"$WORK/ctl.pid"
  local online=false
  for _ in $(seq 300); do
    if [ -f "$WORK/ctl/authtoken.secret" ] &&
      api "$CTL_PORT" "$WORK/ctl" GET /status 2>/dev/null | grep -q '"online": *true'; then
      online=true
      break
    fi
    sleep 0.1
  done
  if ! $online; then
    echo "the controller did not come online: $(tail -3 "$WORK/ctl.log")" >&2
    exit 1
  fi
  local ctl nwid
  ctl=$(api "$CTL_PORT" "$WORK/ctl" GET /status | sed -n 's/.*"address": *"\([0-9a-f]*\)".*/\1/p')
  nwid=$(api "$CTL_PORT" "$WORK/ctl" POST "/controller/network/${ctl}______" \
    '{"name": "scale", "private": true,
      "ipAssignmentPools": [{"ipRangeStart": "10.200.0.1", "ipRangeEnd": "10.200.255.254"}],
      "routes": [{"target": "10.200.0.0/16", "via": null}]}' |
    sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p')
  "$BIN/vnet-loadgen" --scenario join --peers "$1" --planet "$WORK/root/planet" \
    --root-pid "$(cat "$WORK/root.pid")" --root-home "$WORK/root" --root-port "$PORT" \
    --identities "$REPO/target/loadgen/identities" --window-s "${JOIN_WINDOW_S:-70}" \
    --network "$nwid" --controller-pid "$(cat "$WORK/ctl.pid")" \
    --controller-home "$WORK/ctl" --controller-port "$CTL_PORT"
}

echo "date: $(date -Is); kernel $(uname -r); $(nproc) cores; vnet from $BIN" >&2
if [ -n "${SCALE_PEERS:-}" ]; then
  root_scenario "$SCALE_PEERS"
elif [ -n "${SCALE_JOIN:-}" ]; then
  join_scenario "$SCALE_JOIN"
else
  for n in 1000 2000 5000; do
    root_scenario "$n"
  done
  join_scenario 5000
fi
