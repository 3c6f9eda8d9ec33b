# Helpers of the benchmarks that run vnet in the shared namespace lab
# (sourced after ../shared/lab/zt/zt-bench.sh, which defines bg, RUN and the
# lab; BIN is the folder of the vnet binaries).

vcli() { local ns=$1; shift; ip netns exec "$ns" "$BIN/vnet-cli" "$@"; }

rss() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# ping_median NS IP COUNT: the median round trip (ms) of COUNT pings 0.05 s apart
# (issue 12 names medians; one slow wake-up moves a mean of 20 a lot).
ping_median() {
  ip netns exec "$1" ping -n -c "$3" -i 0.05 "$2" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' |
    sort -g | awk '{v[NR]=$1} END {if (NR) printf "%.3f", v[int((NR+1)/2)]}'
}

# vnet_up: root (vnet-planet) and controller on h1, members on h2 and h3 (the
# lab must be up), one network; sets VNET_IP3, h3's address on it.
# MEMBER_CONF: the members' local.conf; RELAY_THREADS: the root's relayThreads.
vnet_up() {
  local d=$RUN/vnet h nwid
  rm -rf "$d"; mkdir -p "$d"/{root,ctl,m2,m3}
  (cd "$d/root" && "$BIN/vnet-idtool" generate identity.secret identity.public >/dev/null)
  "$BIN/vnet-planet" initplanet "$d/root/identity.public" >"$d/planet.json"
  sed -i 's|"stableEndpoints": \[\]|"stableEndpoints": ["10.99.0.1/9993"]|' "$d/planet.json"
  "$BIN/vnet-planet" mkworld "$d/planet.json" -o "$d/planet" >/dev/null
  for h in root ctl m2 m3; do cp "$d/planet" "$d/$h/"; done
  if [ -n "${RELAY_THREADS:-}" ]; then
    echo "{\"settings\": {\"relayThreads\": $RELAY_THREADS}}" >"$d/root/local.conf"
  fi
  if [ -n "${MEMBER_CONF:-}" ]; then
    for h in m2 m3; do echo "$MEMBER_CONF" >"$d/$h/local.conf"; done
  fi
  bg h1 vnet-root "$BIN/vnet-planet" serve -d "$d/root" -p 9993
  bg h1 vnet-ctl "$BIN/vnet-controller" -d "$d/ctl" -p 9994
  bg h2 vnet-m2 "$BIN/vnet-node" -d "$d/m2" -p 9993
  bg h3 vnet-m3 "$BIN/vnet-node" -d "$d/m3" -p 9993
  for _ in $(seq 150); do
    vcli h1 -D "$d/ctl" info 2>/dev/null | grep -q ONLINE && vcli h2 -D "$d/m2" info 2>/dev/null | grep -q ONLINE &&
      vcli h3 -D "$d/m3" info 2>/dev/null | grep -q ONLINE && break
    sleep 0.1
  done
  nwid=$(vcli h1 -D "$d/ctl" network create --name bench --pool 10.98.9.1-10.98.9.50 --route 10.98.9.0/24 | awk '{print $4}')
  for h in 2 3; do
    vcli h1 -D "$d/ctl" member authorize "$nwid" "$(cut -c1-10 "$d/m$h/identity.public")" >/dev/null
    vcli "h$h" -D "$d/m$h" join "$nwid" >/dev/null
  done
  VNET_IP3=
  for _ in $(seq 150); do
    VNET_IP3=$(vcli h3 -D "$d/m3" listnetworks | awk -v n="$nwid" '$3==n{print $9}' | cut -d/ -f1)
    [ -n "$VNET_IP3" ] && [ "$VNET_IP3" != "-" ] && break
    sleep 0.1
  done
}
