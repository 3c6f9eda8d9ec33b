#!/usr/bin/env bash
# Issue 12's benchmark: vnet and ZeroTier One side by side in the shared
# namespace lab, alternating, ROUNDS rounds, the same layout for both (root
# and controller on h1, members h2 and h3 on the underlay, or behind hard
# NATs for the relayed case). Run as root, alone (2-core machine: no build or
# other benchmark at the same time).
#   bench/speed.sh                       release build, then ROUNDS=3 rounds, direct and relayed
#   ONLY=direct ROUNDS=1 T=5 bench/speed.sh
#   VNET_BIN_DIR=/some/target/release bench/speed.sh     another build's binaries
#   ZTBIN=/path/to/zt/bin                ZeroTier binaries (default ../shared/lab/zt/bin)
#   SYSTEMS=vnet                         one system only (default: zerotier vnet)
#   SYSTEMS="zerotier vnet vnet-busypoll"  also vnet with busyPollMicros=BUSY_POLL_MICROS (default 100000) on the members
#   PERF=1                               perf profile of the two members during the 1-stream run
#   PERF=udp64                           ... during the 64-byte UDP run instead
#   THREADS=1                            each member thread's CPU during the 1-stream run
#   MEMBER_CONF='{"settings": {"flushThreads": 1}}'   the vnet members' local.conf
#   RTT_PINGS=100                        pings for the idle RTT median (PINGS=20 under load)
#   UDP64_DETAIL=1                       the 64-byte UDP run in detail: iperf3's CPU, where packets are lost, top
#   UDP64_PINNED=1                       a second 64-byte UDP run with the receiving daemon pinned to vCPU 0
#                                        and iperf3's server to vCPU 1 (how much the delivered figure owes
#                                        to where the scheduler puts the two): udp64_pinned_kpps
#   RELAY_THREADS=N                      the vnet root's relayThreads (default: the daemon's, one per core beyond the first)
# Per system and round one line: 1 TCP stream, 4 streams, reverse (Mbit/s),
# retransmits of the 1-stream run, 64-byte UDP packets/s delivered to iperf3
# and carried to its host (delivered, or dropped at iperf3's full socket),
# each member daemon's CPU in microseconds per packet carried, UDP sent
# with UDP_SEGMENT (Mbit/s received with UDP_GRO, as QUIC stacks do), RTT idle
# and under load (ms), CPU of the two member daemons per Gbit/s of the
# 1-stream run (and of the root, relayed), idle RSS (kB). Then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LAB=${LAB:-$REPO/../shared/lab}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-direct relayed}
SYSTEMS=${SYSTEMS:-zerotier vnet}
T=${T:-5}
export T
# shellcheck disable=SC1091
. "$LAB/zt/zt-bench.sh"
[ -x "$ZTBIN/zerotier-one" ] || { echo "no ZeroTier binaries in $ZTBIN (set ZTBIN)" >&2; exit 1; }
for pair in iperf3:iperf3 jq:jq curl:curl iputils-ping:ping iptables:iptables python3:python3; do
  command -v "${pair#*:}" >/dev/null || apt-get install -y -qq "${pair%%:*}" >/dev/null
done
if [ -n "${VNET_BIN_DIR:-}" ]; then
  BIN=$VNET_BIN_DIR
else
  cargo build --release --locked -p vnet_node -p vnet-idtool -p vnet-planet -p vnet-controller --bins >/dev/null
  BIN=$REPO/target/release
fi
OUT=$RUN/speed.txt
: >"$OUT"
trap 'stop_all; "$NL" down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
. "$REPO/bench/vnet_lab.sh"

# thread_ticks PID: one line per thread, sorted by id: "tid name utime+stime".
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    [ -r "$t/stat" ] && echo "${t##*/} $(tr ' ' _ <"$t/comm") $(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')"
  done | sort
}

# iperf_json CLIENT_NS IP ARGS...: one iperf3 run against a fresh server in h3
iperf_json() {
  local cns=$1 ip=$2; shift 2
  bg h3 iperf3-s iperf3 -s -1
  sleep 0.3
  ip netns exec "$cns" iperf3 -c "$ip" -t "$T" -J "$@" 2>/dev/null || true
}

