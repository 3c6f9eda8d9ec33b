//! The node: a sans-IO state machine. The driver hands it datagrams and
//! timer ticks with the current time; it returns datagrams to send (an
//! [`Outbox`]) and [`Event`]s. It never reads a clock or touches a socket.

mod counters;
mod credentials;
pub(crate) mod frames;
mod identity_checks;
mod membership;
mod multicast;
mod network;
mod outbox;
mod peer;
mod root_endpoints;
mod status;
mod test_support;
mod traversal;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

pub use counters::{Counters, TableSizes};
pub use identity_checks::{IdentityCheck, IdentityCheckResult, VerifiedIdentity};
pub use membership::NetworkStatus;
pub use network::NetworkView;
pub use outbox::{Outbox, TapFrame, Transmit, TransmitView};
pub use peer::{PeerRole, PeerRoute};
pub use status::{NodeStatus, PathStatus, PeerStatus};
pub use traversal::{NatMapping, NetcheckRoot, NetcheckStatus};

use crate::address::Address;
use crate::armor::Suite;
use crate::armor::{armor, dearmor};
use crate::constants::*;
use crate::fragment::{Reassembler, fragment_in_place};
use crate::hash_state::{HashMap, HashState};
use crate::identity::{Identity, SharedIdentity};
use crate::identity_hash::IdentityHashScratch;
use crate::local_socket::LocalSocket;
use crate::maybe_ms::MaybeMs;
use crate::message::{
    self, Capabilities, Echo, EchoKind, Hello, HelloOk, InRe, OkBody, PathMtuProbe, Rendezvous,
    Versions, decode_error, decode_ok, decode_push_direct_paths, decode_whois, encode_in_re,
    encode_push_direct_paths,
};
use crate::multicast_message::{MulticastGather, MulticastLike};
use crate::relay::{RelaySources, RelayTable, rate_key};
use crate::rng::{NodeRng, Rng, SeedableRng};
use crate::session::{Arrival, Ephemeral, OpenError, Role, derive_session};
use crate::verb::Verb;
use crate::wire::{
    Datagram, FLAG_AES_GCM, FLAGS_OFFSET, PacketHeader, append_packet_start, classify,
    increment_hops, start_packet, verb_of,
};
use crate::world::{World, WorldKind};
use peer::{Peer, PeerCapabilities, PendingHandshake};

/// What a node is started with.
pub struct NodeConfig {
    /// This node's identity, with its secret key.
    pub identity: Identity,
    /// The planet.
    pub planet: World,
    /// Moons already orbited.
    pub moons: Vec<World>,
    /// Software versions to announce.
    pub versions: Versions,
    /// Seeds the node's random source (ephemeral keys, packet counters,
    /// punch ports, queue picks): from the operating system in the daemon,
    /// fixed in tests so that a run repeats.
    pub rng_seed: [u8; 32],
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The identity has no secret key.
    #[error("the node's identity must include its secret key")]
    NoSecret,
}

/// What came with a member's config request: who it is (verified) and
/// what it tells its controller.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberAsked {
    /// Its identity (public key), as verified when its session was set up.
    pub identity: SharedIdentity,
    /// Its software versions, from its HELLO (none if not known).
    pub versions: Option<crate::message::Versions>,
    /// Its join key and advertised routes.
    pub meta: crate::network_message::RequestMeta,
}

/// Something the driver or user should know.
#[derive(Debug, Clone)]
pub enum Event {
    /// A reply to [`Node::ping`].
    EchoReply {
        /// Who answered.
        peer: Address,
        /// The ping's id.
        id: u64,
        /// Round-trip time.
        rtt_ms: u64,
        /// How the reply came.
        route: PeerRoute,
        /// Whether it came over our TCP relay connection.
        tcp: bool,
    },
    /// Packets to a peer now go straight to it instead of through a root.
    PathUpgraded {
        /// The peer.
        peer: Address,
        /// The direct path.
        path: SocketAddr,
    },
    /// The direct path to a peer died; packets are relayed again.
    PathLost {
        /// The peer.
        peer: Address,
    },
    /// A world was accepted (an update, or a moon fetched by orbit): persist it.
    WorldUpdated(World),
    /// No root knew this address.
    WhoisFailed(Address),
    /// A joined network's status or settings changed: (re)configure its device.
    NetworkChanged(crate::network_id::NetworkId),
    /// A member (or this node, for its own network) wants its config from
    /// this controller node: the driver asks the controller and hands the
    /// answer to [`Node::answer_config`]. Asked once per (network, member)
    /// until answered.
    ConfigRequested {
        /// The network.
        network: crate::network_id::NetworkId,
        /// Who wants it.
        member: Address,
        /// What came with the member's own request; none for a push or a
        /// refresh the node asks on the member's behalf.
        asked: Option<Box<MemberAsked>>,
    },
    /// A controller node's certificates are due for refresh: the driver asks
    /// the controller which of these members it still admits
    /// ([`crate::netconf::NetworkController::still_admitted`]) and hands the
    /// answer to [`Node::refresh_certificates`].
    CertificatesDue(Vec<(crate::network_id::NetworkId, Address)>),
}

/// An address whose identity we are asking the roots for.
struct WhoisPending {
    first_ms: u64,
    last_sent_ms: Option<u64>,
    queued: Vec<(Verb, Vec<u8>)>,
    /// On a root: who asked us (and the WHOIS packet's counter), to answer
    /// once another root told us.
    askers: Vec<(Address, u64)>,
}

/// A moon asked for with orbit, not yet received.
struct WantedMoon {
    id: u64,
    seed: Address,
}

/// The node state machine.
pub struct Node {
    identity: Identity,
    key_pair: crate::c25519::KeyPair,
    address: Address,
    versions: Versions,
    planet: World,
    moons: Vec<World>,
    wanted_moons: Vec<WantedMoon>,
    /// Boxed: the table holds room for up to twice its peers, and a peer
    /// is about a kilobyte.
    peers: HashMap<Address, Box<Peer>>,
    whois: HashMap<Address, WhoisPending>,
    reassembler: Reassembler,
    rendezvous_sent: HashMap<(Address, Address), u64>,
    hello_buckets: HashMap<std::net::IpAddr, (u64, u32)>,
    /// Identity checks waiting for the driver, and what earlier ones found.
    identity_checks: identity_checks::IdentityChecks,
    /// Wall-clock ms at the node's time 0: HELLO timestamps are wall-clock,
    /// so they keep increasing across restarts (freshness, PROTOCOL.md §3.4).
    clock_epoch_ms: u64,
    /// On a root: where its peers talk from, built from their confirmed
    /// paths (a session packet came straight from there) and shared with
    /// the relay table; rebuilt when stale, or when a new path was heard
    /// and a lookup misses.
    relay_sources: Arc<RelaySources>,
    /// A peer was heard on a path new to it since `relay_sources` was built.
    relay_sources_missing_path: bool,
    /// On a root: destinations whose packets came relayed by another root
    /// (moons and other planet roots), and when: what we cannot deliver
    /// straight goes back the same way.
    relay_routes: HashMap<Address, (Address, u64)>,
    /// Addresses of the roots of the worlds held (recomputed on every update).
    root_addrs: Vec<Address>,
    /// The stable endpoints of those roots (recomputed likewise).
    root_endpoints: root_endpoints::RootEndpoints,
    /// When idle peers and stale routes were last swept.
    last_sweep_ms: u64,
    /// Whether this node is a root of a world it holds (recomputed likewise).
    am_root: bool,
    /// On a root: peers that relayed packets of others to us (moons, other
    /// roots), newest last: WHOIS we cannot answer goes to them too.
    relayers: Vec<(Address, u64)>,
    /// A restarted root's peers from before, to greet with HELLO at their
    /// last path (`READMIT_HELLOS_PER_TICK` a tick).
    readmit: VecDeque<(Address, SocketAddr)>,
    local_endpoints: Vec<SocketAddr>,
    reflected: HashMap<Address, SocketAddr>,
    events: VecDeque<Event>,
    counters: Counters,
    scratch: IdentityHashScratch,
    tx: Vec<u8>,
    networks: HashMap<crate::network_id::NetworkId, membership::Membership>,
    controller: network::ControllerState,
    /// Group announcements, gathers, and on a root the multicast directory.
    multicast: multicast::MulticastState,
    /// Reused buffers of the frame path.
    frame_buf: Vec<u8>,
    frame_targets: Vec<Address>,
    /// A frame read with headroom that goes to more than one member (or
    /// must wait): copied out of the outbox before its packets are built.
    frame_copy: Vec<u8>,
    /// Frames a super-frame becomes for a peer that cannot take it whole.
    frame_segments: Vec<u8>,
    /// Whether we announce and send OFFLOAD_FRAME (off: behave as a node
    /// that predates it).
    offload_frames: bool,
    /// Whether we announce AES-256-GCM and seal with it to peers that did.
    aes_gcm: bool,
    /// Counters each session's replay window spans (`set_replay_window_packets`).
    replay_window_packets: u64,
    /// Whether a root session was ever established.
    online_once: bool,
    /// The socket the datagram being handled arrived on.
    rx_socket: LocalSocket,
    /// NAT traversal: TCP fallback, port mapping, birthday punching.
    traversal: traversal::TraversalState,
    /// Peers' timer deadlines (ms, address), earliest first: a tick handles
    /// the peers whose work is due, not every peer. Entries whose time no
    /// longer matches the peer's `next_tick_ms` are stale and skipped.
    tick_heap: BinaryHeap<Reverse<(u64, Address)>>,
    /// Reused list of the peers due in a tick.
    due_peers: Vec<Address>,
    /// The node's random source, seeded at construction.
    rng: NodeRng,
    /// Keys the hashers of every table (drawn from `rng`).
    hash_state: HashState,
}

impl Node {
    /// Starts a node. Nothing is sent until the first [`Node::handle_timeout`].
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        let key_pair = config.identity.key_pair().ok_or(NodeError::NoSecret)?;
        let mut rng = NodeRng::from_seed(config.rng_seed);
        let hash_state = HashState::new(&mut rng);
        let mut node = Self {
            address: config.identity.address(),
            identity: config.identity,
            key_pair,
            versions: config.versions,
            planet: config.planet,
            moons: Vec::new(),
            wanted_moons: Vec::new(),
            peers: HashMap::with_hasher(hash_state.clone()),
            whois: HashMap::with_hasher(hash_state.clone()),
            reassembler: Reassembler::default(),
            rendezvous_sent: HashMap::with_hasher(hash_state.clone()),
            hello_buckets: HashMap::with_hasher(hash_state.clone()),
            identity_checks: identity_checks::IdentityChecks::new(hash_state.clone()),
            clock_epoch_ms: 0,
            relay_sources: Arc::default(),
            relay_sources_missing_path: false,
            relay_routes: HashMap::with_hasher(hash_state.clone()),
            root_addrs: Vec::new(),
            root_endpoints: root_endpoints::RootEndpoints::default(),
            last_sweep_ms: 0,
            am_root: false,
            relayers: Vec::new(),
            readmit: VecDeque::new(),
            local_endpoints: Vec::new(),
            reflected: HashMap::with_hasher(hash_state.clone()),
            events: VecDeque::new(),
            counters: Counters::default(),
            scratch: IdentityHashScratch::new(),
            tx: Vec::with_capacity(PACKET_MAX_LEN_BYTES),
            networks: HashMap::with_hasher(hash_state.clone()),
            multicast: multicast::MulticastState::new(hash_state.clone()),
            controller: network::ControllerState::new(hash_state.clone()),
            frame_buf: Vec::with_capacity(PACKET_MAX_LEN_BYTES),
            frame_targets: Vec::new(),
            frame_copy: Vec::new(),
            frame_segments: Vec::new(),
            offload_frames: true,
            aes_gcm: true,
            replay_window_packets: REPLAY_WINDOW_PACKETS,
            online_once: false,
            rx_socket: LocalSocket::Primary,
            traversal: traversal::TraversalState::new(hash_state.clone()),
            tick_heap: BinaryHeap::new(),
            due_peers: Vec::new(),
            rng,
            hash_state,
        };
        node.moons = config.moons;
        node.recompute_roles();
        Ok(node)
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether this node is a root of a world it holds.
    pub fn is_root(&self) -> bool {
        self.am_root
    }

    /// The planet and moons held.
    pub fn worlds(&self) -> impl Iterator<Item = &World> {
        std::iter::once(&self.planet).chain(self.moons.iter())
    }

    /// The moons held.
    pub fn moons(&self) -> &[World] {
        &self.moons
    }

    /// Moons asked for with orbit and not yet received: id and seed.
    pub fn wanted_moons(&self) -> Vec<(u64, Address)> {
        self.wanted_moons.iter().map(|m| (m.id, m.seed)).collect()
    }

