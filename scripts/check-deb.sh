#!/usr/bin/env bash
# Installs the Debian package built by scripts/package-deb.sh with dpkg -i,
# checks it from the installed paths (the binaries run, vnet-idtool makes
# an identity, systemd-analyze verifies the units, the `vnet` user, the
# state directory, man pages and completions are there), then purges it.
# Fails on the first problem. Run as root on a machine it may install on.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -1t target/debian/vnet_*.deb | head -1)
echo "== installing $deb"
dpkg -i "$deb"
trap 'dpkg --purge vnet >/dev/null 2>&1 || true' EXIT

fail() { echo "check-deb: $*" >&2; exit 1; }
for b in vnet-node vnet-cli vnet-controller vnet-idtool vnet-planet; do
	[ "$(command -v "$b")" = "/usr/bin/$b" ] || fail "$b is not /usr/bin/$b"
	"$b" --version >/dev/null || fail "$b --version failed"
	[ -f "/usr/share/man/man1/$b.1.gz" ] || fail "no man page for $b"
	[ -f "/usr/share/bash-completion/completions/$b" ] || fail "no bash completion for $b"
done
getent passwd vnet >/dev/null || fail "no vnet user"
[ "$(stat -c '%U %a' /var/lib/vnet)" = "vnet 700" ] || fail "/var/lib/vnet is not vnet's, 0700"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; dpkg --purge vnet >/dev/null 2>&1 || true' EXIT
(cd "$tmp" && vnet-idtool generate identity.secret identity.public >/dev/null)
grep -Eq '^[0-9a-f]{10}:0:[0-9a-f]{128}$' "$tmp/identity.public" || fail "vnet-idtool made no identity"

systemd-analyze verify /lib/systemd/system/vnet-node.service \
	/lib/systemd/system/vnet-controller.service /lib/systemd/system/vnet-planet.service ||
	fail "systemd-analyze verify refused the installed units"
grep -q '^ExecStart=/usr/bin/vnet-node ' /lib/systemd/system/vnet-node.service ||
	fail "the installed unit does not run /usr/bin/vnet-node"

dpkg --purge vnet
! getent passwd vnet >/dev/null || fail "purge left the vnet user"
[ ! -e /usr/bin/vnet-node ] || fail "purge left /usr/bin/vnet-node"
echo "== the package installs, works from its paths and purges cleanly"
