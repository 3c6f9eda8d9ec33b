#!/usr/bin/env bash
# Installs what vnet needs, builds it, and runs the demo: a fresh identity, a
# moon with that identity as its root, signed and shown back with showworld;
# then a live network on loopback: a root and two nodes that find each other.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== building (release)"
cargo build --release --locked -p vnet_node -p vnet-idtool -p vnet-planet --bins
bin="$PWD/target/release"

work=$(mktemp -d -t vnet-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say vnet-idtool generate identity.secret identity.public
"$bin/vnet-idtool" generate identity.secret identity.public
say cat identity.public
cat identity.public; echo
say "vnet-idtool initmoon identity.public > moon.json"
"$bin/vnet-idtool" initmoon identity.public > moon.json
# What a user does by hand: say where the moon's root is reachable.
# 203.0.113.0/24 is a documentation range: nothing is ever sent there.
sed -i 's|"stableEndpoints": \[\]|"stableEndpoints": ["203.0.113.10/9993"]|' moon.json
say "edit moon.json: \"stableEndpoints\": [\"203.0.113.10/9993\"]"
say vnet-idtool genmoon moon.json
"$bin/vnet-idtool" genmoon moon.json
moon=$(ls ./*.moon)
say vnet-idtool showworld "${moon#./}"
"$bin/vnet-idtool" showworld "$moon"

# ---- A live network: a root and two nodes (on loopback, ports 19990-19992).
say "A private planet whose root is reached at 127.0.0.1/19990"
mkdir -p root a b
"$bin/vnet-idtool" generate root/identity.secret root/identity.public >/dev/null
"$bin/vnet-planet" initplanet root/identity.public > planet.json
sed -i 's|"stableEndpoints": \[\]|"stableEndpoints": ["127.0.0.1/19990"]|' planet.json
"$bin/vnet-planet" mkworld planet.json -o planet
for d in root a b; do cp planet "$d/"; done
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin/vnet-planet" serve -d root -p 19990 2>root.log & pids+=($!)
"$bin/vnet-node" -d a -p 19991 2>a.log & pids+=($!)
"$bin/vnet-node" -d b -p 19992 2>b.log & pids+=($!)
for _ in $(seq 50); do
  "$bin/vnet-cli" -D a info 2>/dev/null | grep -q ONLINE && "$bin/vnet-cli" -D b info 2>/dev/null | grep -q ONLINE && break
  sleep 0.2
done
say vnet-cli -D a info
"$bin/vnet-cli" -D a info
addr_b=$(cut -c1-10 b/identity.public)
say vnet-cli -D a ping "$addr_b" -c 3
"$bin/vnet-cli" -D a ping "$addr_b" -c 3
say vnet-cli -D a peers
"$bin/vnet-cli" -D a peers
echo
echo "Node a found node b through the root (WHOIS), shook hands (forward-secret"
echo "session) and talks to it directly. Virtual networks (TAP) come next."