    /// Drop and relay counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counts what the driver sent from an [`Outbox`]: `datagrams`
    /// datagrams of `bytes` bytes in all.
    pub fn count_sent(&mut self, datagrams: u64, bytes: u64) {
        self.counters.sent += datagrams;
        self.counters.sent_bytes += bytes;
    }

    /// Sizes of the tables a stranger can make grow (each bounded).
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            peers: self.peers.len(),
            whois: self.whois.len(),
            hello_buckets: self.hello_buckets.len(),
            relay_buckets: self.traversal.relay_bucket_count(),
            known_paths: self.relay_sources.len(),
            relay_routes: self.relay_routes.len(),
            rendezvous: self.rendezvous_sent.len(),
            identity_checks_waiting: self.identity_checks.waiting_len(),
            reassembly: self.reassembler.pending(),
            timer_heap: self.tick_heap.len(),
            multicast_subscriptions: self.multicast_directory_len(),
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether this node announces and sends OFFLOAD_FRAME (default on; off
    /// makes it behave as a node that predates offloads).
    pub fn set_offload_frames(&mut self, on: bool) {
        self.offload_frames = on;
    }

    /// Whether this node announces AES-256-GCM and seals session packets
    /// with it to peers that announced it too (default on; off, every
    /// packet is Salsa20/12 + Poly1305).
    pub fn set_aes_gcm(&mut self, on: bool) {
        self.aes_gcm = on;
    }

    /// Sets how many counters the replay window of each new session spans
    /// (64 to `REPLAY_WINDOW_PACKETS`, the default): a root whose sessions
    /// carry only control packets keeps `ROOT_REPLAY_WINDOW_PACKETS`, an
    /// eighth of the memory per peer.
    pub fn set_replay_window_packets(&mut self, packets: u64) {
        self.replay_window_packets = packets;
    }

    /// Sets the addresses of this node's own sockets (interface addresses
    /// with the UDP port), pushed to peers as direct-path candidates.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.local_endpoints = endpoints;
    }

    /// Sets the wall-clock time (ms since 1970) at the node's time 0. HELLO
    /// timestamps are wall-clock so that peers can refuse replayed HELLOs
    /// and still accept ours after we restart.
    pub fn set_clock_epoch_ms(&mut self, epoch_ms: u64) {
        self.clock_epoch_ms = epoch_ms;
    }

    /// The next identity check to run outside the node, if one waits and
    /// the node-wide budget (`IDENTITY_CHECKS_PER_SECOND`) allows it now.
    /// The driver runs it ([`IdentityCheck::run`], ~17 ms) without holding
    /// the node and hands the result to [`Node::identity_check_done`].
    pub fn next_identity_check(&mut self, now_ms: u64) -> Option<IdentityCheck> {
        let job = self.identity_checks.next(now_ms, self.rng.next_u64());
        if job.is_some() {
            self.counters.identity_checks += 1;
        }
        job
    }

    /// Whether identity checks wait (the driver's checker should look).
    pub fn identity_checks_waiting(&self) -> bool {
        self.identity_checks.has_ready()
    }

    /// Takes the result of an identity check: a verified sender's HELLO is
    /// handled now, a WHOIS answer resolves; a failure is remembered so the
    /// same identity is never hashed again.
    pub fn identity_check_done(
        &mut self,
        now_ms: u64,
        result: IdentityCheckResult,
        out: &mut Outbox,
    ) {
        let verified = result.verdict.ok();
        let (from_whois, hello) = self
            .identity_checks
            .done(&result.claimed, verified.as_ref());
        let Some(identity) = verified else {
            self.counters.dropped_identity_failed += 1;
            return;
        };
        if from_whois && self.whois.contains_key(&identity.address()) {
            self.whois_identity_verified(now_ms, identity.clone(), out);
        }
        if let Some(mut hello) = hello {
            let saved = self.rx_socket;
            self.rx_socket = hello.socket;
            if let Ok(header) = PacketHeader::decode(&hello.datagram) {
                self.handle_hello(now_ms, hello.from, &header, &mut hello.datagram, out);
            }
            self.rx_socket = saved;
        }
    }

    /// Runs every identity check the budget allows now, in place: for
    /// drivers without a thread of their own for them (tests, simulators).
    pub fn run_identity_checks(&mut self, now_ms: u64, out: &mut Outbox) {
        while let Some(job) = self.next_identity_check(now_ms) {
            let result = job.run(&mut self.scratch);
            self.identity_check_done(now_ms, result, out);
        }
    }

    /// Gives every peer its role from the worlds held now: the roots of the
    /// planet and of the moons are roots (with their stable endpoints), every
    /// other peer a leaf. Run at start and after every world change, so a
    /// root dropped by an update loses its role at once.
    fn recompute_roles(&mut self) {
        let worlds: Vec<World> = self.worlds().cloned().collect();
        for peer in self.peers.values_mut() {
            peer.role = PeerRole::Leaf;
        }
        self.root_addrs.clear();
        self.root_endpoints.clear();
        for world in &worlds {
            self.add_world_roots(world);
        }
        let me = self.address;
        self.am_root = worlds
            .iter()
            .any(|w| w.roots().iter().any(|r| r.identity.address() == me));
    }

    fn add_world_roots(&mut self, world: &World) {
        let role = match world.kind() {
            WorldKind::Planet => PeerRole::Planet,
            WorldKind::Moon => PeerRole::Moon,
        };
        for root in world.roots() {
            let addr = root.identity.address();
            if addr == self.address {
                continue;
            }
            if !self.peers.contains_key(&addr) {
                let Ok(agreement) = self.key_pair.agree(root.identity.public_key()) else {
                    continue;
                };
                self.peers.insert(
                    addr,
                    Box::new(Peer::new(
                        SharedIdentity::new(root.identity.clone()),
                        agreement,
                        role,
                    )),
                );
            }
            self.wake(addr);
            if !self.root_addrs.contains(&addr) {
                self.root_addrs.push(addr);
            }
            let peer = self.peers.get_mut(&addr).expect("just inserted");
            // A planet root that is also a moon root stays PLANET.
            if peer.role == PeerRole::Leaf || role == PeerRole::Planet {
                peer.role = role;
            }
            for ep in &root.endpoints {
                self.root_endpoints.add(addr, *ep);
            }
        }
    }

    // ---------------------------------------------------------------- input

    /// Handles one datagram received on our socket `socket` from `from`.
    /// `datagram` is modified in place (decrypted, or its hop count raised
    /// when relayed).
    pub fn handle_datagram(
        &mut self,
        now_ms: u64,
        socket: LocalSocket,
        from: SocketAddr,
        datagram: &mut [u8],
        out: &mut Outbox,
    ) {
        self.counters.received += 1;
        self.counters.received_bytes += datagram.len() as u64;
        self.rx_socket = socket;
        // From inside one of our virtual networks: the tunnel running through
        // itself (a peer probed our virtual address). Never a path.
        if self.in_virtual_network(from.ip()) {
            self.counters.dropped_virtual_source += 1;
            return;
        }
        let kind = match classify(datagram) {
            Ok(Datagram::Packet { header, .. }) => Ok((true, header.dest, Some(header))),
            Ok(Datagram::Fragment { header, .. }) => Ok((false, header.dest, None)),
            Err(_) => Err(()),
        };
        let Ok((is_packet, dest, header)) = kind else {
            self.counters.dropped_malformed += 1;
            return;
        };
        if dest != self.address {
            let src = header.map(|h| h.src);
            self.relay(now_ms, from, datagram, dest, src, out);
            return;
        }
        let complete = if is_packet && !header.is_some_and(|h| h.more_fragments) {
            None
        } else {
            let pushed = if is_packet {
                self.reassembler.push_head(now_ms, from, datagram)
            } else {
                self.reassembler.push_fragment(now_ms, from, datagram)
            };
            match pushed {
                Ok(Some(packet)) => Some(packet),
                Ok(None) => return,
                Err(_) => {
                    self.counters.dropped_malformed += 1;
                    return;
                }
            }
        };
        match complete {
            None => self.handle_packet(now_ms, from, datagram, out),
            Some(mut packet) => {
                let Ok(Datagram::Packet { .. }) = classify(&packet) else {
                    self.counters.dropped_malformed += 1;
                    return;
                };
                self.handle_packet(now_ms, from, &mut packet, out);
                self.reassembler.recycle(packet);
            }
        }
    }

    fn handle_packet(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        packet: &mut [u8],
        out: &mut Outbox,
    ) {
        let Ok(header) = PacketHeader::decode(packet) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let direct = header.hops == 0;
        // Whatever this packet does to the peer, its timers are looked at
        // on the next tick (at most one wake per peer per tick).
        self.wake(header.src);
        if header.key_slot == 0 {
            if header.clear {
                self.handle_hello(now_ms, from, &header, packet, out);
            } else {
                self.handle_static(now_ms, from, &header, packet, out);
            }
            return;
        }
        let Some(peer) = self.peers.get_mut(&header.src) else {
            // A session packet from someone we do not know: we probably
            // restarted. Learn who it is; a HELLO follows, which re-keys.
            self.counters.dropped_unknown_peer += 1;
            self.want_identity(now_ms, header.src, None, out);
            return;
        };
        match peer
            .sessions
            .open(now_ms, header.key_slot, header.counter, packet)
        {
            Ok(arrival) => {
                if packet[FLAGS_OFFSET] & FLAG_AES_GCM != 0 {
                    self.counters.opened_aes_gcm += 1;
                }
                if arrival == Arrival::Late {
                    self.counters.received_late += 1;
                }
            }
            Err(OpenError::Replay) => {
                self.counters.dropped_replay += 1;
                return;
            }
            Err(OpenError::BadMac) => {
                self.counters.dropped_bad_mac += 1;
                return;
            }
            Err(OpenError::NoSession) => {
                self.counters.dropped_bad_mac += 1;
                // They hold a session we lost: re-handshake (rate-limited by retry interval).
                self.ensure_handshake(now_ms, header.src, out);
                return;
            }
        }
        let newly_confirmed = peer.sessions.take_newly_confirmed();
        if newly_confirmed {
            peer.clear_answered();
        }
        self.heard_from(now_ms, header.src, from, direct);
        if newly_confirmed {
            // A new session with this peer: it may have restarted, so the
            // certificates it had from us are resent, what it supports is
            // asked again (ours goes to it); what waited goes now.
            membership::forget_credentials_sent(&mut self.networks, header.src);
            self.announce_capabilities(now_ms, header.src, out);
            self.announce_groups_on_new_session(now_ms, header.src, out);
            self.flush_queued(now_ms, header.src, out);
        }
        let Some(&verb_byte) = packet.get(PACKET_HEADER_LEN_BYTES) else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        let Ok(verb) = Verb::try_from(verb_byte) else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        if direct {
            self.send_due_worlds(now_ms, header.src, from, out);
        }
        // The payload is decrypted in place in the caller's buffer: no copy.
        self.dispatch(
            now_ms,
            from,
            &header,
            verb,
            &packet[PACKET_MIN_LEN_BYTES..],
            out,
        );
    }

    fn heard_from(&mut self, now_ms: u64, src: Address, from: SocketAddr, direct: bool) {
        let Some(peer) = self.peers.get_mut(&src) else {
            return;
        };
        peer.last_receive_ms = MaybeMs::at(now_ms);
        if direct {
            let active = peer.is_active(now_ms);
            if peer.is_root() && !self.rx_socket.is_tcp() {
                self.traversal.udp_from_root_ms = Some(now_ms);
            }
            let new_path = peer.paths.received(now_ms, from, self.rx_socket, active);
            if new_path {
                self.relay_sources_missing_path = true;
                self.note_route(now_ms, src);
            }
        } else if !peer.is_root() {
            peer.relayed_since_ms.get_or_insert(now_ms);
            self.note_relayed_via(src, from);
        }
    }

