//! Neighbour discovery answered locally for the IPv6 addresses ZeroTier
//! derives (`v6AssignMode` `rfc4193` and `6plane`), as ZeroTier's node does
//! (its "NDP emulation"): a solicitation from our TAP for another member's
//! RFC 4193 address, or for any address in its 6PLANE /80, is answered at
//! once with that member's MAC. No round trip, no multicast; and a member's
//! whole /80 is reachable (containers or VMs it routes to) though only its
//! `::1` is on its device.
//!
//! As in ZeroTier, a form is emulated only while we hold an address of that
//! form on the network (the controller turned it on), and never for our own
//! address (the kernel's duplicate address detection must see no answer).

use std::net::{IpAddr, Ipv6Addr};

use etherparse::icmpv6::NeighborAdvertisementHeader;
use etherparse::{Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::address::Address;
use crate::network_id::{Mac, NetworkId};

/// ICMPv6 option: target link-layer address (RFC 4861 §4.6.1).
const OPTION_TARGET_LINK_ADDRESS: u8 = 2;
/// Hop limit every neighbour discovery message carries (RFC 4861 §7.1.2).
const NDP_HOP_LIMIT: u8 = 255;

/// If `frame` (read from our TAP) is a neighbour solicitation to be
/// answered locally, writes the neighbour advertisement to put back on the
/// TAP into `reply` (cleared first) and returns true.
pub fn answer(
    nwid: NetworkId,
    us: Address,
    local_ips: &[IpAddr],
    frame: &[u8],
    reply: &mut Vec<u8>,
) -> bool {
    let Some((asker_mac, asker_ip, target)) = solicitation(frame) else {
        return false;
    };
    let Some((form, member)) = nwid.derived_v6_member(target) else {
        return false;
    };
    let emulated = local_ips.iter().any(|ip| match ip {
        IpAddr::V6(v6) => nwid.derived_v6_member(*v6) == Some((form, us)),
        IpAddr::V4(_) => false,
    });
    // An unspecified source is duplicate address detection: never answered.
    if !emulated || member == us || asker_ip.is_unspecified() {
        return false;
    }
    let member_mac = Mac::for_member(member, nwid);
    let mut options = [0u8; 24];
    options[..16].copy_from_slice(&target.octets());
    options[16] = OPTION_TARGET_LINK_ADDRESS;
    options[17] = 1; // length in units of 8 bytes
    options[18..].copy_from_slice(&member_mac.0);
    let advert = Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
        router: false,
        solicited: true,
        r#override: true,
    });
    reply.clear();
    PacketBuilder::ethernet2(member_mac.0, asker_mac)
        .ipv6(target.octets(), asker_ip.octets(), NDP_HOP_LIMIT)
        .icmpv6(advert)
        .write(reply, &options)
        .is_ok()
}

