//! Automatic address assignment from a network's pools: IPv4 lowest
//! free first, IPv6 as ZeroTier's controller picks it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vnet_node::core::address::Address;

use crate::model::{Member, Network};

/// Why a member that should get an address has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// The network has no IPv4 pool.
    #[error("no IPv4 range in ipAssignmentPools to assign an address from")]
    NoPools,
    /// Every usable address of the IPv4 pools is held by some member.
    #[error("every usable address in the IPv4 ipAssignmentPools is already assigned")]
    Exhausted,
    /// The network assigns IPv6 (`v6AssignMode.zt`) and has no IPv6 pool.
    #[error("no IPv6 range in ipAssignmentPools to assign an address from")]
    NoIpv6Pools,
    /// No free IPv6 address was found in the IPv6 pools.
    #[error("no free address found in the IPv6 ipAssignmentPools")]
    Ipv6Exhausted,
}

/// Whether `member` is due an automatic address of either family (only
/// then is the set of taken addresses, one entry a member, worth making).
pub fn is_due(network: &Network, member: &Member) -> bool {
    wants_ipv4(network, member) || wants_ipv6(network, member)
}

/// Gives `member` the addresses it is due (see [`wants_ipv4`] and
/// [`wants_ipv6`]) that are free in `taken`, and marks them taken.
pub fn assign_due(network: &Network, member: &mut Member, taken: &mut HashSet<IpAddr>) {
    if wants_ipv4(network, member)
        && let Ok(ip) = lowest_free_ipv4(network, taken)
    {
        member.ip_assignments.push(IpAddr::V4(ip));
        taken.insert(IpAddr::V4(ip));
    }
    if wants_ipv6(network, member)
        && let Ok(ip) = free_ipv6(network, member.address, taken)
    {
        member.ip_assignments.push(IpAddr::V6(ip));
        taken.insert(IpAddr::V6(ip));
    }
}

/// Why authorized `member` has no address it is due, if it will not get
/// one at its next request.
pub fn assignment_problem(
    network: &Network,
    member: &Member,
    taken: &HashSet<IpAddr>,
) -> Option<AssignError> {
    if wants_ipv4(network, member)
        && let Err(e) = lowest_free_ipv4(network, taken)
    {
        return Some(e);
    }
    if wants_ipv6(network, member) {
        return free_ipv6(network, member.address, taken).err();
    }
    None
}

/// Addresses of one IPv6 pool tried before it counts as full.
pub const IPV6_TRIALS_PER_POOL: u64 = 1000;

/// Whether `member` is due an automatic IPv6 address: authorized, not
/// opted out, the network assigns IPv6 (`v6AssignMode.zt`), and it has none.
pub fn wants_ipv6(network: &Network, member: &Member) -> bool {
    member.authorized && !member.no_auto_assign_ips && network.v6_assign.zt && !member.has_ipv6()
}

/// An IPv6 address for `member` from the network's IPv6 pools, not in
/// `taken`, as ZeroTier's controller picks it: where a pool's low 64 bits
/// span at least 2^40 addresses, its start plus the member's address (so
/// a /64 pool gives `<prefix>::<member address>`); otherwise, and when
/// that is taken, [`IPV6_TRIALS_PER_POOL`] addresses walked from the
/// start plus the address modulo the pool's size (ZeroTier tries random
/// ones; a walk gives the same answer on every request).
pub fn free_ipv6(
    network: &Network,
    member: Address,
    taken: &HashSet<IpAddr>,
) -> Result<Ipv6Addr, AssignError> {
    let pools = network
        .ip_assignment_pools
        .iter()
        .filter_map(|p| match (p.start, p.end) {
            (IpAddr::V6(s), IpAddr::V6(e)) => Some((u128::from(s), u128::from(e))),
            _ => None,
        });
    let mut any = false;
    let addr = u128::from(member.to_u64());
    for (start, end) in pools {
        any = true;
        let free = |c: u128| {
            let ip = Ipv6Addr::from(c);
            (start..=end).contains(&c)
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && !taken.contains(&IpAddr::V6(ip))
        };
        let (s_lo, e_lo) = (start as u64, end as u64);
        if e_lo > s_lo && e_lo - s_lo >= 0xff_ffff_ffff {
            // ZeroTier adds to the low half only, without carry.
            let c =
                (start & !u128::from(u64::MAX)) | u128::from(s_lo.wrapping_add(member.to_u64()));
            if free(c) {
                return Ok(Ipv6Addr::from(c));
            }
        }
        let size = (end - start).saturating_add(1);
        for k in 0..u128::from(IPV6_TRIALS_PER_POOL) {
            let c = start + (addr.wrapping_add(k) % size);
            if free(c) {
                return Ok(Ipv6Addr::from(c));
            }
        }
    }
    Err(if any {
        AssignError::Ipv6Exhausted
    } else {
        AssignError::NoIpv6Pools
    })
}