    fn dispatch(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        header: &PacketHeader,
        verb: Verb,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let src = header.src;
        // Anything but keepalives (NOP, probe ECHOs and their answers) keeps
        // a peer from being forgotten as idle.
        let keepalive = match verb {
            // What a new session says of itself (a rekey) is not use either.
            Verb::Nop
            | Verb::PushDirectPaths
            | Verb::Rendezvous
            | Verb::Capabilities
            | Verb::PathMtuProbe
            | Verb::MulticastLike => true,
            Verb::Echo => Echo::is_probe(payload),
            Verb::Ok => {
                Echo::ok_answers_probe(payload)
                    || payload.first() == Some(&Verb::PathMtuProbe.code())
            }
            _ => false,
        };
        if !keepalive && let Some(peer) = self.peers.get_mut(&src) {
            peer.last_useful_ms = MaybeMs::at(now_ms);
        }
        let result: Result<(), message::MessageError> = match verb {
            Verb::Nop => Ok(()),
            Verb::Echo => message::check_echo(payload).map(|()| {
                // A user's ping makes the peer "in use" on this side too, so a
                // dead direct path is noticed in seconds, not minutes.
                if Echo::is_ping(payload)
                    && let Some(peer) = self.peers.get_mut(&src)
                {
                    peer.last_active_ms = MaybeMs::at(now_ms);
                }
                let mut reply = Vec::with_capacity(9 + payload.len());
                encode_in_re(
                    InRe {
                        verb: Verb::Echo,
                        counter: header.counter,
                    },
                    &mut reply,
                );
                reply.extend_from_slice(payload);
                // Answer on the path the ECHO came by, so probes measure that
                // path (not to peers under forceTcpRelay: no UDP to them).
                let to = (header.hops == 0 && !self.no_udp_to(src)).then_some(from);
                self.send_session(now_ms, src, to, Verb::Ok, &reply, out);
            }),
            Verb::Ok => decode_ok(payload)
                .map(|(in_re, body)| self.handle_ok(now_ms, from, header, in_re, body, out)),
            Verb::Error => decode_error(payload).map(|(in_re, code, data)| {
                if in_re.verb == Verb::NetworkConfigRequest {
                    self.handle_config_error(src, code, data);
                }
            }),
            Verb::NetworkConfigRequest => {
                if self.handle_config_request(now_ms, src, header.counter, payload, out) {
                    Ok(())
                } else {
                    Err(message::MessageError::BadField("NETWORK_CONFIG_REQUEST"))
                }
            }
            Verb::NetworkConfig => {
                if self.handle_config_chunk(now_ms, src, payload, out) {
                    Ok(())
                } else {
                    Err(message::MessageError::BadField("NETWORK_CONFIG"))
                }
            }
            Verb::Whois => decode_whois(payload)
                .map(|addrs| self.answer_whois(now_ms, src, header.counter, &addrs, out)),
            Verb::Rendezvous => {
                Rendezvous::decode(payload).map(|r| self.handle_rendezvous(now_ms, src, r, out))
            }
            Verb::PushDirectPaths if self.am_root => {
                // Roots never probe where a stranger tells them to.
                self.counters.dropped_push_ignored += 1;
                Ok(())
            }
            Verb::PushDirectPaths
                if !self
                    .peers
                    .get_mut(&src)
                    .is_some_and(|p| p.push_allowed(now_ms)) =>
            {
                self.counters.dropped_push_ignored += 1;
                Ok(())
            }
            Verb::PushDirectPaths => decode_push_direct_paths(payload).map(|(paths, mapping)| {
                // Addresses inside our virtual networks would run the tunnel through itself.
                let virtual_ips: Vec<bool> = paths
                    .iter()
                    .map(|p| self.in_virtual_network(p.ip()))
                    .collect();
                if let Some(peer) = self.peers.get_mut(&src) {
                    if mapping.is_some() {
                        peer.traversal_mut().nat_mapping = mapping;
                    }
                    for (p, _) in paths
                        .into_iter()
                        .zip(virtual_ips)
                        .filter(|(_, v)| !v)
                        .take(MAX_PATHS_PER_PEER)
                    {
                        if p.port() != 0 {
                            peer.paths.learn(now_ms, p);
                        }
                    }
                }
                self.probe_candidates(now_ms, src, out);
            }),
            Verb::ExtFrame => {
                self.handle_ext_frame(now_ms, src, payload, out);
                Ok(())
            }
            Verb::OffloadFrame => {
                self.handle_offload_frame(now_ms, src, payload, out);
                Ok(())
            }
            Verb::Capabilities => Capabilities::decode(payload).map(|caps| {
                if let Some(peer) = self.peers.get_mut(&src) {
                    peer.capabilities = PeerCapabilities::announced(&caps);
                }
            }),
            Verb::PathMtuProbe => PathMtuProbe::decode(payload).map(|probe| {
                let mut reply = Vec::with_capacity(11);
                encode_in_re(
                    InRe {
                        verb: Verb::PathMtuProbe,
                        counter: header.counter,
                    },
                    &mut reply,
                );
                reply.extend_from_slice(&probe.answer());
                // Answered the way it came: straight on the path it probes,
                // or through the root that relayed it (so the answer tells
                // of that route, whatever ours to the sender is).
                if header.hops == 0 {
                    if !self.no_udp_to(src) {
                        self.send_session(now_ms, src, Some(from), Verb::Ok, &reply, out);
                    }
                } else {
                    // Over our TCP relay connection too, if it came that way.
                    let socket = Some(self.rx_socket);
                    self.send_session_via(now_ms, src, Some(from), socket, Verb::Ok, &reply, out);
                }
            }),
            Verb::NetworkCredentials => {
                self.handle_credentials(now_ms, src, payload, out);
                Ok(())
            }
            Verb::MulticastLike => MulticastLike::decode(payload)
                .map(|like| self.handle_multicast_like(now_ms, src, like)),
            Verb::MulticastGather => MulticastGather::decode(payload).map(|gather| {
                self.handle_multicast_gather(now_ms, src, header.counter, gather, out)
            }),
            Verb::WorldUpdate => {
                self.handle_world_update(now_ms, src, payload);
                Ok(())
            }
            Verb::Punch => {
                message::decode_punch(payload).map(|p| self.handle_punch(now_ms, src, p, out))
            }
            // Frames and network verbs belong to virtual networks.
            _ => Ok(()),
        };
        if result.is_err() {
            self.counters.dropped_bad_payload += 1;
        }
    }

    // --------------------------------------------------------------- HELLO

    /// Token bucket per source IP (per /64 for IPv6): HELLO_RATE_PER_SECOND,
    /// burst HELLO_BURST. Charged only for authenticated HELLOs, so garbage
    /// sent in a victim's name cannot lock it out.
    fn hello_allowed(&mut self, now_ms: u64, from: SocketAddr) -> bool {
        let key = rate_key(from.ip());
        if !self.hello_buckets.contains_key(&key)
            && self.hello_buckets.len() >= MAX_RATE_LIMITED_SOURCES
        {
            // Full: forget sources whose bucket is full again; if none, the
            // stranger waits (the table never grows past its bound).
            self.hello_buckets
                .retain(|_, (t, _)| now_ms.saturating_sub(*t) < HELLO_BUCKET_IDLE_MS);
            if self.hello_buckets.len() >= MAX_RATE_LIMITED_SOURCES {
                return false;
            }
        }
        let bucket = self
            .hello_buckets
            .entry(key)
            .or_insert((now_ms, HELLO_BURST));
        let refill = (now_ms.saturating_sub(bucket.0) * HELLO_RATE_PER_SECOND / 1000) as u32;
        if refill > 0 {
            bucket.1 = (bucket.1 + refill).min(HELLO_BURST);
            bucket.0 = now_ms;
        }
        if bucket.1 == 0 {
            return false;
        }
        bucket.1 -= 1;
        true
    }

    /// A HELLO (PROTOCOL.md §3.4). Authenticated first (MAC under the static
    /// key; an unknown sender's identity is checked off the packet path, the
    /// HELLO kept meanwhile); then it must be newer than the last one
    /// accepted from that identity, or it changes nothing. The session it
    /// makes only receives until a packet under it authenticates, and no
    /// path is learned from a HELLO (only from session packets).
    fn handle_hello(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        header: &PacketHeader,
        packet: &mut [u8],
        out: &mut Outbox,
    ) {
        if verb_of(packet) != Some(Verb::Hello) {
            self.counters.dropped_bad_payload += 1;
            return;
        }
        let Ok(hello) = Hello::decode(&packet[PACKET_MIN_LEN_BYTES..]) else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        if hello.identity.address != header.src || header.src == self.address {
            self.counters.dropped_bad_payload += 1;
            return;
        }
        if hello.versions.protocol != PROTOCOL_VERSION {
            self.counters.dropped_bad_payload += 1;
            return;
        }
        // The key must be the one we know for that address (a peer, or an
        // identity verified before); else MAC first (cheap), then the check.
        let known_key = match self.peers.get(&header.src) {
            Some(p) => Some(*p.identity.public_key()),
            None => self.identity_checks.verified_key(header.src).copied(),
        };
        if known_key.is_some_and(|k| k != hello.identity.public) {
            self.counters.dropped_bad_mac += 1;
            return;
        }
        if known_key.is_none()
            && self
                .identity_checks
                .known_bad(header.src, &hello.identity.public)
        {
            self.counters.dropped_identity_failed += 1;
            return;
        }
        let mac_ok = match self.peers.get(&header.src) {
            Some(peer) => dearmor(&peer.static_key(), packet, false).is_ok(),
            None => match self.key_pair.agree(&hello.identity.public) {
                Ok(agreement) => dearmor(&agreement.packet_key(), packet, false).is_ok(),
                Err(_) => false,
            },
        };
        if !mac_ok {
            self.counters.dropped_bad_mac += 1;
            return;
        }
        if !self.hello_allowed(now_ms, from) {
            self.counters.dropped_rate_limited += 1;
            return;
        }
        if !self.peers.contains_key(&header.src) {
            let Some(identity) = self
                .identity_checks
                .verified(header.src, &hello.identity.public)
                .cloned()
            else {
                // Unknown identity: check it off the packet path, then handle
                // this HELLO again. Known peers never wait for this.
                let stash = identity_checks::StashedHello {
                    socket: self.rx_socket,
                    from,
                    datagram: packet.to_vec(),
                };
                let queued = self.identity_checks.request(
                    hello.identity.clone(),
                    false,
                    Some(stash),
                    self.rng.next_u64(),
                );
                match queued {
                    identity_checks::Queued::KnownBad => self.counters.dropped_identity_failed += 1,
                    identity_checks::Queued::Replaced => self.counters.dropped_identity_budget += 1,
                    identity_checks::Queued::Waiting => {}
                }
                return;
            };
            if !self.admit_peer(now_ms, identity, PeerRole::Leaf) {
                return;
            }
            if header.hops > 0
                && let Some(peer) = self.peers.get_mut(&header.src)
            {
                peer.relayed_since_ms = MaybeMs::at(now_ms);
            }
            self.whois_resolved(now_ms, header.src, out);
        }
        let direct = header.hops == 0;
        let my_address = self.address;
        let peer = self.peers.get_mut(&header.src).expect("peer exists");
        // Respond: a fresh ephemeral, a pending session, and OK(HELLO) under
        // the static key; a HELLO with an ephemeral already answered (the
        // same handshake sent to several paths, or a retry) gets the same
        // answer and changes nothing.
        let eph_public = match peer.answered() {
            Some(&(theirs, ours)) if theirs == hello.ephemeral => ours,
            _ => {
                if hello.timestamp_ms <= peer.last_hello_timestamp_ms {
                    // Not newer than the last HELLO accepted: a replay.
                    self.counters.dropped_stale_hello += 1;
                    return;
                }
                let ephemeral = Ephemeral::generate(&mut self.rng);
                let eph_public = *ephemeral.public();
                let Some(session) = derive_session(
                    now_ms,
                    Role::Responder,
                    &peer.static_agreement,
                    ephemeral,
                    &hello.ephemeral,
                    my_address,
                    header.src,
                    self.rng.next_u64(),
                ) else {
                    self.counters.dropped_bad_payload += 1;
                    return;
                };
                let session = session.with_replay_window(self.replay_window_packets);
                peer.sessions.install_pending(now_ms, session);
                peer.set_answered(hello.ephemeral, eph_public);
                peer.last_hello_timestamp_ms = hello.timestamp_ms;
                self.identity_checks
                    .note_hello_timestamp(header.src, hello.timestamp_ms);
                eph_public
            }
        };
        let peer = self.peers.get_mut(&header.src).expect("peer exists");
        peer.versions = Some(hello.versions);
        // A moon's root names its own moon (its id is the root's address,
        // as `initmoon` makes it): on a root, it is asked what we cannot
        // answer, like a root that relayed for others.
        let declares_moon = hello.moons.iter().any(|(id, _)| *id == header.src.to_u64());
        if self.am_root && declares_moon {
            self.note_relayer(now_ms, header.src);
        }
        // Worlds the peer holds older copies of, or wants: due once a
        // session packet arrives straight from it.
        let mut due = Vec::new();
        if hello.planet.0 == self.planet.id() && hello.planet.1 < self.planet.timestamp_ms() {
            due.push(self.planet.id());
        }
        for (id, ts) in &hello.moons {
            if let Some(m) = self.moons.iter().find(|m| m.id() == *id)
                && *ts < m.timestamp_ms()
            {
                due.push(*id);
            }
        }
        let peer = self.peers.get_mut(&header.src).expect("peer exists");
        for id in due {
            if !peer.worlds_due.contains(&id) {
                peer.worlds_due.push(id);
            }
        }
        let ok = HelloOk {
            echoed_timestamp_ms: hello.timestamp_ms,
            versions: self.versions,
            ephemeral: eph_public,
            // An address seen over TCP says nothing about UDP mappings.
            reflected: (direct && !self.rx_socket.is_tcp()).then_some(from),
        };
        let mut body = Vec::with_capacity(64);
        encode_in_re(
            InRe {
                verb: Verb::Hello,
                counter: header.counter,
            },
            &mut body,
        );
        ok.encode(&mut body);
        let to = if direct && !self.no_udp_to(header.src) {
            Some(from)
        } else {
            None
        };
        self.send_static(now_ms, header.src, to, Verb::Ok, &body, out);
        self.flush_queued(now_ms, header.src, out);
    }

