//! IP prefixes: whether an address lies inside `target/prefix_len`.

use std::net::IpAddr;

/// Whether `ip` is inside `target/prefix_len` (false across address families).
pub fn contains(target: IpAddr, prefix_len: u8, ip: IpAddr) -> bool {
    match (target, ip) {
        (IpAddr::V4(t), IpAddr::V4(i)) => {
            let mask = if prefix_len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix_len.min(32)))
            };
            u32::from(t) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(t), IpAddr::V6(i)) => {
            let mask = if prefix_len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix_len.min(128)))
            };
            u128::from(t) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_contain_their_addresses_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(contains(ip("10.147.17.0"), 24, ip("10.147.17.19")));
        assert!(!contains(ip("10.147.17.0"), 24, ip("10.147.18.1")));
        assert!(contains(ip("0.0.0.0"), 0, ip("198.51.100.1")));
        assert!(contains(ip("10.1.2.3"), 32, ip("10.1.2.3")));
        assert!(!contains(ip("10.0.0.0"), 8, ip("fd00::1")));
        assert!(contains(ip("fd00::"), 8, ip("fd12::1")));
    }
}
