//! Getting through NAT: which socket a path uses, falling back to a TCP
//! relay when no root answers over UDP, the gateway-mapped endpoint, the
//! birthday hole punch between a hard and an easy NAT, the relay's rate
//! limit, and the netcheck report.
//!
//! Birthday punch (PROTOCOL.md §3.9): the side behind an endpoint-dependent
//! ("hard") NAT opens [`PUNCH_SOCKETS`] sockets and sends one probe from each
//! to the easy side's root-observed endpoint, then tells it with PUNCH (through
//! the root). The easy side then probes up to [`PUNCH_PROBES_MAX`] random ports
//! of the hard side's public IP. A probe that lands on one of the hard side's
//! fresh mappings gets through its NAT (the mapping points at the easy side's
//! endpoint), and the answer goes back the same way: with 256 mappings and
//! 2048 probes over 64512 ports, a hit is missed about once in 3000 tries.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{Node, PeerRole, PeerRoute, echo_probe};
use crate::address::Address;
use crate::constants::*;
use crate::endpoint::format_endpoint;
use crate::hash_state::HashState;
use crate::local_socket::LocalSocket;
use crate::maybe_ms::MaybeMs;
use crate::message::{PunchMessage, encode_punch};
pub use crate::nat_mapping::NatMapping;
use crate::node::Outbox;
use crate::relay::RelayBudget;
use crate::rng::{NodeRng, Rng};
use crate::verb::Verb;

/// Node-wide NAT traversal state.
#[derive(Debug)]
pub(crate) struct TraversalState {
    /// Last authenticated UDP packet from any root.
    pub udp_from_root_ms: Option<u64>,
    /// The first timer tick (the node's start, on its clock).
    first_tick_ms: Option<u64>,
    /// Relay through TCP at once, whatever UDP does (`forceTcpRelay`).
    pub force_tcp: bool,
    /// Last UDP probe to the roots while relaying over TCP.
    last_udp_retry_ms: Option<u64>,
    /// The gateway's port mapping: the external IP it reports, if any, and the external port.
    port_mapping: Option<(Option<IpAddr>, u16)>,
    /// Relay token buckets per source IP (per /64 for IPv6).
    relay_budget: RelayBudget,
    /// Next birthday-punch socket id (never reused, so a late datagram on
    /// a closed socket cannot be taken for a new one's).
    next_punch_socket: u32,
}

impl TraversalState {
    /// The state of a node that has not started.
    pub fn new(hasher: HashState) -> Self {
        Self {
            udp_from_root_ms: None,
            first_tick_ms: None,
            force_tcp: false,
            last_udp_retry_ms: None,
            port_mapping: None,
            relay_budget: RelayBudget::new(hasher),
            next_punch_socket: 0,
        }
    }

    /// Sources with a relay budget tracked.
    pub fn relay_bucket_count(&self) -> usize {
        self.relay_budget.len()
    }

    /// Whether a datagram from `from` may be relayed now (token bucket per
    /// source IP, or /64; the table is bounded).
    pub fn relay_allowed(&mut self, now_ms: u64, from: SocketAddr) -> bool {
        self.relay_budget.allowed(now_ms, from)
    }

    /// Forgets buckets that are full again (idle sources).
    pub fn expire_relay_buckets(&mut self, now_ms: u64) {
        self.relay_budget.expire(now_ms)
    }
}

/// Which side of a birthday punch we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PunchRole {
    /// Behind the hard NAT: many sockets, one probe each.
    Hard,
    /// Behind the easy NAT: many probes to random ports.
    Easy,
}

/// A birthday punch in progress with one peer.
#[derive(Debug, Clone)]
pub(crate) struct Punch {
    role: PunchRole,
    started_ms: u64,
    /// Hard side: our sockets. Easy side: empty.
    sockets: Vec<u32>,
    /// Easy side: ports still to probe on `target`'s IP.
    ports: Vec<u16>,
    /// Hard side: the easy side's endpoint. Easy side: the hard side's public IP (port unused).
    target: SocketAddr,
}