    /// Adds a peer whose identity is verified, within the peer table's
    /// bound; returns whether it is (now) known.
    fn admit_peer(&mut self, now_ms: u64, identity: Identity, role: PeerRole) -> bool {
        let addr = identity.address();
        if self.peers.contains_key(&addr) {
            return true;
        }
        if self.peers.len() >= MAX_PEERS {
            self.forget_idle_peers(now_ms);
            if self.peers.len() >= MAX_PEERS {
                self.counters.dropped_peer_table_full += 1;
                return false;
            }
        }
        let Ok(agreement) = self.key_pair.agree(identity.public_key()) else {
            self.counters.dropped_bad_payload += 1;
            return false;
        };
        let last_hello = self.identity_checks.hello_timestamp(addr);
        let identity = self.identity_checks.remember_verified(identity);
        let mut peer = Peer::new(identity, agreement, role);
        peer.last_hello_timestamp_ms = last_hello;
        peer.admitted_ms = now_ms;
        self.peers.insert(addr, Box::new(peer));
        self.wake(addr);
        true
    }

    /// A static-key packet that is not HELLO: OK(HELLO) or ERROR(HELLO).
    fn handle_static(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        header: &PacketHeader,
        packet: &mut [u8],
        out: &mut Outbox,
    ) {
        let Some(peer) = self.peers.get_mut(&header.src) else {
            self.counters.dropped_unknown_peer += 1;
            return;
        };
        if dearmor(&peer.static_key(), packet, true).is_err() {
            self.counters.dropped_bad_mac += 1;
            return;
        }
        if verb_of(packet) != Some(Verb::Ok) {
            // ERROR(HELLO) carries nothing we act on yet.
            return;
        }
        let Ok((in_re, OkBody::Hello(ok))) = decode_ok(&packet[PACKET_MIN_LEN_BYTES..]) else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        let Some(pending) = peer.take_pending_handshake_if(|h| h.counters.contains(&in_re.counter))
        else {
            // Not the HELLO we are waiting for (late or replayed): ignore.
            self.counters.dropped_replay += 1;
            return;
        };
        let my_address = self.address;
        let Some(session) = derive_session(
            now_ms,
            Role::Initiator,
            &peer.static_agreement,
            pending.ephemeral,
            &ok.ephemeral,
            my_address,
            header.src,
            self.rng.next_u64(),
        ) else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        let session = session.with_replay_window(self.replay_window_packets);
        peer.sessions.install(now_ms, session);
        peer.versions = Some(ok.versions);
        membership::forget_credentials_sent(&mut self.networks, header.src);
        peer.last_receive_ms = MaybeMs::at(now_ms);
        let rtt = (self.clock_epoch_ms + now_ms).saturating_sub(ok.echoed_timestamp_ms);
        peer.measured(rtt);
        if header.hops == 0 {
            let active = peer.is_active(now_ms);
            peer.paths.received(now_ms, from, self.rx_socket, active);
            peer.paths.measured(from, rtt);
            if peer.is_root() && !self.rx_socket.is_tcp() {
                self.traversal.udp_from_root_ms = Some(now_ms);
            }
        }
        let is_root = peer.is_root();
        let first_root_session = is_root && !self.online_once;
        self.note_route(now_ms, header.src);
        self.announce_capabilities(now_ms, header.src, out);
        self.announce_groups_on_new_session(now_ms, header.src, out);
        if is_root && header.hops == 0 {
            // The handshake's round trip may include the root checking our
            // identity: measure again at once, so the closer root is told
            // by the path and not by that work.
            let payload = echo_probe(now_ms);
            self.send_session(now_ms, header.src, Some(from), Verb::Echo, &payload, out);
        }
        if first_root_session {
            // Just came online: whatever waited for a root goes out now,
            // not at its next retry.
            self.online_once = true;
            let pending: Vec<Address> = self.whois.keys().copied().collect();
            for addr in pending {
                if let Some(w) = self.whois.get_mut(&addr) {
                    w.last_sent_ms = None;
                }
                self.send_whois_if_due(now_ms, addr, out);
            }
            self.request_unconfigured(now_ms, out);
        }
        // Kept for roots and moon seeds (a seed becomes a root once its
        // moon arrives), so the table stays as small as the root list: a
        // controller with thousands of members reads it on every peer's tick.
        if let Some(reflected) = ok.reflected
            && !self.rx_socket.is_tcp()
            && self.rx_socket != LocalSocket::Mapped
            && (self.root_addrs.contains(&header.src)
                || self.wanted_moons.iter().any(|m| m.seed == header.src))
        {
            self.reflected.insert(header.src, reflected);
        }
        // Key confirmation: the responder sends under the new session only
        // once a packet under it authenticated. A NOP goes first, whatever
        // else is queued, by the path the answer came on.
        let to = (header.hops == 0 && !self.no_udp_to(header.src)).then_some(from);
        self.send_session(now_ms, header.src, to, Verb::Nop, &[], out);
        self.flush_queued(now_ms, header.src, out);
        if !is_root {
            self.push_direct_paths(now_ms, header.src, out);
        }
    }

