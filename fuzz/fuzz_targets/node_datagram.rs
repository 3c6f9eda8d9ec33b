//! Whole nodes past the MAC: three real `Node`s (A and C leaves, B the
//! planet's root and a network controller) with fixed identities handshake
//! in memory, then the input makes them send each other arbitrary verbs and
//! payloads, sealed with the real session keys and fragmented as the node
//! does, so every verb handler runs on authenticated input, not only the
//! parsers. Raw datagrams, reordered/duplicated/dropped/tampered fragments,
//! TAP frames, signed world updates and clock ticks are mixed in.
//!
//! Input: one flags byte, then operations until the input runs out:
//!
//! | op byte % 8 | then | does |
//! |---|---|---|
//! | 0–2 | verb, len (2 bytes BE), payload | node `op % 3` sends `verb & 15` to a peer (`op >> 3 & 1` picks which), payload padded to len by repeating it; `verb >> 4` picks how its datagrams are delivered (as is, reversed, duplicated, first dropped, a byte flipped, first two swapped) |
//! | 3 | node, source, len (2 bytes BE), bytes | a raw datagram to node `node % 3` from a member or a stranger |
//! | 4 | byte | the clock advances `byte * 100` ms; every node ticks |
//! | 5 | len (2 bytes BE), frame | A's TAP emits a frame on network B |
//! | 6 | skew, byte index, xor | B pushes a newer planet (signed with the planet key) to A, one byte xored |
//! | 7 | node | node `node % 3` sends ECHO with `Node::ping` to the next node |
//!
//! Flags: bit 0, A and C join B's network (configs and certificates are
//! served by B and flow as they do in the daemon); bit 1, C takes part
//! (handshakes with B and A first).
//!
//! Identity checks (the memory-hard hash) happen once per process, when the
//! fixed identities are parsed; the peers learn each other with
//! `Node::learn_peer_unchecked`; X25519 and Ed25519 run as the cheap,
//! consistent stand-ins of `c25519::fuzz_mode` (the curves themselves are
//! not what this target tests), so an input costs hashing, not curve math.

#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vnet_proto::address::Address;
use vnet_proto::c25519::{KeyPair, SecretKey};
use vnet_proto::identity::Identity;
use vnet_proto::local_socket::LocalSocket;
use vnet_proto::message::Versions;
use vnet_proto::netconf::{
    AssignedIp, ConfigDenied, ManagedRoute, NetworkConfigData, NetworkController,
};
use vnet_proto::network_id::NetworkId;
use vnet_proto::node::{Event, NetworkStatus, Node, NodeConfig, Outbox};
use vnet_proto::udp_join::join_udp_runs;
use vnet_proto::verb::Verb;
use vnet_proto::world::{Root, World, WorldKind};

/// A, B and C (zerotier-idtool vectors a and b, and one more).
const IDENTITIES: [&str; 3] = [
    "5b51b6c335:0:c8c2566e2f9fcdbb1bbb1caddfe9b519eea86cec417424f0f3d205d06c097f47ac6cffc9d1027b7fef665f6c6586d9ac5d622b22bbd2aea8f4484e0b7ea4d4b7:75300986040e0164c654609b41a4459edb729505f9c2f123b316081ece9f7116cb9a917259333d0e676c03856a6f39d77ae40de0e965ebbc74d2a542c3bcd79f",
    "5d4d6e8499:0:3cd8360e0d599bea8db3a6b88f95e92fb2631e813cbfec3d57bdc409d0309e17f2158c3358c5a34492c41e259323133a4971b093ebea045546139da63efc1b4a:08071b664031e771cf48a7611c9e7045e5f1b7e29de2efd5919af0e0581cfd38c16fd6d6e022d7ec87b95eac7f5279d797994f7b6ae08cb8abb00a07ddf9c39f",
    "47afe5202c:0:0b142f71f9d982ec9375062571542f6915c897ca0689a1415e9001e0061d206f55c94eb7401cb5c8637f5ca3e54f40ab615eb604483e02c237aa44e5d4af1261:59fb310c33d9955b4ae31bbeacd63a659153fc69bcdcc3b9ca50cf9639ea74d59283f50b28dc8f39d047a1b04d89dbd945245b10af98895e098746fc35fbfe14",
];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// The simulated clock at the start of every input (ms).
const START_MS: u64 = 1_700_000_000_000;
/// Largest payload an operation asks for: bigger than a packet, so the
/// node's own size limit and fragmentation are reached.
const MAX_PAYLOAD_BYTES: usize = 70_000;
/// Datagrams delivered per operation at most (a loop between nodes ends).
const MAX_DELIVERIES: usize = 512;
/// B's network: the one A and C join.
const NETWORK_NUMBER: u32 = 0x1234;