/// Whether `member` is due an automatic IPv4 address: authorized, not opted
/// out, the network assigns IPv4 (`v4AssignMode.zt`), and it has none yet.
pub fn wants_ipv4(network: &Network, member: &Member) -> bool {
    member.authorized && !member.no_auto_assign_ips && network.v4_assign_zt && !member.has_ipv4()
}

/// The lowest address of the network's IPv4 pools that is not in `taken`,
/// skipping the network and broadcast addresses of the subnet it would be
/// on (the most specific managed route containing it, else its /24), and
/// addresses no member can hold (0.0.0.0, loopback, multicast, broadcast).
pub fn lowest_free_ipv4(
    network: &Network,
    taken: &HashSet<IpAddr>,
) -> Result<Ipv4Addr, AssignError> {
    let mut pools: Vec<(u32, u32)> = network
        .ip_assignment_pools
        .iter()
        .filter_map(|p| match (p.start, p.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => Some((u32::from(s), u32::from(e))),
            _ => None,
        })
        .collect();
    if pools.is_empty() {
        return Err(AssignError::NoPools);
    }
    pools.sort_unstable();
    for (start, end) in pools {
        let mut c = start;
        loop {
            let next = match skip_to(network, taken, c) {
                None => return Ok(Ipv4Addr::from(c)),
                Some(next) => next,
            };
            // Stop at the end of the pool (or of the address space).
            match next {
                Some(n) if n <= end && n > c => c = n,
                _ => break,
            }
        }
    }
    Err(AssignError::Exhausted)
}

