//! A root's table of where each peer talks from: the path a session packet
//! came straight from, the peer, and when. IPv4 paths are keyed by one
//! integer (24 bytes an entry where a `SocketAddr` key took 48): a root
//! holds one entry per peer.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::address::Address;
use crate::hash_state::{HashMap, HashState};

/// Paths heard from, each with its peer and when (ms).
pub(crate) struct KnownPaths {
    v4: HashMap<u64, (Address, u64)>,
    v6: HashMap<SocketAddrV6, (Address, u64)>,
}

/// An IPv4 path as one integer: address, then port.
fn v4_key(addr: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*addr.ip())) << 16) | u64::from(addr.port())
}

fn v4_from_key(key: u64) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from((key >> 16) as u32), key as u16)
}

impl KnownPaths {
    /// An empty table.
    pub fn new(hasher: HashState) -> Self {
        Self {
            v4: HashMap::with_hasher(hasher.clone()),
            v6: HashMap::with_hasher(hasher),
        }
    }

    /// Paths held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The peer heard from `from`, and when.
    pub fn get(&self, from: SocketAddr) -> Option<(Address, u64)> {
        match from {
            SocketAddr::V4(a) => self.v4.get(&v4_key(a)).copied(),
            SocketAddr::V6(a) => self.v6.get(&a).copied(),
        }
    }

    /// Records `peer` heard from `from` at `now_ms`.
    pub fn insert(&mut self, from: SocketAddr, peer: Address, now_ms: u64) {
        match from {
            SocketAddr::V4(a) => self.v4.insert(v4_key(a), (peer, now_ms)),
            SocketAddr::V6(a) => self.v6.insert(a, (peer, now_ms)),
        };
    }

    /// Keeps the paths heard less than `timeout_ms` before `now_ms`.
    pub fn retain_heard_within(&mut self, now_ms: u64, timeout_ms: u64) {
        let fresh = |(_, t): &mut (Address, u64)| now_ms.saturating_sub(*t) < timeout_ms;
        self.v4.retain(|_, v| fresh(v));
        self.v6.retain(|_, v| fresh(v));
    }

    /// Gives back room a burst left behind.
    pub fn shrink_if_sparse(&mut self) {
        super::shrink_if_sparse(&mut self.v4);
        super::shrink_if_sparse(&mut self.v6);
    }

    /// Every path with its peer and when it was heard.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, Address, u64)> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|(k, (a, t))| (SocketAddr::V4(v4_from_key(*k)), *a, *t));
        let v6 = self
            .v6
            .iter()
            .map(|(k, (a, t))| (SocketAddr::V6(*k), *a, *t));
        v4.chain(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_both_families_are_kept_apart_and_given_back_whole() {
        let mut paths = KnownPaths::new(crate::switch::tests_hasher());
        let a = Address::from_u64(0x11_2233_4455).unwrap();
        let b = Address::from_u64(0x66_7788_99aa).unwrap();
        let v4: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        let other_port: SocketAddr = "203.0.113.7:40002".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:40001".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:40001".parse().unwrap();
        paths.insert(v4, a, 10);
        paths.insert(v6, b, 20);
        assert_eq!(paths.get(v4), Some((a, 10)));
        assert_eq!(paths.get(v6), Some((b, 20)));
        assert_eq!(paths.get(other_port), None);
        assert_eq!(paths.get(mapped), None, "a mapped address is another path");
        let mut all: Vec<_> = paths.iter().collect();
        all.sort();
        assert_eq!(all, vec![(v4, a, 10), (v6, b, 20)]);
        paths.retain_heard_within(1_015, 1_000);
        assert_eq!(paths.len(), 1);
        assert_eq!(paths.get(v6), Some((b, 20)));
    }
}
