//! Unit tests of the switch's rules, one rule at a time.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

use super::*;

fn nwid() -> NetworkId {
    "8056c2e21c000001".parse().unwrap()
}

fn addr(n: u64) -> Address {
    Address::from_u64(0x89_e92c_ee00 + n).unwrap()
}

fn mac_of(n: u64) -> Mac {
    Mac::for_member(addr(n), nwid())
}

const ME: u64 = 1;
const HOST: Mac = Mac([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]);

fn raw(dst: Mac, src: Mac, ether_type: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(&[0u8; 46]);
    f
}

fn arp_request(src: Mac, target: Ipv4Addr) -> Vec<u8> {
    let pkt = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &src.0,
        &[10, 0, 0, 99],
        &[0; 6],
        &target.octets(),
    )
    .unwrap();
    let b = PacketBuilder::ethernet2(src.0, Mac::BROADCAST.0).arp(pkt);
    let mut out = Vec::with_capacity(b.size());
    b.write(&mut out).unwrap();
    out
}

fn switch(policy: SwitchPolicy) -> Switch {
    Switch::new(nwid(), addr(ME), policy, super::tests_hasher())
}

fn bridge_policy() -> SwitchPolicy {
    SwitchPolicy {
        active_bridge: true,
        ..SwitchPolicy::default()
    }
}

fn out(
    s: &mut Switch,
    now: u64,
    frame: &[u8],
) -> Result<(Option<MulticastGroup>, Vec<Address>), DropReason> {
    match s.outbound(now, frame) {
        Outbound::Unicast(a) => Ok((None, vec![a])),
        Outbound::Bridges(b) => Ok((None, b.to_vec())),
        Outbound::Multicast { group, members } => Ok((Some(group), members.to_vec())),
        Outbound::Unresolved(group) => Ok((Some(group), vec![])),
        Outbound::Answer(_) => panic!("answered locally"),
        Outbound::Drop(r) => Err(r),
    }
}

#[test]
fn a_solicitation_for_a_members_6plane_block_is_answered_not_sent() {
    let mut s = switch(SwitchPolicy::default());
    let target = nwid().sixplane_addr(addr(2));
    let solicit = |s: &Switch| {
        let t = target.octets();
        let mut body = t.to_vec();
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&s.mac().0);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(s.mac().0, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
            .ipv6(
                nwid().sixplane_addr(addr(ME)).octets(),
                [
                    0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
                ],
                255,
            )
            .icmpv6(etherparse::Icmpv6Type::NeighborSolicitation)
            .write(&mut frame, &body)
            .unwrap();
        frame
    };
    // Without a 6PLANE address of ours the solicitation goes out as usual.
    let frame = solicit(&s);
    assert!(!matches!(s.outbound(0, &frame), Outbound::Answer(_)));
    s.set_local_ips(&[IpAddr::V6(nwid().sixplane_addr(addr(ME)))]);
    match s.outbound(0, &frame) {
        Outbound::Answer(reply) => assert_eq!(&reply[6..12], &mac_of(2).0),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.counters().neighbors_answered, 1);
}

#[test]
fn our_mac_is_our_member_mac() {
    let s = switch(SwitchPolicy::default());
    assert_eq!(s.mac(), mac_of(ME));
    assert_eq!(s.address(), addr(ME));
    assert_eq!(s.network_id(), nwid());
}

#[test]
fn outbound_unicast_to_a_member_mac_goes_to_that_member() {
    let mut s = switch(SwitchPolicy::default());
    let f = raw(mac_of(5), mac_of(ME), 0x0800);
    assert_eq!(s.outbound(0, &f), Outbound::Unicast(addr(5)));
    assert_eq!(s.counters().sent_unicast, 1);
    // Even to a member we hold no certificate for: it gets ours and decides.
    let f = raw(mac_of(77), mac_of(ME), 0x0800);
    assert_eq!(s.outbound(0, &f), Outbound::Unicast(addr(77)));
}

#[test]
fn outbound_source_must_be_ours_unless_we_bridge() {
    let mut s = switch(SwitchPolicy::default());
    let f = raw(mac_of(5), HOST, 0x0800);
    assert_eq!(s.outbound(0, &f), Outbound::Drop(DropReason::ForeignSource));
    let f = raw(mac_of(5), Mac([0x01, 0, 0, 0, 0, 1]), 0x0800);
    assert_eq!(
        s.outbound(0, &f),
        Outbound::Drop(DropReason::MulticastSource)
    );
    assert_eq!(
        s.outbound(0, &[0u8; 13]),
        Outbound::Drop(DropReason::Malformed)
    );

    let mut b = switch(bridge_policy());
    let f = raw(mac_of(5), HOST, 0x0800);
    assert_eq!(b.outbound(0, &f), Outbound::Unicast(addr(5)));
    assert!(
        b.mac_table().is_empty(),
        "a bridge learns nothing from its own side"
    );
    // A bridge still may not send as another member.
    let f = raw(mac_of(5), mac_of(6), 0x0800);
    assert_eq!(b.outbound(0, &f), Outbound::Drop(DropReason::ForeignSource));
    let d = &s.counters().drops;
    assert_eq!(
        (d.foreign_source, d.multicast_source, d.malformed),
        (1, 1, 1)
    );
    assert_eq!(b.counters().drops.foreign_source, 1);
}