    fn handle_ok(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        header: &PacketHeader,
        _in_re: InRe,
        body: OkBody,
        out: &mut Outbox,
    ) {
        match body {
            OkBody::Echo(bytes) => {
                let Ok(Echo {
                    kind,
                    id,
                    sent_ms: sent,
                }) = Echo::decode(&bytes)
                else {
                    return;
                };
                let rtt = now_ms.saturating_sub(sent);
                let direct = header.hops == 0;
                let tcp = self.rx_socket.is_tcp();
                // Relayed: by a root of ours, or by a peer that relays for
                // others (a moon we do not orbit); never called direct.
                let root_via = if direct { None } else { self.relayer_at(from) };
                if let Some(peer) = self.peers.get_mut(&header.src) {
                    peer.measured(rtt);
                    if direct {
                        peer.paths.measured(from, rtt);
                    }
                }
                if kind == EchoKind::Ping {
                    let route = match root_via {
                        None => PeerRoute::Direct(from),
                        Some(root) => PeerRoute::Relayed { root, via: from },
                    };
                    self.events.push_back(Event::EchoReply {
                        peer: header.src,
                        id,
                        rtt_ms: rtt,
                        route,
                        tcp,
                    });
                }
            }
            OkBody::MulticastGather(result) => {
                self.handle_gather_result(now_ms, header.src, result, out);
            }
            OkBody::PathMtuProbe(size) => {
                let answered = self.peers.get_mut(&header.src).is_some_and(|p| {
                    if header.hops == 0 {
                        p.paths
                            .get_mut(from)
                            .is_some_and(|path| path.mtu.answered(now_ms, size))
                    } else {
                        p.traversal
                            .as_mut()
                            .and_then(|t| t.relayed_mtu.as_mut())
                            .is_some_and(|(_, mtu)| mtu.answered(now_ms, size))
                    }
                });
                if answered {
                    self.counters.path_mtu_probes_answered += 1;
                    // The next round goes at once, not at the next tick.
                    self.probe_path_mtu(now_ms, header.src, out);
                }
            }
            OkBody::Whois(bytes) => {
                let mut at = 0;
                while at < bytes.len() {
                    let Ok((unchecked, used)) =
                        crate::identity::UncheckedIdentity::decode(&bytes[at..])
                    else {
                        self.counters.dropped_bad_payload += 1;
                        return;
                    };
                    at += used;
                    let addr = unchecked.address;
                    if !self.whois.contains_key(&addr) || self.peers.contains_key(&addr) {
                        continue;
                    }
                    // Only from a root we asked; the check runs off the packet
                    // path (first in line), unless this identity is known.
                    if !self.is_root_or_relayer(header.src) {
                        self.counters.dropped_bad_payload += 1;
                        return;
                    }
                    match self
                        .identity_checks
                        .verified(addr, &unchecked.public)
                        .cloned()
                    {
                        Some(identity) => self.whois_identity_verified(now_ms, identity, out),
                        None => {
                            if self.identity_checks.request(
                                unchecked,
                                true,
                                None,
                                self.rng.next_u64(),
                            ) == identity_checks::Queued::KnownBad
                            {
                                self.counters.dropped_identity_failed += 1;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// On a root: remembers which root relayed `src`'s packets to us, so
    /// what we cannot deliver straight goes there.
    fn note_relayed_via(&mut self, src: Address, from: SocketAddr) {
        if !self.is_root() {
            return;
        }
        let via = self.root_at(from);
        if let Some(peer) = self.peers.get_mut(&src)
            && via.is_some()
        {
            peer.relayed_via = via;
        }
    }

    /// The root reached at `addr`, if any.
    fn root_at(&self, addr: SocketAddr) -> Option<Address> {
        self.root_addrs.iter().copied().find(|a| {
            self.peers.get(a).is_some_and(|p| {
                p.is_root()
                    && (p.paths.iter().any(|x| x.addr == addr)
                        || self.root_endpoints.contains(*a, addr))
            })
        })
    }

    /// Identities this node verified (oldest first, at most
    /// `MAX_VERIFIED_IDENTITIES`), each with the timestamp of the last HELLO
    /// accepted from it and, for a peer it holds, its preferred UDP path: for
    /// the driver to keep across a restart.
    pub fn verified_identities(&self, now_ms: u64) -> Vec<VerifiedIdentity> {
        self.identity_checks
            .verified_list()
            .into_iter()
            .map(|(identity, hello_timestamp_ms)| {
                let last_path = self
                    .peers
                    .get(&identity.address())
                    .and_then(|p| p.paths.preferred(now_ms, false))
                    .filter(|p| p.socket == LocalSocket::Primary)
                    .map(|p| p.addr);
                VerifiedIdentity {
                    identity,
                    hello_timestamp_ms,
                    last_path,
                }
            })
            .collect()
    }

    /// Identities verified so far (grows with each new one): tells the
    /// driver when [`Node::verified_identities`] changed.
    pub fn verified_identities_added(&self) -> u64 {
        self.identity_checks.verified_added
    }

    /// Takes back identities this node verified before a restart (what
    /// [`Node::verified_identities`] gave, oldest first): their HELLOs are
    /// accepted without the memory-hard hash, and HELLOs not newer than the
    /// timestamps kept are refused as replays. A root also greets each at
    /// its last path with HELLO, so its peers are back within seconds
    /// instead of at their next keepalive. Only for the node's own record.
    pub fn restore_verified_identities(
        &mut self,
        list: impl IntoIterator<Item = VerifiedIdentity>,
    ) {
        for v in list {
            let address = v.identity.address();
            if address == self.address {
                continue;
            }
            self.identity_checks
                .remember_verified(v.identity.to_public());
            self.identity_checks
                .note_hello_timestamp(address, v.hello_timestamp_ms);
            if let Some(path) = v.last_path
                && self.am_root
                && !self.root_addrs.contains(&address)
            {
                self.readmit.push_back((address, path));
            }
        }
    }

    /// A restarted root greets the next of the peers it knew.
    fn readmit_known_peers(&mut self, now_ms: u64, out: &mut Outbox) {
        for _ in 0..READMIT_HELLOS_PER_TICK {
            let Some((address, path)) = self.readmit.pop_front() else {
                return;
            };
            if self.peers.contains_key(&address) {
                continue;
            }
            let Some(identity) = self.identity_checks.verified_identity(address).cloned() else {
                continue;
            };
            if self.admit_peer(now_ms, identity, PeerRole::Leaf) {
                self.send_hello(now_ms, address, &[path], out);
            }
        }
    }

    /// Sets the node-wide budget of identity checks per second (and burst),
    /// `identityChecksPerSecond` in local.conf.
    pub fn set_identity_checks_per_second(&mut self, per_second: u32) {
        self.identity_checks.set_rate(per_second);
    }

    /// The peer that relayed a packet that came from `from`: a root of ours,
    /// else any peer heard from there (a moon we do not orbit); else `None`.
    fn relayer_at(&self, from: SocketAddr) -> Option<Address> {
        self.root_at(from).or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| {
                    p.paths
                        .iter()
                        .any(|x| x.addr == from && x.last_receive_ms.is_some())
                })
                .map(|(a, _)| *a)
        })
    }

    /// The peer that talks to us from `from` (a confirmed path heard
    /// recently), if any: the packet's own source when it came straight
    /// from there, else whoever the relay sources hold (rebuilt first when
    /// stale, or when a path was heard since and they miss this one).
    fn known_path_owner(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        src: Option<Address>,
    ) -> Option<Address> {
        let heard_within_idle = |p: &crate::path::Path| {
            p.last_receive_ms
                .get()
                .is_some_and(|t| now_ms.saturating_sub(t) < PATH_IDLE_TIMEOUT_MS)
        };
        if let Some(src) = src
            && let Some(peer) = self.peers.get(&src)
            && peer
                .paths
                .iter()
                .any(|p| p.addr == from && heard_within_idle(p))
        {
            return Some(src);
        }
        if !self.relay_sources.is_fresh(now_ms) {
            self.rebuild_relay_sources(now_ms);
        }
        let found = self.relay_sources.get(from);
        let found = if found.is_none() && self.relay_sources_missing_path {
            self.rebuild_relay_sources(now_ms);
            self.relay_sources.get(from)
        } else {
            found
        };
        found.filter(|a| self.peers.contains_key(a))
    }

    /// Rebuilds where peers talk from out of their confirmed paths.
    fn rebuild_relay_sources(&mut self, now_ms: u64) {
        let mut sources = RelaySources::builder(now_ms, self.peers.len());
        for (addr, peer) in &self.peers {
            for p in peer.paths.iter() {
                if let Some(heard_ms) = p.last_receive_ms.get() {
                    sources.add(p.addr, *addr, heard_ms);
                }
            }
        }
        self.relay_sources = Arc::new(sources.build());
        self.relay_sources_missing_path = false;
    }

    /// On a root: `dest` is reached through `relayer` (another root that
    /// relayed its packets to us). Bounded.
    fn note_relay_route(&mut self, now_ms: u64, dest: Address, relayer: Address) {
        if !self.relay_routes.contains_key(&dest) && self.relay_routes.len() >= MAX_RELAY_ROUTES {
            self.relay_routes
                .retain(|_, (_, t)| now_ms.saturating_sub(*t) < RELAY_ROUTE_TTL_MS);
            if self.relay_routes.len() >= MAX_RELAY_ROUTES {
                return;
            }
        }
        self.relay_routes.insert(dest, (relayer, now_ms));
        self.note_relayer(now_ms, relayer);
    }

    /// Remembers a peer that relays for others (bounded, oldest out).
    fn note_relayer(&mut self, now_ms: u64, relayer: Address) {
        match self.relayers.iter().position(|(a, _)| *a == relayer) {
            Some(i) => self.relayers[i].1 = now_ms,
            None => {
                if self.relayers.len() >= MAX_RELAYERS {
                    self.relayers.remove(0);
                }
                self.relayers.push((relayer, now_ms));
            }
        }
    }

    /// Whether `addr` is a root of ours or a peer that relays for others.
    fn is_root_or_relayer(&self, addr: Address) -> bool {
        self.peers.get(&addr).is_some_and(|p| p.is_root())
            || self.relayers.iter().any(|(a, _)| *a == addr)
    }

    /// On a root: the other roots (and relaying roots) with a live session,
    /// which WHOIS we cannot answer is passed on to.
    fn upstream_roots(&self, now_ms: u64, except: Address) -> Vec<Address> {
        let mut ups: Vec<Address> = Vec::new();
        let candidates = self
            .root_addrs
            .iter()
            .copied()
            .chain(self.relayers.iter().map(|(a, _)| *a));
        for a in candidates {
            if a == except || ups.contains(&a) {
                continue;
            }
            if self.peers.get(&a).is_some_and(|p| {
                p.sessions.is_established() && p.paths.preferred(now_ms, false).is_some()
            }) {
                ups.push(a);
            }
        }
        ups
    }

    // ------------------------------------------------------- WHOIS and roots

    /// WHOIS: only roots answer (a leaf never tells who its peers are).
    /// What a root cannot answer itself it passes on to the other roots it
    /// knows, once, and answers when they do; a WHOIS from a root is never
    /// passed on (no loops). At most one NOT_FOUND per request.
    fn answer_whois(
        &mut self,
        now_ms: u64,
        asker: Address,
        counter: u64,
        addrs: &[Address],
        out: &mut Outbox,
    ) {
        if !self.am_root {
            self.counters.dropped_whois_not_root += 1;
            return;
        }
        let mut found = Vec::with_capacity(16);
        encode_in_re(
            InRe {
                verb: Verb::Whois,
                counter,
            },
            &mut found,
        );
        let mut any = false;
        let mut unknown = Vec::new();
        for a in addrs {
            match self.peers.get(a) {
                Some(p) => {
                    p.identity.encode_into(&mut found, false);
                    any = true;
                }
                None if !unknown.contains(a) => unknown.push(*a),
                None => {}
            }
        }
        if any {
            self.send_session(now_ms, asker, None, Verb::Ok, &found, out);
        }
        let Some(&first_unknown) = unknown.first() else {
            return;
        };
        let pass_on =
            !self.is_root_or_relayer(asker) && !self.upstream_roots(now_ms, asker).is_empty();
        if pass_on {
            for a in unknown {
                self.pass_on_whois(now_ms, a, asker, counter, out);
            }
            return;
        }
        let mut err = Vec::with_capacity(15);
        encode_in_re(
            InRe {
                verb: Verb::Whois,
                counter,
            },
            &mut err,
        );
        err.push(ERROR_OBJECT_NOT_FOUND);
        err.extend_from_slice(&first_unknown.to_bytes());
        self.send_session(now_ms, asker, None, Verb::Error, &err, out);
    }

    /// Asks the other roots about `addr` for `asker` (bounded: one pending
    /// entry per address, a few askers each).
    fn pass_on_whois(
        &mut self,
        now_ms: u64,
        addr: Address,
        asker: Address,
        counter: u64,
        out: &mut Outbox,
    ) {
        if !self.whois.contains_key(&addr) && self.whois.len() >= MAX_PENDING_WHOIS {
            self.counters.dropped_whois_table_full += 1;
            return;
        }
        let entry = self.whois.entry(addr).or_insert(WhoisPending {
            first_ms: now_ms,
            last_sent_ms: None,
            queued: Vec::new(),
            askers: Vec::new(),
        });
        if !entry.askers.iter().any(|(a, _)| *a == asker) {
            if entry.askers.len() >= MAX_WHOIS_ASKERS {
                entry.askers.remove(0);
            }
            entry.askers.push((asker, counter));
        }
        self.counters.whois_passed_on += 1;
        self.send_whois_if_due(now_ms, addr, out);
    }

    /// Queues `message` for `addr` and asks the roots who it is.
    fn want_identity(
        &mut self,
        now_ms: u64,
        addr: Address,
        message: Option<(Verb, Vec<u8>)>,
        out: &mut Outbox,
    ) {
        // Bounded; strangers' packets (no message of ours waits) get half
        // the table at most, so they never crowd out our own questions.
        let limit = if message.is_some() {
            MAX_PENDING_WHOIS
        } else {
            MAX_PENDING_WHOIS / 2
        };
        if !self.whois.contains_key(&addr) && self.whois.len() >= limit {
            self.counters.dropped_whois_table_full += 1;
            return;
        }
        let entry = self.whois.entry(addr).or_insert(WhoisPending {
            first_ms: now_ms,
            last_sent_ms: None,
            queued: Vec::new(),
            askers: Vec::new(),
        });
        if let Some(m) = message
            && entry.queued.len() < MAX_QUEUED_PER_PEER
        {
            entry.queued.push(m);
        }
        self.send_whois_if_due(now_ms, addr, out);
    }

    fn send_whois_if_due(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        // A leaf asks its best root; a root asks every other root it knows
        // (a handful), except those that asked it.
        let targets: Vec<Address> = if self.am_root {
            let askers: Vec<Address> = self
                .whois
                .get(&addr)
                .map(|w| w.askers.iter().map(|(a, _)| *a).collect())
                .unwrap_or_default();
            self.upstream_roots(now_ms, addr)
                .into_iter()
                .filter(|r| !askers.contains(r))
                .collect()
        } else {
            self.best_root(now_ms).into_iter().collect()
        };
        let Some(entry) = self.whois.get_mut(&addr) else {
            return;
        };
        if entry
            .last_sent_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < WHOIS_RETRY_INTERVAL_MS)
        {
            return;
        }
        if targets.is_empty() {
            return;
        }
        entry.last_sent_ms = Some(now_ms);
        for root in targets {
            self.send_session(now_ms, root, None, Verb::Whois, &addr.to_bytes(), out);
        }
    }

    /// An identity we asked the roots for, verified: a peer now, reached
    /// through a root until a direct path opens; askers waiting on a root
    /// are answered.
    fn whois_identity_verified(&mut self, now_ms: u64, identity: Identity, out: &mut Outbox) {
        let addr = identity.address();
        if !self.admit_peer(now_ms, identity, PeerRole::Leaf) {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.relayed_since_ms.get_or_insert(now_ms);
        }
        self.whois_resolved(now_ms, addr, out);
    }

    fn whois_resolved(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        if let Some(pending) = self.whois.remove(&addr) {
            // Askers a root passed this WHOIS on for get the answer now.
            if !pending.askers.is_empty()
                && let Some(identity) = self.peers.get(&addr).map(|p| p.identity.clone())
            {
                for (asker, counter) in &pending.askers {
                    let mut found = Vec::with_capacity(96);
                    encode_in_re(
                        InRe {
                            verb: Verb::Whois,
                            counter: *counter,
                        },
                        &mut found,
                    );
                    identity.encode_into(&mut found, false);
                    self.send_session(now_ms, *asker, None, Verb::Ok, &found, out);
                }
            }
            if let Some(peer) = self.peers.get_mut(&addr) {
                peer.queued.extend(pending.queued);
            }
            if self.peers.get(&addr).is_some_and(|p| !p.queued.is_empty()) {
                self.ensure_handshake(now_ms, addr, out);
            }
        }
    }

    /// The root to relay through and ask: among the roots with a live
    /// session, those about as near as the nearest ([`ROOT_NEAR_SLACK_MS`],
    /// [`ROOT_NEAR_SLACK_PERCENT`]), and of those the one this node's
    /// address hashes to (rendezvous hashing: stable, and even over roots).
    pub(crate) fn best_root(&self, now_ms: u64) -> Option<Address> {
        let live: Vec<(Address, u64)> = self
            .root_addrs
            .iter()
            .filter_map(|a| self.peers.get(a).map(|p| (*a, p)))
            .filter(|(_, p)| p.is_root() && p.sessions.is_established())
            .filter(|(_, p)| p.paths.preferred(now_ms, false).is_some())
            .map(|(a, p)| (a, p.latency_ms().get().unwrap_or(u64::MAX / 2)))
            .collect();
        let nearest = live.iter().map(|(_, l)| *l).min()?;
        let near = nearest
            .saturating_add(ROOT_NEAR_SLACK_MS)
            .saturating_add(nearest.saturating_mul(ROOT_NEAR_SLACK_PERCENT) / 100);
        live.into_iter()
            .filter(|(_, l)| *l <= near)
            .max_by_key(|(a, _)| (root_affinity(self.address, *a), *a))
            .map(|(a, _)| a)
    }

    fn handle_rendezvous(&mut self, now_ms: u64, src: Address, r: Rendezvous, out: &mut Outbox) {
        // Only roots introduce peers.
        if !self.peers.get(&src).is_some_and(|p| p.is_root()) {
            self.counters.dropped_bad_payload += 1;
            return;
        }
        if self.in_virtual_network(r.endpoint.ip()) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&r.peer) else {
            return;
        };
        peer.paths.learn_introduced(now_ms, r.endpoint);
        if !(r.endpoint.ip().is_loopback() || r.endpoint.ip().is_unspecified()) {
            peer.traversal_mut().root_observed = Some(r.endpoint);
        }
        self.probe_candidates(now_ms, r.peer, out);
    }

    /// Probes, at once, candidate paths to `addr` never heard from.
    fn probe_candidates(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        if self.traversal.force_tcp && !peer.is_root() {
            return;
        }
        let candidates: Vec<SocketAddr> = peer
            .paths
            .iter()
            .filter(|p| {
                p.last_receive_ms
                    .get()
                    .is_none_or(|t| now_ms.saturating_sub(t) > PATH_PROBE_INTERVAL_ACTIVE_MS)
            })
            .map(|p| p.addr)
            .collect();
        for to in candidates {
            self.probe(now_ms, addr, to, out);
        }
    }

    /// One probe on one path: an ECHO if a session exists, else a HELLO.
    fn probe(&mut self, now_ms: u64, addr: Address, to: SocketAddr, out: &mut Outbox) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if !peer.paths.note_probe(to) {
            return;
        }
        let established = peer.sessions.is_established();
        if established {
            let payload = echo_probe(now_ms);
            self.send_session(now_ms, addr, Some(to), Verb::Echo, &payload, out);
        } else {
            self.send_hello(now_ms, addr, &[to], out);
        }
    }

    fn push_direct_paths(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let mut paths: Vec<SocketAddr> = Vec::new();
        // The gateway-mapped endpoint first: it takes unsolicited packets.
        paths.extend(self.mapped_endpoint());
        let reflected: Vec<SocketAddr> = self.root_reflections().map(|(_, r)| r).collect();
        for p in self.local_endpoints.iter().chain(reflected.iter()) {
            if !paths.contains(p) && !self.in_virtual_network(p.ip()) {
                paths.push(*p);
            }
        }
        paths.truncate(MAX_PATHS_PER_PEER);
        if paths.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(3 + paths.len() * 20);
        encode_push_direct_paths(&paths, self.nat_mapping(), &mut payload);
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.traversal_mut().last_paths_pushed_ms = MaybeMs::at(now_ms);
        }
        self.send_session(now_ms, addr, None, Verb::PushDirectPaths, &payload, out);
    }

