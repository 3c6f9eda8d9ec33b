//! Unauthorized requesters: members that asked for the config of a private
//! network without being members of it. They are kept in memory only, in a
//! list bounded per network and in total (the least recent request is
//! evicted, and counted), so strangers cannot grow the controller's disk or
//! memory. An admin acting on one (authorize, or any POST to the member)
//! makes it a stored member; a restart forgets the rest (they ask again).

use std::collections::{BTreeMap, HashMap};

use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;

use crate::model::Member;

/// Most unauthorized requesters kept per network.
pub const MAX_REQUESTERS_PER_NETWORK: usize = 1_024;
/// Most unauthorized requesters kept over all networks.
pub const MAX_REQUESTERS_TOTAL: usize = 16_384;

#[derive(Debug, Default)]
struct NetworkRequesters {
    /// Each requester as the API shows it, with the stamp of its last request.
    members: BTreeMap<Address, (Member, u64)>,
    /// Stamp of the last request -> requester, oldest first.
    order: BTreeMap<u64, Address>,
}

/// The bounded list of unauthorized requesters of all networks.
#[derive(Debug)]
pub struct Requesters {
    networks: HashMap<NetworkId, NetworkRequesters>,
    /// Stamp -> requester over all networks, oldest first.
    order: BTreeMap<u64, (NetworkId, Address)>,
    next_stamp: u64,
    per_network: usize,
    total_cap: usize,
    evicted: u64,
}

impl Default for Requesters {
    fn default() -> Self {
        Self::with_caps(MAX_REQUESTERS_PER_NETWORK, MAX_REQUESTERS_TOTAL)
    }
}

impl Requesters {
    /// A list holding at most `per_network` requesters per network and
    /// `total` in all (each at least 1).
    pub fn with_caps(per_network: usize, total: usize) -> Self {
        Self {
            networks: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            per_network: per_network.max(1),
            total_cap: total.max(1),
            evicted: 0,
        }
    }

    /// `addr` asked for the config of `nwid` at `now_ms`: listed (as an
    /// unauthorized member first seen now) or moved to the most recent end.
    /// The least recent requester of the network, or of all networks, makes
    /// room if a cap is reached; whether one was evicted.
    pub fn note(&mut self, now_ms: u64, nwid: NetworkId, addr: Address) -> bool {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(net) = self.networks.get_mut(&nwid)
            && let Some((_, old)) = net.members.get_mut(&addr)
        {
            net.order.remove(old);
            self.order.remove(old);
            *old = stamp;
            net.order.insert(stamp, addr);
            self.order.insert(stamp, (nwid, addr));
            return false;
        }
        let mut evicted = false;
        let full_here = self
            .networks
            .get(&nwid)
            .is_some_and(|n| n.members.len() >= self.per_network);
        if full_here {
            let oldest = self.networks[&nwid]
                .order
                .first_key_value()
                .map(|(_, a)| *a);
            if let Some(old) = oldest {
                self.remove(nwid, old);
                evicted = true;
            }
        } else if self.order.len() >= self.total_cap
            && let Some((_, (n, a))) = self.order.first_key_value().map(|(s, k)| (*s, *k))
        {
            self.remove(n, a);
            evicted = true;
        }
        let net = self.networks.entry(nwid).or_default();
        net.members
            .insert(addr, (Member::new(nwid, addr, now_ms), stamp));
        net.order.insert(stamp, addr);
        self.order.insert(stamp, (nwid, addr));
        self.evicted += u64::from(evicted);
        evicted
    }

    /// Takes `addr` off the list of `nwid`; the requester it was.
    pub fn remove(&mut self, nwid: NetworkId, addr: Address) -> Option<Member> {
        let net = self.networks.get_mut(&nwid)?;
        let (member, stamp) = net.members.remove(&addr)?;
        net.order.remove(&stamp);
        self.order.remove(&stamp);
        if net.members.is_empty() {
            self.networks.remove(&nwid);
        }
        Some(member)
    }

    /// Requester `addr` of `nwid`, to record what it reported.
    pub fn get_mut(&mut self, nwid: NetworkId, addr: Address) -> Option<&mut Member> {
        self.networks
            .get_mut(&nwid)?
            .members
            .get_mut(&addr)
            .map(|(m, _)| m)
    }

    /// Forgets every requester of `nwid` (the network was deleted).
    pub fn remove_network(&mut self, nwid: NetworkId) {
        if let Some(net) = self.networks.remove(&nwid) {
            for stamp in net.order.keys() {
                self.order.remove(stamp);
            }
        }
    }

    /// One requester.
    pub fn get(&self, nwid: NetworkId, addr: Address) -> Option<&Member> {
        self.networks.get(&nwid)?.members.get(&addr).map(|(m, _)| m)
    }

    /// The requesters of `nwid`, by address.
    pub fn of(&self, nwid: NetworkId) -> impl Iterator<Item = &Member> {
        self.networks
            .get(&nwid)
            .into_iter()
            .flat_map(|n| n.members.values().map(|(m, _)| m))
    }

    /// How many requesters of `nwid` are listed.
    pub fn count(&self, nwid: NetworkId) -> usize {
        self.networks.get(&nwid).map_or(0, |n| n.members.len())
    }

    /// How many requesters are listed in all.
    pub fn total(&self) -> usize {
        self.order.len()
    }

    /// Requesters evicted to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nwid(n: u32) -> NetworkId {
        NetworkId::new("8056c2e21c".parse().unwrap(), n)
    }

    fn addr(n: u64) -> Address {
        Address::from_u64(0x01_0000_0000 + n).unwrap()
    }

    #[test]
    fn the_least_recent_requester_of_the_network_makes_room() {
        let mut r = Requesters::with_caps(3, 100);
        for i in 0..3 {
            r.note(i, nwid(1), addr(i));
        }
        // Asking again makes addr(0) the most recent.
        r.note(10, nwid(1), addr(0));
        assert_eq!(r.get(nwid(1), addr(0)).unwrap().creation_time, 0);
        r.note(11, nwid(1), addr(3));
        let listed: Vec<Address> = r.of(nwid(1)).map(|m| m.address).collect();
        assert_eq!(listed, vec![addr(0), addr(2), addr(3)]);
        assert_eq!((r.count(nwid(1)), r.total(), r.evicted()), (3, 3, 1));
        assert!(r.of(nwid(1)).all(|m| !m.authorized));
    }

    #[test]
    fn the_least_recent_requester_of_all_makes_room_at_the_total_cap() {
        let mut r = Requesters::with_caps(10, 4);
        r.note(0, nwid(1), addr(0));
        r.note(1, nwid(2), addr(1));
        r.note(2, nwid(2), addr(2));
        r.note(3, nwid(3), addr(3));
        r.note(4, nwid(3), addr(4));
        assert_eq!(r.count(nwid(1)), 0);
        assert_eq!((r.total(), r.evicted()), (4, 1));
        assert_eq!(r.remove(nwid(2), addr(1)).unwrap().address, addr(1));
        assert_eq!(r.remove(nwid(2), addr(1)), None);
        r.remove_network(nwid(3));
        assert_eq!(r.total(), 1);
        r.note(5, nwid(4), addr(5));
        assert_eq!((r.total(), r.evicted()), (2, 1));
    }
}