#[test]
fn outbound_to_ourselves_is_dropped() {
    let mut s = switch(SwitchPolicy::default());
    let f = raw(mac_of(ME), mac_of(ME), 0x0800);
    assert_eq!(s.outbound(0, &f), Outbound::Drop(DropReason::Loopback));
}

#[test]
fn unknown_unicast_goes_to_the_bridges_but_not_to_us() {
    let mut s = switch(SwitchPolicy::default());
    let f = raw(HOST, mac_of(ME), 0x0800);
    assert_eq!(
        s.outbound(0, &f),
        Outbound::Drop(DropReason::UnknownDestination)
    );
    s.set_bridges(&[addr(3), addr(ME), addr(4), addr(3)]);
    assert_eq!(s.bridges(), &[addr(3), addr(ME), addr(4)]);
    assert_eq!(out(&mut s, 0, &f), Ok((None, vec![addr(3), addr(4)])));
    assert_eq!(s.counters().sent_to_bridges, 1);
    assert_eq!(s.counters().drops.unknown_destination, 1);
}

#[test]
fn macs_learned_behind_a_bridge_route_unicast_to_it_until_they_expire() {
    let mut s = switch(SwitchPolicy::default());
    s.set_bridges(&[addr(3), addr(4)]);
    let from_host = raw(mac_of(ME), HOST, 0x0800);
    assert_eq!(s.inbound(1000, addr(3), &from_host), Inbound::Deliver);
    assert_eq!(s.counters().macs_learned, 1);
    let to_host = raw(HOST, mac_of(ME), 0x0800);
    assert_eq!(s.outbound(2000, &to_host), Outbound::Unicast(addr(3)));
    // The host moves behind the other bridge.
    assert_eq!(s.inbound(3000, addr(4), &from_host), Inbound::Deliver);
    assert_eq!(s.outbound(3000, &to_host), Outbound::Unicast(addr(4)));
    // Lapsed: flooded to the bridges again.
    let later = 3000 + crate::constants::MAC_TABLE_ENTRY_TTL_MS;
    assert_eq!(
        out(&mut s, later, &to_host),
        Ok((None, vec![addr(3), addr(4)]))
    );
    // A bridge leaving the list takes its MACs.
    assert_eq!(s.inbound(later, addr(4), &from_host), Inbound::Deliver);
    s.set_bridges(&[addr(3)]);
    assert!(s.mac_table().is_empty());
}

#[test]
fn multicast_goes_to_subscribers_bridges_first_capped_never_to_us() {
    let mut s = switch(SwitchPolicy {
        multicast_limit: 3,
        ..SwitchPolicy::default()
    });
    let g = MulticastGroup::new(Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]), 0);
    let f = raw(g.mac, mac_of(ME), 0x0800);
    // No recipient known: the roots are asked (the node holds the frame).
    assert_eq!(s.outbound(0, &f), Outbound::Unresolved(g));
    assert_eq!(s.counters().multicast_unresolved, 1);
    for n in [2, 3, 4, 5] {
        assert!(s.subscribe(n * 10, addr(n), g));
    }
    assert!(!s.subscribe(0, addr(ME), g), "we never subscribe ourselves");
    s.set_bridges(&[addr(ME), addr(9)]);
    // Bridge 9 first, then the most recently announced subscribers.
    assert_eq!(
        out(&mut s, 100, &f),
        Ok((Some(g), vec![addr(9), addr(5), addr(4)]))
    );
    assert_eq!(s.counters().sent_multicast, 1);
    s.set_policy(SwitchPolicy {
        multicast_limit: 0,
        ..SwitchPolicy::default()
    });
    assert_eq!(
        s.outbound(100, &f),
        Outbound::Drop(DropReason::NoRecipients)
    );
}

