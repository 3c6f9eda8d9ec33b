//! Multicast groups (ZeroTier's `MulticastGroup`: a MAC and a 32-bit ADI) and
//! the table of which members subscribed to which group.

use crate::hash_state::{HashMap, HashState};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::Address;
use crate::constants::{MAX_MULTICAST_SUBSCRIPTIONS, MULTICAST_SUBSCRIPTION_TTL_MS};
use crate::network_id::Mac;

/// A multicast group: a multicast MAC and an "additional distinguishing
/// information" word that narrows it (ZeroTier puts the target IPv4 address
/// of an ARP request there, so ARP reaches only the address's owner).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MulticastGroup {
    /// The group's MAC; its multicast bit is set.
    pub mac: Mac,
    /// Additional distinguishing information; 0 for a plain MAC group.
    pub adi: u32,
}

impl MulticastGroup {
    /// Plain Ethernet broadcast (carried only when the network enables broadcast).
    pub const BROADCAST: MulticastGroup = MulticastGroup {
        mac: Mac::BROADCAST,
        adi: 0,
    };

    /// IPv6 all-nodes (ff02::1), which every IPv6 host listens to.
    pub const IPV6_ALL_NODES: MulticastGroup = MulticastGroup {
        mac: Mac([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]),
        adi: 0,
    };

    /// A group; `mac` should be a multicast MAC.
    pub const fn new(mac: Mac, adi: u32) -> Self {
        Self { mac, adi }
    }

    /// The group an ARP request for `ip` goes to: broadcast, ADI = the address.
    pub fn arp(ip: Ipv4Addr) -> Self {
        Self::new(Mac::BROADCAST, u32::from(ip))
    }

    /// The solicited-node group of `ip` (33:33:ff and its low 24 bits), where
    /// IPv6 neighbour solicitations for `ip` are sent.
    pub fn ipv6_solicited_node(ip: Ipv6Addr) -> Self {
        let o = ip.octets();
        Self::new(Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]]), 0)
    }

    /// Whether members announce groups of this kind to the roots
    /// (PROTOCOL.md §4.6): broadcast (with or without an ARP target), IPv6
    /// solicited-node groups and all-nodes. For any other group no root can
    /// name a listener, so a frame for it is not held and asked about.
    pub fn is_announced_kind(&self) -> bool {
        let m = self.mac.0;
        self.mac == Mac::BROADCAST
            || *self == Self::IPV6_ALL_NODES
            || (m[0] == 0x33 && m[1] == 0x33 && m[2] == 0xff)
    }

    /// The address-resolution group of `ip` (ZeroTier's
    /// `deriveMulticastGroupForAddressResolution`).
    pub fn for_address_resolution(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::arp(v4),
            IpAddr::V6(v6) => Self::ipv6_solicited_node(v6),
        }
    }
}

impl fmt::Display for MulticastGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:08x}", self.mac, self.adi)
    }
}

impl fmt::Debug for MulticastGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MulticastGroup({self})")
    }
}

