#!/usr/bin/env bash
# Measures vnet beside the underlay and a reference overlay (tinc) in the
# shared namespace lab, with ../shared/lab/bench-ref.sh's helpers, so every
# figure is taken the same way and in the same run. Run as root, alone (no
# build or other benchmark at the same time: 2-core machine).
#   bench/lab.sh                 release build, then: raw, tinc, vnet
#   ONLY="raw vnet" bench/lab.sh a subset; T=10 PINGS=20 as in bench-ref.sh
#   VNET_BIN_DIR=/tmp/old/target/release ONLY=vnet bench/lab.sh   another build's binaries
#   MEMBER_CONF='{"settings": {"flushThreads": 0}}' ONLY=vnet bench/lab.sh   the members' local.conf
#   ONLY="vnet-easy-hard vnet-hard-hard" bench/lab.sh   members behind NATs (netlab.sh nat),
#     two roots: easy-hard goes direct by a birthday punch, hard-hard stays relayed by a root
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LAB=${LAB:-$REPO/../shared/lab}
ONLY=${ONLY:-raw tinc vnet}
want() { [[ " $ONLY " == *" $1 "* ]]; }
# shellcheck disable=SC1091
. "$LAB/bench-ref.sh"
NL=$LAB/netlab.sh

# package:command pairs; a fresh Debian has no ping.
for pair in iperf3:iperf3 jq:jq iputils-ping:ping iptables:iptables $(want tinc && echo tinc:tincd); do
  command -v "${pair#*:}" >/dev/null || apt-get install -y -qq "${pair%%:*}" >/dev/null
done
# VNET_BIN_DIR=/path/to/release: measure those binaries (an older build, for
# a before/after in one run) instead of building this checkout.
if [ -n "${VNET_BIN_DIR:-}" ]; then
  BIN=$VNET_BIN_DIR
else
  cargo build --release --locked -p vnet_node -p vnet-idtool -p vnet-planet -p vnet-controller --bins >/dev/null
  BIN=$REPO/target/release