#[test]
fn arp_requests_go_to_the_owner_of_the_target_address_only() {
    let mut s = switch(SwitchPolicy::default());
    let owned: Ipv4Addr = "10.0.0.5".parse().unwrap();
    s.subscribe(0, addr(5), MulticastGroup::arp(owned));
    s.subscribe(0, addr(6), MulticastGroup::arp("10.0.0.6".parse().unwrap()));
    s.subscribe(0, addr(7), MulticastGroup::BROADCAST);
    let f = arp_request(mac_of(ME), owned);
    assert_eq!(
        out(&mut s, 1, &f),
        Ok((Some(MulticastGroup::arp(owned)), vec![addr(5)]))
    );
    // ARP is carried even with broadcast disabled (ZeroTier does the same).
    s.set_policy(SwitchPolicy {
        enable_broadcast: false,
        ..SwitchPolicy::default()
    });
    assert_eq!(
        out(&mut s, 1, &f),
        Ok((Some(MulticastGroup::arp(owned)), vec![addr(5)]))
    );
    let bcast = raw(Mac::BROADCAST, mac_of(ME), 0x0800);
    assert_eq!(
        s.outbound(1, &bcast),
        Outbound::Drop(DropReason::BroadcastDisabled)
    );
}

#[test]
fn arp_for_an_address_no_member_owns_is_broadcast_on_a_bridged_network_only() {
    let sorted = |r: Result<(Option<MulticastGroup>, Vec<Address>), DropReason>| {
        r.map(|(g, mut m)| {
            m.sort();
            (g, m)
        })
    };
    let mut s = switch(SwitchPolicy::default());
    let owned: Ipv4Addr = "10.0.0.5".parse().unwrap();
    // Leased from the bridged LAN's DHCP server: in no directory.
    let leased: Ipv4Addr = "192.168.77.120".parse().unwrap();
    s.subscribe(0, addr(5), MulticastGroup::arp(owned));
    for n in [5, 6, 7] {
        s.subscribe(0, addr(n), MulticastGroup::BROADCAST);
    }
    let unowned = arp_request(mac_of(ME), leased);
    // No bridge: no owner known, so the roots are asked who owns it.
    assert_eq!(
        s.outbound(0, &unowned),
        Outbound::Unresolved(MulticastGroup::arp(leased))
    );
    s.set_bridges(&[addr(9)]);
    assert_eq!(
        sorted(out(&mut s, 0, &unowned)),
        Ok((
            Some(MulticastGroup::arp(leased)),
            vec![addr(5), addr(6), addr(7), addr(9)]
        )),
        "the bridge and every broadcast listener"
    );
    // An owned address still goes to its owner (and the bridge) only.
    let f = arp_request(mac_of(ME), owned);
    assert_eq!(
        out(&mut s, 0, &f),
        Ok((Some(MulticastGroup::arp(owned)), vec![addr(9), addr(5)]))
    );
    // With broadcast disabled, only the bridges.
    s.set_policy(SwitchPolicy {
        enable_broadcast: false,
        ..SwitchPolicy::default()
    });
    assert_eq!(
        out(&mut s, 0, &unowned),
        Ok((Some(MulticastGroup::arp(leased)), vec![addr(9)]))
    );

    // The bridge itself, asking for a remote member's leased address on
    // behalf of a LAN host: every broadcast listener but itself.
    let mut b = switch(bridge_policy());
    b.set_bridges(&[addr(ME)]);
    // No broadcast listener known yet: the roots are asked for them.
    assert_eq!(
        b.outbound(0, &arp_request(HOST, leased)),
        Outbound::Unresolved(MulticastGroup::BROADCAST)
    );
    for n in [2, 3] {
        b.subscribe(0, addr(n), MulticastGroup::BROADCAST);
    }
    assert_eq!(
        sorted(out(&mut b, 0, &arp_request(HOST, leased))),
        Ok((Some(MulticastGroup::arp(leased)), vec![addr(2), addr(3)]))
    );

    // Receiving: a member takes such a request in on a bridged network only.
    let mut r = switch(SwitchPolicy::default());
    r.set_local_ips(&["10.0.0.1".parse().unwrap()]);
    let from_bridge = arp_request(HOST, leased);
    assert_eq!(
        r.inbound(0, addr(2), &arp_request(mac_of(2), leased)),
        Inbound::Drop(DropReason::NotSubscribed)
    );
    r.set_bridges(&[addr(2)]);
    assert_eq!(r.inbound(0, addr(2), &from_bridge), Inbound::Deliver);
    assert_eq!(
        r.inbound(0, addr(3), &arp_request(mac_of(3), leased)),
        Inbound::Deliver
    );
    r.set_policy(SwitchPolicy {
        enable_broadcast: false,
        ..SwitchPolicy::default()
    });
    assert_eq!(
        r.inbound(0, addr(2), &from_bridge),
        Inbound::Drop(DropReason::NotSubscribed)
    );
}

