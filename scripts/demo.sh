#!/usr/bin/env bash
# Installs what vnet needs, builds it, and runs the demo: a fresh identity, a
# moon with that identity as its root, signed and shown back with showworld.
# (The live virtual network joins this demo as the node daemon lands.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== building (release)"
cargo build --release --locked --bins
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
echo
echo "The moon file verifies; a node would place it in HOME/moons.d/."
