//! Network ids and member MAC addresses, as ZeroTier forms them.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::address::Address;

/// Why text is not a network id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkIdError {
    /// Not 16 hex digits.
    #[error("network id must be 16 hex digits, got {0:?}")]
    BadText(String),
    /// The controller part is not a valid address.
    #[error("network id {0:016x}: its first 10 digits are not a valid controller address")]
    BadController(u64),
}

/// A 64-bit network id: the controller's 40-bit address, then a 24-bit number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(u64);

impl NetworkId {
    /// Makes a network id; the controller part must be a valid address.
    pub fn from_u64(value: u64) -> Result<Self, NetworkIdError> {
        Address::from_u64(value >> 24).map_err(|_| NetworkIdError::BadController(value))?;
        Ok(Self(value))
    }

    /// The id of network `number` (24 bits) on `controller`.
    pub fn new(controller: Address, number: u32) -> Self {
        Self((controller.to_u64() << 24) | u64::from(number & 0xff_ffff))
    }

    /// The id as an integer.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// The controller that serves this network.
    pub fn controller(self) -> Address {
        Address::from_u64(self.0 >> 24).expect("checked at construction")
    }

    /// The network's number on its controller.
    pub fn number(self) -> u32 {
        (self.0 & 0xff_ffff) as u32
    }

    /// Member `addr`'s RFC 4193 address on this network (ZeroTier's
    /// `InetAddress::makeIpv6rfc4193`): `fd`, the 8 bytes of the network id,
    /// `99 93`, the 5 bytes of the address; prefix [`RFC4193_PREFIX_LEN`].
    ///
    /// [`RFC4193_PREFIX_LEN`]: crate::constants::RFC4193_PREFIX_LEN
    pub fn rfc4193_addr(self, addr: Address) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..9].copy_from_slice(&self.0.to_be_bytes());
        b[9] = 0x99;
        b[10] = 0x93;
        b[11..16].copy_from_slice(&addr.to_bytes());
        Ipv6Addr::from(b)
    }

    /// Member `addr`'s 6PLANE address on this network (ZeroTier's
    /// `InetAddress::makeIpv66plane`): `fc`, the network id folded to 4
    /// bytes (high half XOR low half), the 5 bytes of the address, then
    /// `::1`. The member owns the /[`SIXPLANE_MEMBER_PREFIX_LEN`] it heads.
    ///
    /// [`SIXPLANE_MEMBER_PREFIX_LEN`]: crate::constants::SIXPLANE_MEMBER_PREFIX_LEN
    pub fn sixplane_addr(self, addr: Address) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[0] = 0xfc;
        b[1..5].copy_from_slice(&self.sixplane_tag());
        b[5..10].copy_from_slice(&addr.to_bytes());
        b[15] = 0x01;
        Ipv6Addr::from(b)
    }

    /// The form of `ip` if it is an RFC 4193 address or lies in a 6PLANE
    /// block of this network, and the member it belongs to.
    pub fn derived_v6_member(self, ip: Ipv6Addr) -> Option<(DerivedV6, Address)> {
        let b = ip.octets();
        let from = |bytes: &[u8]| {
            let mut wide = [0u8; 8];
            wide[3..].copy_from_slice(bytes);
            Address::from_u64(u64::from_be_bytes(wide)).ok()
        };
        if b[0] == 0xfd && b[1..9] == self.0.to_be_bytes() && b[9..11] == [0x99, 0x93] {
            return from(&b[11..16]).map(|a| (DerivedV6::Rfc4193, a));
        }
        if b[0] == 0xfc && b[1..5] == self.sixplane_tag() {
            return from(&b[5..10]).map(|a| (DerivedV6::SixPlane, a));
        }
        None
    }

    fn sixplane_tag(self) -> [u8; 4] {
        (((self.0 ^ (self.0 >> 32)) & 0xffff_ffff) as u32).to_be_bytes()
    }
}

impl FromStr for NetworkId {
    type Err = NetworkIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NetworkIdError::BadText(text.to_string()));
        }
        let value =
            u64::from_str_radix(text, 16).map_err(|_| NetworkIdError::BadText(text.into()))?;
        Self::from_u64(value)
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({self})")
    }
}