#[test]
fn inbound_needs_an_agreeing_certificate_on_private_networks_only() {
    use crate::c25519::KeyPair;
    use crate::constants::CERTIFICATE_MAX_DELTA_MS;
    let key = KeyPair::generate(&mut crate::rng::os_rng());
    let ours = Certificate::issue(&key, nwid(), addr(ME), 1_000_000);
    let fresh = Certificate::issue(&key, nwid(), addr(20), 1_000_000);
    let stale = Certificate::issue(
        &key,
        nwid(),
        addr(20),
        1_000_000 - CERTIFICATE_MAX_DELTA_MS - 1,
    );
    let mut s = switch(SwitchPolicy::default());
    let f = raw(mac_of(ME), mac_of(20), 0x0800);
    let refused = Inbound::Drop(DropReason::NotAuthorized);
    assert_eq!(s.receive(0, addr(20), &ours, None, &f), refused);
    assert_eq!(s.receive(0, addr(20), &ours, Some(&stale), &f), refused);
    assert_eq!(
        s.receive(0, addr(20), &ours, Some(&fresh), &f),
        Inbound::Deliver
    );
    assert!(!s.certificate_admits(&ours, Some(&stale)));
    assert!(s.certificate_admits(&ours, Some(&fresh)));
    s.set_policy(SwitchPolicy {
        private: false,
        ..SwitchPolicy::default()
    });
    assert_eq!(s.receive(0, addr(20), &ours, None, &f), Inbound::Deliver);
    assert!(s.certificate_admits(&ours, None));
    assert_eq!(s.counters().drops.not_authorized, 2);
    assert_eq!(s.counters().delivered, 2);
}

#[test]
fn inbound_source_must_be_the_senders_mac_unless_it_bridges() {
    let mut s = switch(SwitchPolicy::default());
    let spoof = raw(mac_of(ME), HOST, 0x0800);
    assert_eq!(
        s.inbound(0, addr(2), &spoof),
        Inbound::Drop(DropReason::SpoofedSource)
    );
    let other = raw(mac_of(ME), mac_of(3), 0x0800);
    assert_eq!(
        s.inbound(0, addr(2), &other),
        Inbound::Drop(DropReason::SpoofedSource)
    );
    s.set_bridges(&[addr(2)]);
    assert_eq!(s.inbound(0, addr(2), &spoof), Inbound::Deliver);
    // Not even a bridge may claim a member's MAC, or ours.
    assert_eq!(
        s.inbound(0, addr(2), &other),
        Inbound::Drop(DropReason::SpoofedSource)
    );
    let mine = raw(mac_of(ME), mac_of(ME), 0x0800);
    assert_eq!(
        s.inbound(0, addr(2), &mine),
        Inbound::Drop(DropReason::SpoofedSource)
    );
    let mc = raw(mac_of(ME), Mac([0x03, 0, 0, 0, 0, 1]), 0x0800);
    assert_eq!(
        s.inbound(0, addr(2), &mc),
        Inbound::Drop(DropReason::MulticastSource)
    );
    assert_eq!(
        s.inbound(0, addr(ME), &mine),
        Inbound::Drop(DropReason::Loopback)
    );
    assert_eq!(
        s.inbound(0, addr(2), &[0; 10]),
        Inbound::Drop(DropReason::Malformed)
    );
    assert_eq!(s.counters().drops.spoofed_source, 4);
    assert_eq!(s.mac_table().lookup(0, HOST), Some(addr(2)));
}

#[test]
fn inbound_unicast_must_be_for_us_unless_we_bridge() {
    let mut s = switch(SwitchPolicy::default());
    let for_other = raw(mac_of(3), mac_of(2), 0x0800);
    let for_host = raw(HOST, mac_of(2), 0x0800);
    assert_eq!(
        s.inbound(0, addr(2), &for_other),
        Inbound::Drop(DropReason::NotForUs)
    );
    assert_eq!(
        s.inbound(0, addr(2), &for_host),
        Inbound::Drop(DropReason::NotForUs)
    );
    let mut b = switch(bridge_policy());
    assert_eq!(b.inbound(0, addr(2), &for_other), Inbound::Deliver);
    assert_eq!(b.inbound(0, addr(2), &for_host), Inbound::Deliver);
}