/// One root, as `vnet-cli netcheck` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetcheckRoot {
    /// 10 hex digits.
    pub address: String,
    /// PLANET or MOON.
    pub role: PeerRole,
    /// Where this root sees us (`ip/port`), if it told us over UDP.
    pub reflected: Option<String>,
    /// Smoothed round-trip time (ms).
    pub latency: Option<u64>,
    /// Whether it answers over UDP now.
    pub udp: bool,
    /// Whether we reach it through our TCP relay connection now.
    pub tcp: bool,
}

/// Where the node stands behind its NAT (`GET /netcheck`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetcheckStatus {
    /// How our NAT maps ports, from the roots' reflections.
    pub mapping: NatMapping,
    /// Whether any root answers over UDP.
    pub udp: bool,
    /// Whether UDP looks blocked (no root answered over UDP since the grace period).
    pub udp_blocked: bool,
    /// Whether packets go through a TCP relay connection.
    pub tcp_relay: bool,
    /// Whether TCP relay is forced by `forceTcpRelay`.
    pub force_tcp_relay: bool,
    /// The gateway-mapped endpoint we advertise (`ip/port`), if any.
    pub mapped_endpoint: Option<String>,
    /// Each root.
    pub roots: Vec<NetcheckRoot>,
}

impl Node {
    /// Whether nothing may go to `peer` over UDP (forceTcpRelay, and it is
    /// not a root: roots are reached through the TCP connection anyway).
    pub(crate) fn no_udp_to(&self, peer: Address) -> bool {
        self.traversal.force_tcp && !self.peers.get(&peer).is_some_and(|p| p.is_root())
    }