    // --------------------------------------------------------------- relay

    /// Relays a packet or fragment not for us (roots only). Only from where
    /// a peer talks to us (a session packet came straight from there: the
    /// sender itself, or another root relaying), fragments included, and
    /// within each source IP's budget. Straight to the destination; else
    /// back through the root its packets came by; else, for a packet
    /// straight from its sender, on to another root (a moon passes on to
    /// its planet). The hop count bounds every chain.
    fn relay(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        datagram: &mut [u8],
        dest: Address,
        src: Option<Address>,
        out: &mut Outbox,
    ) {
        if !self.am_root {
            self.counters.dropped_unroutable += 1;
            return;
        }
        let from_peer = self.known_path_owner(now_ms, from, src);
        let from_root = self.root_at(from);
        if from_peer.is_none() && from_root.is_none() {
            self.counters.dropped_relay_refused += 1;
            return;
        }
        // Straight from its sender (whole packet whose source is the peer
        // at `from`, or a fragment from a leaf), or passed on by a relayer.
        let relayer = from_root.or(from_peer.filter(|p| src.is_some_and(|s| s != *p)));
        let relayer = relayer.filter(|r| Some(*r) != src);
        if !self.traversal.relay_allowed(now_ms, from) {
            self.counters.dropped_rate_limited += 1;
            return;
        }
        if let (Some(src), Some(r)) = (src, relayer) {
            self.note_relay_route(now_ms, src, r);
        }
        let dest_peer = self.peers.get(&dest);
        let direct = dest_peer
            .and_then(|p| p.paths.preferred(now_ms, false))
            .map(|p| (p.addr, p.socket, true));
        let via_root = || {
            let root = dest_peer
                .and_then(|p| p.relayed_via)
                .or_else(|| self.relay_routes.get(&dest).map(|(r, _)| *r))?;
            let p = self.peers.get(&root)?.paths.preferred(now_ms, false)?;
            Some((p.addr, p.socket, false))
        };
        let upstream = || {
            if relayer.is_some() {
                return None;
            }
            let root = self.best_root(now_ms)?;
            let p = self.peers.get(&root)?.paths.preferred(now_ms, false)?;
            Some((p.addr, p.socket, false))
        };
        let Some((to, socket, to_dest)) = direct.or_else(via_root).or_else(upstream) else {
            self.counters.dropped_unroutable += 1;
            return;
        };
        if to == from || increment_hops(datagram).is_err() {
            self.counters.dropped_unroutable += 1;
            return;
        }
        out.push(socket, to, datagram);
        self.counters.relayed += 1;
        // Introduce the two so they can try a direct path: only where both
        // are reached straight, over UDP (a TCP peer address takes no UDP).
        if let Some(src) = src
            && relayer.is_none()
            && from_peer == Some(src)
            && to_dest
            && !socket.is_tcp()
            && !self.rx_socket.is_tcp()
        {
            self.rendezvous(now_ms, src, from, dest, to, out);
        }
    }

    /// On a root: the table relay threads forward with until the next one
    /// (PROTOCOL.md is unchanged: they forward as [`Node::relay`] does in its
    /// simple case). Sources are peers' confirmed paths that stay fresh for
    /// the table's life (rebuilt now, and shared with the node's own relay
    /// decisions); routes are peers' preferred direct paths on the primary
    /// socket. Empty on a node that is no root.
    pub fn relay_table(&mut self, now_ms: u64) -> RelayTable {
        if !self.am_root {
            return RelayTable::empty();
        }
        self.rebuild_relay_sources(now_ms);
        let mut table =
            RelayTable::builder(self.address, self.relay_sources.clone(), self.peers.len());
        for (addr, peer) in &self.peers {
            if let Some(p) = peer.paths.preferred(now_ms, false)
                && p.socket == LocalSocket::Primary
            {
                table.add_route(*addr, p.addr);
            }
        }
        table.build()
    }

    /// On a root: a relay thread forwarded a packet from `src` at `from` to
    /// `dest` at `to` with [`Node::relay_table`]'s table: introduces the two
    /// as [`Node::relay`] does for a packet straight from its sender.
    pub fn relayed_by_thread(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        src: Address,
        dest: Address,
        to: SocketAddr,
        out: &mut Outbox,
    ) {
        if self.am_root && self.peers.contains_key(&src) && self.peers.contains_key(&dest) {
            self.rendezvous(now_ms, src, from, dest, to, out);
        }
    }

    /// On a root: what relay threads did since the last call, folded into
    /// the counters: datagrams forwarded, and refused over their source's
    /// budget.
    pub fn count_relay_threads(&mut self, relayed: u64, rate_limited: u64) {
        self.counters.relayed += relayed;
        self.counters.relayed_by_threads += relayed;
        self.counters.dropped_rate_limited += rate_limited;
    }

    /// Counts outboxes a member's flush threads sent and wrote.
    pub fn count_flushed_by_threads(&mut self, outboxes: u64) {
        self.counters.flushed_by_threads += outboxes;
    }

    /// Counts a super-frame joined from `datagrams` UDP datagrams read
    /// from our TAP.
    pub fn count_udp_joined_read(&mut self, datagrams: u64) {
        self.counters.udp_joined_reads += 1;
        self.counters.udp_datagrams_joined_read += datagrams;
    }

    /// Counts TAP writes of joined UDP datagrams, and the datagrams.
    pub fn count_udp_joined(&mut self, writes: u64, datagrams: u64) {
        self.counters.udp_joined_writes += writes;
        self.counters.udp_datagrams_joined += datagrams;
    }

    fn rendezvous(
        &mut self,
        now_ms: u64,
        a: Address,
        a_at: SocketAddr,
        b: Address,
        b_at: SocketAddr,
        out: &mut Outbox,
    ) {
        let key = if a < b { (a, b) } else { (b, a) };
        if self
            .rendezvous_sent
            .get(&key)
            .is_some_and(|t| now_ms.saturating_sub(*t) < RENDEZVOUS_INTERVAL_MS)
        {
            return;
        }
        // Bounded: past the bound, introductions wait for the sweep.
        if !self.rendezvous_sent.contains_key(&key)
            && self.rendezvous_sent.len() >= MAX_RELAY_ROUTES
        {
            return;
        }
        self.rendezvous_sent.insert(key, now_ms);
        for (to, peer, endpoint) in [(a, b, b_at), (b, a, a_at)] {
            let mut payload = Vec::with_capacity(32);
            Rendezvous { peer, endpoint }.encode(&mut payload);
            self.send_session(now_ms, to, None, Verb::Rendezvous, &payload, out);
        }
    }

    // --------------------------------------------------------------- worlds

    /// Asks `seed` (a root of moon `world_id`) for the moon.
    pub fn orbit(&mut self, now_ms: u64, world_id: u64, seed: Address, out: &mut Outbox) {
        if self.moons.iter().any(|m| m.id() == world_id)
            || self.wanted_moons.iter().any(|m| m.id == world_id)
        {
            return;
        }
        self.wanted_moons.push(WantedMoon { id: world_id, seed });
        // A HELLO names the moons we want; the seed answers with a WORLD_UPDATE.
        match self.peers.contains_key(&seed) {
            true => {
                if let Some(p) = self.peers.get_mut(&seed) {
                    p.take_pending_handshake();
                }
                self.ensure_handshake(now_ms, seed, out)
            }
            false => self.want_identity(now_ms, seed, Some((Verb::Nop, Vec::new())), out),
        }
    }

    /// Stops orbiting a moon; returns whether it was held or wanted.
    pub fn deorbit(&mut self, world_id: u64) -> bool {
        let before = self.moons.len() + self.wanted_moons.len();
        self.moons.retain(|m| m.id() != world_id);
        self.wanted_moons.retain(|m| m.id != world_id);
        self.recompute_roles();
        before != self.moons.len() + self.wanted_moons.len()
    }

    fn send_due_worlds(&mut self, now_ms: u64, addr: Address, from: SocketAddr, out: &mut Outbox) {
        let due = match self.peers.get_mut(&addr) {
            Some(p) if !p.worlds_due.is_empty() => std::mem::take(&mut p.worlds_due),
            _ => return,
        };
        for id in due {
            let Some(bytes) = self.worlds().find(|w| w.id() == id).map(World::encode) else {
                continue;
            };
            self.send_session(now_ms, addr, Some(from), Verb::WorldUpdate, &bytes, out);
        }
    }

    fn handle_world_update(&mut self, _now_ms: u64, src: Address, bytes: &[u8]) {
        let Some(id) = World::peek_id(bytes) else {
            self.counters.refused_world_updates += 1;
            return;
        };
        // World updates are rare: their 2 MiB of hashing space is not kept.
        let mut scratch = IdentityHashScratch::new();
        if id == self.planet.id() {
            match self.planet.decode_update(bytes, &mut scratch) {
                Ok(world) => {
                    self.planet = world.clone();
                    self.recompute_roles();
                    self.events.push_back(Event::WorldUpdated(world));
                }
                Err(_) => self.counters.refused_world_updates += 1,
            }
            return;
        }
        if let Some(i) = self.moons.iter().position(|m| m.id() == id) {
            match self.moons[i].decode_update(bytes, &mut scratch) {
                Ok(world) => {
                    self.moons[i] = world.clone();
                    self.recompute_roles();
                    self.events.push_back(Event::WorldUpdated(world));
                }
                Err(_) => self.counters.refused_world_updates += 1,
            }
            return;
        }
        if let Some(i) = self
            .wanted_moons
            .iter()
            .position(|m| m.id == id && m.seed == src)
        {
            // First contact: trust the seed we were told to orbit, as ZeroTier does,
            // but only a self-signed moon whose roots include that seed.
            match World::decode_with(bytes, &mut scratch) {
                Ok(world)
                    if world.kind() == WorldKind::Moon
                        && world.is_self_signed()
                        && world.roots().iter().any(|r| r.identity.address() == src) =>
                {
                    self.wanted_moons.remove(i);
                    self.moons.push(world.clone());
                    self.recompute_roles();
                    self.events.push_back(Event::WorldUpdated(world));
                }
                _ => self.counters.refused_world_updates += 1,
            }
            return;
        }
        self.counters.refused_world_updates += 1;
    }

    // ---------------------------------------------------------------- output

