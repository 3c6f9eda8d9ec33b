//! What a root needs to forward a datagram for others without the node: the
//! per-source relay budget and [`RelayTable`], a snapshot of where peers
//! talk from and where they are reached, which the node builds and relay
//! threads read (sans-IO: no lock, no clock; time is passed in).
//!
//! The node keeps the full relay logic (chains of roots, relay routes,
//! TCP); a table answers only the common case, a datagram straight from a
//! peer to a peer reached straight over UDP, and says [`RelayDecision::Node`]
//! for everything else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use crate::address::Address;
use crate::constants::{
    ADDRESS_LEN_BYTES, MAX_RATE_LIMITED_SOURCES, PATH_IDLE_TIMEOUT_MS, RELAY_BURST_PACKETS,
    RELAY_RATE_PACKETS_PER_SECOND, RELAY_TABLE_TTL_MS,
};
use crate::hash_state::{HashMap, HashState};
use crate::wire::{Datagram, classify, increment_hops};

/// The key a source's budgets are kept under: its IPv4 address, or its IPv6
/// /64 (one host holds a whole /64).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        },
        v4 => v4,
    }
}

/// Relay token buckets per source IP (per /64 for IPv6): a bounded table of
/// (last refill ms, tokens).
#[derive(Debug)]
pub struct RelayBudget {
    buckets: HashMap<IpAddr, (u64, u32)>,
}

impl RelayBudget {
    /// An empty table hashed with `hasher`.
    pub fn new(hasher: HashState) -> Self {
        Self {
            buckets: HashMap::with_hasher(hasher),
        }
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whether a datagram from `from` may be relayed now (and takes a
    /// token); a new source past the table's bound is refused.
    pub fn allowed(&mut self, now_ms: u64, from: SocketAddr) -> bool {
        let key = rate_key(from.ip());
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_RATE_LIMITED_SOURCES {
            self.expire(now_ms);
            if self.buckets.len() >= MAX_RATE_LIMITED_SOURCES {
                return false;
            }
        }
        let bucket = self
            .buckets
            .entry(key)
            .or_insert((now_ms, RELAY_BURST_PACKETS));
        let refill = now_ms.saturating_sub(bucket.0) * RELAY_RATE_PACKETS_PER_SECOND / 1000;
        if refill > 0 {
            bucket.1 = (u64::from(bucket.1) + refill).min(u64::from(RELAY_BURST_PACKETS)) as u32;
            bucket.0 = now_ms;
        }
        if bucket.1 == 0 {
            return false;
        }
        bucket.1 -= 1;
        true
    }

    /// Forgets buckets that are full again (idle sources).
    pub fn expire(&mut self, now_ms: u64) {
        let full_after_ms =
            u64::from(RELAY_BURST_PACKETS) * 1000 / RELAY_RATE_PACKETS_PER_SECOND + 1;
        self.buckets
            .retain(|_, (t, _)| now_ms.saturating_sub(*t) < full_after_ms);
    }
}

/// What to do with a datagram a relay thread read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDecision {
    /// Send it to `to` on the primary socket (its hop count is raised).
    Forward {
        /// The destination peer's direct path.
        to: SocketAddr,
        /// The sending peer (a whole packet), or `None` (a fragment).
        src: Option<Address>,
        /// The destination peer.
        dest: Address,
    },
    /// Hand it to the node: for us, malformed, or not the simple case.
    Node,
}

/// Where a root's peers talk from: the confirmed paths (a session packet
/// came straight from there) heard lately enough to stay known for
/// [`RELAY_TABLE_TTL_MS`] after it was built. Sorted arrays, IPv4 paths in
/// 6 bytes; built from the peers' own paths and shared by the node and the
/// relay table it publishes, so a root keeps no per-path map besides.
#[derive(Debug, Default)]
pub struct RelaySources {
    built_ms: u64,
    /// IPv4 sources, sorted (11 bytes an entry, no padding).
    v4: Box<[(V4Path, PeerBytes)]>,
    /// IPv6 sources, sorted.
    v6: Box<[(SocketAddrV6, Address)]>,
}

/// A [`RelaySources`] being filled.
#[derive(Debug)]
pub struct RelaySourcesBuilder {
    built_ms: u64,
    v4: Vec<(V4Path, PeerBytes)>,
    v6: Vec<(SocketAddrV6, Address)>,
}

impl RelaySourcesBuilder {
    /// `peer` talks to us from `from`, last heard at `heard_ms`: kept only
    /// if it stays a known path for the whole life of what is built.
    pub fn add(&mut self, from: SocketAddr, peer: Address, heard_ms: u64) {
        if !RelaySources::fresh_enough(heard_ms, self.built_ms) {
            return;
        }
        match from {
            SocketAddr::V4(a) => self.v4.push((v4_path(a), peer.to_bytes())),
            SocketAddr::V6(a) => self.v6.push((a, peer)),
        }
    }