fi
rm -rf "$RUN"; mkdir -p "$RUN"
cleanup() { stop_all; "$NL" down >/dev/null 2>&1 || true; }
# vnet_members NAME M1_KIND M2_KIND: a fresh lab of 5 hosts; roots on h3 and h4, controller on h5,
# members on h1 (behind M1_KIND NAT, or none) and h2 (behind M2_KIND); measure h1 -> h2.
vnet_members() {
  local name=$1 k1=$2 k2=$3 d=$RUN/vnet-$1
  stop_all; "$NL" down >/dev/null 2>&1 || true; "$NL" up 5 >/dev/null
  [ "$k1" != none ] && "$NL" nat "$k1" 1 >/dev/null
  [ "$k2" != none ] && "$NL" nat "$k2" 2 >/dev/null
  mkdir -p "$d"/{r1,r2,ctl,m1,m2}
  for r in r1 r2; do (cd "$d/$r" && "$BIN/vnet-idtool" generate identity.secret identity.public >/dev/null); done
  "$BIN/vnet-planet" initplanet "$d/r1/identity.public" >"$d/planet.json"
  jq --arg a "$(cat "$d/r1/identity.public")" --arg b "$(cat "$d/r2/identity.public")" \
    '.roots = [{identity: $a, stableEndpoints: ["10.99.0.3/9993"]}, {identity: $b, stableEndpoints: ["10.99.0.4/9993"]}]' \
    "$d/planet.json" >"$d/planet2.json"
  "$BIN/vnet-planet" mkworld "$d/planet2.json" -o "$d/planet" >/dev/null
  for h in r1 r2 ctl m1 m2; do cp "$d/planet" "$d/$h/"; done
  bg h3 vnet-r1 "$BIN/vnet-planet" serve -d "$d/r1" -p 9993
  bg h4 vnet-r2 "$BIN/vnet-planet" serve -d "$d/r2" -p 9993
  bg h5 vnet-ctl "$BIN/vnet-controller" -d "$d/ctl" -p 9993
  bg h1 vnet-m1 "$BIN/vnet-node" -d "$d/m1" -p 9993
  bg h2 vnet-m2 "$BIN/vnet-node" -d "$d/m2" -p 9993
  cli() { local ns=$1; shift; ip netns exec "$ns" "$BIN/vnet-cli" "$@"; }
  for _ in $(seq 100); do
    cli h5 -D "$d/ctl" info 2>/dev/null | grep -q ONLINE && cli h1 -D "$d/m1" info 2>/dev/null | grep -q ONLINE \
      && cli h2 -D "$d/m2" info 2>/dev/null | grep -q ONLINE && break
    sleep 0.1
  done
  local nwid ip2 dev
  nwid=$(cli h5 -D "$d/ctl" network create --name bench --pool 10.98.9.1-10.98.9.50 --route 10.98.9.0/24 | awk '{print $4}')
  for m in m1 m2; do
    cli h5 -D "$d/ctl" member authorize "$nwid" "$(cut -c1-10 "$d/$m/identity.public")" >/dev/null
  done
  cli h1 -D "$d/m1" join "$nwid" >/dev/null
  cli h2 -D "$d/m2" join "$nwid" >/dev/null
  for _ in $(seq 100); do
    ip2=$(cli h2 -D "$d/m2" listnetworks | awk -v n="$nwid" '$3==n{print $9}' | cut -d/ -f1)
    [ -n "$ip2" ] && [ "$ip2" != "-" ] && break
    sleep 0.1
  done
  dev=$(cli h1 -D "$d/m1" listnetworks | awk -v n="$nwid" '$3==n{print $8}')
  # Let the pair settle on its path (a birthday punch takes about 1.5 s of traffic).
  ip netns exec h1 ping -q -c 30 -i 0.1 "$ip2" >/dev/null 2>&1 || true
  local m2addr link
  m2addr=$(cut -c1-10 "$d/m2/identity.public")
  link=$(cli h1 -D "$d/m1" -j listpeers | jq -r --arg a "$m2addr" '.[] | select(.address == $a) | .route')
  measure "vnet $k1 NAT -> $k2 NAT" h1 h2 "$ip2" \
    "$(pidof_bg vnet-m1) $(pidof_bg vnet-m2) $(pidof_bg vnet-r1) $(pidof_bg vnet-r2)" "$dev" "path $link"
  stop_all
}
# small_packets CLIENT_NS SERVER_NS IP: 64-byte UDP datagrams as fast as iperf3
# sends them for T s; the packets per second that arrive, and the loss.
small_packets() {
  local cns=$1 sns=$2 ip=$3 json=$RUN/iperf3-small.json
  bg "$sns" iperf3-s-small iperf3 -s -1
  sleep 0.5
  ip netns exec "$cns" iperf3 -c "$ip" -u -b 0 -l 64 -t "$T" -J >"$json" 2>&1 || true
  jq -r '.end.sum | "   small packets (UDP 64 B, iperf3 -b 0): \((.packets - .lost_packets) / .seconds / 1000 | floor) kpps received, \(.lost_percent | floor)% lost"' \
    "$json" 2>/dev/null || echo "   small packets: FAIL"
}
# rtt_median NS IP: idle round trip, median of RTT_PINGS pings (0.05 s apart),
# the figure issue 12 names (measure's is the mean of PINGS).
rtt_median() {
  local n=${RTT_PINGS:-200}
  ip netns exec "$1" ping -n -c "$n" -i 0.05 "$2" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -g \
    | awk -v n="$n" '{v[NR]=$1} END {if (NR == 0) {print "   RTT idle: FAIL"; exit}
        printf "   RTT idle (%d of %d pings): median %.3f ms, p10 %.3f, p90 %.3f\n", NR, n, v[int((NR+1)/2)], v[int(NR*0.1)+1], v[int(NR*0.9)]}'
}
trap cleanup EXIT
"$NL" down >/dev/null 2>&1 || true
"$NL" up 3 >/dev/null

echo "date: $(date -Is); kernel $(uname -r); iperf3 TCP 1 stream h1->h2 ${T}s; ping ${PINGS}x @0.05s"
echo "idle check: host $(host_busy 3)% busy before the run"
header
if want raw; then
  measure "underlay (veth+bridge)" h1 h2 10.99.0.2 "" eth0 "kernel only"
  rtt_median h1 10.99.0.2