struct Fixed {
    identities: [Identity; 3],
    planet_key: KeyPair,
    planet: World,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        // Cheap stand-ins for X25519/Ed25519 (fuzz builds only): the
        // handshakes, sealing and signatures of every input stay consistent,
        // at a fraction of the instrumented curve arithmetic's cost.
        vnet_proto::c25519::fuzz_mode::enable();
        let identities = IDENTITIES.map(|t| t.parse::<Identity>().expect("fixed identity"));
        let planet_key = KeyPair::from_secret(SecretKey::from_bytes([7; 64]));
        let planet = planet(&identities[B], &planet_key, START_MS - 1000);
        Fixed {
            identities,
            planet_key,
            planet,
        }
    })
}

fn planet(root: &Identity, key: &KeyPair, timestamp_ms: u64) -> World {
    World::make(
        WorldKind::Planet,
        77,
        timestamp_ms,
        *key.public(),
        vec![Root {
            identity: root.to_public(),
            endpoints: vec![endpoint(B)],
        }],
        key,
    )
    .expect("planet")
}

fn endpoint(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 9993))
}

fn address(i: usize) -> Address {
    fixed().identities[i].address()
}

fn nwid() -> NetworkId {
    NetworkId::new(address(B), NETWORK_NUMBER)
}

/// B's controller: every member of its one network is authorized.
struct Controller;

impl NetworkController for Controller {
    fn request(
        &mut self,
        network: NetworkId,
        member: Address,
        _asked: Option<&vnet_proto::node::MemberAsked>,
    ) -> Result<NetworkConfigData, ConfigDenied> {
        if network != nwid() {
            return Err(ConfigDenied::NotFound);
        }
        let ip = |i: usize| std::net::IpAddr::from([10, 9, 0, 1 + i as u8]);
        let me = (0..3).find(|&i| address(i) == member).unwrap_or(B);
        Ok(NetworkConfigData {
            pull_interval_ms: None,
            rules: None,
            capabilities: Vec::new(),
            grants: Default::default(),
            dns: None,
            name: "fuzz".into(),
            revision: 1,
            timestamp_ms: START_MS,
            private: true,
            mtu: 2800,
            multicast_limit: 32,
            enable_broadcast: true,
            active_bridge: me == C,
            assigned: vec![AssignedIp {
                ip: ip(me),
                prefix_len: 24,
            }],
            routes: vec![ManagedRoute {
                target: std::net::IpAddr::from([10, 9, 0, 0]),
                prefix_len: 24,
                via: None,
            }],
            bridges: vec![address(C).to_string()],
        })
    }

    fn take_changed(&mut self) -> Vec<(NetworkId, Address)> {
        Vec::new()
    }
}

/// The three nodes and the datagrams in flight between them.
struct Net {
    nodes: [Option<Node>; 3],
    now_ms: u64,
    out: Outbox,
    /// Where the TAP frames are joined.
    scratch: Vec<u8>,
    in_flight: VecDeque<(usize, SocketAddr, Vec<u8>)>,
}

impl Net {
    fn new(networks: bool, with_c: bool) -> Self {
        let mut net = Net {
            nodes: [None, None, None],
            now_ms: START_MS,
            out: Outbox::new(),
            scratch: Vec::new(),
            in_flight: VecDeque::new(),
        };
        for i in [A, B] {
            net.nodes[i] = Some(make_node(i));
        }
        net.node(B).learn_peer_unchecked(&fixed().identities[A]);
        net.node(B).serve_networks();
        // A handshakes with its root; the NOP confirms the session on B.
        net.send(A, B, Verb::Nop, &[]);
        net.deliver();
        if with_c {
            net.nodes[C] = Some(make_node(C));
            net.node(B).learn_peer_unchecked(&fixed().identities[C]);
            net.node(A).learn_peer_unchecked(&fixed().identities[C]);
            net.node(C).learn_peer_unchecked(&fixed().identities[A]);
            net.send(C, B, Verb::Nop, &[]);
            net.deliver();
            net.send(C, A, Verb::Nop, &[]);
            net.deliver();
        }
        if networks {
            for i in [A, C] {
                if net.nodes[i].is_some() {
                    let (now, nwid) = (net.now_ms, nwid());
                    let mut out = std::mem::take(&mut net.out);
                    net.node(i).join(now, nwid, &mut out);
                    net.out = out;
                    net.collect(i);
                    net.deliver();
                }
            }
        }
        net.check_setup(networks, with_c);
        net
    }