/// The two IPv6 address forms derived from a network id and a member
/// address (`v6AssignMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedV6 {
    /// `fd` + network id + `9993` + member address (/88).
    Rfc4193,
    /// `fc` + folded network id + member address: the member's /80.
    SixPlane,
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The MAC of member `addr` on network `nwid` (ZeroTier's `MAC::fromAddress`):
    /// first octet from the network id's low byte with the locally-administered
    /// bit set and the multicast bit clear (0x52, used by KVM, becomes 0x32);
    /// the other five octets are the address XOR bytes 1..=5 of the network id.
    pub fn for_member(addr: Address, nwid: NetworkId) -> Mac {
        let mut m = u64::from(first_octet(nwid)) << 40;
        m |= addr.to_u64();
        m ^= Self::mask(nwid);
        let b = m.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The member a unicast MAC belongs to on `nwid`, if it is one of that network's.
    pub fn member(self, nwid: NetworkId) -> Option<Address> {
        if self.0[0] != first_octet(nwid) {
            return None;
        }
        let mut wide = [0u8; 8];
        wide[2..].copy_from_slice(&self.0);
        let m = u64::from_be_bytes(wide) & 0xff_ffff_ffff;
        Address::from_u64(m ^ Self::mask(nwid)).ok()
    }

    fn mask(nwid: NetworkId) -> u64 {
        let n = nwid.to_u64();
        (((n >> 8) & 0xff) << 32)
            | (((n >> 16) & 0xff) << 24)
            | (((n >> 24) & 0xff) << 16)
            | (((n >> 32) & 0xff) << 8)
            | ((n >> 40) & 0xff)
    }

    /// Whether the group bit is set (multicast or broadcast).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }
}

fn first_octet(nwid: NetworkId) -> u8 {
    let a = ((nwid.to_u64() & 0xfe) as u8) | 0x02;
    if a == 0x52 { 0x32 } else { a }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_id_parts() {
        let nwid: NetworkId = "5b51b6c335000001".parse().unwrap();
        assert_eq!(nwid.controller().to_string(), "5b51b6c335");
        assert_eq!(nwid.number(), 1);
        assert_eq!(NetworkId::new(nwid.controller(), 1), nwid);
        assert!("ff00000000000001".parse::<NetworkId>().is_err());
        assert!("5b51b6c33500000".parse::<NetworkId>().is_err());
    }

    #[test]
    fn member_mac_matches_zerotier_and_maps_back() {
        // Checked against ZeroTier's MAC::fromAddress rules: first octet, XOR mask, round trip.
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        let addr: Address = "89e92ceee5".parse().unwrap();
        let mac = Mac::for_member(addr, nwid);
        assert_eq!(mac.0[0] & 0x03, 0x02, "locally administered, not multicast");
        assert_eq!(mac.member(nwid), Some(addr));
        // Bytes 1..=5: address bytes XOR network id bytes 5,4,3,2,1 (from the low end).
        let n = nwid.to_u64().to_be_bytes();
        let a = addr.to_bytes();
        assert_eq!(mac.0[1], a[0] ^ n[6]);
        assert_eq!(mac.0[5], a[4] ^ n[2]);
        assert!(!mac.is_multicast());
        // 0x52 (KVM's prefix) is avoided.
        let kvm: NetworkId = "8056c2e21c000052".parse().unwrap();
        assert_eq!(Mac::for_member(addr, kvm).0[0], 0x32);
        // A network whose masked bytes differ maps the same MAC to another address.
        let other: NetworkId = "8056c2e21d000001".parse().unwrap();
        assert_ne!(Mac::for_member(addr, other).member(nwid), Some(addr));
        // A MAC with another first octet is not a member MAC of this network.
        let mut foreign = mac;
        foreign.0[0] ^= 0x04;
        assert_eq!(foreign.member(nwid), None);
    }

    #[test]
    fn derived_ipv6_addresses_match_zerotier() {
        // Byte layouts of ZeroTier's makeIpv6rfc4193 / makeIpv66plane.
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        let addr: Address = "89e92ceee5".parse().unwrap();
        let rfc = nwid.rfc4193_addr(addr);
        assert_eq!(rfc.to_string(), "fd80:56c2:e21c:0:199:9389:e92c:eee5");
        // 6PLANE folds the id: 0x8056c2e2 ^ 0x1c000001 = 0x9c56c2e3.
        let six = nwid.sixplane_addr(addr);
        assert_eq!(six.to_string(), "fc9c:56c2:e389:e92c:eee5::1");
        assert_eq!(
            nwid.derived_v6_member(rfc),
            Some((DerivedV6::Rfc4193, addr))
        );
        assert_eq!(
            nwid.derived_v6_member(six),
            Some((DerivedV6::SixPlane, addr))
        );
        // Anywhere in the member's /80 is the member's.
        let mut inside = six.octets();
        inside[12] = 0x42;
        assert_eq!(
            nwid.derived_v6_member(Ipv6Addr::from(inside)),
            Some((DerivedV6::SixPlane, addr))
        );
        let other: NetworkId = "8056c2e21c000002".parse().unwrap();
        assert_eq!(other.derived_v6_member(rfc), None);
        assert_eq!(other.derived_v6_member(six), None);
        assert_eq!(nwid.derived_v6_member("fd00::1".parse().unwrap()), None);
    }
}
