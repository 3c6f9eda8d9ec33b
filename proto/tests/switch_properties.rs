//! Simulator-style property tests of the virtual switch (`core::switch`):
//! a network of members, each with its own `Switch`, exchanging real
//! Ethernet frames built with etherparse. A frame read from a member's TAP
//! goes through that member's `outbound`, then through each recipient's
//! `inbound`; what matters is which TAPs it ends up on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, PacketBuilder};
use proptest::collection::vec;
use proptest::prelude::*;
use vnet_proto::address::Address;
use vnet_proto::c25519::KeyPair;
use vnet_proto::constants::{
    CERTIFICATE_MAX_DELTA_MS, MAC_TABLE_ENTRY_TTL_MS, MULTICAST_SUBSCRIPTION_TTL_MS,
};
use vnet_proto::hash_state::HashState;
use vnet_proto::netconf::Certificate;
use vnet_proto::network_id::{Mac, NetworkId};
use vnet_proto::rng::{NodeRng, SeedableRng};
use vnet_proto::switch::{DropReason, Inbound, MulticastGroup, Outbound, Switch, SwitchPolicy};

// ---------------------------------------------------------------------------
// The simulated network.

const START_MS: u64 = 1_000_000;

fn nwid() -> NetworkId {
    "8056c2e21c000001".parse().unwrap()
}

struct Member {
    addr: Address,
    switch: Switch,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

impl Member {
    fn mac(&self) -> Mac {
        self.switch.mac()
    }
}

struct Net {
    members: Vec<Member>,
    now: u64,
}

/// What became of a frame read from a member's TAP.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Written to these members' TAPs (indices, ascending).
    Delivered(Vec<usize>),
    /// Dropped by the sender's switch.
    Dropped(DropReason),
    /// A multicast whose recipients the sender's switch does not know: the
    /// node asks the roots (MULTICAST_GATHER).
    Unresolved,
    /// Answered by the sender's own switch (NDP emulation), sent to no one.
    Answered,
}

impl Net {
    /// `n` members; those in `bridges` are active bridges; everyone subscribes everyone to its groups.
    fn new(n: usize, policy: SwitchPolicy, bridges: &[usize]) -> Net {
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let addr = Address::from_u64(0x3a_0000_0000 + 0x1_0203 * (i as u64 + 1)).unwrap();
                let policy = SwitchPolicy {
                    active_bridge: bridges.contains(&i),
                    ..policy
                };
                Member {
                    addr,
                    switch: Switch::new(
                        nwid(),
                        addr,
                        policy,
                        HashState::new(&mut NodeRng::seed_from_u64(i as u64)),
                    ),
                    v4: Ipv4Addr::new(10, 147, 0, i as u8 + 1),
                    v6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x1000, i as u16 + 1),
                }
            })
            .collect();
        let mut net = Net {
            members,
            now: START_MS,
        };
        let all: Vec<Address> = net.members.iter().map(|m| m.addr).collect();
        let bridge_addrs: Vec<Address> = bridges.iter().map(|b| all[*b]).collect();
        for m in &mut net.members {
            m.switch.set_bridges(&bridge_addrs);
            m.switch
                .set_local_ips(&[IpAddr::V4(m.v4), IpAddr::V6(m.v6)]);
        }
        net.announce_all();
        net
    }

    /// Every member subscribes every other to the groups it listens to.
    fn announce_all(&mut self) {
        let now = self.now;
        let announcements: Vec<(Address, Vec<MulticastGroup>)> = self
            .members
            .iter()
            .map(|m| (m.addr, m.switch.our_groups()))
            .collect();
        for (from, groups) in &announcements {
            for m in &mut self.members {
                if m.addr != *from {
                    for g in groups {
                        assert!(m.switch.subscribe(now, *from, *g));
                    }
                }
            }
        }
    }

    /// An ARP request from member `from` for member `owner`'s IPv4 address.
    fn arp_request(&self, from: usize, owner: usize) -> Vec<u8> {
        let asker = &self.members[from];
        arp_request(asker.mac(), asker.v4, self.members[owner].v4)
    }

    /// Member `from` reads `frame` from its TAP.
    fn send(&mut self, from: usize, frame: &[u8]) -> Fate {
        let now = self.now;
        let recipients: Vec<Address> = match self.members[from].switch.outbound(now, frame) {
            Outbound::Unicast(a) => vec![a],
            Outbound::Bridges(b) => b.to_vec(),
            Outbound::Multicast { members, .. } => members.to_vec(),
            Outbound::Unresolved(_) => return Fate::Unresolved,
            Outbound::Answer(_) => return Fate::Answered,
            Outbound::Drop(reason) => return Fate::Dropped(reason),
        };
        let sender = self.members[from].addr;
        assert!(
            !recipients.contains(&sender),
            "never sent back to ourselves"
        );
        let mut delivered = Vec::new();
        for r in recipients {
            let Some(i) = self.members.iter().position(|m| m.addr == r) else {
                continue; // not a member of this simulation
            };
            if self.members[i].switch.inbound(now, sender, frame) == Inbound::Deliver {
                delivered.push(i);
            }
        }
        delivered.sort_unstable();
        Fate::Delivered(delivered)
    }

    fn drops(&self, i: usize, reason: DropReason) -> u64 {
        self.members[i].switch.counters().drops.get(reason)
    }
}

