#!/usr/bin/env bash
# The vnet demo, as root on one Debian machine: installs what is needed, builds,
# then runs a small private internet in network namespaces -- a root server, a
# network controller and two members -- creates a private virtual network,
# joins both members, authorizes them, and pings and measures (iperf3) from one
# member to the other over the virtual network.
#
# Nothing is created in the machine's own network namespace and no namespace
# has a route out: the "internet" is a bridge on 198.51.100.0/24 (TEST-NET-2).
# Everything (daemons, namespaces, temp files) is removed on exit, also on
# Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run me as root (network namespaces and TAP devices need it)" >&2
  exit 1
fi

scripts/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== building (release)"
cargo build --release --locked -p vnet_node -p vnet-idtool -p vnet-planet -p vnet-controller --bins
export PATH="$PWD/target/release:$PATH"

# ---- Bookkeeping and cleanup --------------------------------------------------
P="vd$$"                 # prefix of every namespace and interface name (<= 15 chars)
NET="$P-net"             # the underlay ("internet"): one bridge
BR="${P}br"
PORT=9993
if ip netns list | grep -q "^$P-"; then
  echo "demo.sh: namespaces named $P-* already exist (left by something else?); not touching them" >&2
  exit 1
fi
work=$(mktemp -d -t vnet-demo.XXXXXX)
namespaces=()            # every namespace we made, recorded before it is made
pids=()                  # every daemon we started
ok=0
started=""              # $SECONDS when the demo proper (after the build) began

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ "$ok" -ne 1 ]; then
    for log in "$work"/*.log; do
      [ -s "$log" ] || continue
      echo "---- last lines of $(basename "$log")"
      tail -n 15 "$log"
    done
  fi
  [ -n "$started" ] && echo "== the demo (after the build) ran for $((SECONDS - started)) s"
  echo
  echo "== cleaning up: stopping the daemons, deleting the namespaces and $work"
  # Anything else still running in one of our namespaces (the iperf3 server) was started by us.
  for ns in "${namespaces[@]}"; do
    pids+=($(ip netns pids "$ns" 2>/dev/null))
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 20); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  # Deleting a namespace deletes its veth ends (and their peers) and the bridge.
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
  if ip netns list | grep -q "^$P-"; then
    echo "!! namespaces left behind:"; ip netns list | grep "^$P-"
    status=1
  else
    echo "== clean: no $P-* namespace left, no daemon running"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- Helpers ------------------------------------------------------------------
step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }          # what and why, in words
show() { printf '\033[1m$ %s\033[0m\n' "$*"; }                # the command, then its output
# run_in NS CMD...: show and run CMD inside namespace $P-NS
run_in() { local ns="$P-$1"; shift; show "ip netns exec $ns $*"; ip netns exec "$ns" "$@"; }
# q NS CMD...: run CMD inside namespace $P-NS, quietly
q() { local ns="$P-$1"; shift; ip netns exec "$ns" "$@"; }
fail() { printf '\n\033[1;31m!! %s\033[0m\n' "$*" >&2; exit 1; }
# wait_for SECONDS CMD...: retry CMD every 0.2 s until it succeeds
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}
# The field FIELD (1-based, as in the header) of NODE's listnetworks line for $nwid.
netfield() { q "$1" vnet-cli -D "$1" listnetworks | awk -v n="$nwid" -v f="$2" '$3 == n { print $f }'; }
status_is() { [ "$(netfield "$1" 6)" = "$2" ]; }
online() { q "$1" vnet-cli -D "$1" info | grep -q ONLINE; }

cd "$work"
started=$SECONDS

# ---- The private internet ------------------------------------------------------
step "Making a private 'internet': namespace $NET with a bridge $BR. Nothing leaves this machine:
   the underlay is 198.51.100.0/24 (TEST-NET-2, a documentation range) and there is no default route."
namespaces+=("$NET")
ip netns add "$NET"
ip -n "$NET" link set lo up
ip -n "$NET" link add "$BR" type bridge stp_state 0 forward_delay 0
ip -n "$NET" link set "$BR" up
ip netns exec "$NET" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true

# host NAME N: namespace $P-NAME, veth ${P}hN plugged into the bridge, 198.51.100.N/24
host() {
  local ns="$P-$1" i=$2
  namespaces+=("$ns")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add "${P}h$i" type veth peer name "${P}u$i" netns "$NET"
  ip -n "$NET" link set "${P}u$i" master "$BR" up
  ip -n "$ns" addr add "198.51.100.$i/24" dev "${P}h$i"
  ip -n "$ns" link set "${P}h$i" up
  printf '   %-6s namespace %-12s underlay address 198.51.100.%s\n' "$1" "$ns" "$i"
}
step "Four machines on it, each a namespace of its own: the root server, the controller, two members."
host root 1
host ctl 2
host m1 3
host m2 4
ROOT_IP=198.51.100.1
step "Checking the underlay: member 1 reaches the root's address directly (plain IP, no vnet yet)."
run_in m1 ping -n -c 1 -W 2 "$ROOT_IP"

# ---- The planet ----------------------------------------------------------------
step "A private planet: the signed file that tells every node where the root server is.
   The root gets an identity; its planet names it, reachable at $ROOT_IP/$PORT."
mkdir root ctl m1 m2
show "vnet-idtool generate root/identity.secret root/identity.public"
vnet-idtool generate root/identity.secret root/identity.public
show "vnet-planet initplanet root/identity.public > planet.json"
vnet-planet initplanet root/identity.public > planet.json
show "edit planet.json: \"stableEndpoints\": [\"$ROOT_IP/$PORT\"]"
sed -i "s|\"stableEndpoints\": \[\]|\"stableEndpoints\": [\"$ROOT_IP/$PORT\"]|" planet.json
grep -q "$ROOT_IP/$PORT" planet.json || fail "could not set the root's endpoint in planet.json"
show "vnet-planet mkworld planet.json -o planet"
vnet-planet mkworld planet.json -o planet
step "Every node gets the same planet file in its home directory (one home per node, in $work)."
for d in root ctl m1 m2; do cp planet "$d/planet"; done
show "cp planet root/planet ctl/planet m1/planet m2/planet"

# ---- The daemons ---------------------------------------------------------------
step "Starting the daemons, each in its namespace on UDP port $PORT: the root (vnet-planet serve),
   the controller (vnet-controller: a node that also hands out network configs) and two members
   (vnet-node). Their logs go to $work/*.log."
start() { # NAME PROGRAM ARGS...
  local name=$1; shift
  show "ip netns exec $P-$name $* &"
  NO_COLOR=1 ip netns exec "$P-$name" "$@" 2>"$name.log" &
  pids+=($!)
}
start root vnet-planet serve -d root -p "$PORT"
start ctl vnet-controller -d ctl -p "$PORT"
start m1 vnet-node -d m1 -p "$PORT"
start m2 vnet-node -d m2 -p "$PORT"
step "Waiting until the controller and both members are ONLINE (they made their identities and
   reached the root)."
for n in ctl m1 m2; do
  wait_for 20 online "$n" || fail "$n did not come ONLINE within 20 s"
  run_in "$n" vnet-cli -D "$n" info
done
CTL=$(cut -c1-10 ctl/identity.public)
M1=$(cut -c1-10 m1/identity.public)
M2=$(cut -c1-10 m2/identity.public)

# ---- The network ---------------------------------------------------------------
step "Creating a private network on the controller: addresses 10.147.17.10-50 for its members,
   10.147.17.0/24 routed over it. Its id starts with the controller's address ($CTL)."
show "ip netns exec $P-ctl vnet-cli -D ctl network create --name lab --pool 10.147.17.10-10.147.17.50 --route 10.147.17.0/24"
out=$(q ctl vnet-cli -D ctl network create --name lab --pool 10.147.17.10-10.147.17.50 --route 10.147.17.0/24)
echo "$out"
nwid=$(echo "$out" | awk '{ print $4 }')
[ -n "$nwid" ] || fail "no network id in: $out"

step "Both members join it. It is private, so the controller says ACCESS_DENIED until an
   administrator authorizes them: no device, no address yet."
run_in m1 vnet-cli -D m1 join "$nwid"
run_in m2 vnet-cli -D m2 join "$nwid"
for n in m1 m2; do
  wait_for 10 status_is "$n" ACCESS_DENIED || fail "$n is not ACCESS_DENIED: $(netfield "$n" 6)"
done
run_in m1 vnet-cli -D m1 listnetworks
run_in m2 vnet-cli -D m2 listnetworks
step "The controller lists who asked to join (members m1 = $M1, m2 = $M2)."
run_in ctl vnet-cli -D ctl member list "$nwid"

step "Authorizing both members on the controller. Each gets the next free address of the pool;
   within a couple of seconds the members get their config, create their TAP device and set its address."
run_in ctl vnet-cli -D ctl member authorize "$nwid" "$M1"
run_in ctl vnet-cli -D ctl member authorize "$nwid" "$M2"
for n in m1 m2; do
  wait_for 10 status_is "$n" OK || fail "$n is not OK after authorization: $(netfield "$n" 6)"
done
run_in m1 vnet-cli -D m1 listnetworks
run_in m2 vnet-cli -D m2 listnetworks
DEV1=$(netfield m1 8)
DEV2=$(netfield m2 8)
IP2=$(netfield m2 9); IP2=${IP2%%/*}; IP2=${IP2%%,*}
[ -n "$IP2" ] && [ "$IP2" != - ] || fail "member 2 has no address on the network"
has_ip() { q "$1" ip -br addr show dev "$2" | grep -q "$3"; }
wait_for 5 has_ip m1 "$DEV1" 10.147.17. || fail "m1's device $DEV1 has no address"
wait_for 5 has_ip m2 "$DEV2" "$IP2" || fail "m2's device $DEV2 does not carry $IP2"
step "The TAP devices, as the kernel sees them: an Ethernet interface with the assigned address."
run_in m1 ip -br addr show dev "$DEV1"
run_in m2 ip -br addr show dev "$DEV2"

# ---- Traffic over the virtual network -------------------------------------------
step "Ping member 2's virtual address ($IP2) from member 1: Ethernet frames go into m1's TAP,
   are encrypted and sent over UDP through the 'internet', and come out of m2's TAP."
# Member 1 first has to find member 2 (through the root) and learn its MAC (ARP): give the
# first reply up to 10 s before the ping that is shown.
wait_for 10 q m1 ping -n -c 1 -W 1 "$IP2" || true
if ! run_in m1 ping -n -c 3 -w 10 "$IP2"; then
  fail "the virtual network does not carry frames yet: both members are OK with an address on
   their TAP, but no ping reply came back from $IP2 (the Ethernet frame path between members
   is the piece being finished)."
fi

step "Throughput: an iperf3 server in member 2 (one test, then it exits), a 5 s test from member 1."
run_in m2 iperf3 -s -1 -D -B "$IP2"
listening() { q m2 ss -Htln "sport = :5201" | grep -q .; }
wait_for 5 listening || fail "iperf3 server did not start in m2"
run_in m1 iperf3 -c "$IP2" -t 5 --connect-timeout 5000 || fail "iperf3 over the virtual network failed"

ok=1
step "Done in $((SECONDS - started)) s (after the build): two members on a private virtual network,
   authorized by their controller, found each other through the root and exchanged traffic."