/// The asker's MAC and IPv6 address and the target of a neighbour
/// solicitation, if `frame` is a well-formed one.
fn solicitation(frame: &[u8]) -> Option<([u8; 6], Ipv6Addr, Ipv6Addr)> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = packet.link else {
        return None;
    };
    let Some(NetSlice::Ipv6(ip)) = packet.net else {
        return None;
    };
    let Some(TransportSlice::Icmpv6(icmp)) = packet.transport else {
        return None;
    };
    if icmp.icmp_type() != Icmpv6Type::NeighborSolicitation
        || ip.header().hop_limit() != NDP_HOP_LIMIT
    {
        return None;
    }
    let target: [u8; 16] = icmp.payload().get(..16)?.try_into().ok()?;
    Some((
        eth.source(),
        ip.header().source_addr(),
        Ipv6Addr::from(target),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nwid() -> NetworkId {
        "8056c2e21c000001".parse().unwrap()
    }

    fn us() -> Address {
        "1111111111".parse().unwrap()
    }

    fn them() -> Address {
        "89e92ceee5".parse().unwrap()
    }

    /// A neighbour solicitation from `src` for `target`, as the kernel sends it.
    fn solicit(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let t = target.octets();
        let group = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
        let mut dst_ip = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
        dst_ip[13..].copy_from_slice(&t[13..]);
        let mut body = t.to_vec();
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&Mac::for_member(us(), nwid()).0);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(Mac::for_member(us(), nwid()).0, group)
            .ipv6(src.octets(), dst_ip, 255)
            .icmpv6(Icmpv6Type::NeighborSolicitation)
            .write(&mut frame, &body)
            .unwrap();
        frame
    }

    #[test]
    fn a_members_6plane_block_and_rfc4193_address_are_answered_with_its_mac() {
        let ours = [
            IpAddr::V6(nwid().rfc4193_addr(us())),
            IpAddr::V6(nwid().sixplane_addr(us())),
        ];
        let mut inside = nwid().sixplane_addr(them()).octets();
        inside[11] = 0x17; // somewhere else in their /80
        for (src, target) in [
            (nwid().sixplane_addr(us()), Ipv6Addr::from(inside)),
            (nwid().rfc4193_addr(us()), nwid().rfc4193_addr(them())),
        ] {
            let mut reply = Vec::new();
            assert!(answer(
                nwid(),
                us(),
                &ours,
                &solicit(src, target),
                &mut reply
            ));
            let p = SlicedPacket::from_ethernet(&reply).unwrap();
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
                panic!("ethernet")
            };
            assert_eq!(eth.source(), Mac::for_member(them(), nwid()).0);
            assert_eq!(eth.destination(), Mac::for_member(us(), nwid()).0);
            let Some(NetSlice::Ipv6(ip)) = p.net else {
                panic!("ipv6")
            };
            assert_eq!(ip.header().source_addr(), target);
            assert_eq!(ip.header().destination_addr(), src);
            assert_eq!(ip.header().hop_limit(), 255);
            let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
                panic!("icmpv6")
            };
            assert!(matches!(
                icmp.icmp_type(),
                Icmpv6Type::NeighborAdvertisement(h) if h.solicited && h.r#override && !h.router
            ));
            // The checksum is right (the kernel drops it otherwise).
            let expected = icmp
                .icmp_type()
                .calc_checksum(
                    ip.header().source(),
                    ip.header().destination(),
                    icmp.payload(),
                )
                .unwrap();
            assert_eq!(icmp.checksum(), expected);
            assert_eq!(&icmp.payload()[..16], &target.octets());
            assert_eq!(&icmp.payload()[16..18], &[2, 1]);
            assert_eq!(&icmp.payload()[18..], &Mac::for_member(them(), nwid()).0);
        }
    }

    #[test]
    fn only_forms_we_hold_and_never_our_own_address_or_dad() {
        let six_only = [IpAddr::V6(nwid().sixplane_addr(us()))];
        let src = nwid().sixplane_addr(us());
        let mut reply = Vec::new();
        // RFC 4193 is not emulated while we hold no RFC 4193 address.
        let frame = solicit(src, nwid().rfc4193_addr(them()));
        assert!(!answer(nwid(), us(), &six_only, &frame, &mut reply));
        // Our own block: the kernel answers (or checks duplicates) itself.
        let frame = solicit(src, nwid().sixplane_addr(us()));
        assert!(!answer(nwid(), us(), &six_only, &frame, &mut reply));
        // Duplicate address detection comes from ::.
        let frame = solicit(Ipv6Addr::UNSPECIFIED, nwid().sixplane_addr(them()));
        assert!(!answer(nwid(), us(), &six_only, &frame, &mut reply));
        // Another network's address, plain addresses, junk.
        let other: NetworkId = "8056c2e21c000002".parse().unwrap();
        let frame = solicit(src, other.sixplane_addr(them()));
        assert!(!answer(nwid(), us(), &six_only, &frame, &mut reply));
        let frame = solicit(src, "fd00::5".parse().unwrap());
        assert!(!answer(nwid(), us(), &six_only, &frame, &mut reply));
        assert!(!answer(nwid(), us(), &six_only, &[0u8; 20], &mut reply));
        // Nothing emulated without the form's address of ours.
        let frame = solicit(src, nwid().sixplane_addr(them()));
        assert!(!answer(nwid(), us(), &[], &frame, &mut reply));
        assert!(answer(nwid(), us(), &six_only, &frame, &mut reply));
    }
}
