#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit, property, vector and
# end-to-end tests. Run as root on Debian from the repository's root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (the end-to-end tests run these binaries)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz smoke: every target 50,000 runs or 10 s from its seeds, failing on a crash"
fuzz/run.sh 10 50000
echo "== Debian package: built from the test build, installed with dpkg -i, checked, purged"
scripts/package-deb.sh --profile dev
scripts/check-deb.sh
