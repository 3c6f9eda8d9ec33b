#!/usr/bin/env bash
# Builds the Debian package (cargo-deb) of the five binaries, with their
# systemd units, man pages and shell completions, into target/debian/.
#
#   scripts/package-deb.sh [--profile release|dev]   (default release)
#
# The man pages and completions come from the binaries themselves
# (VNET_WRITE_DOCS, node/src/generated_docs.rs); the units are
# dist/systemd's with the package's paths (/usr/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = --profile ]; then
	profile="${2:?--profile needs a name}"
fi
case "$profile" in
release) dir=target/release ;;
dev) dir=target/debug ;;
*) echo "usage: $0 [--profile release|dev]" >&2; exit 2 ;;
esac
command -v cargo-deb >/dev/null || { echo "cargo-deb is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }

bins=(vnet-node vnet-cli vnet-controller vnet-idtool vnet-planet)
cargo build --locked --profile "$profile" $(printf -- '--bin %s ' "${bins[@]}")

assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/systemd" "$assets/bash" "$assets/zsh" "$assets/fish"
for b in "${bins[@]}"; do
	VNET_WRITE_DOCS="$assets/generated" "$dir/$b"
	cp "$assets/generated/completions/$b.bash" "$assets/bash/$b"
	cp "$assets/generated/completions/_$b" "$assets/zsh/_$b"
	cp "$assets/generated/completions/$b.fish" "$assets/fish/$b.fish"
done
for unit in dist/systemd/*.service; do
	sed 's#/usr/local/bin/#/usr/bin/#g' "$unit" >"$assets/systemd/$(basename "$unit")"
done

cargo deb --locked -p vnet_node --no-build --profile "$profile" --strip
ls -1 target/debian/*.deb
