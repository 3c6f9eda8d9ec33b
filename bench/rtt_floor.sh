#!/usr/bin/env bash
# The idle round trip on this machine and its floor, in one run: ping h2 -> h3
# over the underlay, over the smallest userspace TAP <-> UDP forwarder
# (bench/tap_udp_forwarder.c: no cipher, one poll() loop; "forwarder" sleeps
# in poll(), "forwarder-spin" never sleeps), over vnet (default settings, and
# busyPollMicros), and over ZeroTier One. ROUNDS alternating rounds; each
# figure is the median of PINGS pings 0.05 s apart (issue 12's idle RTT), then
# the median of the rounds. Run as root, alone (2-core machine).
#   bench/rtt_floor.sh                   release build, ROUNDS=3, PINGS=100
#   VNET_BIN_DIR=/some/target/release    another build's binaries
#   ZTBIN=/path/to/zt/bin                ZeroTier binaries (default ../shared/lab/zt/bin)
#   SYSTEMS="forwarder vnet"             a subset of: underlay forwarder forwarder-spin vnet
#                                        vnet-busypoll zerotier (default: all)
#   BUSY_POLL_MICROS=1000000             vnet-busypoll's busyPollMicros (default 1,000,000)
# ZeroTier One 1.14.1 dies of SIGABRT after SIGTERM here (exit 134), so bash reports
# its daemons as "Aborted" when the next round stops them; vnet's exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LAB=${LAB:-$REPO/../shared/lab}
ROUNDS=${ROUNDS:-3}
PINGS=${PINGS:-100}
SYSTEMS=${SYSTEMS:-underlay forwarder forwarder-spin vnet vnet-busypoll zerotier}
# shellcheck disable=SC1091
. "$LAB/zt/zt-bench.sh"
for pair in gcc:gcc jq:jq curl:curl iputils-ping:ping iptables:iptables; do
  command -v "${pair#*:}" >/dev/null || apt-get install -y -qq "${pair%%:*}" >/dev/null
done
has_system() { [[ " $SYSTEMS " == *" $1 "* ]]; }
if has_system zerotier; then
  [ -x "$ZTBIN/zerotier-one" ] || { echo "no ZeroTier binaries in $ZTBIN (set ZTBIN)" >&2; exit 1; }
fi
if [ -n "${VNET_BIN_DIR:-}" ]; then
  BIN=$VNET_BIN_DIR
else
  cargo build --release --locked -p vnet_node -p vnet-idtool -p vnet-planet -p vnet-controller --bins >/dev/null
  BIN=$REPO/target/release
fi
mkdir -p "$RUN"
OUT=$RUN/rtt_floor.txt
: >"$OUT"
FWD=$RUN/tap_udp_forwarder
gcc -O2 -o "$FWD" bench/tap_udp_forwarder.c
gcc -O2 -DSPIN -o "$FWD-spin" bench/tap_udp_forwarder.c
trap 'stop_all; "$NL" down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
. "$REPO/bench/vnet_lab.sh"

fresh_lab() { stop_all; "$NL" down >/dev/null 2>&1 || true; "$NL" up 3 >/dev/null; }

# rtt_row NAME ROUND IP: settle the path, then one row of the median RTT.
rtt_row() {
  wait_ping h2 "$3" 30 || { echo "$1 r$2 no-connectivity" | tee -a "$OUT"; return 0; }
  ip netns exec h2 ping -q -c 30 -i 0.1 "$3" >/dev/null 2>&1 || true
  printf '%-16s r%s rtt_ms=%s\n' "$1" "$2" "$(ping_median h2 "$3" "$PINGS")" | tee -a "$OUT"
}

# forwarder_up BINARY: one forwarder each in h2 and h3, TAP fw0 addressed 10.77.0.2 and .3.
forwarder_up() {
  bg h2 fwd2 "$1" fw0 7000 10.99.0.3 7000
  bg h3 fwd3 "$1" fw0 7000 10.99.0.2 7000
  local h
  for h in 2 3; do
    for _ in $(seq 50); do ip -n "h$h" link show fw0 >/dev/null 2>&1 && break; sleep 0.1; done
    ip -n "h$h" addr add "10.77.0.$h/24" dev fw0
    ip -n "h$h" link set fw0 up
  done
}

echo "date: $(date -Is); kernel $(uname -r); $(nproc) CPUs; ROUNDS=$ROUNDS, median of $PINGS pings 0.05 s apart; vnet from $BIN"
for round in $(seq "$ROUNDS"); do
  for system in $SYSTEMS; do
    fresh_lab
    case $system in
      underlay) rtt_row underlay "$round" 10.99.0.3 ;;
      forwarder) forwarder_up "$FWD"; rtt_row forwarder "$round" 10.77.0.3 ;;
      forwarder-spin) forwarder_up "$FWD-spin"; rtt_row forwarder-spin "$round" 10.77.0.3 ;;
      vnet) vnet_up; rtt_row vnet "$round" "$VNET_IP3" ;;
      vnet-busypoll)
        MEMBER_CONF="{\"settings\": {\"busyPollMicros\": ${BUSY_POLL_MICROS:-1000000}}}" vnet_up
        rtt_row vnet-busypoll "$round" "$VNET_IP3" ;;
      zerotier) zt_up >/dev/null; rtt_row zerotier "$round" "$ZT_NET.3" ;;
      *) echo "unknown system $system" >&2; exit 2 ;;
    esac
  done
done
stop_all
echo "medians of the rounds (ms):"
awk '{split($3, kv, "="); v[$1] = v[$1] " " kv[2]} END {for (s in v) print s, v[s]}' "$OUT" |
  while read -r name values; do
    printf '%-16s %s   (rounds: %s)\n' "$name" "$(tr ' ' '\n' <<<"$values" | sort -g |
      awk '{a[NR] = $1} END {printf "%.3f", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}')" "$values"
  done | sort