    /// Where the roots see us: (root, reflected address) for every current
    /// root that told us over UDP.
    pub(crate) fn root_reflections(&self) -> impl Iterator<Item = (Address, SocketAddr)> + '_ {
        self.reflected
            .iter()
            .filter(|(a, _)| self.peers.get(a).is_some_and(|p| p.is_root()))
            .map(|(a, r)| (*a, *r))
    }

    /// Relays through TCP whatever UDP does (`forceTcpRelay` in local.conf):
    /// no UDP to peers or roots at all.
    pub fn set_force_tcp_relay(&mut self, force: bool) {
        self.traversal.force_tcp = force;
    }

    /// Whether any root answers over UDP (recently heard, or a live UDP path).
    fn udp_to_roots_works(&self, now_ms: u64) -> bool {
        let recent = self
            .traversal
            .udp_from_root_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < TCP_FALLBACK_AFTER_MS);
        recent
            || self.peers.values().any(|p| {
                p.is_root()
                    && p.paths
                        .iter()
                        .any(|x| !x.socket.is_tcp() && x.is_alive(now_ms, false))
            })
    }

    /// Whether the driver should keep a TCP relay connection to a root:
    /// forced, or no root answered over UDP for [`TCP_FALLBACK_AFTER_MS`].
    pub fn tcp_relay_wanted(&self, now_ms: u64) -> bool {
        if self.is_root() {
            return false;
        }
        if self.traversal.force_tcp {
            return true;
        }
        let started = self
            .traversal
            .first_tick_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= TCP_FALLBACK_AFTER_MS);
        started && !self.udp_to_roots_works(now_ms)
    }

    /// The root our TCP relay connection goes to, and its endpoint: the one
    /// whose TCP path answers, else each root in turn (by address) for
    /// [`TCP_RELAY_ROOT_TRY_MS`], so an unreachable one is left.
    pub(crate) fn tcp_root(&self, now_ms: u64) -> Option<(Address, SocketAddr)> {
        let alive = self.peers.iter().find_map(|(a, p)| {
            p.paths
                .iter()
                .find(|x| x.socket == LocalSocket::TcpToRoot && x.is_alive(now_ms, false))
                .filter(|_| p.is_root())
                .map(|x| (*a, x.addr))
        });
        if alive.is_some() {
            return alive;
        }
        let mut roots: Vec<(Address, SocketAddr)> = self
            .root_endpoints
            .firsts()
            .filter(|(a, _)| self.peers.get(a).is_some_and(|p| p.is_root()))
            .collect();
        if roots.is_empty() {
            return None;
        }
        roots.sort();
        let turn = (now_ms / TCP_RELAY_ROOT_TRY_MS) as usize % roots.len();
        Some(roots[turn])
    }

    /// The physical addresses the tunnel itself talks to: every root's
    /// stable endpoints and every peer's UDP paths. A managed route must not
    /// capture them (an exit node would swallow its own tunnel).
    pub fn physical_addresses(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .peers
            .values()
            .flat_map(|p| {
                p.paths
                    .iter()
                    .filter(|x| !x.socket.is_tcp())
                    .map(|x| x.addr.ip())
            })
            .chain(self.root_endpoints.iter().map(|(_, e)| e.ip()))
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Where our TCP relay connection should go now (None when UDP works).
    pub fn tcp_relay_target(&self, now_ms: u64) -> Option<SocketAddr> {
        if !self.tcp_relay_wanted(now_ms) {
            return None;
        }
        self.tcp_root(now_ms).map(|(_, at)| at)
    }

    /// Tells the node about the gateway's mapping of our mapped socket:
    /// the external IP the gateway reports (if any) and the external port.
    pub fn set_port_mapping(&mut self, mapping: Option<(Option<IpAddr>, u16)>) {
        if self.traversal.port_mapping == mapping {
            return;
        }
        self.traversal.port_mapping = mapping;
        // Advertise the change to peers in use at the next tick.
        for t in self.peers.values_mut().filter_map(|p| p.traversal.as_mut()) {
            t.last_paths_pushed_ms = MaybeMs::NONE;
        }
    }

    /// The mapped endpoint to advertise: the gateway's external IP when it
    /// is public and agrees with the roots, else the root-observed IP (double
    /// NAT, or a gateway that reports nothing) with the mapped port.
    pub fn mapped_endpoint(&self) -> Option<SocketAddr> {
        let (gateway_ip, port) = self.traversal.port_mapping?;
        let mut observed: Vec<IpAddr> = self
            .root_reflections()
            .map(|(_, r)| r)
            .filter(|a| a.is_ipv4())
            .map(|a| a.ip())
            .collect();
        observed.sort();
        observed.dedup();
        let ip = match gateway_ip {
            Some(ip) if is_public(ip) && (observed.is_empty() || observed.contains(&ip)) => ip,
            _ => *observed.first()?,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// How our NAT maps ports, from the roots' reflections.
    pub fn nat_mapping(&self) -> NatMapping {
        let reflected: Vec<SocketAddr> = self.root_reflections().map(|(_, r)| r).collect();
        NatMapping::classify(&reflected, &self.local_endpoints)
    }

    /// Our socket for sending to `to` on behalf of peer `peer`: the one its
    /// path was last heard on; a root's goes through the TCP relay while UDP
    /// does not work.
    pub(crate) fn socket_for(&self, now_ms: u64, peer: Address, to: SocketAddr) -> LocalSocket {
        let Some(p) = self.peers.get(&peer) else {
            return LocalSocket::Primary;
        };
        let path = p.paths.iter().find(|x| x.addr == to);
        if p.is_root() && self.tcp_relay_wanted(now_ms) {
            return match path {
                Some(x) if !x.socket.is_tcp() && x.is_alive(now_ms, false) => x.socket,
                _ => LocalSocket::TcpToRoot,
            };
        }
        path.map_or(LocalSocket::Primary, |x| x.socket)
    }

    /// Our socket for a route to `addr`.
    pub(crate) fn route_socket(&self, now_ms: u64, addr: Address, route: PeerRoute) -> LocalSocket {
        match route {
            PeerRoute::Direct(to) => self.socket_for(now_ms, addr, to),
            PeerRoute::Relayed { root, via } => self.socket_for(now_ms, root, via),
        }
    }

    /// Whether `addr` is reached through our TCP relay connection now.
    pub fn is_tcp_relayed(&self, now_ms: u64, addr: Address) -> bool {
        self.route(now_ms, addr)
            .is_some_and(|r| self.route_socket(now_ms, addr, r) == LocalSocket::TcpToRoot)
    }

    /// The driver closed one of our sockets (a TCP connection ended, a punch
    /// socket was dropped): forget the paths that used it.
    pub fn socket_closed(&mut self, socket: LocalSocket) {
        for p in self.peers.values_mut() {
            p.paths.forget_socket(socket);
        }
    }

    /// Birthday-punch sockets still in use (a punch in progress, or a path
    /// heard on one); the driver closes the others.
    pub fn live_punch_sockets(&self) -> HashSet<u32> {
        let mut live = HashSet::new();
        for p in self.peers.values() {
            if let Some(punch) = p.traversal().and_then(|t| t.punch.as_ref()) {
                live.extend(punch.sockets.iter().copied());
            }
            for x in p.paths.iter() {
                if let LocalSocket::Punch(n) = x.socket {
                    live.insert(n);
                }
            }
        }
        live
    }

    /// The netcheck report (without the driver's port-mapping state).
    pub fn netcheck(&self, now_ms: u64) -> NetcheckStatus {
        let mut roots: Vec<NetcheckRoot> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_root())
            .map(|(a, p)| NetcheckRoot {
                address: a.to_string(),
                role: p.role,
                reflected: self.reflected.get(a).map(format_endpoint),
                latency: p.latency_ms().get(),
                udp: p
                    .paths
                    .iter()
                    .any(|x| !x.socket.is_tcp() && x.is_alive(now_ms, false)),
                tcp: p
                    .paths
                    .iter()
                    .any(|x| x.socket == LocalSocket::TcpToRoot && x.is_alive(now_ms, false)),
            })
            .collect();
        roots.sort_by(|a, b| a.address.cmp(&b.address));
        let tcp_relay = self.tcp_relay_wanted(now_ms);
        let udp = self.udp_to_roots_works(now_ms);
        NetcheckStatus {
            mapping: self.nat_mapping(),
            udp,
            udp_blocked: !udp && tcp_relay && !self.traversal.force_tcp,
            tcp_relay,
            force_tcp_relay: self.traversal.force_tcp,
            mapped_endpoint: self.mapped_endpoint().map(|a| format_endpoint(&a)),
            roots,
        }
    }

    /// Node-wide traversal work on each tick: note the start, probe the
    /// roots over UDP while relaying through TCP, age the relay buckets.
    pub(crate) fn tick_traversal(&mut self, now_ms: u64, out: &mut Outbox) {
        self.traversal.first_tick_ms.get_or_insert(now_ms);
        self.traversal.expire_relay_buckets(now_ms);
        if self.traversal.force_tcp || !self.tcp_relay_wanted(now_ms) {
            return;
        }
        if self
            .traversal
            .last_udp_retry_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < TCP_RELAY_UDP_RETRY_INTERVAL_MS)
        {
            return;
        }
        self.traversal.last_udp_retry_ms = Some(now_ms);
        // UDP may work again: one probe per root endpoint over UDP. An answer
        // makes its path live, and the next tick leaves TCP.
        let targets: Vec<(Address, SocketAddr, bool)> = self
            .root_endpoints
            .iter()
            .filter_map(|(a, e)| {
                let p = self.peers.get(&a).filter(|p| p.is_root())?;
                Some((a, e, p.sessions.is_established()))
            })
            .collect();
        for (addr, to, established) in targets {
            if established {
                let payload = echo_probe(now_ms);
                self.send_session_via(
                    now_ms,
                    addr,
                    Some(to),
                    Some(LocalSocket::Primary),
                    Verb::Echo,
                    &payload,
                    out,
                );
            } else {
                self.send_hello_via(now_ms, addr, &[to], &[LocalSocket::Primary], out);
            }
        }
    }

    /// Per-peer punch work on each tick: start one as the hard side when
    /// due, send the easy side's next probes, end one whose time is up.
    pub(crate) fn tick_punch(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let direct = matches!(self.route(now_ms, addr), Some(PeerRoute::Direct(_)));
        let mine = self.nat_mapping();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(traversal) = peer.traversal.as_deref_mut()
            && let Some(punch) = &mut traversal.punch
        {
            let over = now_ms.saturating_sub(punch.started_ms) >= PUNCH_WINDOW_MS;
            if direct || over {
                let succeeded = direct;
                traversal.punch = None;
                if succeeded {
                    traversal.punch_failures = 0;
                    traversal.punch_not_before_ms = now_ms;
                } else {
                    traversal.punch_failures = traversal.punch_failures.saturating_add(1);
                    let backoff = PUNCH_BACKOFF_BASE_MS
                        .saturating_mul(1 << (traversal.punch_failures - 1).min(16))
                        .min(PUNCH_BACKOFF_MAX_MS);
                    traversal.punch_not_before_ms = now_ms + backoff;
                }
                return;
            }
            if punch.role == PunchRole::Easy && !punch.ports.is_empty() {
                let n = punch.ports.len().min(PUNCH_PROBES_PER_TICK);
                let ports: Vec<u16> = punch.ports.drain(..n).collect();
                let ip = punch.target.ip();
                for port in ports {
                    let payload = echo_probe(now_ms);
                    self.send_session_via(
                        now_ms,
                        addr,
                        Some(SocketAddr::new(ip, port)),
                        Some(LocalSocket::Primary),
                        Verb::Echo,
                        &payload,
                        out,
                    );
                }
            }
            return;
        }
        // Start as the hard side? (Only a peer that told us its NAT can be.)
        let Some(traversal) = peer.traversal() else {
            return;
        };
        let due = !direct
            && mine == NatMapping::EndpointDependent
            && matches!(
                traversal.nat_mapping,
                Some(NatMapping::EndpointIndependent | NatMapping::Unknown)
            )
            && peer.is_active(now_ms)
            && peer.sessions.is_established()
            && now_ms >= traversal.punch_not_before_ms
            && peer
                .relayed_since_ms
                .get()
                .is_some_and(|t| now_ms.saturating_sub(t) >= PUNCH_AFTER_RELAYED_MS);
        let Some(target) = traversal.root_observed.filter(|_| due) else {
            return;
        };
        let first = self.traversal.next_punch_socket;
        self.traversal.next_punch_socket = first.wrapping_add(PUNCH_SOCKETS as u32);
        let sockets: Vec<u32> = (0..PUNCH_SOCKETS as u32)
            .map(|i| first.wrapping_add(i))
            .collect();
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.traversal_mut().punch = Some(Box::new(Punch {
                role: PunchRole::Hard,
                started_ms: now_ms,
                sockets: sockets.clone(),
                ports: Vec::new(),
                target,
            }));
        }
        // One probe from each socket opens one mapping toward the target.
        for n in sockets {
            let payload = echo_probe(now_ms);
            self.send_session_via(
                now_ms,
                addr,
                Some(target),
                Some(LocalSocket::Punch(n)),
                Verb::Echo,
                &payload,
                out,
            );
        }
        let mut payload = Vec::with_capacity(2);
        encode_punch(
            PunchMessage {
                sockets: PUNCH_SOCKETS as u16,
            },
            &mut payload,
        );
        // Through the root: there is no direct path yet.
        self.send_session(now_ms, addr, None, Verb::Punch, &payload, out);
    }

    /// PUNCH from a peer: it opened its sockets toward us; probe random
    /// ports of its public IP, unless we are behind a hard NAT too.
    pub(crate) fn handle_punch(
        &mut self,
        now_ms: u64,
        src: Address,
        _msg: PunchMessage,
        out: &mut Outbox,
    ) {
        if self.nat_mapping() == NatMapping::EndpointDependent {
            return;
        }
        let direct = matches!(self.route(now_ms, src), Some(PeerRoute::Direct(_)));
        let Some(peer) = self.peers.get_mut(&src) else {
            return;
        };
        let Some(traversal) = peer.traversal.as_deref_mut() else {
            return;
        };
        if direct || traversal.punch.is_some() || now_ms < traversal.punch_not_before_ms {
            return;
        }
        let Some(target) = traversal.root_observed else {
            return;
        };
        traversal.punch = Some(Box::new(Punch {
            role: PunchRole::Easy,
            started_ms: now_ms,
            sockets: Vec::new(),
            ports: random_ports(&mut self.rng, PUNCH_PROBES_MAX),
            target,
        }));
        // The first batch now; the rest on the next ticks.
        self.tick_punch(now_ms, src, out);
    }
}