# udp_gso_mbps CLIENT_NS IP: UDP as QUIC stacks send it (UDP_SEGMENT, 45
# datagrams of 1,400 bytes a write, T seconds) to a receiver in h3 that reads
# with UDP_GRO; the Mbit/s of payload it received.
udp_gso_mbps() {
  local cns=$1 ip=$2
  bg h3 udp-gso-rx python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(17, 104, 1)  # SOL_UDP, UDP_GRO
s.bind(("", 5301))
got, first, last = 0, None, None
s.settimeout(30)
while True:
    try:
        n = len(s.recv(65536))
    except socket.timeout:
        break
    last = time.monotonic()
    first = first or last
    got += n
    s.settimeout(1)
print(int(got * 8 / 1e6 / max(last - first, 1e-3)) if first else 0, flush=True)
'
  sleep 0.3
  ip netns exec "$cns" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1400)  # SOL_UDP, UDP_SEGMENT
buf, end = bytes(1400 * 45), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        s.sendto(buf, (sys.argv[1], 5301))
    except OSError:
        pass  # a full queue (ENOBUFS) drops the write, as a busy link would
' "$ip" "$T" || true
  local pid; pid=$(pidof_bg udp-gso-rx)
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  tail -1 "$RUN/udp-gso-rx.log" 2>/dev/null | grep -E '^[0-9]+$' || echo 0
}

# udp64_counters: where 64-byte UDP is lost, as NAME=VALUE words: h3's UDP
# receive counters, and the packets the overlay devices dropped (h2 sending
# into its device, h3 receiving from the daemon).
udp64_counters() {
  ip netns exec h3 awk '/^Udp:/ {if (!n++) split($0, k); else for (i = 2; i <= NF; i++)
    if (k[i] ~ /InDatagrams|RcvbufErrors|InErrors/) printf "h3_udp_%s=%s ", k[i], $i}' /proc/net/snmp
  local ns dev
  for ns in h2 h3; do
    for dev in $(ip netns exec "$ns" ip -o link | awk -F': ' '$2 ~ /^(vn|zt)/ {print $2}' | cut -d@ -f1); do
      ip netns exec "$ns" ip -s -s link show "$dev" | awk -v p="${ns}_$dev" '
        /RX:/ {getline; printf "%s_rx_dropped=%s ", p, $4} /TX:/ {getline; printf "%s_tx_dropped=%s ", p, $4}'
    done
  done
  echo
}