#[test]
fn inbound_multicast_only_for_groups_we_listen_to() {
    let mut s = switch(SwitchPolicy::default());
    s.set_local_ips(&["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]);
    let bcast = raw(Mac::BROADCAST, mac_of(2), 0x0800);
    assert_eq!(s.inbound(0, addr(2), &bcast), Inbound::Deliver);
    let ours = arp_request(mac_of(2), "10.0.0.1".parse().unwrap());
    let theirs = arp_request(mac_of(2), "10.0.0.9".parse().unwrap());
    assert_eq!(s.inbound(0, addr(2), &ours), Inbound::Deliver);
    assert_eq!(
        s.inbound(0, addr(2), &theirs),
        Inbound::Drop(DropReason::NotSubscribed)
    );
    let sol = MulticastGroup::ipv6_solicited_node("fd00::1".parse().unwrap());
    assert_eq!(
        s.inbound(0, addr(2), &raw(sol.mac, mac_of(2), 0x86dd)),
        Inbound::Deliver
    );
    let mdns = Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    let f = raw(mdns, mac_of(2), 0x0800);
    assert_eq!(
        s.inbound(0, addr(2), &f),
        Inbound::Drop(DropReason::NotSubscribed)
    );
    s.set_extra_groups(&[MulticastGroup::new(mdns, 0), MulticastGroup::new(HOST, 0)]);
    assert_eq!(s.inbound(0, addr(2), &f), Inbound::Deliver);
    assert!(
        !s.is_local_group(MulticastGroup::new(HOST, 0)),
        "unicast MACs are not groups"
    );
    s.set_policy(SwitchPolicy {
        enable_broadcast: false,
        ..SwitchPolicy::default()
    });
    assert_eq!(
        s.inbound(0, addr(2), &bcast),
        Inbound::Drop(DropReason::BroadcastDisabled)
    );
    assert_eq!(
        s.inbound(0, addr(2), &ours),
        Inbound::Deliver,
        "ARP is not plain broadcast"
    );
    // A bridge takes every group (its side of the LAN may listen).
    let mut b = switch(bridge_policy());
    assert_eq!(b.inbound(0, addr(2), &theirs), Inbound::Deliver);
}

#[test]
fn our_groups_follow_ips_extra_groups_and_broadcast() {
    let mut s = switch(SwitchPolicy::default());
    assert_eq!(s.our_groups(), vec![MulticastGroup::BROADCAST]);
    let v4: Ipv4Addr = "10.0.0.1".parse().unwrap();
    s.set_local_ips(&[IpAddr::V4(v4), "fd00::abcd:1".parse().unwrap()]);
    let extra = MulticastGroup::new(Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]), 0);
    s.set_extra_groups(&[extra]);
    let mut want = vec![
        MulticastGroup::BROADCAST,
        MulticastGroup::arp(v4),
        MulticastGroup::ipv6_solicited_node("fd00::abcd:1".parse().unwrap()),
        MulticastGroup::IPV6_ALL_NODES,
        extra,
    ];
    want.sort();
    assert_eq!(s.our_groups(), want);
    s.set_policy(SwitchPolicy {
        enable_broadcast: false,
        ..SwitchPolicy::default()
    });
    assert!(!s.our_groups().contains(&MulticastGroup::BROADCAST));
    assert!(s.our_groups().contains(&MulticastGroup::arp(v4)));
}

#[test]
fn subscriptions_need_a_multicast_mac_and_a_revoked_member_is_forgotten() {
    let mut s = switch(SwitchPolicy::default());
    let g = MulticastGroup::BROADCAST;
    assert!(!s.subscribe(0, addr(2), MulticastGroup::new(HOST, 0)));
    assert!(s.subscribe(0, addr(2), g));
    assert_eq!(s.counters().subscriptions_refused, 1);
    // Revoking a member drops its subscriptions at once.
    s.forget_member(addr(2));
    assert!(s.subscriptions().is_empty());
    let a = MulticastGroup::arp("10.0.0.2".parse().unwrap());
    assert!(s.subscribe(0, addr(2), a));
    assert!(s.subscriptions().is_subscribed(0, addr(2), a));
    s.expire(crate::constants::MULTICAST_SUBSCRIPTION_TTL_MS);
    assert!(s.subscriptions().is_empty());
}

#[test]
fn a_full_mac_table_counts_evictions() {
    let mut s = Switch::with_tables(
        nwid(),
        addr(ME),
        SwitchPolicy::default(),
        MacTable::with_limits(2, 10_000, super::tests_hasher()),
        Subscriptions::new(super::tests_hasher()),
        super::tests_hasher(),
    );
    s.set_bridges(&[addr(2)]);
    for (i, last) in [1u8, 2, 3].into_iter().enumerate() {
        let f = raw(mac_of(ME), Mac([0, 0x16, 0x3e, 0, 0, last]), 0x0800);
        assert_eq!(s.inbound(i as u64, addr(2), &f), Inbound::Deliver);
    }
    assert_eq!(s.counters().macs_learned, 3);
    assert_eq!(s.counters().macs_evicted, 1);
    assert_eq!(s.mac_table().len(), 2);
}

