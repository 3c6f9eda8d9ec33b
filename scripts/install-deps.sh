#!/usr/bin/env bash
# Installs what vnet needs to build and test on Debian, as root. Idempotent:
# it installs only what is missing, so re-running it is cheap.
set -euo pipefail

# Debian packages the build, the end-to-end tests and scripts/demo.sh use
# (iproute2: `ip netns`, veths, bridges; iperf3: throughput over the virtual network;
# miniupnpd-nftables + nftables: a real UPnP/NAT-PMP gateway in the NAT tests;
# conntrack: flushing NAT mappings mid-transfer; dnsmasq-base + udhcpc: a LAN's DHCP server and a
# client across an L2 bridge; python3: raw frames and broadcasts in the bridge tests;
# systemd: `systemd-analyze verify` of the units in dist/systemd; g++: libFuzzer, which
# cargo-fuzz builds for the fuzz smoke in scripts/test.sh; postgresql: the controller's
# PostgreSQL store and failover tests, which start a server of their own in a temp directory;
# bind9-dnsutils: `dig` against the controller's member-name DNS in the DNS test;
# chromium, chromium-driver, fonts-dejavu-core: the web UI test's real browser).
PACKAGES=(ca-certificates curl gcc g++ libc6-dev pkg-config iproute2 iptables iputils-ping iperf3
  nftables miniupnpd-nftables conntrack dnsmasq-base udhcpc python3 systemd postgresql bind9-dnsutils
  chromium chromium-driver fonts-dejavu-core)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust: the edition-2024 workspace needs Rust 1.88 or newer. Debian's own
# rustc is older, so a machine without cargo gets rustup's stable toolchain.
if [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "== installing Rust (rustup, stable)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
cargo --version
# cargo-fuzz: the fuzz smoke in scripts/test.sh and fuzz/run.sh (stable toolchain,
# RUSTC_BOOTSTRAP=1; see fuzz/README.md).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
# cargo-deb: the Debian package (scripts/package-deb.sh), built and
# installed by scripts/test.sh.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked
fi