/// `n` distinct random ports above 1023 (where NATs pick their ports).
fn random_ports(rng: &mut NodeRng, n: usize) -> Vec<u16> {
    let mut seen = HashSet::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut bytes = vec![0u8; 2 * n];
    while ports.len() < n {
        rng.fill_bytes(&mut bytes);
        for pair in bytes.chunks_exact(2) {
            let p = u16::from_be_bytes([pair[0], pair[1]]);
            if p >= 1024 && seen.insert(p) {
                ports.push(p);
                if ports.len() == n {
                    break;
                }
            }
        }
    }
    ports
}

/// Whether an address is routable on the internet (not private, shared,
/// loopback, link-local or unspecified).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let shared = o[0] == 100 && (o[1] & 0xc0) == 64;
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || shared)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeedableRng;

    #[test]
    fn random_ports_are_distinct_and_above_1023() {
        let ports = random_ports(&mut NodeRng::seed_from_u64(7), PUNCH_PROBES_MAX);
        assert_eq!(ports.len(), PUNCH_PROBES_MAX);
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        assert!(ports.iter().all(|p| *p >= 1024));
    }

    #[test]
    fn public_means_routable() {
        for (ip, public) in [
            ("10.1.2.3", false),
            ("192.168.1.1", false),
            ("100.64.0.1", false),
            ("100.128.0.1", true),
            ("198.51.100.7", true),
            ("0.0.0.0", false),
            ("fd00::1", false),
            ("2001:db8::1", true),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn relay_buckets_limit_each_source() {
        let mut t = TraversalState::new(HashState::new(&mut NodeRng::seed_from_u64(3)));
        let a: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:1".parse().unwrap();
        let passed = (0..RELAY_BURST_PACKETS + 100)
            .filter(|_| t.relay_allowed(0, a))
            .count();
        assert_eq!(passed, RELAY_BURST_PACKETS as usize);
        assert!(t.relay_allowed(0, b), "another source has its own bucket");
        assert!(t.relay_allowed(10, a), "refilled with time");
    }

    #[test]
    fn relay_budgets_are_per_ip_and_per_ipv6_64_and_bounded() {
        use crate::constants::MAX_RATE_LIMITED_SOURCES;
        let mut t = TraversalState::new(HashState::new(&mut NodeRng::seed_from_u64(3)));
        // Every port of one IPv4 address, and every address of one IPv6 /64,
        // draw from one budget.
        let v4 = (0..RELAY_BURST_PACKETS + 100)
            .filter(|i| {
                let from =
                    SocketAddr::new("198.51.100.7".parse().unwrap(), (*i % 60_000) as u16 + 1);
                t.relay_allowed(0, from)
            })
            .count();
        assert_eq!(v4, RELAY_BURST_PACKETS as usize);
        let v6 = (0..RELAY_BURST_PACKETS + 100)
            .filter(|i| {
                let ip = format!("2001:db8:1:2:{:x}:{:x}::1", i >> 16, i & 0xffff);
                t.relay_allowed(0, SocketAddr::new(ip.parse().unwrap(), 9993))
            })
            .count();
        assert_eq!(v6, RELAY_BURST_PACKETS as usize);
        assert!(
            t.relay_allowed(0, "[2001:db8:1:3::1]:9993".parse().unwrap()),
            "another /64"
        );
        // More sources than the table holds, at one instant: it stays at its bound.
        for i in 0..MAX_RATE_LIMITED_SOURCES as u32 + 1_000 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.relay_allowed(0, SocketAddr::new(ip.into(), 1));
        }
        assert_eq!(t.relay_bucket_count(), MAX_RATE_LIMITED_SOURCES);
        // Idle ones make room later.
        assert!(t.relay_allowed(60_000, "192.0.2.1:1".parse().unwrap()));
        assert!(t.relay_bucket_count() <= MAX_RATE_LIMITED_SOURCES);
    }
}