#[test]
fn multicast_never_goes_back_to_us_even_if_the_table_says_so() {
    let mut subs = Subscriptions::new(super::tests_hasher());
    subs.subscribe(0, addr(ME), MulticastGroup::BROADCAST);
    subs.subscribe(0, addr(2), MulticastGroup::BROADCAST);
    let mut s = Switch::with_tables(
        nwid(),
        addr(ME),
        SwitchPolicy::default(),
        MacTable::new(super::tests_hasher()),
        subs,
        super::tests_hasher(),
    );
    let f = raw(Mac::BROADCAST, mac_of(ME), 0x0800);
    assert_eq!(
        out(&mut s, 0, &f),
        Ok((Some(MulticastGroup::BROADCAST), vec![addr(2)]))
    );
}

/// An IPv4/TCP frame from `src` to `dst` on destination port `port`.
fn tcp_frame(dst: Mac, src: Mac, port: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, port, 1, 1024);
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).unwrap();
    out
}

fn no_ssh() -> crate::rules::RuleSet {
    crate::rules::RuleSet::from_zerotier_json(&serde_json::json!([
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
        {"type": "ACTION_DROP"},
        {"type": "ACTION_ACCEPT"}
    ]))
    .unwrap()
}

#[test]
fn flow_rules_drop_what_they_match_on_the_way_out_counted_by_rule() {
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(no_ssh()));
    let ssh = tcp_frame(mac_of(2), mac_of(ME), 22);
    let web = tcp_frame(mac_of(2), mac_of(ME), 80);
    assert_eq!(s.outbound(0, &ssh), Outbound::Drop(DropReason::FlowRule));
    assert_eq!(s.outbound(0, &web), Outbound::Unicast(addr(2)));
    assert_eq!(s.counters().drops.flow_rule, 1);
    assert_eq!(s.counters().dropped_by_rule.get(&2), Some(&1));
    // Without rules (no rules in the config): everything passes.
    s.set_rules(None);
    assert_eq!(s.outbound(0, &ssh), Outbound::Unicast(addr(2)));
    // An empty rule set accepts nothing (ZeroTier's too): counted at "end" (0).
    s.set_rules(Some(crate::rules::RuleSet::default()));
    assert_eq!(s.outbound(0, &web), Outbound::Drop(DropReason::FlowRule));
    assert_eq!(s.counters().dropped_by_rule.get(&0), Some(&1));
}

#[test]
fn a_sender_that_ignores_the_rules_is_stopped_by_the_receiver() {
    // Member 2 runs a modified node that sends TCP 22 anyway: our own
    // check on receipt drops it, and lets the rest through.
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(no_ssh()));
    let ssh = tcp_frame(mac_of(ME), mac_of(2), 22);
    let web = tcp_frame(mac_of(ME), mac_of(2), 80);
    assert_eq!(
        s.inbound(0, addr(2), &ssh),
        Inbound::Drop(DropReason::FlowRule)
    );
    assert_eq!(s.inbound(0, addr(2), &web), Inbound::Deliver);
    // ARP obeys the rules too, counted like any drop.
    s.set_rules(Some(
        crate::rules::RuleSet::from_zerotier_json(&serde_json::json!([
            {"type": "MATCH_ETHERTYPE", "etherType": 2054},
            {"type": "ACTION_DROP"},
            {"type": "ACTION_ACCEPT"}
        ]))
        .unwrap(),
    ));
    let arp = arp_request(mac_of(2), Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        s.inbound(0, addr(2), &arp),
        Inbound::Drop(DropReason::FlowRule)
    );
    assert_eq!(s.counters().dropped_by_rule.get(&1), Some(&1));
}

#[test]
fn tee_asks_for_a_copy_and_redirect_sends_to_the_member_the_rule_names() {
    let observer = format!("{}", addr(3));
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(
        crate::rules::RuleSet::from_zerotier_json(&serde_json::json!([
            {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6},
            {"type": "ACTION_TEE", "address": observer, "length": 16},
            {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
            {"type": "ACTION_REDIRECT", "address": observer},
            {"type": "ACTION_ACCEPT"}
        ]))
        .unwrap(),
    ));
    let web = tcp_frame(mac_of(2), mac_of(ME), 80);
    assert_eq!(s.outbound(0, &web), Outbound::Unicast(addr(2)));
    let copy = s.take_copy().expect("a copy for the observer");
    assert_eq!((copy.to, copy.length), (addr(3), 16));
    assert_eq!(s.take_copy(), None, "taken once");
    // TCP 22 goes to the observer instead (and a copy of it too, which the
    // node skips: the observer gets the frame itself).
    let ssh = tcp_frame(mac_of(2), mac_of(ME), 22);
    assert_eq!(s.outbound(0, &ssh), Outbound::Unicast(addr(3)));
    assert_eq!(s.counters().redirected, 1);
    // The observer takes what it is sent though the MAC is member 2's.
    let mut t = Switch::new(
        nwid(),
        addr(3),
        SwitchPolicy::default(),
        super::tests_hasher(),
    );
    t.set_rules(s.rules.clone());
    assert_eq!(t.inbound(0, addr(ME), &ssh), Inbound::Deliver);
    // Without the rule naming it, such a frame is not for it.
    t.set_rules(None);
    assert_eq!(
        t.inbound(0, addr(ME), &ssh),
        Inbound::Drop(DropReason::NotForUs)
    );
}