    /// The setup must work, or the fuzzer would only ever reach the
    /// "no session" drops: every input fails instead.
    fn check_setup(&mut self, networks: bool, with_c: bool) {
        let now = self.now_ms;
        let mut pairs = vec![(A, B), (B, A)];
        if with_c {
            pairs.extend([(C, B), (B, C), (A, C), (C, A)]);
        }
        for (i, j) in pairs {
            let status = self.node(i).peer_status(now, address(j));
            assert!(
                status.as_ref().is_some_and(|s| s.session),
                "setup: node {i} has no session with node {j}: {status:?}"
            );
        }
        if networks {
            for i in [A, C] {
                if self.nodes[i].is_some() {
                    let view = self.node(i).network(nwid());
                    assert!(
                        view.as_ref().is_some_and(|v| v.status == NetworkStatus::Ok),
                        "setup: node {i} is not configured on B's network: {view:?}"
                    );
                }
            }
        }
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("node exists")
    }

    /// Takes what node `i` sent into the air, and its events.
    fn collect(&mut self, i: usize) {
        let now = self.now_ms;
        let node = self.nodes[i].as_mut().expect("node exists");
        // B's config requests are answered at once, as the daemon's
        // control plane answers them.
        while let Some(event) = node.poll_event() {
            if let Event::ConfigRequested {
                network,
                member,
                asked,
            } = event
            {
                let answer = Controller.request(network, member, asked.as_deref());
                node.answer_config(now, network, member, answer, &mut self.out);
            }
        }
        for (_, to, bytes) in self.out.iter() {
            self.in_flight.push_back((i, to, bytes.to_vec()));
        }
        // The frames for the TAP go through the joining a TAP with USO
        // gets: whatever joins must be a super-frame the kernel takes.
        let mut joined = 0;
        join_udp_runs(
            self.out.frames(),
            |_| true,
            &mut self.scratch,
            |f, datagrams| {
                joined += datagrams;
                if datagrams > 1 {
                    assert!(
                        f.offload.to_virtio(f.frame()).is_ok(),
                        "a joined super-frame is valid"
                    );
                }
            },
        );
        assert_eq!(
            joined,
            self.out.frames().count(),
            "every frame written once"
        );
        self.out.clear();
    }

    fn send(&mut self, from: usize, to: usize, verb: Verb, payload: &[u8]) {
        let (now, addr) = (self.now_ms, address(to));
        let mut out = std::mem::take(&mut self.out);
        self.node(from).send(now, addr, verb, payload, &mut out);
        self.out = out;
        self.collect(from);
    }

    /// Delivers datagrams in flight (and what they cause) to whoever
    /// listens at their destination.
    fn deliver(&mut self) {
        let mut budget = MAX_DELIVERIES;
        while let Some((from, to, mut bytes)) = self.in_flight.pop_front() {
            if budget == 0 {
                self.in_flight.clear();
                return;
            }
            budget -= 1;
            self.datagram_to(to, endpoint(from), &mut bytes);
        }
    }

    fn datagram_to(&mut self, to: SocketAddr, from: SocketAddr, bytes: &mut [u8]) {
        let Some(j) = (0..3).find(|&j| endpoint(j) == to) else {
            return;
        };
        let now = self.now_ms;
        let mut out = std::mem::take(&mut self.out);
        if let Some(node) = self.nodes[j].as_mut() {
            node.handle_datagram(now, LocalSocket::Primary, from, bytes, &mut out);
        }
        self.out = out;
        if self.nodes[j].is_some() {
            self.collect(j);
        }
    }

    fn tick(&mut self) {
        let now = self.now_ms;
        for i in 0..3 {
            if self.nodes[i].is_some() {
                let mut out = std::mem::take(&mut self.out);
                self.node(i).handle_timeout(now, &mut out);
                self.out = out;
                self.collect(i);
            }
        }
        self.deliver();
    }
}

fn make_node(i: usize) -> Node {
    let f = fixed();
    let mut node = Node::new(NodeConfig {
        identity: f.identities[i].clone(),
        planet: f.planet.clone(),
        moons: Vec::new(),
        versions: Versions {
            protocol: 1,
            major: 0,
            minor: 1,
            revision: 0,
        },
        // Fixed, so that an input replays exactly.
        rng_seed: [i as u8 + 1; 32],
    })
    .expect("node");
    node.set_local_endpoints(vec![endpoint(i)]);
    node
}

