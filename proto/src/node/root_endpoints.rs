//! The stable endpoints of the roots of the worlds a node holds: kept once
//! beside the root list, not in every peer (a root holds thousands of
//! peers, none of which has any).

use std::net::SocketAddr;

use crate::address::Address;

/// Each root's stable endpoints, in world order.
#[derive(Debug, Default)]
pub(crate) struct RootEndpoints(Vec<(Address, SocketAddr)>);

impl RootEndpoints {
    /// Forgets them all (before the worlds are read again).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Adds `endpoint` for `root` unless it is there already.
    pub fn add(&mut self, root: Address, endpoint: SocketAddr) {
        if !self.0.contains(&(root, endpoint)) {
            self.0.push((root, endpoint));
        }
    }

    /// The stable endpoints of `root`, in world order.
    pub fn of(&self, root: Address) -> impl Iterator<Item = SocketAddr> + '_ {
        self.0
            .iter()
            .filter(move |(a, _)| *a == root)
            .map(|(_, e)| *e)
    }

    /// Whether `endpoint` is a stable endpoint of `root`.
    pub fn contains(&self, root: Address, endpoint: SocketAddr) -> bool {
        self.0.contains(&(root, endpoint))
    }

    /// Every root with each of its endpoints.
    pub fn iter(&self) -> impl Iterator<Item = (Address, SocketAddr)> + '_ {
        self.0.iter().copied()
    }

    /// Every root with its first endpoint.
    pub fn firsts(&self) -> impl Iterator<Item = (Address, SocketAddr)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(i, (a, _))| !self.0[..*i].iter().any(|(b, _)| b == a))
            .map(|(_, e)| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_kept_per_root_in_order_once() {
        let a = Address::from_u64(0x11_2233_4455).unwrap();
        let b = Address::from_u64(0x66_7788_99aa).unwrap();
        let e = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mut roots = RootEndpoints::default();
        roots.add(a, e("192.0.2.1:9993"));
        roots.add(b, e("192.0.2.2:9993"));
        roots.add(a, e("[2001:db8::1]:9993"));
        roots.add(a, e("192.0.2.1:9993"));
        assert_eq!(
            roots.of(a).collect::<Vec<_>>(),
            vec![e("192.0.2.1:9993"), e("[2001:db8::1]:9993")]
        );
        assert!(roots.contains(b, e("192.0.2.2:9993")));
        assert!(!roots.contains(a, e("192.0.2.2:9993")));
        assert_eq!(
            roots.firsts().collect::<Vec<_>>(),
            vec![(a, e("192.0.2.1:9993")), (b, e("192.0.2.2:9993"))]
        );
        assert_eq!(roots.iter().count(), 3);
        roots.clear();
        assert_eq!(roots.of(a).count(), 0);
    }
}
