//! IP prefixes: CIDR networks ([`Cidr`], parsed and checked once),
//! whether an address lies inside one, and addresses as integers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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

/// Longest prefix of the address's family: 32 or 128.
pub fn max_prefix_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of family `like` with integer value `value`.
fn from_u128(like: IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Bits of the host part under a prefix of `prefix_len` in `ip`'s family.
fn host_mask(ip: IpAddr, prefix_len: u8) -> u128 {
    let width = u32::from(max_prefix_len(ip));
    let host_bits = width - u32::from(prefix_len);
    if host_bits == 0 {
        0
    } else if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// Whether the address is one a member may hold: not unspecified, loopback,
/// multicast or the IPv4 broadcast address.
pub fn is_assignable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast()),
    }
}

/// Why text is not a CIDR prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/`.
    #[error("{0:?} is not in CIDR form ADDRESS/PREFIXLEN")]
    NotCidr(String),
    /// The address part does not parse.
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The prefix length is not a number within the family's width.
    #[error("prefix length {0:?} is not 0 to {1}")]
    BadPrefixLen(String, u8),
    /// Bits beyond the prefix are set.
    #[error("{0}/{1} has host bits set (the network is {2}/{1})")]
    HostBitsSet(IpAddr, u8, IpAddr),
}

/// An IP network: an address whose bits beyond the prefix length are zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Makes a prefix; refuses a length beyond the family's width or host bits set.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let max = max_prefix_len(addr);
        if prefix_len > max {
            return Err(CidrError::BadPrefixLen(prefix_len.to_string(), max));
        }
        let bits = to_u128(addr);
        let network = bits & !host_mask(addr, prefix_len);
        if network != bits {
            return Err(CidrError::HostBitsSet(
                addr,
                prefix_len,
                from_u128(addr, network),
            ));
        }
        Ok(Self { addr, prefix_len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` (of either family) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && to_u128(ip) & !host_mask(ip, self.prefix_len) == to_u128(self.addr)
    }

    /// The first and last addresses, as integers.
    pub fn bounds(&self) -> (u128, u128) {
        let first = to_u128(self.addr);
        (first, first | host_mask(self.addr, self.prefix_len))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| CidrError::NotCidr(text.to_string()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        let max = max_prefix_len(addr);
        let prefix_len =
            (!len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()))
                .then(|| len.parse::<u8>().ok())
                .flatten()
                .filter(|&l| l <= max)
                .ok_or_else(|| CidrError::BadPrefixLen(len.to_string(), max))?;
        Self::new(addr, prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
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

    #[test]
    fn parses_and_checks_host_bits() {
        let c: Cidr = "10.0.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/24");
        assert!(c.contains("10.0.0.255".parse().unwrap()));
        assert!(!c.contains("10.0.1.0".parse().unwrap()));
        assert!(!c.contains("::a00:1".parse().unwrap()));
        assert_eq!(c.bounds(), (0x0a00_0000, 0x0a00_00ff));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().bounds(),
            (0, 0xffff_ffff)
        );
        assert_eq!("::/0".parse::<Cidr>().unwrap().bounds(), (0, u128::MAX));
        assert_eq!(
            "10.0.0.1/24".parse::<Cidr>().unwrap_err().to_string(),
            "10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)"
        );
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::NotCidr(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::BadAddress(_))
        ));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
            "::/0008",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::BadPrefixLen(..))),
                "{bad}"
            );
        }
        assert_eq!("10.1.2.3/32".parse::<Cidr>().unwrap().prefix_len(), 32);
    }

    #[test]
    fn assignable_addresses() {
        for ok in ["10.0.0.1", "192.168.1.0", "2001:db8::1", "fe80::1"] {
            assert!(is_assignable(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
        ] {
            assert!(!is_assignable(bad.parse().unwrap()), "{bad}");
        }
    }
}