    /// The sources, sorted for lookups (of duplicate paths, one holds).
    pub fn build(self) -> RelaySources {
        RelaySources {
            built_ms: self.built_ms,
            v4: sorted_unique(self.v4),
            v6: sorted_unique(self.v6),
        }
    }
}

impl RelaySources {
    /// An empty set built at `now_ms`, with room for `capacity` IPv4 paths
    /// (the rest are rare).
    pub fn builder(now_ms: u64, capacity: usize) -> RelaySourcesBuilder {
        RelaySourcesBuilder {
            built_ms: now_ms,
            v4: Vec::with_capacity(capacity),
            v6: Vec::new(),
        }
    }

    /// When it was built.
    pub fn built_ms(&self) -> u64 {
        self.built_ms
    }

    /// Whether its sources are all still known paths at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.built_ms) < RELAY_TABLE_TTL_MS
    }

    /// Paths held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether it holds no path.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The peer that talks to us from `from`, if any.
    pub fn get(&self, from: SocketAddr) -> Option<Address> {
        match from {
            SocketAddr::V4(a) => {
                lookup(&self.v4, &v4_path(a)).and_then(|b| Address::from_bytes(b).ok())
            }
            SocketAddr::V6(a) => lookup(&self.v6, &a),
        }
    }

    /// Whether a path heard at `heard_ms` may go in a set built at
    /// `now_ms`: it must stay a known path for the set's whole life.
    pub fn fresh_enough(heard_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(heard_ms) + RELAY_TABLE_TTL_MS < PATH_IDLE_TIMEOUT_MS
    }
}

/// A root's snapshot of who talks from where and where each peer is reached
/// straight over UDP, valid for [`RELAY_TABLE_TTL_MS`] after its sources
/// were built. Sorted arrays, not hash maps, with IPv4 entries in 11 bytes: a
/// root rebuilds it four times a second for every peer (and holds two while
/// it does).
#[derive(Debug, Clone, Default)]
pub struct RelayTable {
    own: Option<Address>,
    /// Shared with the node that built it.
    sources: Arc<RelaySources>,
    /// Peers reached over IPv4, sorted (11 bytes an entry, no padding).
    routes_v4: Box<[(PeerBytes, V4Path)]>,
    /// Peers reached over IPv6, sorted.
    routes_v6: Box<[(Address, SocketAddrV6)]>,
}

/// A peer's address as its 5 bytes (sorts as the address does).
type PeerBytes = [u8; ADDRESS_LEN_BYTES];

/// An IPv4 path as 6 bytes, address then port, big-endian (sorts as the
/// path does): a root holds two tables of one or two entries a peer.
type V4Path = [u8; 6];

fn v4_path(addr: SocketAddrV4) -> V4Path {
    let mut p = [0u8; 6];
    p[..4].copy_from_slice(&addr.ip().octets());
    p[4..].copy_from_slice(&addr.port().to_be_bytes());
    p
}

fn v4_from_path(p: V4Path) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(p[0], p[1], p[2], p[3]),
        u16::from_be_bytes([p[4], p[5]]),
    )
}

/// A [`RelayTable`] being filled.
#[derive(Debug)]
pub struct RelayTableBuilder {
    own: Address,
    sources: Arc<RelaySources>,
    routes_v4: Vec<(PeerBytes, V4Path)>,
    routes_v6: Vec<(Address, SocketAddrV6)>,
}