/// None if `c` is usable; else Some(the next candidate), None inside when
/// there is none.
fn skip_to(network: &Network, taken: &HashSet<IpAddr>, c: u32) -> Option<Option<u32>> {
    let ip = Ipv4Addr::from(c);
    // Whole blocks no member can hold are jumped over at once.
    if ip.is_loopback() {
        return Some(Some(0x8000_0000));
    }
    if ip.is_multicast() {
        return Some(Some(0xf000_0000));
    }
    if ip.is_unspecified() || ip.is_broadcast() || taken.contains(&IpAddr::V4(ip)) {
        return Some(c.checked_add(1));
    }
    let prefix_len = network.prefix_len_for(IpAddr::V4(ip));
    if prefix_len <= 30 {
        let host_mask = u32::MAX >> prefix_len;
        let host = c & host_mask;
        if host == 0 || host == host_mask {
            return Some(c.checked_add(1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpPool, ManagedRouteSpec};

    fn network(pools: &[(&str, &str)], routes: &[&str]) -> Network {
        let mut n = Network::new("8056c2e21c000001".parse().unwrap(), 0);
        n.ip_assignment_pools = pools
            .iter()
            .map(|(s, e)| IpPool {
                start: s.parse().unwrap(),
                end: e.parse().unwrap(),
            })
            .collect();
        n.routes = routes
            .iter()
            .map(|t| ManagedRouteSpec {
                target: t.parse().unwrap(),
                via: None,
            })
            .collect();
        n
    }

    fn taken(ips: &[&str]) -> HashSet<IpAddr> {
        ips.iter().map(|i| i.parse().unwrap()).collect()
    }

    fn lowest(n: &Network, t: &[&str]) -> Result<String, AssignError> {
        lowest_free_ipv4(n, &taken(t)).map(|ip| ip.to_string())
    }

    #[test]
    fn lowest_free_skips_taken_network_and_broadcast() {
        let n = network(&[("10.0.0.0", "10.0.1.255")], &["10.0.0.0/24"]);
        assert_eq!(lowest(&n, &[]).unwrap(), "10.0.0.1");
        assert_eq!(lowest(&n, &["10.0.0.1", "10.0.0.2"]).unwrap(), "10.0.0.3");
        let all: Vec<String> = (1..=254).map(|i| format!("10.0.0.{i}")).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        // 10.0.0.255 is the route's broadcast; 10.0.1.0 is outside the route,
        // so its /24 applies and it is a network address too.
        assert_eq!(lowest(&n, &all).unwrap(), "10.0.1.1");
    }

    #[test]
    fn pools_are_taken_lowest_first_and_ipv6_pools_ignored() {
        let n = network(
            &[
                ("10.0.5.1", "10.0.5.2"),
                ("2001:db8::1", "2001:db8::9"),
                ("10.0.1.7", "10.0.1.7"),
            ],
            &[],
        );
        assert_eq!(lowest(&n, &[]).unwrap(), "10.0.1.7");
        assert_eq!(lowest(&n, &["10.0.1.7", "10.0.5.1"]).unwrap(), "10.0.5.2");
        assert_eq!(
            lowest(&n, &["10.0.1.7", "10.0.5.1", "10.0.5.2"]),
            Err(AssignError::Exhausted)
        );
        let v6 = network(&[("2001:db8::1", "2001:db8::9")], &[]);
        assert_eq!(lowest(&v6, &[]), Err(AssignError::NoPools));
    }

    #[test]
    fn small_routes_and_odd_blocks() {
        // A /31 or /32 has no network or broadcast address to skip.
        let n = network(&[("10.0.0.4", "10.0.0.5")], &["10.0.0.4/31"]);
        assert_eq!(lowest(&n, &[]).unwrap(), "10.0.0.4");
        // A /30: only .5 and .6 are usable.
        let n = network(&[("10.0.0.4", "10.0.0.7")], &["10.0.0.4/30"]);
        assert_eq!(lowest(&n, &[]).unwrap(), "10.0.0.5");
        assert_eq!(
            lowest(&n, &["10.0.0.5", "10.0.0.6"]),
            Err(AssignError::Exhausted)
        );
        // Loopback and multicast blocks are jumped over, not walked.
        let n = network(&[("127.0.0.0", "128.0.0.1")], &[]);
        assert_eq!(lowest(&n, &[]).unwrap(), "128.0.0.1");
        let n = network(&[("224.0.0.0", "255.255.255.255")], &[]);
        assert_eq!(lowest(&n, &[]).unwrap(), "240.0.0.1");
        let n = network(&[("255.255.255.255", "255.255.255.255")], &[]);
        assert_eq!(lowest(&n, &[]), Err(AssignError::Exhausted));
    }

    #[test]
    fn ipv6_from_a_large_pool_is_the_prefix_plus_the_member_address() {
        let member: Address = "89e92ceee5".parse().unwrap();
        let n = network(&[("fd00:1::", "fd00:1::ffff:ffff:ffff:ffff")], &[]);
        let ip = free_ipv6(&n, member, &taken(&[])).unwrap();
        assert_eq!(ip.to_string(), "fd00:1::89:e92c:eee5");
        // Taken: the walk finds the next one, the same on every request.
        let next = free_ipv6(&n, member, &taken(&["fd00:1::89:e92c:eee5"])).unwrap();
        assert_eq!(next.to_string(), "fd00:1::89:e92c:eee6");
    }

    #[test]
    fn ipv6_from_a_small_pool_stays_inside_and_runs_out() {
        let member: Address = "89e92ceee5".parse().unwrap();
        let n = network(&[("10.0.0.1", "10.0.0.9"), ("fd00::10", "fd00::12")], &[]);
        let first = free_ipv6(&n, member, &taken(&[])).unwrap();
        let ips = ["fd00::10", "fd00::11", "fd00::12"];
        assert!(ips.contains(&first.to_string().as_str()), "{first}");
        assert_eq!(
            free_ipv6(&n, member, &taken(&ips)),
            Err(AssignError::Ipv6Exhausted)
        );
        let v4 = network(&[("10.0.0.1", "10.0.0.9")], &[]);
        assert_eq!(
            free_ipv6(&v4, member, &taken(&[])),
            Err(AssignError::NoIpv6Pools)
        );
        let mut m = Member::new(n.id, member, 0);
        m.authorized = true;
        assert!(!wants_ipv6(&n, &m));
        let mut on = n.clone();
        on.v6_assign.zt = true;
        assert!(wants_ipv6(&on, &m));
        m.ip_assignments = vec![first.into()];
        assert!(!wants_ipv6(&on, &m));
    }

    #[test]
    fn who_wants_an_address() {
        let n = network(&[("10.0.0.1", "10.0.0.9")], &[]);
        let mut m = Member::new(n.id, "a1b2c3d4e5".parse().unwrap(), 0);
        assert!(!wants_ipv4(&n, &m));
        m.authorized = true;
        assert!(wants_ipv4(&n, &m));
        m.ip_assignments = vec!["2001:db8::1".parse().unwrap()];
        assert!(wants_ipv4(&n, &m));
        m.ip_assignments = vec!["192.168.0.1".parse().unwrap()];
        assert!(!wants_ipv4(&n, &m));
        m.ip_assignments.clear();
        m.no_auto_assign_ips = true;
        assert!(!wants_ipv4(&n, &m));
        m.no_auto_assign_ips = false;
        let mut off = n.clone();
        off.v4_assign_zt = false;
        assert!(!wants_ipv4(&off, &m));
        // Due an address of either family, or of none (then no request
        // gathers the taken addresses).
        assert!(is_due(&n, &m));
        assert!(!is_due(&off, &m));
        m.ip_assignments = vec!["10.0.0.1".parse().unwrap()];
        assert!(!is_due(&n, &m));
        let mut v6 = n.clone();
        v6.v6_assign.zt = true;
        assert!(is_due(&v6, &m));
    }
}