    /// Sends an ECHO to `addr` (for `vnet-cli ping`); the reply comes as
    /// [`Event::EchoReply`] with `id`.
    pub fn ping(&mut self, now_ms: u64, addr: Address, id: u64, out: &mut Outbox) {
        let payload = Echo {
            kind: EchoKind::Ping,
            id,
            sent_ms: now_ms,
        }
        .encode();
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.last_active_ms = MaybeMs::at(now_ms);
        }
        self.send(now_ms, addr, Verb::Echo, &payload, out);
    }

    /// Sends a message to a peer over its session, asking who it is and
    /// handshaking first if needed (the message waits meanwhile).
    pub fn send(
        &mut self,
        now_ms: u64,
        addr: Address,
        verb: Verb,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        if addr == self.address {
            return;
        }
        let Some(peer) = self.peers.get_mut(&addr) else {
            self.want_identity(now_ms, addr, Some((verb, payload.to_vec())), out);
            return;
        };
        if !peer.sessions.is_established() {
            if peer.queued.len() < MAX_QUEUED_PER_PEER {
                peer.queued.push((verb, payload.to_vec()));
            }
            self.ensure_handshake(now_ms, addr, out);
            return;
        }
        self.send_session(now_ms, addr, None, verb, payload, out);
    }

    /// A new session with `addr` (either side of the handshake): what it
    /// supports is unknown until it says, and we say what we support.
    fn announce_capabilities(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.capabilities = PeerCapabilities::default();
        }
        let caps = Capabilities {
            offload_frames: self.offload_frames,
            aes_gcm: self.aes_gcm,
            path_mtu_probes: true,
            udp_segmentation: self.offload_frames,
        };
        if caps != Capabilities::default() {
            self.send_session(now_ms, addr, None, Verb::Capabilities, &caps.encode(), out);
        }
    }

    fn flush_queued(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let queued = match self.peers.get_mut(&addr) {
            Some(p) if p.sessions.is_established() => std::mem::take(&mut p.queued),
            _ => return,
        };
        for (verb, payload) in queued {
            if verb != Verb::Nop || payload.is_empty() {
                self.send_session(now_ms, addr, None, verb, &payload, out);
            }
        }
    }

    /// Sends a HELLO unless one is already in flight and not yet due a retry.
    fn ensure_handshake(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        if peer
            .pending_handshake()
            .is_some_and(|h| now_ms.saturating_sub(h.sent_ms) < HELLO_RETRY_INTERVAL_MS)
        {
            return;
        }
        let mut targets: Vec<SocketAddr> = self.root_endpoints.of(addr).collect();
        if let Some(p) = peer.paths.preferred(now_ms, false)
            && !targets.contains(&p.addr)
        {
            targets.push(p.addr);
        }
        let mut sockets: Vec<LocalSocket> = targets
            .iter()
            .map(|t| self.socket_for(now_ms, addr, *t))
            .collect();
        let via_route = |node: &Self| {
            node.route(now_ms, addr)
                .map(|r| (route_addr(r), node.route_socket(now_ms, addr, r), r))
        };
        if peer.is_root()
            && self.tcp_relay_wanted(now_ms)
            && let Some((to, socket, _)) = via_route(self)
        {
            // Through the TCP relay connection only.
            targets = vec![to];
            sockets = vec![socket];
        }
        if targets.is_empty() {
            // No known path: along the route (through a root), by the
            // root's socket.
            let Some((to, socket, route)) = via_route(self) else {
                return;
            };
            if matches!(route, PeerRoute::Relayed { .. })
                && let Some(peer) = self.peers.get_mut(&addr)
            {
                peer.relayed_since_ms.get_or_insert(now_ms);
            }
            targets.push(to);
            sockets.push(socket);
        }
        self.send_hello_via(now_ms, addr, &targets, &sockets, out);
    }

    fn send_hello(&mut self, now_ms: u64, addr: Address, targets: &[SocketAddr], out: &mut Outbox) {
        let sockets: Vec<LocalSocket> = targets
            .iter()
            .map(|t| self.socket_for(now_ms, addr, *t))
            .collect();
        self.send_hello_via(now_ms, addr, targets, &sockets, out);
    }

    /// Sends HELLO to each target by the matching socket.
    fn send_hello_via(
        &mut self,
        now_ms: u64,
        addr: Address,
        targets: &[SocketAddr],
        sockets: &[LocalSocket],
        out: &mut Outbox,
    ) {
        let planet = (self.planet.id(), self.planet.timestamp_ms());
        let mut moons: Vec<(u64, u64)> = self
            .moons
            .iter()
            .map(|m| (m.id(), m.timestamp_ms()))
            .collect();
        moons.extend(
            self.wanted_moons
                .iter()
                .filter(|m| m.seed == addr)
                .map(|m| (m.id, 0)),
        );
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        // One HELLO (one ephemeral, one counter) to every target; a retry
        // replaces it, wiping the previous ephemeral.
        let (ephemeral, mut counters, sent_ms) = match peer.take_pending_handshake() {
            Some(h) if now_ms.saturating_sub(h.sent_ms) < HELLO_RETRY_INTERVAL_MS => {
                (h.ephemeral, h.counters, h.sent_ms)
            }
            _ => (Ephemeral::generate(&mut self.rng), Vec::new(), now_ms),
        };
        for (to, socket) in targets.iter().zip(sockets) {
            let counter = random_counter(&mut self.rng);
            if counters.len() >= MAX_HELLO_TARGETS {
                break;
            }
            counters.push(counter);
            start_packet(&mut self.tx, Verb::Hello);
            Hello::encode(
                &self.versions,
                self.clock_epoch_ms + now_ms,
                &self.identity,
                ephemeral.public(),
                Some(to),
                planet,
                &moons,
                &mut self.tx,
            );
            let header = PacketHeader {
                counter,
                dest: addr,
                src: self.address,
                hops: 0,
                key_slot: 0,
                clear: true,
                aes_gcm: false,
                more_fragments: false,
            };
            header.encode_into(&mut self.tx);
            armor(&peer.static_key(), &mut self.tx, false);
            out.push(*socket, *to, &self.tx);
            peer.paths.sent(now_ms, *to, *socket, true);
        }
        peer.set_pending_handshake(PendingHandshake {
            ephemeral,
            counters,
            sent_ms,
        });
    }

    /// Sends a static-key packet (OK(HELLO)) to `to`, or along the route.
    fn send_static(
        &mut self,
        now_ms: u64,
        addr: Address,
        to: Option<SocketAddr>,
        verb: Verb,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let Some(route) = to
            .map(PeerRoute::Direct)
            .or_else(|| self.route(now_ms, addr))
        else {
            return;
        };
        // A reply to `to` goes back by the socket the packet came in on: a
        // HELLO teaches no path (a TCP relay connection's would be unknown).
        let socket = match to {
            Some(_) => self.rx_socket,
            None => self.route_socket(now_ms, addr, route),
        };
        let to = route_addr(route);
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        start_packet(&mut self.tx, verb);
        self.tx.extend_from_slice(payload);
        PacketHeader {
            counter: random_counter(&mut self.rng),
            dest: addr,
            src: self.address,
            hops: 0,
            key_slot: 0,
            clear: false,
            aes_gcm: false,
            more_fragments: false,
        }
        .encode_into(&mut self.tx);
        armor(&peer.static_key(), &mut self.tx, true);
        out.push(socket, to, &self.tx);
        let waits = expects_answer(verb) || peer.is_active(now_ms);
        peer.paths.sent(now_ms, to, socket, waits);
        self.wake(addr);
    }

    /// Sends a session packet to `to`, or along the route.
    fn send_session(
        &mut self,
        now_ms: u64,
        addr: Address,
        to: Option<SocketAddr>,
        verb: Verb,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        self.send_session_via(now_ms, addr, to, None, verb, payload, out);
    }

    /// Sends a session packet to `to` (or along the route) by `socket`
    /// (or the one the path was last heard on).
    #[allow(clippy::too_many_arguments)]
    fn send_session_via(
        &mut self,
        now_ms: u64,
        addr: Address,
        to: Option<SocketAddr>,
        socket: Option<LocalSocket>,
        verb: Verb,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let buffer = out.buffer_mut();
        let start = append_packet_start(buffer, verb);
        buffer.extend_from_slice(payload);
        self.seal_and_queue(now_ms, addr, to, socket, verb, start, out);
    }

    /// Seals the session packet laid out at the end of `out`'s buffer from
    /// `start` (header room, verb, payload) where it lies, cuts it into
    /// datagrams there if it is too long for one, and queues them to `to`
    /// (or along the route) by `socket` (or the one the path was last heard
    /// on). Without a route or a session the packet is taken back out.
    #[allow(clippy::too_many_arguments)]
    fn seal_and_queue(
        &mut self,
        now_ms: u64,
        addr: Address,
        to: Option<SocketAddr>,
        socket: Option<LocalSocket>,
        verb: Verb,
        start: usize,
        out: &mut Outbox,
    ) {
        let route = match to {
            Some(to) => Some(PeerRoute::Direct(to)),
            None => self.route(now_ms, addr),
        };
        let sealed = route.and_then(|route| {
            let socket = socket.unwrap_or_else(|| self.route_socket(now_ms, addr, route));
            let peer = self.peers.get_mut(&addr)?;
            let (counter, slot) = peer.sessions.next_send()?;
            Some((route, socket, counter, slot))
        });
        let Some((route, socket, counter, slot)) = sealed else {
            out.buffer_mut().truncate(start);
            return;
        };
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if matches!(route, PeerRoute::Relayed { .. }) {
            peer.relayed_since_ms.get_or_insert(now_ms);
        }
        let to = route_addr(route);
        let mtu = if verb == Verb::PathMtuProbe {
            // Sized to what it probes, and sent whole.
            usize::from(PATH_MTU_MAX_BYTES)
        } else {
            peer.route_mtu(route)
        };
        let buffer = out.buffer_mut();
        let packet = &mut buffer[start..];
        let fragmented = crate::fragment::fragment_count(packet.len(), mtu) > 1;
        let suite = if peer.capabilities.aes_gcm() && self.aes_gcm {
            Suite::Aes256Gcm
        } else {
            Suite::Salsa2012Poly1305
        };
        PacketHeader {
            counter,
            dest: addr,
            src: self.address,
            hops: 0,
            key_slot: slot,
            clear: false,
            aes_gcm: suite == Suite::Aes256Gcm,
            more_fragments: fragmented,
        }
        .encode_into(packet);
        peer.sessions.seal(packet, suite);
        if suite == Suite::Aes256Gcm {
            self.counters.sealed_aes_gcm += 1;
        }
        if fragmented && fragment_in_place(buffer, start, mtu).is_err() {
            // Longer than MAX_FRAGMENTS pieces: nothing this node builds.
            buffer.truncate(start);
            return;
        }
        let segment_size = if fragmented {
            mtu
        } else {
            buffer.len() - start
        };
        out.commit(socket, to, start, segment_size);
        if verb == Verb::PathMtuProbe {
            // A probe too large for the path is lost by design: it says
            // nothing of whether the path is alive.
            return;
        }
        // An answer waits for something back only while the peer is in
        // use (its traffic comes back; a dead path must be left at once).
        let waits = expects_answer(verb) || peer.is_active(now_ms);
        peer.paths.sent(now_ms, to, socket, waits);
        self.wake(addr);
        // Relayed: the root's path carried it, and must answer for it (a
        // dead root is left within a second, like any silent path).
        if let PeerRoute::Relayed { root, via } = route
            && let Some(r) = self.peers.get_mut(&root)
        {
            r.paths.sent(now_ms, via, socket, waits);
            self.wake(root);
        }
    }

    /// How packets to `addr` travel now.
    pub fn route(&self, now_ms: u64, addr: Address) -> Option<PeerRoute> {
        let peer = self.peers.get(&addr)?;
        // forceTcpRelay: no UDP to peers at all, everything through the root.
        let udp_to_peers = !self.traversal.force_tcp || peer.is_root();
        if udp_to_peers && let Some(p) = peer.paths.preferred(now_ms, peer.is_active(now_ms)) {
            return Some(PeerRoute::Direct(p.addr));
        }
        if peer.is_root() {
            // Over TCP, one connection to one root carries everything; the
            // other roots are reached through it.
            if self.tcp_relay_wanted(now_ms)
                && let Some((tcp_root, via)) = self.tcp_root(now_ms)
            {
                return Some(if tcp_root == addr {
                    PeerRoute::Direct(via)
                } else {
                    PeerRoute::Relayed {
                        root: tcp_root,
                        via,
                    }
                });
            }
            return self.root_endpoints.of(addr).next().map(PeerRoute::Direct);
        }
        let root = self.best_root(now_ms)?;
        let via = self.peers.get(&root)?.paths.preferred(now_ms, false)?.addr;
        Some(PeerRoute::Relayed { root, via })
    }

    // ---------------------------------------------------------------- timer

    /// When the driver should next call [`Node::handle_timeout`] at the latest (ms).
    pub fn next_timeout(&self, now_ms: u64) -> u64 {
        now_ms + TIMER_TICK_MS
    }

    /// Periodic work: handshakes with roots, rekeying, keepalives and path
    /// probes, WHOIS retries, expiry.
    pub fn handle_timeout(&mut self, now_ms: u64, out: &mut Outbox) {
        self.tick_due_peers(now_ms, out);
        self.readmit_known_peers(now_ms, out);
        // WHOIS retries and give-ups.
        let pending: Vec<Address> = self.whois.keys().copied().collect();
        for addr in pending {
            let expired = self
                .whois
                .get(&addr)
                .is_some_and(|w| now_ms.saturating_sub(w.first_ms) > WHOIS_TIMEOUT_MS);
            if expired {
                self.whois.remove(&addr);
                self.events.push_back(Event::WhoisFailed(addr));
            } else {
                self.send_whois_if_due(now_ms, addr, out);
            }
        }
        if now_ms.saturating_sub(self.last_sweep_ms) >= SWEEP_INTERVAL_MS {
            self.last_sweep_ms = now_ms;
            self.rendezvous_sent
                .retain(|_, t| now_ms.saturating_sub(*t) < RENDEZVOUS_INTERVAL_MS);
            self.hello_buckets
                .retain(|_, (t, _)| now_ms.saturating_sub(*t) < HELLO_BUCKET_IDLE_MS);
            self.relay_routes
                .retain(|_, (_, t)| now_ms.saturating_sub(*t) < RELAY_ROUTE_TTL_MS);
            self.relayers
                .retain(|(_, t)| now_ms.saturating_sub(*t) < RELAY_ROUTE_TTL_MS);
            // A burst (thousands of HELLOs from as many addresses) leaves
            // these tables' room behind; it is given back once they empty.
            shrink_if_sparse(&mut self.hello_buckets);
            shrink_if_sparse(&mut self.rendezvous_sent);
            shrink_if_sparse(&mut self.relay_routes);
            self.sweep_multicast_directory(now_ms);
        }
        self.reassembler.expire(now_ms);
        self.counters.reassembly = *self.reassembler.stats();
        self.tick_traversal(now_ms, out);
        self.tick_networks(now_ms, out);
        self.tick_multicast(now_ms, out);
    }

    /// Makes `addr`'s timer work due at the next tick.
    fn wake(&mut self, addr: Address) {
        self.schedule(addr, 0);
    }

    /// Makes `addr`'s timer work due at `at_ms`, unless it is due earlier.
    fn schedule(&mut self, addr: Address, at_ms: u64) {
        if let Some(p) = self.peers.get_mut(&addr)
            && at_ms < p.next_tick_ms
        {
            p.next_tick_ms = at_ms;
            self.tick_heap.push(Reverse((at_ms, addr)));
        }
    }

    /// Runs the timer work of the peers whose deadline has come (a busy
    /// peer's every tick, a quiet one's at its next keepalive, rekey or
    /// expiry), and schedules each one's next.
    fn tick_due_peers(&mut self, now_ms: u64, out: &mut Outbox) {
        let mut due = std::mem::take(&mut self.due_peers);
        while let Some(&Reverse((at, addr))) = self.tick_heap.peek() {
            if at > now_ms {
                break;
            }
            self.tick_heap.pop();
            if self.peers.get(&addr).is_some_and(|p| p.next_tick_ms == at) {
                due.push(addr);
            }
        }
        for addr in due.drain(..) {
            match self.peers.get_mut(&addr) {
                Some(p) if p.next_tick_ms <= now_ms => p.next_tick_ms = u64::MAX,
                _ => continue,
            }
            self.counters.peer_timer_runs += 1;
            self.tick_peer(now_ms, addr, out);
            if let Some(next) = self.next_peer_tick(now_ms, addr)
                && let Some(p) = self.peers.get_mut(&addr)
            {
                // Overrides a wake by its own tick's sends.
                p.next_tick_ms = next;
                self.tick_heap.push(Reverse((next, addr)));
            }
        }
        self.due_peers = due;
        // Stale entries are bounded: rebuild, at the exact size, when they
        // outnumber the live (a root's heap is 16 bytes a peer, not 64).
        if self.tick_heap.len() > 2 * self.peers.len() + 1024 {
            let mut live = Vec::with_capacity(self.peers.len());
            live.extend(
                self.peers
                    .iter()
                    .filter(|(_, p)| p.next_tick_ms != u64::MAX)
                    .map(|(a, p)| Reverse((p.next_tick_ms, *a))),
            );
            self.tick_heap = BinaryHeap::from(live);
        }
    }

    /// When `addr`'s timer work is next due: the next tick while anything
    /// is in flight (a handshake, queued messages, probes awaiting answers,
    /// user traffic, a root), else its earliest keepalive, rekey, path
    /// expiry, push or idle deadline.
    fn next_peer_tick(&self, now_ms: u64, addr: Address) -> Option<u64> {
        let p = self.peers.get(&addr)?;
        let soon = now_ms + TIMER_TICK_MS;
        let heard_lately = p
            .last_receive_ms
            .get()
            .is_some_and(|t| now_ms.saturating_sub(t) < PEER_IDLE_TIMEOUT_MS);
        let busy = p.is_root()
            || p.is_active(now_ms)
            || p.pending_handshake().is_some()
            || !p.queued.is_empty()
            || p.traversal().is_some_and(|t| t.punch.is_some())
            || (!p.sessions.is_established() && heard_lately);
        if busy {
            return Some(soon);
        }
        let mut next = now_ms + PATH_KEEPALIVE_INTERVAL_MS;
        let mut due = |at: u64| next = next.min(at);
        if let Some(at) = p.sessions.next_due_ms(false) {
            due(at);
        }
        if let Some(at) = p.paths.next_due_ms(now_ms) {
            due(at);
        }
        if let Some(t) = p.last_receive_ms.get() {
            due(t + PEER_IDLE_TIMEOUT_MS);
        }
        if let Some(t) = p.traversal().and_then(|t| t.last_paths_pushed_ms.get()) {
            due(t + PUSH_DIRECT_PATHS_INTERVAL_MS);
        }
        due(p.last_wanted_ms(self.am_root) + PEER_IDLE_TIMEOUT_MS);
        Some(next.max(soon))
    }

    /// Forgets non-root peers not heard from for `PEER_IDLE_TIMEOUT_MS`
    /// (their sessions wiped with them); they come back by WHOIS and HELLO,
    /// their identity remembered as verified.
    fn forget_idle_peers(&mut self, now_ms: u64) {
        let before = self.peers.len();
        let am_root = self.am_root;
        self.peers.retain(|_, p| {
            p.is_root()
                || p.is_active(now_ms)
                || now_ms.saturating_sub(p.last_wanted_ms(am_root)) < PEER_IDLE_TIMEOUT_MS
        });
        self.counters.forgotten_peers += (before - self.peers.len()) as u64;
    }

    fn tick_peer(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if !peer.is_root()
            && !peer.is_active(now_ms)
            && now_ms.saturating_sub(peer.last_wanted_ms(self.am_root)) >= PEER_IDLE_TIMEOUT_MS
        {
            // Idle: forgotten with its sessions (it comes back by WHOIS and
            // HELLO, its identity remembered as verified).
            self.peers.remove(&addr);
            self.counters.forgotten_peers += 1;
            return;
        }
        peer.sessions.expire(now_ms);
        peer.paths.expire(now_ms);
        if peer
            .pending_handshake()
            .is_some_and(|h| now_ms.saturating_sub(h.sent_ms) > HANDSHAKE_TIMEOUT_MS)
        {
            // Give up on this attempt; the ephemeral secret is wiped on drop.
            peer.take_pending_handshake();
        }
        let is_root = peer.is_root();
        let active = peer.is_active(now_ms);
        // Heard from lately (keepalive answers count: a peer idle for
        // `PEER_IDLE_TIMEOUT_MS` is forgotten by the sweep anyway). A peer
        // only learned of (WHOIS) is not, so a root passing WHOIS on makes
        // no sessions with the nodes it asked about.
        let recently_used = peer
            .last_receive_ms
            .get()
            .is_some_and(|t| now_ms.saturating_sub(t) < PEER_IDLE_TIMEOUT_MS);
        let wants_session = is_root || recently_used || !peer.queued.is_empty();
        // A root or busy peer whose every path stopped answering may have
        // restarted and lost our session: say HELLO again (once a second at
        // most) rather than wait for the rekey.
        let silent = peer.sessions.is_established()
            && (is_root || active)
            && peer
                .last_receive_ms
                .get()
                .is_none_or(|t| now_ms.saturating_sub(t) >= SILENT_PEER_HELLO_AFTER_MS)
            && peer.paths.iter().all(|p| !p.is_alive(now_ms, active));
        if wants_session && (peer.sessions.needs_rekey(now_ms, active) || silent) {
            self.ensure_handshake(now_ms, addr, out);
        }
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        // Keepalives and probes on every path (candidates included).
        let force_tcp = self.traversal.force_tcp;
        let probes = if peer.sessions.is_established()
            && (is_root || recently_used)
            && (!force_tcp || is_root)
        {
            peer.paths.due_probes(now_ms, active)
        } else {
            Vec::new()
        };
        // Leaves tell each other where they are; a root is reached at its
        // stable endpoints and tells no one (thousands of peers).
        let push_due = !is_root
            && !self.am_root
            && !force_tcp
            && peer.sessions.is_established()
            && recently_used
            && peer
                .traversal()
                .and_then(|t| t.last_paths_pushed_ms.get())
                .is_none_or(|t| now_ms.saturating_sub(t) >= PUSH_DIRECT_PATHS_INTERVAL_MS);
        for to in probes {
            self.probe(now_ms, addr, to, out);
        }
        self.tick_punch(now_ms, addr, out);
        if push_due {
            self.push_direct_paths(now_ms, addr, out);
        }
        self.note_route(now_ms, addr);
        self.probe_path_mtu(now_ms, addr, out);
    }

    /// Sends the path MTU probes due on the route to a peer in use (a
    /// search round, or the confirmation of the size in use): on its direct
    /// path, or end to end through the root that relays for it; each size
    /// twice, sealed and whole.
    fn probe_path_mtu(&mut self, now_ms: u64, addr: Address, out: &mut Outbox) {
        let Some(route) = self.route(now_ms, addr) else {
            return;
        };
        // Over a TCP relay connection datagrams are not cut by any MTU.
        let tcp_root = match route {
            PeerRoute::Relayed { root, via } => self
                .peers
                .get(&root)
                .and_then(|r| r.paths.socket_of(via))
                .is_none_or(|s| s.is_tcp()),
            PeerRoute::Direct(_) => false,
        };
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if !peer.capabilities.path_mtu_probes()
            || !peer.sessions.is_established()
            || !peer.is_active(now_ms)
            || tcp_root
        {
            return;
        }
        let (mtu, rtt, to, socket) = match route {
            PeerRoute::Direct(to) => {
                let Some(path) = peer.paths.get_mut(to) else {
                    return;
                };
                if path.socket.is_tcp() {
                    return;
                }
                (&mut path.mtu, path.latency_ms, Some(to), Some(path.socket))
            }
            PeerRoute::Relayed { root, .. } => {
                // A route through another root starts from the base again.
                let latency = peer.latency_ms();
                let traversal = peer.traversal_mut();
                if traversal
                    .relayed_mtu
                    .as_ref()
                    .is_none_or(|(via, _)| *via != root)
                {
                    traversal.relayed_mtu = Some((root, Default::default()));
                }
                let Some((_, mtu)) = traversal.relayed_mtu.as_mut() else {
                    return;
                };
                (mtu, latency, None, None)
            }
        };
        let lowered = mtu.times_lowered();
        let sizes = mtu.due_probes(now_ms, rtt.get());
        if mtu.times_lowered() != lowered {
            self.counters.path_mtu_lowered += 1;
        }
        for size in sizes {
            for _ in 0..2 {
                let buffer = out.buffer_mut();
                let start = append_packet_start(buffer, Verb::PathMtuProbe);
                PathMtuProbe { size }.encode_into(buffer);
                self.seal_and_queue(now_ms, addr, to, socket, Verb::PathMtuProbe, start, out);
                self.counters.path_mtu_probes_sent += 1;
            }
        }
    }

    /// Notices route changes: relayed -> direct is an upgrade, direct ->
    /// relayed a loss. Called on every tick and whenever a path comes alive.
    fn note_route(&mut self, now_ms: u64, addr: Address) {
        let route = self.route(now_ms, addr);
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        // A root relays for others and never through another for itself:
        // its routes are not upgraded (nor its peers' traversal state made).
        if peer.is_root() || self.am_root {
            return;
        }
        match route {
            Some(PeerRoute::Direct(path))
                if peer.traversal().is_none_or(|t| t.direct_since_ms.is_none()) =>
            {
                peer.traversal_mut().direct_since_ms = MaybeMs::at(now_ms);
                if peer.relayed_since_ms.take().is_some() {
                    peer.traversal_mut().last_upgrade_ms = MaybeMs::at(now_ms);
                    self.events
                        .push_back(Event::PathUpgraded { peer: addr, path });
                }
            }
            Some(PeerRoute::Direct(_)) => {}
            _ if peer
                .traversal
                .as_mut()
                .and_then(|t| t.direct_since_ms.take())
                .is_some() =>
            {
                peer.relayed_since_ms = MaybeMs::at(now_ms);
                self.events.push_back(Event::PathLost { peer: addr });
            }
            _ => {}
        }
    }
}