impl RelayTableBuilder {
    /// `peer` is reached straight at `to` over the primary socket.
    pub fn add_route(&mut self, peer: Address, to: SocketAddr) {
        match to {
            SocketAddr::V4(a) => self.routes_v4.push((peer.to_bytes(), v4_path(a))),
            SocketAddr::V6(a) => self.routes_v6.push((peer, a)),
        }
    }

    /// The table, sorted for lookups. Keys are unique where the node
    /// builds it (from its own maps); of duplicates, one would hold.
    pub fn build(self) -> RelayTable {
        RelayTable {
            own: Some(self.own),
            sources: self.sources,
            routes_v4: sorted_unique(self.routes_v4),
            routes_v6: sorted_unique(self.routes_v6),
        }
    }
}

/// Sorts `entries` by key in place (no scratch: the table is rebuilt four
/// times a second), drops duplicate keys and fits the allocation.
fn sorted_unique<K: Ord + Copy, V>(mut entries: Vec<(K, V)>) -> Box<[(K, V)]> {
    entries.sort_unstable_by_key(|(k, _)| *k);
    entries.dedup_by_key(|(k, _)| *k);
    entries.into_boxed_slice()
}

impl RelayTable {
    /// A table that forwards nothing (not a root, or not built yet).
    pub fn empty() -> Self {
        Self::default()
    }

    /// An empty table of root `own` with these `sources`, to be filled with
    /// room for `routes` routes (IPv4 ones: the rest are rare).
    pub fn builder(own: Address, sources: Arc<RelaySources>, routes: usize) -> RelayTableBuilder {
        RelayTableBuilder {
            own,
            sources,
            routes_v4: Vec::with_capacity(routes),
            routes_v6: Vec::new(),
        }
    }

    /// The peer that talks to us from `from`, if any.
    fn source(&self, from: SocketAddr) -> Option<Address> {
        self.sources.get(from)
    }

    /// Where `peer` is reached straight, if anywhere.
    fn route(&self, peer: Address) -> Option<SocketAddr> {
        lookup(&self.routes_v4, &peer.to_bytes())
            .map(|p| SocketAddr::V4(v4_from_path(p)))
            .or_else(|| lookup(&self.routes_v6, &peer).map(SocketAddr::V6))
    }

    /// Sources and routes held.
    pub fn len(&self) -> (usize, usize) {
        (
            self.sources.len(),
            self.routes_v4.len() + self.routes_v6.len(),
        )
    }

    /// Decides what to do with `datagram`, read at `now_ms` from `from`, and
    /// raises its hop count when it is to be forwarded. Forwards only a
    /// datagram not for us, straight from the peer at `from` (a whole packet
    /// whose source is that peer, or a fragment), to a peer with a direct
    /// path, within the hop limit, while the table is fresh; the node
    /// decides everything else.
    pub fn decide(&self, now_ms: u64, from: SocketAddr, datagram: &mut [u8]) -> RelayDecision {
        let Some(own) = self.own else {
            return RelayDecision::Node;
        };
        if !self.sources.is_fresh(now_ms) {
            return RelayDecision::Node;
        }
        let (dest, src) = match classify(datagram) {
            Ok(Datagram::Packet { header, .. }) => (header.dest, Some(header.src)),
            Ok(Datagram::Fragment { header, .. }) => (header.dest, None),
            Err(_) => return RelayDecision::Node,
        };
        if dest == own {
            return RelayDecision::Node;
        }
        let Some(from_peer) = self.source(from) else {
            return RelayDecision::Node;
        };
        // Passed on by another relayer (its source is not the sender).
        if src.is_some_and(|s| s != from_peer) {
            return RelayDecision::Node;
        }
        let Some(to) = self.route(dest) else {
            return RelayDecision::Node;
        };
        if to == from || increment_hops(datagram).is_err() {
            return RelayDecision::Node;
        }
        RelayDecision::Forward { to, src, dest }
    }
}

