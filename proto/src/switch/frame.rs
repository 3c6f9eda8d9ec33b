//! Reading the few fields of an Ethernet frame the switch decides on, with
//! `etherparse`: the Ethernet II header and, for broadcast ARP, the request.
//! Nothing here allocates or copies the frame.

use std::net::Ipv4Addr;

use etherparse::{ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType, Ethernet2HeaderSlice};

use crate::constants::ETHERNET_HEADER_LEN_BYTES;
use crate::network_id::Mac;

use super::multicast::MulticastGroup;

/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = EtherType::ARP.0;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = EtherType::IPV6.0;

/// An Ethernet II frame as the switch sees it (no FCS: TAP devices strip it).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    bytes: &'a [u8],
    dst: Mac,
    src: Mac,
    ether_type: u16,
}

impl<'a> Frame<'a> {
    /// Reads the header; `None` if `bytes` is shorter than an Ethernet header
    /// ([`ETHERNET_HEADER_LEN_BYTES`]).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let h = Ethernet2HeaderSlice::from_slice(bytes).ok()?;
        Some(Self {
            bytes,
            dst: Mac(h.destination()),
            src: Mac(h.source()),
            ether_type: h.ether_type().0,
        })
    }

    /// Destination MAC.
    pub fn dst(&self) -> Mac {
        self.dst
    }

    /// Source MAC.
    pub fn src(&self) -> Mac {
        self.src
    }

    /// Ethertype (or 802.1Q/length value, as written).
    pub fn ether_type(&self) -> u16 {
        self.ether_type
    }

    /// The whole frame.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The target address if this is an Ethernet/IPv4 ARP request.
    pub fn arp_request_target(&self) -> Option<Ipv4Addr> {
        if self.ether_type != ETHERTYPE_ARP {
            return None;
        }
        let arp = ArpPacketSlice::from_slice(&self.bytes[ETHERNET_HEADER_LEN_BYTES..]).ok()?;
        if arp.hw_addr_type() != ArpHardwareId::ETHERNET
            || arp.proto_addr_type() != EtherType::IPV4
            || arp.hw_addr_size() != 6
            || arp.proto_addr_size() != 4
            || arp.operation() != ArpOperation::REQUEST
        {
            return None;
        }
        let t: [u8; 4] = arp.target_protocol_addr().try_into().ok()?;
        Some(Ipv4Addr::from(t))
    }

    /// The multicast group a frame with a multicast destination goes to, as
    /// ZeroTier derives it: a broadcast ARP request goes to the target
    /// address's ARP group; anything else to its destination MAC with ADI 0
    /// (an IPv6 neighbour solicitation is already addressed to its target's
    /// solicited-node MAC, so it needs no parsing to reach only the owner).
    pub fn multicast_group(&self) -> MulticastGroup {
        if self.dst == Mac::BROADCAST
            && let Some(target) = self.arp_request_target()
        {
            return MulticastGroup::arp(target);
        }
        MulticastGroup::new(self.dst, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpPacket, PacketBuilder};

    fn arp(op: ArpOperation, dst: [u8; 6], target: [u8; 4]) -> Vec<u8> {
        let src = [2, 0, 0, 0, 0, 1];
        let pkt = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &src,
            &[10, 0, 0, 1],
            &[0; 6],
            &target,
        )
        .unwrap();
        let b = PacketBuilder::ethernet2(src, dst).arp(pkt);
        let mut out = Vec::with_capacity(b.size());
        b.write(&mut out).unwrap();
        out
    }

    #[test]
    fn header_fields_and_short_frames() {
        let f = arp(ArpOperation::REQUEST, [0xff; 6], [10, 0, 0, 2]);
        let p = Frame::parse(&f).unwrap();
        assert_eq!(p.dst(), Mac::BROADCAST);
        assert_eq!(p.src(), Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.ether_type(), ETHERTYPE_ARP);
        assert_eq!(p.bytes().len(), f.len());
        assert!(Frame::parse(&f[..13]).is_none());
        assert!(Frame::parse(&f[..14]).is_some());
        assert!(Frame::parse(&[]).is_none());
    }

    #[test]
    fn arp_request_goes_to_its_target_group_and_nothing_else_does() {
        let req = arp(ArpOperation::REQUEST, [0xff; 6], [10, 0, 0, 2]);
        let p = Frame::parse(&req).unwrap();
        assert_eq!(p.arp_request_target(), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            p.multicast_group(),
            MulticastGroup::arp(Ipv4Addr::new(10, 0, 0, 2))
        );
        // A broadcast ARP reply is plain broadcast.
        let reply = arp(ArpOperation::REPLY, [0xff; 6], [10, 0, 0, 2]);
        assert_eq!(
            Frame::parse(&reply).unwrap().multicast_group(),
            MulticastGroup::BROADCAST
        );
        // A truncated ARP body is plain broadcast, not a panic.
        let cut = Frame::parse(&req[..20]).unwrap();
        assert_eq!(cut.arp_request_target(), None);
        assert_eq!(cut.multicast_group(), MulticastGroup::BROADCAST);
        // An ARP request to a multicast MAC other than broadcast keeps its MAC.
        let mc = [0x01, 0x00, 0x5e, 0, 0, 1];
        let odd = arp(ArpOperation::REQUEST, mc, [10, 0, 0, 2]);
        assert_eq!(
            Frame::parse(&odd).unwrap().multicast_group(),
            MulticastGroup::new(Mac(mc), 0)
        );
        // Other protocols to a multicast MAC: that MAC, ADI 0.
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1])
            .ipv6([0xfe; 16], [0xff; 16], 1)
            .udp(1, 2);
        let mut v6 = Vec::new();
        b.write(&mut v6, &[]).unwrap();
        let p = Frame::parse(&v6).unwrap();
        assert_eq!(p.ether_type(), ETHERTYPE_IPV6);
        assert_eq!(p.multicast_group(), MulticastGroup::IPV6_ALL_NODES);
    }
}