// ---------------------------------------------------------------------------
// Frames, built with etherparse.

fn udp4(src: Mac, dst: Mac, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([10, 147, 0, 1], [10, 147, 0, 2], 64)
        .udp(5000, 6000);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

fn arp(
    op: ArpOperation,
    src: Mac,
    dst: Mac,
    sender: Ipv4Addr,
    target_mac: Mac,
    target: Ipv4Addr,
) -> Vec<u8> {
    let pkt = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &src.0,
        &sender.octets(),
        &target_mac.0,
        &target.octets(),
    )
    .unwrap();
    let b = PacketBuilder::ethernet2(src.0, dst.0).arp(pkt);
    let mut out = Vec::with_capacity(b.size());
    b.write(&mut out).unwrap();
    out
}

fn arp_request(src: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::REQUEST,
        src,
        Mac::BROADCAST,
        sender,
        Mac([0; 6]),
        target,
    )
}

/// A neighbour solicitation for `target`, sent to its solicited-node group.
fn neighbor_solicitation(src: Mac, source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group_ip = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, t[13], t[14], t[15],
    ]);
    let group_mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    let b = PacketBuilder::ethernet2(src.0, group_mac)
        .ipv6(source.octets(), group_ip.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation);
    // Target address, then the source link-layer address option.
    let mut body = t.to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&src.0);
    let mut out = Vec::with_capacity(b.size(body.len()));
    b.write(&mut out, &body).unwrap();
    out
}

fn broadcast(src: Mac, payload: &[u8]) -> Vec<u8> {
    udp4(src, Mac::BROADCAST, payload)
}

/// A unicast MAC that is no member's: not this network's first octet.
fn host_mac(low: [u8; 5]) -> Mac {
    Mac([0x00, low[0], low[1], low[2], low[3], low[4]])
}

/// The network's controller key (one for the whole run: keys are slow to make).
fn controller_key() -> &'static KeyPair {
    static KEY: std::sync::OnceLock<KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate(&mut os_rng()))
}

fn policy() -> SwitchPolicy {
    SwitchPolicy::default()
}

fn arb_pair(n: usize) -> impl Strategy<Value = (usize, usize)> {
    (0..n, 1..n).prop_map(move |(a, d)| (a, (a + d) % n))
}