# figures NAME IP "MEMBER_PIDS" ROOT_PID: the line of one system, measured h2 -> h3
figures() {
  local name=$1 ip=$2 members=$3 root=$4 p
  wait_ping h2 "$ip" 30 || { echo "$name: no connectivity" | tee -a "$OUT"; return 0; }
  ip netns exec h2 ping -q -c 30 -i 0.1 "$ip" >/dev/null 2>&1 || true   # settle the path
  local rss_line=""
  for p in $members $root; do rss_line+="$(rss "$p")/"; done
  local rtt_idle
  rtt_idle=$(ping_median h2 "$ip" "${RTT_PINGS:-100}")
  # One stream, with daemon CPU.
  declare -A c0
  for p in $members $root; do c0[$p]=$(ticks "$p"); done
  local perf_pids=()
  if [ "${PERF:-}" = 1 ]; then
    for p in $members; do
      perf record -q -F 999 -p "$p" -o "$RUN/perf-$p.data" -- sleep "$T" >/dev/null 2>&1 &
      perf_pids+=($!)
    done
  fi
  declare -A t0
  if [ "${THREADS:-}" = 1 ]; then
    for p in $members; do t0[$p]=$(thread_ticks "$p"); done
  fi
  local j1; j1=$(iperf_json h2 "$ip")
  if [ "${THREADS:-}" = 1 ]; then
    for p in $members; do
      echo "   threads of $(ps -o comm= -p "$p") $p during the 1-stream run, % of a core: $(
        join -a1 <(thread_ticks "$p") <(echo "${t0[$p]}") |
          awk -v hz="$HZ" -v t="$T" '{printf "%s %d%%  ", $2, ($3 - ($5 == "" ? 0 : $5)) * 100 / (hz * t)}')"
    done
  fi
  if [ "${PERF:-}" = 1 ]; then
    wait "${perf_pids[@]}" 2>/dev/null || true
    for p in $members; do
      echo "   perf of $(ps -o comm= -p "$p") $p during the 1-stream run (top symbols, % of its samples):"
      perf report -q -i "$RUN/perf-$p.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
        grep -v '^$' | head -14 | sed 's/^/     /' || true
    done
  fi
  local cpu_m=0 cpu_r=0
  for p in $members; do cpu_m=$((cpu_m + ($(ticks "$p") - ${c0[$p]}) * 100 / (HZ * T))); done
  [ -n "$root" ] && cpu_r=$((($(ticks "$root") - ${c0[$root]}) * 100 / (HZ * T)))
  local one retr
  one=$(jq -r '.end.sum_received.bits_per_second / 1e6 | floor' <<<"$j1" 2>/dev/null || echo 0)
  retr=$(jq -r '.end.sum_sent.retransmits' <<<"$j1" 2>/dev/null || echo "?")
  local four rev
  four=$(iperf_json h2 "$ip" -P 4 | jq -r '.end.sum_received.bits_per_second / 1e6 | floor' 2>/dev/null || echo 0)
  rev=$(iperf_json h2 "$ip" -R | jq -r '.end.sum_received.bits_per_second / 1e6 | floor' 2>/dev/null || echo 0)
  # RTT under load: pings in the middle of a 1-stream run.
  bg h3 iperf3-s iperf3 -s -1
  sleep 0.3
  ip netns exec h2 iperf3 -c "$ip" -t "$T" >/dev/null 2>&1 &
  local load_pid=$!
  sleep 1
  local rtt_load
  rtt_load=$(ping_median h2 "$ip" "$PINGS")
  wait "$load_pid" || true
  local kpps perf64=()
  if [ "${PERF:-}" = udp64 ]; then
    for p in $members; do
      perf record -q -F 999 -p "$p" -o "$RUN/perf64-$p.data" -- sleep "$T" >/dev/null 2>&1 &
      perf64+=($!)
    done
  fi
  declare -A u0
  for p in $members; do u0[$p]=$(ticks "$p"); done
  local udp_before udp_after j64
  udp_before=$(udp64_counters)
  if [ "${UDP64_DETAIL:-}" = 1 ]; then
    # The same run, with the CPU of the iperf3 client and server (their
    # shells' cutime + cstime once they end) and top.
    local child_ticks='awk "{print \$16 + \$17}" /proc/$$/stat'
    bg h3 iperf3-s64 bash -c "iperf3 -s -1 >/dev/null 2>&1; $child_ticks"
    sleep 0.3
    (sleep 1; top -b -H -n 2 -d 2 -w 120 | awk '/^top -/ {n++} n == 2' | sed -n '1,4p;7,16p' >"$RUN/top64.txt") &
    j64=$(ip netns exec h2 bash -c "iperf3 -c \"\$0\" -t \"\$1\" -J -u -b 0 -l 64 2>/dev/null; $child_ticks >&2" \
      "$ip" "$T" 2>"$RUN/client64.ticks" || true)
    local spid; spid=$(pidof_bg iperf3-s64)
    for _ in $(seq 40); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  else
    j64=$(iperf_json h2 "$ip" -u -b 0 -l 64)
  fi
  udp_after=$(udp64_counters)
  # change NAME_PATTERN: how much the counters matching it rose in the run.
  change() {
    paste -d' ' <(echo "$udp_before" | tr ' ' '\n') <(echo "$udp_after" | tr ' ' '\n') |
      awk -F'[= ]' -v p="$1" 'NF >= 4 && $1 ~ p {s += $4 - $2} END {print s + 0}'
  }
  kpps=$(jq -r '.end.sum | ((.packets - .lost_packets) / .seconds / 1000 | floor)' <<<"$j64" 2>/dev/null || echo 0)
  local sent64 carried64
  sent64=$(jq -r '.end.sum.packets // 0' <<<"$j64" 2>/dev/null || echo 0)
  # What the overlay carried to the receiving host: sent, less what the
  # sender's device dropped because its daemon did not read it in time
  # (delivered to iperf3 or dropped at its full socket).
  carried64=$((sent64 - $(change '^h2_.*_tx_dropped$')))
  if [ "${UDP64_DETAIL:-}" = 1 ]; then
    echo "   64-byte UDP: iperf3 sent $sent64, lost $(jq -r '.end.sum.lost_packets' <<<"$j64" 2>/dev/null);" \
      "iperf3 CPU client/server $(($(tail -1 "$RUN/client64.ticks") * 100 / (HZ * T)))/$(($(tail -1 "$RUN/iperf3-s64.log") * 100 / (HZ * T)))%;" \
      "changes: $(paste -d' ' <(echo "$udp_before" | tr ' ' '\n') <(echo "$udp_after" | tr ' ' '\n') |
        awk -F'[= ]' 'NF >= 4 {printf "%s=%d ", $1, $4 - $2}')"
    sed 's/^/     /' "$RUN/top64.txt"
  fi
  local udp_cpu="" udp_us=""
  for p in $members; do
    udp_cpu+="$((($(ticks "$p") - ${u0[$p]}) * 100 / (HZ * T)))/"
    # Microseconds of this daemon's CPU per packet carried.
    udp_us+="$(awk -v t="$(($(ticks "$p") - ${u0[$p]}))" -v hz="$HZ" -v n="$carried64" \
      'BEGIN {printf "%.2f", (n > 0 ? t / hz * 1e6 / n : 0)}')/"
  done
  if [ "${PERF:-}" = udp64 ]; then
    wait "${perf64[@]}" 2>/dev/null || true
    for p in $members; do
      echo "   perf of $(ps -o comm= -p "$p") $p during the 64-byte UDP run (top symbols, % of its samples):"
      perf report -q -i "$RUN/perf64-$p.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
        grep -v '^$' | grep '%' | head -25 | sed 's/^/     /' || true
    done
  fi
  local pinned=""
  if [ "${UDP64_PINNED:-}" = 1 ]; then
    # The sync wake-up of a socket's reader puts iperf3's server on the CPU
    # of whoever delivered the datagram (the receiving daemon), where the two
    # then share a core while the other runs the flooding client.
    local receiver=${members##* } all_cpus="0-$(($(nproc) - 1))"
    taskset -a -p -c 0 "$receiver" >/dev/null
    bg h3 iperf3-s taskset -c 1 iperf3 -s -1
    sleep 0.3
    pinned=$(ip netns exec h2 iperf3 -c "$ip" -t "$T" -J -u -b 0 -l 64 2>/dev/null |
      jq -r '.end.sum | ((.packets - .lost_packets) / .seconds / 1000 | floor)' 2>/dev/null || echo 0)
    taskset -a -p -c "$all_cpus" "$receiver" >/dev/null
  fi
  local gso; gso=$(udp_gso_mbps h2 "$ip")
  local gbit per_gbit root_per_gbit
  gbit=$(awk -v m="$one" 'BEGIN{print (m > 0 ? m / 1000 : 0)}')
  per_gbit=$(awk -v c="$cpu_m" -v g="$gbit" 'BEGIN{printf "%d", (g > 0 ? c / g : 0)}')
  root_per_gbit=$(awk -v c="$cpu_r" -v g="$gbit" 'BEGIN{printf "%d", (g > 0 ? c / g : 0)}')
  local us_tx=${udp_us%%/*} us_rx=${udp_us#*/}
  printf '%-34s 1s=%-6s 4s=%-6s rev=%-6s retr=%-6s udp64_kpps=%-5s udp64_carried_kpps=%-5s udp64_cpu=%-8s udp64_us_tx=%-5s udp64_us_rx=%-5s udp_gso=%-6s rtt_idle=%-6s rtt_load=%-6s cpu_per_gbit=%s%% root_cpu_per_gbit=%s%% rss_kb=%s%s\n' \
    "$name" "$one" "$four" "$rev" "$retr" "$kpps" "$((carried64 / T / 1000))" "${udp_cpu%/}%" "$us_tx" "${us_rx%/}" "$gso" "${rtt_idle:-?}" "${rtt_load:-?}" "$per_gbit" "$root_per_gbit" "${rss_line%/}" "${pinned:+ udp64_pinned_kpps=$pinned}" | tee -a "$OUT"
}