/// Grants held by us and by members, for the outbound rules.
struct Held(Option<Grants>, Vec<(Address, Grants)>);

impl GrantsOf for Held {
    fn ours(&self) -> Option<&Grants> {
        self.0.as_ref()
    }
    fn of(&self, member: Address) -> Option<&Grants> {
        self.1.iter().find(|(a, _)| *a == member).map(|(_, g)| g)
    }
}

/// ZeroTier's "SSH for superusers only": TCP 22 connection attempts break
/// out of the network's rules, and only a `superuser` capability accepts them.
fn ssh_for_superusers() -> (RuleSet, Vec<Capability>) {
    let rules = RuleSet::from_zerotier_json(&serde_json::json!([
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
        {"type": "ACTION_BREAK"},
        {"type": "ACTION_ACCEPT"}
    ]))
    .unwrap();
    let superuser = RuleSet::from_zerotier_json(&serde_json::json!([
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
        {"type": "ACTION_ACCEPT"}
    ]))
    .unwrap();
    (rules, vec![Capability::new(1000, superuser).unwrap()])
}

#[test]
fn a_capability_lets_its_holder_pass_what_the_rules_leave_undecided() {
    let (rules, caps) = ssh_for_superusers();
    let superuser = Grants::new([], [1000]).unwrap();
    let nobody = Grants::default();
    let ssh_out = tcp_frame(mac_of(2), mac_of(ME), 22);
    let web_out = tcp_frame(mac_of(2), mac_of(ME), 80);
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(rules));
    s.set_capabilities(caps);
    // Sending: our own capability decides.
    let held = Held(Some(superuser.clone()), vec![]);
    assert_eq!(
        s.outbound_granted(0, &ssh_out, &held),
        Outbound::Unicast(addr(2))
    );
    let held = Held(Some(nobody.clone()), vec![]);
    assert_eq!(
        s.outbound_granted(0, &ssh_out, &held),
        Outbound::Drop(DropReason::FlowRule)
    );
    assert_eq!(
        s.outbound_granted(0, &web_out, &held),
        Outbound::Unicast(addr(2))
    );
    // A capability the network does not define grants nothing.
    let held = Held(Some(Grants::new([], [7]).unwrap()), vec![]);
    assert_eq!(
        s.outbound_granted(0, &ssh_out, &held),
        Outbound::Drop(DropReason::FlowRule)
    );
    // Receiving: the sender's capability decides, not ours, so a member
    // that skips its own check still gets nothing through.
    let ssh_in = tcp_frame(mac_of(ME), mac_of(2), 22);
    assert_eq!(
        s.inbound_granted(0, addr(2), &ssh_in, Some(&superuser), Some(&nobody)),
        Inbound::Drop(DropReason::FlowRule)
    );
    assert_eq!(
        s.inbound_granted(0, addr(2), &ssh_in, Some(&superuser), None),
        Inbound::Drop(DropReason::FlowRule)
    );
    assert_eq!(
        s.inbound_granted(0, addr(2), &ssh_in, Some(&nobody), Some(&superuser)),
        Inbound::Deliver
    );
    // Undecided and no capability accepted: counted at the end (3 rules).
    assert_eq!(s.counters().dropped_by_rule.get(&3), Some(&4));
}

#[test]
fn a_capabilitys_drop_ends_only_that_capability() {
    let (rules, mut caps) = ssh_for_superusers();
    caps.insert(
        0,
        Capability::new(
            5,
            RuleSet::from_zerotier_json(&serde_json::json!([{"type": "ACTION_DROP"}])).unwrap(),
        )
        .unwrap(),
    );
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(rules));
    s.set_capabilities(caps);
    let both = Grants::new([], [5, 1000]).unwrap();
    let ssh_in = tcp_frame(mac_of(ME), mac_of(2), 22);
    assert_eq!(
        s.inbound_granted(0, addr(2), &ssh_in, None, Some(&both)),
        Inbound::Deliver
    );
}

