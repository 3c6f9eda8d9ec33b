//! Simulated nodes: each a real [`Node`] (the protocol core the daemon
//! runs) with its own identity and its own UDP socket on its own loopback
//! address (127.1.0.1, 127.1.0.2, ...), so a root sees as many source
//! addresses as nodes and its per-address limits apply as to real ones. One
//! thread drives them all from one poll and their deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use vnet_node::core::address::Address;
use vnet_node::core::identity::Identity;
use vnet_node::core::local_socket::LocalSocket;
use vnet_node::core::network_id::NetworkId;
use vnet_node::core::node::{Event, NetworkStatus, Node, NodeConfig, Outbox, VerifiedIdentity};
use vnet_node::core::world::World;
use vnet_node::service::runtime::software_versions;

/// The first simulated node's address; the others follow it.
const FIRST_ADDRESS: u32 = 0x7f01_0001;
/// The longest datagram read.
const DATAGRAM_MAX_BYTES: usize = 65_536;

/// The simulated nodes and their sockets.
pub struct Swarm {
    nodes: Vec<Node>,
    sockets: Vec<UdpSocket>,
    /// Each node's deadline (ms on the swarm's clock); the heap holds
    /// (deadline, node) entries, stale ones skipped.
    deadlines: Vec<u64>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    poll: Poll,
    events: Events,
    out: Outbox,
    buf: Vec<u8>,
    start: Instant,
    /// Frames the nodes handed to their TAPs (node, bytes), while recording.
    taps: Option<Vec<(usize, Vec<u8>)>>,
    /// Ping answers (node, peer, ping id).
    echoes: Vec<(usize, Address, u64)>,
}

impl Swarm {
    /// One node per identity, on the planet `planet`, each bound to its own
    /// loopback address.
    pub fn new(identities: Vec<Identity>, planet: &World) -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        let mut nodes = Vec::with_capacity(identities.len());
        let mut sockets = Vec::with_capacity(identities.len());
        for (i, identity) in identities.into_iter().enumerate() {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random seed: {e}"))?;
            let node = Node::new(NodeConfig {
                identity,
                planet: planet.clone(),
                moons: Vec::new(),
                versions: software_versions(),
                rng_seed: seed,
            })
            .context("a simulated node")?;
            let ip = Ipv4Addr::from(FIRST_ADDRESS + u32::try_from(i).context("too many nodes")?);
            let mut socket = UdpSocket::bind(SocketAddr::from((ip, 0)))
                .with_context(|| format!("bind {ip} (raise the open files limit?)"))?;
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            nodes.push(node);
            sockets.push(socket);
        }
        let n = nodes.len();
        Ok(Self {
            nodes,
            sockets,
            deadlines: vec![0; n],
            heap: (0..n).map(|i| Reverse((0, i))).collect(),
            poll,
            events: Events::with_capacity(1_024),
            out: Outbox::new(),
            buf: vec![0; DATAGRAM_MAX_BYTES],
            start: Instant::now(),
            taps: None,
            echoes: Vec::new(),
        })
    }

    /// Nodes simulated.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// How many nodes have a root answering them (ONLINE).
    pub fn online(&self) -> usize {
        let now = self.now_ms();
        self.nodes.iter().filter(|n| n.status(now).online).count()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i` takes `identities` as verified (the swarm's own, checked
    /// when they were generated, and the controller's): simulated members
    /// skip the memory-hard check of peers whose identity the load
    /// generator already knows, so the hashing measured is the root's and
    /// the controller's, not the swarm's.
    pub fn trust(&mut self, i: usize, identities: &[Identity]) {
        self.nodes[i].restore_verified_identities(identities.iter().map(|id| VerifiedIdentity {
            identity: id.to_public(),
            hello_timestamp_ms: 0,
            last_path: None,
        }));
    }

    /// Every node joins network `nwid`.
    pub fn join_all(&mut self, nwid: NetworkId) {
        let now = self.now_ms();
        for i in 0..self.nodes.len() {
            self.nodes[i].join(now, nwid, &mut self.out);
            self.flush(i, now);
        }
    }

    /// How many nodes have a config of `nwid` (status OK).
    pub fn configured(&self, nwid: NetworkId) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.network(nwid)
                    .is_some_and(|v| v.status == NetworkStatus::Ok)
            })
            .count()
    }

    /// Node `i` reads `frame` from its TAP of `nwid`.
    pub fn tap_send(&mut self, i: usize, nwid: NetworkId, frame: &[u8]) {
        let now = self.now_ms();
        self.nodes[i].handle_tap_frame(now, nwid, frame, &mut self.out);
        self.flush(i, now);
    }

    /// Node `i` pings `peer` (the answer lands in [`Swarm::echoes`]).
    pub fn ping(&mut self, i: usize, peer: Address, id: u64) {
        let now = self.now_ms();
        self.nodes[i].ping(now, peer, id, &mut self.out);
        self.flush(i, now);
    }

    /// Ping answers so far: (node, peer, ping id).
    pub fn echoes(&self) -> &[(usize, Address, u64)] {
        &self.echoes
    }

    /// Starts recording what reaches the nodes' TAPs (forgetting earlier records).
    pub fn record_taps(&mut self) {
        self.taps = Some(Vec::new());
    }

    /// What reached the nodes' TAPs since [`Swarm::record_taps`].
    pub fn taps(&self) -> &[(usize, Vec<u8>)] {
        self.taps.as_deref().unwrap_or(&[])
    }

    /// Runs every node for `how_long`: datagrams as they come, timers when due.
    pub fn run_for(&mut self, how_long: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + how_long;
        loop {
            let now = self.now_ms();
            self.run_timers(now);
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let next = self.heap.peek().map_or(left, |Reverse((t, _))| {
                Duration::from_millis(t.saturating_sub(now))
            });
            match self.poll.poll(&mut self.events, Some(next.min(left))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for i in ready {
                self.read(i);
            }
        }
    }

    fn run_timers(&mut self, now: u64) {
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > now {
                return;
            }
            self.heap.pop();
            if t != self.deadlines[i] {
                continue;
            }
            self.nodes[i].handle_timeout(now, &mut self.out);
            self.flush(i, now);
        }
    }

    /// Reads what node `i`'s socket holds.
    fn read(&mut self, i: usize) {
        loop {
            let (len, from) = match self.sockets[i].recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let now = self.now_ms();
            self.nodes[i].handle_datagram(
                now,
                LocalSocket::Primary,
                from,
                &mut self.buf[..len],
                &mut self.out,
            );
            self.flush(i, now);
        }
    }

    /// Sends what node `i` queued and notes its next deadline.
    fn flush(&mut self, i: usize, now: u64) {
        // Any identity still to check (none the swarm was told to trust).
        self.nodes[i].run_identity_checks(now, &mut self.out);
        for (_, to, datagram) in self.out.iter() {
            let _ = self.sockets[i].send_to(datagram, to);
        }
        if let Some(taps) = self.taps.as_mut() {
            taps.extend(self.out.frames().map(|f| (i, f.frame().to_vec())));
        }
        self.out.clear();
        while let Some(event) = self.nodes[i].poll_event() {
            if let Event::EchoReply { peer, id, .. } = event {
                self.echoes.push((i, peer, id));
            }
        }
        let next = self.nodes[i].next_timeout(now).max(now + 1);
        if next != self.deadlines[i] {
            self.deadlines[i] = next;
            self.heap.push(Reverse((next, i)));
        }
    }
}