fn arb_net_pair() -> impl Strategy<Value = (usize, (usize, usize))> {
    (2usize..8).prop_flat_map(|n| (Just(n), arb_pair(n)))
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #[test]
    fn unicast_to_a_member_mac_reaches_only_that_member(
        (n, (from, to)) in arb_net_pair(),
        payload in vec(any::<u8>(), 0..200),
    ) {
        let mut net = Net::new(n, policy(), &[]);
        let f = udp4(net.members[from].mac(), net.members[to].mac(), &payload);
        prop_assert_eq!(net.send(from, &f), Fate::Delivered(vec![to]));
    }

    #[test]
    fn arp_request_reaches_only_the_owner_and_the_reply_only_the_asker(
        (n, (from, owner)) in arb_net_pair(),
    ) {
        let mut net = Net::new(n, policy(), &[]);
        let (asker, target) = (&net.members[from], &net.members[owner]);
        let req = arp_request(asker.mac(), asker.v4, target.v4);
        let (am, tm) = (asker.mac(), target.mac());
        let reply = arp(ArpOperation::REPLY, tm, am, target.v4, am, asker.v4);
        prop_assert_eq!(net.send(from, &req), Fate::Delivered(vec![owner]));
        prop_assert_eq!(net.send(owner, &reply), Fate::Delivered(vec![from]));
        // Nobody is known to own this address: nobody hears the request
        // (the roots are asked).
        let (m, ip) = (net.members[from].mac(), net.members[from].v4);
        let nobody = arp_request(m, ip, Ipv4Addr::new(10, 147, 1, 1));
        prop_assert_eq!(net.send(from, &nobody), Fate::Unresolved);
    }

    #[test]
    fn ipv6_neighbor_solicitation_reaches_only_the_owner(
        (n, (from, owner)) in arb_net_pair(),
    ) {
        let mut net = Net::new(n, policy(), &[]);
        let (asker, target) = (&net.members[from], &net.members[owner]);
        let ns = neighbor_solicitation(asker.mac(), asker.v6, target.v6);
        prop_assert_eq!(net.send(from, &ns), Fate::Delivered(vec![owner]));
    }

    #[test]
    fn spoofed_sources_from_non_bridges_are_dropped_and_counted(
        (n, (from, to)) in arb_net_pair(),
        low in any::<[u8; 5]>(),
        claim_member in any::<bool>(),
    ) {
        let mut net = Net::new(n, policy(), &[]);
        let fake = if claim_member {
            net.members[to].mac() // the receiver's own MAC, or any member's: never ours to use
        } else {
            host_mac(low)
        };
        let f = udp4(fake, net.members[to].mac(), b"spoof");
        // The sender's own switch refuses to send it...
        prop_assert_eq!(net.send(from, &f), Fate::Dropped(DropReason::ForeignSource));
        prop_assert_eq!(net.drops(from, DropReason::ForeignSource), 1);
        // ...and a receiver refuses it from a modified sender.
        let sender = net.members[from].addr;
        let now = net.now;
        prop_assert_eq!(
            net.members[to].switch.inbound(now, sender, &f),
            Inbound::Drop(DropReason::SpoofedSource)
        );
        prop_assert_eq!(net.drops(to, DropReason::SpoofedSource), 1);
        prop_assert_eq!(net.members[to].switch.counters().delivered, 0);
    }

    #[test]
    fn macs_behind_a_bridge_are_learned_and_unicast_to_them_goes_to_that_bridge(
        n in 3usize..8,
        low in any::<[u8; 5]>(),
        start in any::<usize>(),
    ) {
        // Two bridges; the host sits behind the first.
        let (bridge, bridge2, other) = (start % n, (start + 1) % n, (start + 2) % n);
        let mut net = Net::new(n, policy(), &[bridge, bridge2]);
        let host = host_mac(low);
        // The host talks to `other` through its bridge: delivered, and learned there.
        let hello = udp4(host, net.members[other].mac(), b"hi");
        prop_assert_eq!(net.send(bridge, &hello), Fate::Delivered(vec![other]));
        prop_assert_eq!(net.members[other].switch.counters().macs_learned, 1);
        // `other` answers: only that bridge gets it, not the other bridge.
        let answer = udp4(net.members[other].mac(), host, b"hello");
        prop_assert_eq!(net.send(other, &answer), Fate::Delivered(vec![bridge]));
        prop_assert_eq!(net.members[bridge].switch.counters().delivered, 1);
        prop_assert_eq!(net.members[bridge2].switch.counters().delivered, 0);
        // Once the entry lapses, the answer is flooded to both bridges again.
        net.now += MAC_TABLE_ENTRY_TTL_MS;
        let mut both = vec![bridge, bridge2];
        both.sort_unstable();
        prop_assert_eq!(net.send(other, &answer), Fate::Delivered(both));
    }

    #[test]
    fn unknown_unicast_goes_to_the_bridges_only(
        n in 2usize..8,
        bridge_mask in any::<u8>(),
        from in any::<usize>(),
        low in any::<[u8; 5]>(),
    ) {
        let bridges: Vec<usize> = (0..n).filter(|i| bridge_mask & (1 << i) != 0).collect();
        let from = from % n;
        let mut net = Net::new(n, policy(), &bridges);
        let f = udp4(net.members[from].mac(), host_mac(low), b"who");
        let expected: Vec<usize> = bridges.iter().copied().filter(|b| *b != from).collect();
        if expected.is_empty() {
            prop_assert_eq!(net.send(from, &f), Fate::Dropped(DropReason::UnknownDestination));
        } else {
            prop_assert_eq!(net.send(from, &f), Fate::Delivered(expected));
        }
    }

    #[test]
    fn broadcast_reaches_everyone_else_unless_disabled(
        (n, (from, to)) in arb_net_pair(),
        enable in any::<bool>(),
    ) {
        let p = SwitchPolicy { enable_broadcast: enable, ..policy() };
        let mut net = Net::new(n, p, &[]);
        let f = broadcast(net.members[from].mac(), b"dhcp?");
        if enable {
            let everyone: Vec<usize> = (0..n).filter(|i| *i != from).collect();
            prop_assert_eq!(net.send(from, &f), Fate::Delivered(everyone));
        } else {
            prop_assert_eq!(net.send(from, &f), Fate::Dropped(DropReason::BroadcastDisabled));
            let (sender, now) = (net.members[from].addr, net.now);
            prop_assert_eq!(
                net.members[to].switch.inbound(now, sender, &f),
                Inbound::Drop(DropReason::BroadcastDisabled)
            );
            // ARP still works.
            let req = net.arp_request(from, to);
            prop_assert_eq!(net.send(from, &req), Fate::Delivered(vec![to]));
        }
    }

    #[test]
    fn multicast_limit_caps_recipients(
        n in 2usize..10,
        limit in 0u32..12,
        from in any::<usize>(),
    ) {
        let from = from % n;
        let mut net = Net::new(n, SwitchPolicy { multicast_limit: limit, ..policy() }, &[]);
        let f = broadcast(net.members[from].mac(), b"all");
        let expected = (limit as usize).min(n - 1);
        match net.send(from, &f) {
            Fate::Delivered(d) => {
                prop_assert_eq!(d.len(), expected);
                prop_assert!(!d.contains(&from));
            }
            Fate::Dropped(r) => {
                prop_assert_eq!(limit, 0);
                prop_assert_eq!(r, DropReason::NoRecipients);
            }
            Fate::Unresolved => prop_assert_eq!(expected, 0),
            Fate::Answered => prop_assert!(false, "a broadcast is never answered locally"),
        }
    }

    #[test]
    fn lapsed_subscriptions_stop_receiving_until_announced_again(
        (n, (from, owner)) in arb_net_pair(),
        late in 0u64..1000,
    ) {
        let mut net = Net::new(n, policy(), &[]);
        let req = net.arp_request(from, owner);
        net.now += MULTICAST_SUBSCRIPTION_TTL_MS - 1;
        prop_assert_eq!(net.send(from, &req), Fate::Delivered(vec![owner]));
        net.now += 1 + late;
        prop_assert_eq!(net.send(from, &req), Fate::Unresolved);
        let now = net.now;
        net.members[from].switch.expire(now);
        prop_assert!(net.members[from].switch.subscriptions().is_empty());
        net.announce_all();
        prop_assert_eq!(net.send(from, &req), Fate::Delivered(vec![owner]));
    }

    /// The calls the node makes: `Switch::receive` on every EXT_FRAME (with
    /// the sender's latest verified certificate), `Switch::certificate_admits` before
    /// sending any frame, `Switch::forget_member` on a revocation.
    #[test]
    fn frames_from_members_without_a_fresh_certificate_are_dropped(
        (n, (from, to)) in arb_net_pair(),
        public in any::<bool>(),
        age in 0u64..3 * CERTIFICATE_MAX_DELTA_MS,
    ) {
        let mut net = Net::new(n, SwitchPolicy { private: !public, ..policy() }, &[]);
        let (sender, receiver) = (net.members[from].addr, net.members[to].addr);
        let issued = 50_000_000;
        let ours = Certificate::issue(controller_key(), nwid(), receiver, issued);
        let theirs = Certificate::issue(controller_key(), nwid(), sender, issued - age);
        let fresh = age <= CERTIFICATE_MAX_DELTA_MS;
        let admitted = public || fresh;
        let f = udp4(net.members[from].mac(), net.members[to].mac(), b"x");
        let now = net.now;
        let switch = &mut net.members[to].switch;
        let verdict = switch.receive(now, sender, &ours, Some(&theirs), &f);
        prop_assert_eq!(verdict == Inbound::Deliver, admitted, "{:?}", verdict);
        prop_assert_eq!(
            switch.receive(now, sender, &ours, None, &f) == Inbound::Deliver,
            public,
            "no certificate at all"
        );
        prop_assert_eq!(switch.certificate_admits(&ours, Some(&theirs)), admitted);
        prop_assert_eq!(switch.certificate_admits(&ours, None), public);
        let refused = u64::from(!admitted) + u64::from(!public);
        prop_assert_eq!(net.drops(to, DropReason::NotAuthorized), refused);

        // The controller revokes the sender: its subscriptions go at once
        // everywhere (nobody sends it ARP until the roots name it again).
        for m in &mut net.members {
            m.switch.forget_member(sender);
        }
        let asker = (from + 1) % n;
        let req = net.arp_request(asker, from);
        prop_assert_eq!(net.send(asker, &req), Fate::Unresolved);
    }

    #[test]
    fn a_member_accepts_only_frames_addressed_to_it(
        (n, (from, to)) in arb_net_pair(),
        pick in 0usize..6,
        low in any::<[u8; 5]>(),
    ) {
        // What a modified sender could push straight at `to`, past its own switch.
        let mut net = Net::new(n, policy(), &[]);
        let third = (to + 1) % n;
        let (src, me, them) = (net.members[from].mac(), &net.members[to], &net.members[third]);
        let (frame, for_us) = match pick {
            0 => (udp4(src, me.mac(), b"u"), true),
            1 => (udp4(src, them.mac(), b"u"), third == to),
            2 => (udp4(src, host_mac(low), b"u"), false),
            3 => (arp_request(src, Ipv4Addr::new(10, 147, 0, 200), me.v4), true),
            4 => (arp_request(src, Ipv4Addr::new(10, 147, 0, 200), them.v4), third == to),
            _ => (neighbor_solicitation(src, "fe80::1".parse().unwrap(), them.v6), third == to),
        };
        let (sender, now) = (net.members[from].addr, net.now);
        let verdict = net.members[to].switch.inbound(now, sender, &frame);
        prop_assert_eq!(verdict == Inbound::Deliver, for_us, "{:?}", verdict);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        frames in vec(vec(any::<u8>(), 0..120), 1..20),
        bridge in any::<bool>(),
        enable_broadcast in any::<bool>(),
        limit in 0u32..4,
        header in any::<(u8, u8, u16)>(),
    ) {
        let p = SwitchPolicy {
            active_bridge: bridge,
            enable_broadcast,
            multicast_limit: limit,
            private: true,
        };
        let mut net = Net::new(3, p, if bridge { &[0, 1] } else { &[] });
        let interesting = [
            Mac::BROADCAST,
            net.members[0].mac(),
            net.members[1].mac(),
            net.members[2].mac(),
            Mac([0x33, 0x33, 0xff, 0, 0, 1]),
            Mac([0x01, 0x00, 0x5e, 0, 0, 1]),
            host_mac([1, 2, 3, 4, 5]),
        ];
        for (k, junk) in frames.iter().enumerate() {
            // Half the frames get a plausible header, so the deeper rules run too.
            let mut f = junk.clone();
            if k % 2 == 0 && f.len() >= 14 {
                f[..6].copy_from_slice(&interesting[header.0 as usize % interesting.len()].0);
                f[6..12].copy_from_slice(&interesting[header.1 as usize % interesting.len()].0);
                let ether_type: u16 = [0x0806, 0x86dd, 0x0800][header.2 as usize % 3];
                f[12..14].copy_from_slice(&ether_type.to_be_bytes());
            }
            let from = k % 3;
            let _ = net.send(from, &f);
            let (sender, now) = (net.members[from].addr, net.now);
            let _ = net.members[(from + 1) % 3].switch.inbound(now, sender, &f);
        }
    }
}

#[test]
fn counters_serialize_in_camel_case() {
    let mut net = Net::new(2, policy(), &[]);
    let f = udp4(host_mac([9; 5]), net.members[1].mac(), b"x");
    assert_eq!(net.send(0, &f), Fate::Dropped(DropReason::ForeignSource));
    let json = serde_json::to_value(net.members[0].switch.counters()).unwrap();
    assert_eq!(json["drops"]["foreignSource"], 1);
    assert_eq!(json["sentUnicast"], 0);
}

/// The operating system's random source.
fn os_rng() -> vnet_proto::rng::UnwrapErr<getrandom::SysRng> {
    vnet_proto::rng::UnwrapErr(getrandom::SysRng)
}