/// Two departments by tag: members talk only within theirs
/// (`accept tdiff department 0; drop;`... as ZeroTier writes it).
#[test]
fn departments_by_tag_talk_only_within_their_own() {
    const DEPARTMENT: u32 = 2000;
    let rules = RuleSet::from_zerotier_json(&serde_json::json!([
        {"type": "MATCH_TAGS_DIFFERENCE", "id": DEPARTMENT, "value": 0},
        {"type": "ACTION_ACCEPT"},
        {"type": "ACTION_DROP"}
    ]))
    .unwrap();
    let sales = Grants::new([(DEPARTMENT, 100)], []).unwrap();
    let engineering = Grants::new([(DEPARTMENT, 200)], []).unwrap();
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(rules));
    let web_in = tcp_frame(mac_of(ME), mac_of(2), 80);
    assert_eq!(
        s.inbound_granted(0, addr(2), &web_in, Some(&sales), Some(&sales)),
        Inbound::Deliver
    );
    assert_eq!(
        s.inbound_granted(0, addr(2), &web_in, Some(&sales), Some(&engineering)),
        Inbound::Drop(DropReason::FlowRule)
    );
    // A sender that shows no tag is refused on receipt...
    assert_eq!(
        s.inbound_granted(0, addr(2), &web_in, Some(&sales), None),
        Inbound::Drop(DropReason::FlowRule)
    );
    // ...and a member with no department of its own matches nothing.
    assert_eq!(
        s.inbound_granted(0, addr(2), &web_in, None, Some(&sales)),
        Inbound::Drop(DropReason::FlowRule)
    );
    // Sending: the recipient's tag when we hold its certificate; unknown
    // (no certificate yet, or a broadcast) passes, as the receiver checks.
    let web_out = tcp_frame(mac_of(2), mac_of(ME), 80);
    let held = Held(Some(sales.clone()), vec![(addr(2), engineering.clone())]);
    assert_eq!(
        s.outbound_granted(0, &web_out, &held),
        Outbound::Drop(DropReason::FlowRule)
    );
    let held = Held(Some(sales.clone()), vec![(addr(2), sales.clone())]);
    assert_eq!(
        s.outbound_granted(0, &web_out, &held),
        Outbound::Unicast(addr(2))
    );
    let held = Held(Some(sales), vec![]);
    assert_eq!(
        s.outbound_granted(0, &web_out, &held),
        Outbound::Unicast(addr(2))
    );
}

#[test]
fn watch_copies_come_from_both_sides_tee_from_the_sender_and_none_of_a_dropped_frame() {
    let observer = format!("{}", addr(3));
    let rules = |action: &str| {
        RuleSet::from_zerotier_json(&serde_json::json!([
            {"type": action, "address": observer, "length": 0},
            {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
            {"type": "ACTION_DROP"},
            {"type": "ACTION_ACCEPT"}
        ]))
        .unwrap()
    };
    let web_in = tcp_frame(mac_of(ME), mac_of(2), 80);
    let web_out = tcp_frame(mac_of(2), mac_of(ME), 80);
    let ssh_out = tcp_frame(mac_of(2), mac_of(ME), 22);
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(rules("ACTION_WATCH")));
    assert_eq!(s.inbound(0, addr(2), &web_in), Inbound::Deliver);
    let copy = s.take_copy().expect("the receiver's watch copy");
    assert!(copy.watch && copy.to == addr(3));
    assert_eq!(s.outbound(0, &web_out), Outbound::Unicast(addr(2)));
    assert!(s.take_copy().is_some(), "the sender's watch copy");
    // Dropped by a later rule: no copy (ZeroTier sends none either).
    assert_eq!(
        s.outbound(0, &ssh_out),
        Outbound::Drop(DropReason::FlowRule)
    );
    assert_eq!(s.take_copy(), None);
    // TEE: the sender's copy only.
    s.set_rules(Some(rules("ACTION_TEE")));
    assert_eq!(s.inbound(0, addr(2), &web_in), Inbound::Deliver);
    assert_eq!(s.take_copy(), None);
    assert_eq!(s.outbound(0, &web_out), Outbound::Unicast(addr(2)));
    assert!(s.take_copy().is_some_and(|c| !c.watch));
}

#[test]
fn an_observer_takes_a_receivers_watch_copy_carrying_the_senders_mac() {
    // We (ME) observe; member 3 received member 2's frame and copies it to
    // us: the source MAC is member 2's, the packet member 3's.
    let rules = RuleSet::from_zerotier_json(&serde_json::json!([
        {"type": "ACTION_WATCH", "address": format!("{}", addr(ME)), "length": 0},
        {"type": "ACTION_ACCEPT"}
    ]))
    .unwrap();
    let copy = tcp_frame(mac_of(3), mac_of(2), 80);
    let mut s = switch(SwitchPolicy::default());
    s.set_rules(Some(rules));
    assert_eq!(s.inbound(0, addr(3), &copy), Inbound::Deliver);
    // Not an observer: the same frame is a spoofed source.
    s.set_rules(None);
    assert_eq!(
        s.inbound(0, addr(3), &copy),
        Inbound::Drop(DropReason::SpoofedSource)
    );
}