/// Reads `n` bytes, or what is left.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(rest.len());
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    head
}

fn byte(rest: &mut &[u8]) -> u8 {
    take(rest, 1).first().copied().unwrap_or(0)
}

fn len16(rest: &mut &[u8]) -> usize {
    let b = take(rest, 2);
    match b {
        [hi, lo] => usize::from(u16::from_be_bytes([*hi, *lo])),
        [lo] => usize::from(*lo),
        _ => 0,
    }
}

/// `len` bytes: what the input has, repeated (big payloads from small inputs).
fn payload(rest: &mut &[u8], len: usize) -> Vec<u8> {
    let len = len.min(MAX_PAYLOAD_BYTES);
    let given = take(rest, len);
    if given.is_empty() {
        return vec![0; len];
    }
    given.iter().copied().cycle().take(len).collect()
}

/// Reorders, repeats, drops or tampers with the datagrams of one send.
fn disturb(datagrams: &mut Vec<(usize, SocketAddr, Vec<u8>)>, how: u8, at: usize) {
    match how {
        10 => datagrams.reverse(),
        11 => {
            let copy = datagrams.clone();
            datagrams.extend(copy);
        }
        12 if !datagrams.is_empty() => {
            datagrams.remove(0);
        }
        13 => {
            if let Some((_, _, d)) = datagrams.last_mut()
                && !d.is_empty()
            {
                let i = at % d.len();
                d[i] ^= 0x01 << (at % 8);
            }
        }
        14 if datagrams.len() >= 2 => datagrams.swap(0, 1),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let flags = byte(&mut rest);
    let mut net = Net::new(flags & 1 != 0, flags & 2 != 0);
    let present: Vec<usize> = (0..3).filter(|&i| net.nodes[i].is_some()).collect();
    while !rest.is_empty() {
        let op = byte(&mut rest);
        match op % 8 {
            0..=2 => {
                let from = present[usize::from(op % 8) % present.len()];
                let others: Vec<usize> = present.iter().copied().filter(|&i| i != from).collect();
                let to = others[usize::from(op >> 3 & 1) % others.len()];
                let v = byte(&mut rest);
                let verb = Verb::ALL[usize::from(v & 15)];
                let len = len16(&mut rest);
                let body = payload(&mut rest, len);
                let before = net.in_flight.len();
                net.send(from, to, verb, &body);
                let mut sent: Vec<_> = net.in_flight.drain(before..).collect();
                disturb(&mut sent, v >> 4, len);
                net.in_flight.extend(sent);
                net.deliver();
            }
            3 => {
                let to = present[usize::from(byte(&mut rest)) % present.len()];
                let source = byte(&mut rest);
                let from = if source < 128 {
                    endpoint(usize::from(source % 3))
                } else {
                    SocketAddr::from(([203, 0, 113, source], 40_000 + u16::from(source)))
                };
                let len = len16(&mut rest);
                let mut bytes = take(&mut rest, len).to_vec();
                net.datagram_to(endpoint(to), from, &mut bytes);
                net.deliver();
            }
            4 => {
                net.now_ms += u64::from(byte(&mut rest)) * 100;
                net.tick();
            }
            5 => {
                let len = len16(&mut rest).min(10_000);
                let frame = take(&mut rest, len).to_vec();
                let now = net.now_ms;
                let mut out = std::mem::take(&mut net.out);
                net.node(A).handle_tap_frame(now, nwid(), &frame, &mut out);
                net.out = out;
                net.collect(A);
                net.deliver();
            }
            6 => {
                let skew = u64::from(byte(&mut rest));
                let index = len16(&mut rest);
                let xor = byte(&mut rest);
                let f = fixed();
                let newer = planet(&f.identities[B], &f.planet_key, START_MS + skew);
                let mut bytes = newer.encode();
                let i = index % bytes.len();
                bytes[i] ^= xor;
                net.send(B, A, Verb::WorldUpdate, &bytes);
                net.deliver();
            }
            _ => {
                let from = present[usize::from(byte(&mut rest)) % present.len()];
                let to = present
                    [(present.iter().position(|&i| i == from).unwrap_or(0) + 1) % present.len()];
                let (now, addr) = (net.now_ms, address(to));
                let mut out = std::mem::take(&mut net.out);
                net.node(from).ping(now, addr, u64::from(op), &mut out);
                net.out = out;
                net.collect(from);
                net.deliver();
            }
        }
    }
});