/// The groups a member with addresses `ips` listens to: the ARP group of each
/// IPv4 address, the solicited-node group of each IPv6 address, and IPv6
/// all-nodes if it has any IPv6 address. Sorted, without duplicates.
/// (Broadcast and the TAP's own memberships are added by [`super::Switch`].)
pub fn groups_for_ips(ips: &[IpAddr]) -> Vec<MulticastGroup> {
    let mut groups: Vec<MulticastGroup> = ips
        .iter()
        .map(|ip| MulticastGroup::for_address_resolution(*ip))
        .collect();
    if ips.iter().any(IpAddr::is_ipv6) {
        groups.push(MulticastGroup::IPV6_ALL_NODES);
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The EUI-64 IPv6 link-local address (fe80::/64) of `mac`, which a member
/// whose TAP uses EUI-64 address generation has: lets a directory of members
/// (PROTOCOL.md §4.6) name their solicited-node groups without announcements.
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// One member's subscription to a group.
#[derive(Debug, Clone, Copy)]
struct Subscriber {
    member: Address,
    announced_ms: u64,
}

/// Whether a subscription was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// A new subscription.
    Added,
    /// An existing subscription renewed.
    Renewed,
    /// Refused: the table holds [`MAX_MULTICAST_SUBSCRIPTIONS`] live subscriptions.
    Full,
    /// Refused: this member holds as many subscriptions as one member may
    /// ([`Subscriptions::with_member_limit`]).
    MemberFull,
}

/// Which members subscribed to which groups; each subscription lapses
/// [`MULTICAST_SUBSCRIPTION_TTL_MS`] after it was last renewed. A member's
/// switch keys it by group; a root's directory by (network, group).
#[derive(Debug, Clone)]
pub struct Subscriptions<K = MulticastGroup> {
    /// Per group, subscribers in order of announcement: the newest last.
    groups: HashMap<K, Vec<Subscriber>>,
    total: usize,
    capacity: usize,
    ttl_ms: u64,
    /// Subscriptions per member, when one member's share is bounded (a
    /// root's directory: no stranger fills it for everyone).
    per_member: Option<(usize, HashMap<Address, usize>)>,
}

impl<K: std::hash::Hash + Eq + Copy> Subscriptions<K> {
    /// An empty table with the standard limits.
    pub fn new(hasher: HashState) -> Self {
        Self::with_limits(
            MAX_MULTICAST_SUBSCRIPTIONS,
            MULTICAST_SUBSCRIPTION_TTL_MS,
            hasher,
        )
    }

    /// An empty table holding at most `capacity` subscriptions, each lasting `ttl_ms`.
    pub fn with_limits(capacity: usize, ttl_ms: u64, hasher: HashState) -> Self {
        Self {
            groups: HashMap::with_hasher(hasher),
            total: 0,
            capacity,
            ttl_ms,
            per_member: None,
        }
    }

    /// The same table, holding at most `limit` subscriptions of any one member.
    pub fn with_member_limit(mut self, limit: usize) -> Self {
        let hasher = self.groups.hasher().clone();
        self.per_member = Some((limit, HashMap::with_hasher(hasher)));
        self
    }

    /// Records that `member` announced `group` at `now_ms`.
    pub fn subscribe(&mut self, now_ms: u64, member: Address, group: K) -> Subscribed {
        if let Some(subs) = self.groups.get_mut(&group)
            && let Some(i) = subs.iter().position(|s| s.member == member)
        {
            // Move to the end: the most recently announced are picked first.
            let mut s = subs.remove(i);
            s.announced_ms = now_ms;
            subs.push(s);
            return Subscribed::Renewed;
        }
        if self.total >= self.capacity {
            self.expire(now_ms);
            if self.total >= self.capacity {
                return Subscribed::Full;
            }
        }
        if let Some((limit, counts)) = self.per_member.as_mut() {
            let held = counts.entry(member).or_default();
            if *held >= *limit {
                return Subscribed::MemberFull;
            }
            *held += 1;
        }
        self.groups.entry(group).or_default().push(Subscriber {
            member,
            announced_ms: now_ms,
        });
        self.total += 1;
        Subscribed::Added
    }

    /// Members currently subscribed to `group`, the most recently announced first.
    pub fn members(&self, now_ms: u64, group: K) -> impl Iterator<Item = Address> + '_ {
        let ttl = self.ttl_ms;
        self.groups
            .get(&group)
            .map(|subs| subs.as_slice())
            .unwrap_or(&[])
            .iter()
            .rev()
            .filter(move |s| now_ms.saturating_sub(s.announced_ms) < ttl)
            .map(|s| s.member)
    }

    /// Members currently subscribed to `group`, starting at the `start`-th
    /// (modulo their number) and wrapping around: a root hands each asker a
    /// different slice of a large group, so no member gets all the traffic.
    pub fn members_rotated(
        &self,
        now_ms: u64,
        group: K,
        start: usize,
    ) -> impl Iterator<Item = Address> + '_ {
        let ttl = self.ttl_ms;
        let subs = self.groups.get(&group).map_or(&[][..], |s| s.as_slice());
        let at = if subs.is_empty() {
            0
        } else {
            start % subs.len()
        };
        subs[at..]
            .iter()
            .chain(subs[..at].iter())
            .filter(move |s| now_ms.saturating_sub(s.announced_ms) < ttl)
            .map(|s| s.member)
    }

    /// Members currently subscribed to `group`.
    pub fn count(&self, now_ms: u64, group: K) -> usize {
        self.members(now_ms, group).count()
    }

    /// Whether `member` is currently subscribed to `group`.
    pub fn is_subscribed(&self, now_ms: u64, member: Address, group: K) -> bool {
        self.members(now_ms, group).any(|m| m == member)
    }

    /// Drops every subscription of `member`.
    pub fn remove_member(&mut self, member: Address) {
        self.retain(|s| s.member != member);
    }

    /// Drops subscriptions not renewed within the time to live; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let ttl = self.ttl_ms;
        self.retain(|s| now_ms.saturating_sub(s.announced_ms) < ttl)
    }

    fn retain(&mut self, mut keep: impl FnMut(&Subscriber) -> bool) -> usize {
        let before = self.total;
        let mut total = 0;
        let mut counts = self.per_member.as_mut().map(|(_, c)| c);
        self.groups.retain(|_, subs| {
            subs.retain(|s| {
                let kept = keep(s);
                if !kept
                    && let Some(counts) = counts.as_deref_mut()
                    && let Some(held) = counts.get_mut(&s.member)
                {
                    *held -= 1;
                    if *held == 0 {
                        counts.remove(&s.member);
                    }
                }
                kept
            });
            total += subs.len();
            !subs.is_empty()
        });
        self.total = total;
        before - total
    }

    /// Subscriptions held (live or not yet expired away).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u64) -> Address {
        Address::from_u64(0x01_0000_0000 + n).unwrap()
    }

    #[test]
    fn address_resolution_groups_match_zerotier() {
        let v4: Ipv4Addr = "10.147.17.5".parse().unwrap();
        let g = MulticastGroup::arp(v4);
        assert_eq!(g.mac, Mac::BROADCAST);
        assert_eq!(g.adi, 0x0a93_1105);
        assert_eq!(g.to_string(), "ff:ff:ff:ff:ff:ff/0a931105");
        let v6: Ipv6Addr = "fd00::1234:5678".parse().unwrap();
        let g = MulticastGroup::for_address_resolution(IpAddr::V6(v6));
        assert_eq!(
            g,
            MulticastGroup::new(Mac([0x33, 0x33, 0xff, 0x34, 0x56, 0x78]), 0)
        );
        assert!(g.mac.is_multicast() && MulticastGroup::IPV6_ALL_NODES.mac.is_multicast());
    }

    #[test]
    fn only_the_kinds_members_announce_are_asked_about() {
        assert!(MulticastGroup::BROADCAST.is_announced_kind());
        assert!(MulticastGroup::arp("10.0.0.1".parse().unwrap()).is_announced_kind());
        assert!(MulticastGroup::IPV6_ALL_NODES.is_announced_kind());
        let ns = MulticastGroup::ipv6_solicited_node("fd00::1".parse().unwrap());
        assert!(ns.is_announced_kind());
        // MLD reports, all-routers, mDNS: nobody announces them.
        for mac in [
            [0x33, 0x33, 0, 0, 0, 0x16],
            [0x33, 0x33, 0, 0, 0, 0x02],
            [0x01, 0x00, 0x5e, 0, 0, 0xfb],
        ] {
            assert!(!MulticastGroup::new(Mac(mac), 0).is_announced_kind());
        }
    }

    #[test]
    fn groups_for_ips_are_sorted_unique_and_add_all_nodes_for_ipv6() {
        let only_v4 = groups_for_ips(&["10.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap()]);
        assert_eq!(
            only_v4,
            vec![MulticastGroup::arp("10.0.0.1".parse().unwrap())]
        );
        let mixed = groups_for_ips(&["fd00::1".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(mixed.len(), 3);
        assert!(mixed.contains(&MulticastGroup::IPV6_ALL_NODES));
        assert!(mixed.windows(2).all(|w| w[0] < w[1]));
        assert!(groups_for_ips(&[]).is_empty());
    }

    #[test]
    fn eui64_link_local_flips_the_universal_bit_and_inserts_fffe() {
        let ll = eui64_link_local(Mac([0x32, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(ll, "fe80::3011:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap());
        let g = MulticastGroup::ipv6_solicited_node(ll);
        assert_eq!(g.mac, Mac([0x33, 0x33, 0xff, 0x33, 0x44, 0x55]));
    }

    #[test]
    fn subscriptions_expire_and_newest_come_first() {
        let mut t = Subscriptions::with_limits(10, 1000, crate::switch::tests_hasher());
        let g = MulticastGroup::BROADCAST;
        assert_eq!(t.subscribe(0, addr(1), g), Subscribed::Added);
        assert_eq!(t.subscribe(100, addr(2), g), Subscribed::Added);
        assert_eq!(t.subscribe(200, addr(1), g), Subscribed::Renewed);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.members(300, g).collect::<Vec<_>>(),
            vec![addr(1), addr(2)]
        );
        // addr(2) announced at 100 lapses at 1100; addr(1) (renewed at 200) at 1200.
        assert_eq!(t.members(1099, g).count(), 2);
        assert_eq!(t.members(1100, g).collect::<Vec<_>>(), vec![addr(1)]);
        assert_eq!(t.members(1200, g).count(), 0);
        assert_eq!(t.expire(1100), 1);
        assert_eq!(t.len(), 1);
        t.remove_member(addr(1));
        assert!(t.is_empty());
        assert_eq!(t.members(0, MulticastGroup::IPV6_ALL_NODES).count(), 0);
    }

    #[test]
    fn a_full_table_refuses_until_something_expires() {
        let mut t = Subscriptions::with_limits(2, 1000, crate::switch::tests_hasher());
        let g = MulticastGroup::BROADCAST;
        t.subscribe(0, addr(1), g);
        t.subscribe(0, addr(2), g);
        assert_eq!(t.subscribe(10, addr(3), g), Subscribed::Full);
        assert_eq!(t.subscribe(10, addr(2), g), Subscribed::Renewed);
        // addr(1) lapses at 1000, making room.
        assert_eq!(t.subscribe(1000, addr(3), g), Subscribed::Added);
        assert!(!t.is_subscribed(1000, addr(1), g));
        assert!(t.is_subscribed(1000, addr(3), g));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn one_member_holds_only_its_share() {
        let mut t = Subscriptions::<(u8, MulticastGroup)>::with_limits(
            100,
            1000,
            crate::switch::tests_hasher(),
        )
        .with_member_limit(3);
        let g = |n: u8| (n, MulticastGroup::BROADCAST);
        for n in 0..3 {
            assert_eq!(t.subscribe(0, addr(1), g(n)), Subscribed::Added);
        }
        assert_eq!(t.subscribe(0, addr(1), g(3)), Subscribed::MemberFull);
        // Renewing what it holds is fine, and others are not held back.
        assert_eq!(t.subscribe(10, addr(1), g(0)), Subscribed::Renewed);
        assert_eq!(t.subscribe(10, addr(2), g(3)), Subscribed::Added);
        // Its own lapse or removal gives its share back.
        assert_eq!(t.expire(1005), 2);
        assert_eq!(t.subscribe(1005, addr(1), g(4)), Subscribed::Added);
        t.remove_member(addr(1));
        for n in 5..8 {
            assert_eq!(t.subscribe(1006, addr(1), g(n)), Subscribed::Added);
        }
        assert_eq!(t.subscribe(1006, addr(1), g(8)), Subscribed::MemberFull);
    }
}