/// The value of `key` in a table sorted by key.
fn lookup<K: Ord, V: Copy>(table: &[(K, V)], key: &K) -> Option<V> {
    table
        .binary_search_by(|(k, _)| k.cmp(key))
        .ok()
        .map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::{FRAGMENT_HEADER_LEN_BYTES, PACKET_MIN_LEN_BYTES, RELAY_MAX_HOPS};
    use crate::rng::{NodeRng, SeedableRng};
    use crate::wire::{FragmentHeader, PacketHeader};

    fn addr(n: u64) -> Address {
        Address::from_u64(0x10_0000_0000 + n).unwrap()
    }

    fn hasher() -> HashState {
        HashState::new(&mut NodeRng::seed_from_u64(7))
    }

    fn packet(src: Address, dest: Address, hops: u8) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_MIN_LEN_BYTES + 20];
        PacketHeader {
            counter: 1,
            dest,
            src,
            hops,
            key_slot: 1,
            more_fragments: false,
            clear: false,
            aes_gcm: false,
        }
        .encode_into(&mut p);
        p
    }

    fn fragment(dest: Address) -> Vec<u8> {
        let mut f = vec![0u8; FRAGMENT_HEADER_LEN_BYTES + 20];
        FragmentHeader {
            counter: 1,
            dest,
            total: 2,
            index: 1,
            hops: 0,
        }
        .encode_into(&mut f);
        f
    }

    const ROOT: u64 = 1;
    const A: u64 = 2;
    const B: u64 = 3;

    fn a_at() -> SocketAddr {
        "192.0.2.2:9993".parse().unwrap()
    }

    fn b_at() -> SocketAddr {
        "192.0.2.3:9993".parse().unwrap()
    }

    /// A root's table at 1,000 ms: A and B talk from their addresses and
    /// are reached there.
    fn table() -> RelayTable {
        let mut s = RelaySources::builder(1_000, 2);
        s.add(a_at(), addr(A), 1_000);
        s.add(b_at(), addr(B), 900);
        let mut t = RelayTable::builder(addr(ROOT), Arc::new(s.build()), 2);
        t.add_route(addr(A), a_at());
        t.add_route(addr(B), b_at());
        t.build()
    }

    fn hops(p: &[u8]) -> u8 {
        match classify(p).unwrap() {
            Datagram::Packet { header, .. } => header.hops,
            Datagram::Fragment { header, .. } => header.hops,
        }
    }

    #[test]
    fn a_packet_straight_from_a_peer_to_a_reached_peer_is_forwarded_with_one_more_hop() {
        let mut p = packet(addr(A), addr(B), 0);
        assert_eq!(
            table().decide(1_100, a_at(), &mut p),
            RelayDecision::Forward {
                to: b_at(),
                src: Some(addr(A)),
                dest: addr(B)
            }
        );
        assert_eq!(hops(&p), 1);
        let mut f = fragment(addr(B));
        assert_eq!(
            table().decide(1_100, a_at(), &mut f),
            RelayDecision::Forward {
                to: b_at(),
                src: None,
                dest: addr(B)
            }
        );
        assert_eq!(hops(&f), 1);
    }

    #[test]
    fn everything_but_the_simple_case_goes_to_the_node_untouched() {
        let t = table();
        let cases: Vec<(&str, SocketAddr, Vec<u8>, u64)> = vec![
            (
                "for the root itself",
                a_at(),
                packet(addr(A), addr(ROOT), 0),
                1_100,
            ),
            (
                "from an address no peer talks from",
                "192.0.2.9:1".parse().unwrap(),
                packet(addr(A), addr(B), 0),
                1_100,
            ),
            (
                "passed on by another relayer (source is not the sender)",
                b_at(),
                packet(addr(A), addr(9), 0),
                1_100,
            ),
            (
                "to a peer not reached straight",
                a_at(),
                packet(addr(A), addr(9), 0),
                1_100,
            ),
            (
                "back where it came from",
                a_at(),
                packet(addr(A), addr(A), 0),
                1_100,
            ),
            (
                "at the hop limit",
                a_at(),
                packet(addr(A), addr(B), RELAY_MAX_HOPS),
                1_100,
            ),
            ("malformed", a_at(), vec![0u8; 10], 1_100),
            (
                "with a stale table",
                a_at(),
                packet(addr(A), addr(B), 0),
                1_000 + RELAY_TABLE_TTL_MS,
            ),
        ];
        for (what, from, mut d, now) in cases {
            let before = d.clone();
            assert_eq!(t.decide(now, from, &mut d), RelayDecision::Node, "{what}");
            assert_eq!(d, before, "{what}: left as it came");
        }
        let mut p = packet(addr(A), addr(B), 0);
        assert_eq!(
            RelayTable::empty().decide(1_100, a_at(), &mut p),
            RelayDecision::Node,
            "a node that is no root"
        );
    }

    #[test]
    fn a_table_of_many_finds_every_entry() {
        let at = |n: u64| -> SocketAddr {
            if n.is_multiple_of(10) {
                format!("[2001:db8::{n:x}]:9993").parse().unwrap()
            } else {
                SocketAddr::from(([10, (n >> 8) as u8, n as u8, 1], 9993 + n as u16))
            }
        };
        let mut s = RelaySources::builder(1_000, 0);
        let mut routes = Vec::new();
        // Added in a scrambled order; a repeated entry is kept once.
        for i in 0..1_000u64 {
            let n = (i * 7_919) % 1_000 + 1;
            s.add(at(n), addr(n), 1_000);
            routes.push((addr(n), at(n)));
        }
        s.add(at(5), addr(5), 1_000);
        let mut t = RelayTable::builder(addr(ROOT), Arc::new(s.build()), 0);
        for (peer, to) in routes {
            t.add_route(peer, to);
        }
        t.add_route(addr(5), at(5));
        let t = t.build();
        assert_eq!(t.len(), (1_000, 1_000));
        for n in 1..=1_000u64 {
            assert_eq!(t.route(addr(n)), Some(at(n)));
            assert_eq!(t.source(at(n)), Some(addr(n)));
        }
        assert_eq!(t.route(addr(1_001)), None);
        assert_eq!(t.source(at(4_001)), None);
        assert_eq!(t.source(at(4_000)), None);
        // Another port of a known address is another path.
        assert_eq!(t.source(SocketAddr::from(([10, 0, 1, 1], 9993))), None);
    }

    #[test]
    fn ipv4_entries_take_eleven_bytes_and_paths_come_back_whole() {
        assert_eq!(std::mem::size_of::<(V4Path, PeerBytes)>(), 11);
        assert_eq!(std::mem::size_of::<(PeerBytes, V4Path)>(), 11);
        let path: SocketAddrV4 = "203.0.113.250:65534".parse().unwrap();
        assert_eq!(v4_from_path(v4_path(path)), path);
        // Byte order sorts as address, then port.
        let lower: SocketAddrV4 = "203.0.113.249:65535".parse().unwrap();
        assert!(v4_path(lower) < v4_path(path));
    }

    #[test]
    fn a_source_goes_in_only_if_it_stays_known_for_the_tables_life() {
        assert!(RelaySources::fresh_enough(0, 1_000));
        assert!(!RelaySources::fresh_enough(
            0,
            PATH_IDLE_TIMEOUT_MS - RELAY_TABLE_TTL_MS
        ));
        let mut s = RelaySources::builder(PATH_IDLE_TIMEOUT_MS - RELAY_TABLE_TTL_MS, 2);
        s.add(a_at(), addr(A), 0);
        s.add(b_at(), addr(B), 1);
        let s = s.build();
        assert_eq!((s.get(a_at()), s.get(b_at())), (None, Some(addr(B))));
        assert!(s.is_fresh(PATH_IDLE_TIMEOUT_MS - 1));
        assert!(!s.is_fresh(PATH_IDLE_TIMEOUT_MS));
    }

    #[test]
    fn relay_budget_keys_ipv6_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            rate_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            rate_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let mut b = RelayBudget::new(hasher());
        assert!(b.is_empty());
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let passed = (0..RELAY_BURST_PACKETS + 10)
            .filter(|_| b.allowed(0, from))
            .count();
        assert_eq!(passed, RELAY_BURST_PACKETS as usize);
        assert_eq!(b.len(), 1);
    }
}