# lab KIND: a fresh 3-host lab; KIND relayed puts h2 and h3 behind hard NATs.
lab() {
  stop_all; "$NL" down >/dev/null 2>&1 || true
  "$NL" up 3 >/dev/null
  if [ "$1" = relayed ]; then "$NL" nat hard 2 >/dev/null; "$NL" nat hard 3 >/dev/null; fi
}

echo "date: $(date -Is); kernel $(uname -r); T=${T}s per run, ROUNDS=$ROUNDS; vnet from $BIN; ZeroTier from $ZTBIN"
for kind in direct relayed; do
  [[ " $ONLY " == *" $kind "* ]] || continue
  for round in $(seq "$ROUNDS"); do
    if [[ " $SYSTEMS " == *" zerotier "* ]]; then
      lab "$kind"
      zt_up >/dev/null
      figures "zerotier $kind r$round" "$ZT_NET.3" "$(pidof_bg zt2) $(pidof_bg zt3)" "$(pidof_bg zt1)"
      echo "   zerotier path h2->h3: $(zt_path 2 3)"
    fi
    for vsys in vnet vnet-busypoll; do
      [[ " $SYSTEMS " == *" $vsys "* ]] || continue
      lab "$kind"
      if [ "$vsys" = vnet-busypoll ]; then
        MEMBER_CONF="{\"settings\": {\"busyPollMicros\": ${BUSY_POLL_MICROS:-100000}}}" vnet_up
      else
        vnet_up
      fi
      figures "$vsys $kind r$round" "$VNET_IP3" "$(pidof_bg vnet-m2) $(pidof_bg vnet-m3)" "$(pidof_bg vnet-root)"
      echo "   vnet h2 peers: $(vcli h2 -D "$RUN/vnet/m2" listpeers 2>/dev/null | awk 'NR>1 && $7 == "LEAF" {print $3, $4, $5}' | tr '\n' ' ')"
      if [ -n "${DIAG:-}" ]; then
        for h in 1 2 3; do
          echo "   h$h UDP: $(ip netns exec "h$h" awk '/^Udp:/{getline; print "InErrors=" $4, "RcvbufErrors=" $6, "SndbufErrors=" $7}' /proc/net/snmp)"
        done
        for h in 2 3; do
          echo "   h$h TAP: $(ip netns exec "h$h" sh -c 'for d in /sys/class/net/*; do case ${d##*/} in vn*|zt*) echo ${d##*/} rx_dropped=$(cat $d/statistics/rx_dropped) tx_dropped=$(cat $d/statistics/tx_dropped) qlen=$(cat $d/tx_queue_len);; esac; done')"
        done
        for m in root m2 m3; do
          local_ns=h1; [ "$m" = m2 ] && local_ns=h2; [ "$m" = m3 ] && local_ns=h3
          echo "   $m counters: $(vcli "$local_ns" -D "$RUN/vnet/$m" -j info 2>/dev/null | jq -c '.counters | with_entries(select(.value != 0))')"
        done
      fi
    done
  done
done
stop_all
echo "medians:"
python3 - "$OUT" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 4 or "=" not in f[3]:
        continue
    key = (f[0], f[1])
    for kv in f[3:]:
        k, v = kv.split("=", 1)
        try:
            rows.setdefault(key, {}).setdefault(k, []).append(float(v.rstrip("%").split("/")[0]))
        except ValueError:
            pass
for (sys_, kind), cols in sorted(rows.items()):
    print(f"{sys_ + ' ' + kind:<20}", " ".join(f"{k}={statistics.median(v):g}" for k, v in cols.items()))
PY