fi
# tinc 1.0 in switch mode (TAP), default cipher, as the shared lab's reference run.
setup_tinc() {
  local i d
  for i in 1 2; do
    d=$RUN/tinc/h$i; mkdir -p "$d/hosts"
    printf 'Name = h%s\nMode = switch\nInterface = tinc0\nAddressFamily = ipv4\n' "$i" >"$d/tinc.conf"
    [ "$i" = 2 ] && echo "ConnectTo = h1" >>"$d/tinc.conf"
    echo "Address = 10.99.0.$i" >"$d/hosts/h$i"
    printf '#!/bin/sh\nip link set "$INTERFACE" up\nip addr add 10.98.1.%s/24 dev "$INTERFACE"\n' "$i" >"$d/tinc-up"
    chmod +x "$d/tinc-up"
    tincd -c "$d" -K2048 </dev/null >/dev/null 2>&1
  done
  cp "$RUN/tinc/h1/hosts/h1" "$RUN/tinc/h2/hosts/"
  cp "$RUN/tinc/h2/hosts/h2" "$RUN/tinc/h1/hosts/"
}
if want tinc; then
  setup_tinc
  for i in 1 2; do bg "h$i" "tinc$i" tincd -c "$RUN/tinc/h$i" -D --pidfile="$RUN/tinc/h$i/pid"; done
  measure "tinc 1.0 switch" h1 h2 10.98.1.2 "$(pidof_bg tinc1) $(pidof_bg tinc2)" tinc0 "blowfish-cbc+sha1 (default)"
  stop_all
fi
if want vnet; then
  # Root and controller on h3, members on h1 and h2; a private network, both authorized.
  d=$RUN/vnet; mkdir -p "$d"/{root,ctl,m1,m2}
  (cd "$d/root" && "$BIN/vnet-idtool" generate identity.secret identity.public >/dev/null)
  "$BIN/vnet-planet" initplanet "$d/root/identity.public" >"$d/planet.json"
  sed -i 's|"stableEndpoints": \[\]|"stableEndpoints": ["10.99.0.3/9993"]|' "$d/planet.json"
  "$BIN/vnet-planet" mkworld "$d/planet.json" -o "$d/planet" >/dev/null
  for h in root ctl m1 m2; do cp "$d/planet" "$d/$h/"; done
  # MEMBER_CONF='{"settings": {"flushThreads": 0}}': the members' local.conf.
  [ -n "${MEMBER_CONF:-}" ] && for h in m1 m2; do echo "$MEMBER_CONF" >"$d/$h/local.conf"; done
  bg h3 vnet-root "$BIN/vnet-planet" serve -d "$d/root" -p 9993
  bg h3 vnet-ctl "$BIN/vnet-controller" -d "$d/ctl" -p 9994
  bg h1 vnet-m1 "$BIN/vnet-node" -d "$d/m1" -p 9993
  bg h2 vnet-m2 "$BIN/vnet-node" -d "$d/m2" -p 9993
  cli() { local ns=$1; shift; ip netns exec "$ns" "$BIN/vnet-cli" "$@"; }
  for _ in $(seq 100); do
    cli h3 -D "$d/ctl" info 2>/dev/null | grep -q ONLINE && cli h1 -D "$d/m1" info 2>/dev/null | grep -q ONLINE \
      && cli h2 -D "$d/m2" info 2>/dev/null | grep -q ONLINE && break
    sleep 0.1
  done
  nwid=$(cli h3 -D "$d/ctl" network create --name bench --pool 10.98.9.1-10.98.9.50 --route 10.98.9.0/24 | awk '{print $4}')
  for m in m1 m2; do
    cli h3 -D "$d/ctl" member authorize "$nwid" "$(cut -c1-10 "$d/$m/identity.public")" >/dev/null
  done
  cli h1 -D "$d/m1" join "$nwid" >/dev/null
  cli h2 -D "$d/m2" join "$nwid" >/dev/null
  for _ in $(seq 100); do
    ip2=$(cli h2 -D "$d/m2" listnetworks | awk -v n="$nwid" '$3==n{print $9}' | cut -d/ -f1)
    [ -n "$ip2" ] && [ "$ip2" != "-" ] && break
    sleep 0.1
  done
  dev=$(cli h1 -D "$d/m1" listnetworks | awk -v n="$nwid" '$3==n{print $8}')
  sleep 2
  for p in vnet-m1 vnet-root vnet-ctl; do
    echo "   idle VmRSS $p (network joined, before traffic): $(awk '/VmRSS/{print $2" "$3}' "/proc/$(pidof_bg $p)/status")"
  done
  measure "vnet (this tree)" h1 h2 "$ip2" "$(pidof_bg vnet-m1) $(pidof_bg vnet-m2)" "$dev" \
    "AES-256-GCM when both announce it, TAP offloads (super-frames), forward-secret sessions"
  small_packets h1 h2 "$ip2"
  rtt_median h1 "$ip2"
  stop_all
fi
if want vnet-easy-hard; then vnet_members easy-hard easy hard; fi
if want vnet-hard-hard; then vnet_members hard-hard hard hard; fi