fn route_addr(route: PeerRoute) -> SocketAddr {
    match route {
        PeerRoute::Direct(a) => a,
        PeerRoute::Relayed { via, .. } => via,
    }
}

/// A path probe's ECHO payload.
fn echo_probe(now_ms: u64) -> Vec<u8> {
    Echo {
        kind: EchoKind::Probe,
        id: 0,
        sent_ms: now_ms,
    }
    .encode()
}

/// Whether a packet of `verb` calls for a packet back (answers and NOPs do not).
fn expects_answer(verb: Verb) -> bool {
    !matches!(
        verb,
        Verb::Ok | Verb::Error | Verb::Nop | Verb::Capabilities
    )
}

/// A first packet counter: random, and never 0.
fn random_counter(rng: &mut NodeRng) -> u64 {
    rng.next_u64() | 1
}

/// How much node `node` prefers root `root` among equally near ones: a
/// 64-bit mix of both addresses (splitmix64's finalizer), so each node
/// ranks the roots in its own order.
pub fn root_affinity(node: Address, root: Address) -> u64 {
    let mut z = node.to_u64().rotate_left(24) ^ root.to_u64();
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Gives back a table's room when it holds under a quarter of it (room for
/// at least 64 entries is kept, so a table in use is not resized to and fro).
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(table: &mut HashMap<K, V>) {
    if table.capacity() > 4 * table.len().max(64) {
        table.shrink_to_fit();
    }
}
