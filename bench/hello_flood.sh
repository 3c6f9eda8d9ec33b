#!/usr/bin/env bash
# Forged-HELLO flood against a real root, two builds side by side: runs
# tests/tests/hello_flood_e2e.rs (release) once against this tree's release
# binaries and once against BEFORE's (a git revision, built in a worktree),
# and prints each run's FIGURES lines. Run as root, alone (2-core machine).
#   bench/hello_flood.sh                 before = eb1b0cc (the audit's main)
#   BEFORE=<rev> bench/hello_flood.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BEFORE=${BEFORE:-eb1b0cc}
OLD=${OLD:-/tmp/vnet-before-$BEFORE}
bins="-p vnet_node -p vnet-idtool -p vnet-planet -p vnet-controller --bins"
# shellcheck disable=SC2086
cargo build --release --locked $bins >/dev/null
if [ ! -x "$OLD/target/release/vnet-planet" ]; then
  [ -d "$OLD" ] || git worktree add --detach "$OLD" "$BEFORE" >/dev/null
  # shellcheck disable=SC2086
  (cd "$OLD" && cargo build --release --locked $bins >/dev/null)
fi
run() {
  echo "== $1"
  VNET_BIN_DIR=$2 cargo test --release --locked -p vnet-tests --test hello_flood_e2e -- --nocapture 2>&1 |
    grep -E '^FIGURES|test result|panicked' || true
}
run "before ($BEFORE)" "$OLD/target/release"
run "after ($(git rev-parse --short HEAD))" "$REPO/target/release"
