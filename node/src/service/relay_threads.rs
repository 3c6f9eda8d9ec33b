//! A root's relay threads: more than one core for relaying, no reordering.
//!
//! Each thread owns one socket per family on the primary port, members of
//! the port's `SO_REUSEPORT` group with the engine's; the kernel steers each
//! source IP (IPv6 /64) to one socket of the group, so every datagram of a
//! source is read by one thread, in order. A thread forwards what the
//! engine's [`RelayTable`] covers (straight from a peer to a peer reached
//! straight, within the source's relay budget, kept by that thread alone)
//! from its receive buffer, a GRO batch at a time, without a lock; it hands
//! everything else to the engine, and while the engine still holds one of
//! its datagrams it forwards nothing itself, so a source's datagrams leave
//! in the order they came whichever of the two sends them. The engine
//! rebuilds the table every `RELAY_TABLE_REFRESH_MS`, folds the threads'
//! counts into the node's counters, and introduces the peers they relay
//! (RENDEZVOUS) when a thread tells it of a new pair.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use crate::core::address::Address;
use crate::core::constants::{RELAY_TABLE_REFRESH_MS, RENDEZVOUS_INTERVAL_MS};
use crate::core::hash_state::{HashMap, HashState};
use crate::core::local_socket::LocalSocket;
use crate::core::node::Node;
use crate::core::relay::{RelayBudget, RelayDecision, RelayTable};
use crate::core::rng::{NodeRng, SeedableRng};
use crate::service::engine::EngineHandle;
use crate::service::udp_sockets::{BatchedSocket, RECV_BATCH_CAPACITY, RecvBatch, RelaySockets};

/// Wakes a thread to stop.
const STOP: Token = Token(0);
/// The thread's IPv4 socket.
const V4: Token = Token(1);
/// The thread's IPv6 socket.
const V6: Token = Token(2);
/// Batched reads of one socket per round, before the other's turn.
const READS_PER_ROUND: usize = 8;
/// How long a thread sleeps at most without datagrams (it checks `stop`).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pairs a thread remembers having told the engine of (to introduce them
/// once per `RENDEZVOUS_INTERVAL_MS`); past it the memory starts over.
const MAX_TOLD_PAIRS: usize = 16_384;

/// What one thread did since the engine last looked, and how many of its
/// datagrams the engine has handled.
#[derive(Default)]
struct ThreadCounts {
    relayed: AtomicU64,
    rate_limited: AtomicU64,
    handed_over_dropped: AtomicU64,
    /// Datagrams the engine took from this thread, handled and flushed.
    done: Arc<AtomicU64>,
}

/// One running thread, as the engine holds it.
struct RelayThread {
    waker: Arc<Waker>,
    counts: Arc<ThreadCounts>,
    join: Option<JoinHandle<()>>,
}

/// The engine's side of the relay threads.
pub struct RelayThreads {
    table: Arc<ArcSwap<RelayTable>>,
    threads: Vec<RelayThread>,
    stop: Arc<AtomicBool>,
    next_publish_ms: u64,
}

impl RelayThreads {
    /// Starts one thread per entry of `sockets`; they hand the engine what
    /// they do not forward through `engine`. `start` is the service clock's
    /// zero; `seed` keys their tables' hashers.
    pub fn start(
        sockets: Vec<RelaySockets>,
        engine: &EngineHandle,
        start: Instant,
        seed: [u8; 32],
    ) -> io::Result<Self> {
        let mut rng = NodeRng::from_seed(seed);
        let table = Arc::new(ArcSwap::from_pointee(RelayTable::empty()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, mut sockets) in sockets.into_iter().enumerate() {
            let poll = Poll::new()?;
            let registry = poll.registry();
            registry.register(&mut sockets.v4.socket, V4, Interest::READABLE)?;
            if let Some(v6) = sockets.v6.as_mut() {
                registry.register(&mut v6.socket, V6, Interest::READABLE)?;
            }
            let waker = Arc::new(Waker::new(registry, STOP)?);
            let counts = Arc::new(ThreadCounts::default());
            let worker = Worker {
                poll,
                sockets,
                table: table.clone(),
                engine: engine.clone(),
                counts: counts.clone(),
                stop: stop.clone(),
                start,
                budget: RelayBudget::new(HashState::new(&mut rng)),
                batch: RecvBatch::default(),
                handed_over: 0,
                told: HashMap::with_hasher(HashState::new(&mut rng)),
                news: Vec::new(),
            };
            let join = std::thread::Builder::new()
                .name(format!("vnet-relay-{i}"))
                .spawn(move || worker.run())?;
            threads.push(RelayThread {
                waker,
                counts,
                join: Some(join),
            });
        }
        Ok(Self {
            table,
            threads,
            stop,
            next_publish_ms: 0,
        })
    }

    /// Threads running.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// When (service clock, ms) the table is to be rebuilt next.
    pub fn next_publish_ms(&self) -> u64 {
        self.next_publish_ms
    }

    /// Gives the threads a fresh table from `node` and folds what they did
    /// into its counters.
    pub fn publish(&mut self, now_ms: u64, node: &mut Node) {
        self.table.store(Arc::new(node.relay_table(now_ms)));
        self.next_publish_ms = now_ms + RELAY_TABLE_REFRESH_MS;
        self.fold_counts(node);
    }

    /// Folds what the threads did since the last call into `node`'s
    /// counters (before anything reads them, so they are exact).
    pub fn fold_counts(&self, node: &mut Node) {
        let (mut relayed, mut rate_limited) = (0, 0);
        for t in &self.threads {
            relayed += t.counts.relayed.swap(0, Ordering::Relaxed);
            rate_limited += t.counts.rate_limited.swap(0, Ordering::Relaxed);
            let dropped = t.counts.handed_over_dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                debug!(
                    dropped,
                    "engine busy; datagrams from a relay thread dropped"
                );
            }
        }
        if relayed > 0 || rate_limited > 0 {
            node.count_relay_threads(relayed, rate_limited);
        }
    }

    /// Stops the threads and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in &mut self.threads {
            let _ = t.waker.wake();
            if let Some(join) = t.join.take()
                && join.join().is_err()
            {
                warn!("a relay thread panicked");
            }
        }
    }
}

impl Drop for RelayThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new pair a thread relays for: (from, src, dest, to).
type News = (SocketAddr, Address, Address, SocketAddr);

/// One relay thread.
struct Worker {
    poll: Poll,
    sockets: RelaySockets,
    table: Arc<ArcSwap<RelayTable>>,
    engine: EngineHandle,
    counts: Arc<ThreadCounts>,
    stop: Arc<AtomicBool>,
    start: Instant,
    budget: RelayBudget,
    batch: RecvBatch,
    /// Datagrams handed to the engine (it counts those it handled in
    /// `counts.done`).
    handed_over: u64,
    /// Pairs told to the engine lately, and when.
    told: HashMap<(Address, Address), u64>,
    /// Pairs to tell the engine at the end of this round.
    news: Vec<News>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(4);
        let mut more = false;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let wait = if more { Duration::ZERO } else { IDLE_POLL };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!(error = %e, "relay thread cannot poll; it stops");
                return;
            }
            more = self.read(V4);
            if self.sockets.v6.is_some() {
                more |= self.read(V6);
            }
            self.tell_news();
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Reads and forwards what the socket has, up to the round's budget;
    /// true if it had more.
    fn read(&mut self, token: Token) -> bool {
        for _ in 0..READS_PER_ROUND {
            let socket = if token == V4 {
                &self.sockets.v4
            } else {
                match &self.sockets.v6 {
                    Some(s) => s,
                    None => return false,
                }
            };
            let filled = match socket.recv(&mut self.batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, "recv failed");
                    continue;
                }
            };
            let table = self.table.load_full();
            let now_ms = self.now_ms();
            for i in 0..filled {
                let Some((from, bytes, stride)) = self.batch.buffer(i) else {
                    continue;
                };
                let mut sink = Sink {
                    sockets: &self.sockets,
                    engine: &self.engine,
                    counts: &self.counts,
                    budget: &mut self.budget,
                    handed_over: &mut self.handed_over,
                    told: &mut self.told,
                    news: &mut self.news,
                };
                sink.forward(&table, now_ms, from, bytes, stride);
            }
            if filled < RECV_BATCH_CAPACITY {
                return false;
            }
        }
        true
    }

    /// Tells the engine of pairs relayed for the first time lately.
    fn tell_news(&mut self) {
        if self.news.is_empty() {
            return;
        }
        let news = std::mem::take(&mut self.news);
        let _ = self.engine.cast(move |node, now_ms, out| {
            for (from, src, dest, to) in news {
                node.relayed_by_thread(now_ms, from, src, dest, to, out);
            }
        });
    }
}

/// Where one buffer's datagrams go: out of a socket, or to the engine.
struct Sink<'a> {
    sockets: &'a RelaySockets,
    engine: &'a EngineHandle,
    counts: &'a ThreadCounts,
    budget: &'a mut RelayBudget,
    handed_over: &'a mut u64,
    told: &'a mut HashMap<(Address, Address), u64>,
    news: &'a mut Vec<News>,
}

impl Sink<'_> {
    /// Forwards the datagrams of one receive buffer (`stride` bytes each,
    /// the last maybe shorter, all from `from`): runs of them for one
    /// destination leave in one GSO send, straight from the buffer.
    fn forward(
        &mut self,
        table: &RelayTable,
        now_ms: u64,
        from: SocketAddr,
        bytes: &mut [u8],
        stride: usize,
    ) {
        let stride = stride.max(1);
        // A run of datagrams for one address: (to, first byte).
        let mut run: Option<(SocketAddr, usize)> = None;
        let mut offset = 0;
        while offset < bytes.len() {
            let end = (offset + stride).min(bytes.len());
            let decision = if self.engine_holds_one() {
                RelayDecision::Node
            } else {
                table.decide(now_ms, from, &mut bytes[offset..end])
            };
            match decision {
                RelayDecision::Forward { to, src, dest } => {
                    if !self.budget.allowed(now_ms, from) {
                        self.send_run(run.take(), &bytes[..offset], stride);
                        self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if let Some(src) = src {
                            self.note_pair(now_ms, from, src, dest, to);
                        }
                        if !matches!(run, Some((t, _)) if t == to) {
                            self.send_run(run.take(), &bytes[..offset], stride);
                            run = Some((to, offset));
                        }
                        self.counts.relayed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                RelayDecision::Node => {
                    self.send_run(run.take(), &bytes[..offset], stride);
                    self.hand_over(from, &bytes[offset..end]);
                }
            }
            offset = end;
        }
        self.send_run(run, bytes, stride);
    }

    /// Whether the engine still holds a datagram this thread handed it
    /// (until it has handled and sent it, forwarding here would pass it).
    fn engine_holds_one(&self) -> bool {
        *self.handed_over > self.counts.done.load(Ordering::Acquire)
    }

    /// Sends `bytes[start..]` of a run to its address.
    fn send_run(&self, run: Option<(SocketAddr, usize)>, bytes: &[u8], stride: usize) {
        let Some((to, start)) = run else {
            return;
        };
        let socket: &BatchedSocket = match (to, &self.sockets.v6) {
            (SocketAddr::V6(_), Some(v6)) => v6,
            (SocketAddr::V6(_), None) => return,
            _ => &self.sockets.v4,
        };
        socket.send(to, &bytes[start..], stride);
    }

    fn hand_over(&mut self, from: SocketAddr, datagram: &[u8]) {
        let done = self.counts.done.clone();
        if self
            .engine
            .hand_over(LocalSocket::Primary, from, datagram, done)
        {
            *self.handed_over += 1;
        } else {
            self.counts
                .handed_over_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the engine (at the end of the round) of a pair not told of
    /// within `RENDEZVOUS_INTERVAL_MS`, so it introduces the two.
    fn note_pair(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        src: Address,
        dest: Address,
        to: SocketAddr,
    ) {
        let key = if src < dest { (src, dest) } else { (dest, src) };
        if self
            .told
            .get(&key)
            .is_some_and(|t| now_ms.saturating_sub(*t) < RENDEZVOUS_INTERVAL_MS)
        {
            return;
        }
        if self.told.len() >= MAX_TOLD_PAIRS {
            self.told.clear();
        }
        self.told.insert(key, now_ms);
        self.news.push((from, src, dest, to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::constants::PACKET_MIN_LEN_BYTES;
    use crate::core::relay::RelaySources;
    use crate::core::wire::{Datagram, PacketHeader, classify};
    use crate::service::engine::EngineParts;
    use crate::service::udp_sockets::bind_group;

    fn addr(n: u64) -> Address {
        Address::from_u64(0x20_0000_0000 + n).unwrap()
    }

    fn packet(counter: u64, src: Address, dest: Address) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_MIN_LEN_BYTES + 64];
        PacketHeader {
            counter,
            dest,
            src,
            hops: 0,
            key_slot: 1,
            more_fragments: false,
            clear: false,
            aes_gcm: false,
        }
        .encode_into(&mut p);
        p
    }

    /// What arrived at `socket` within 200 ms: each datagram's counter and hops.
    fn arrived(socket: &std::net::UdpSocket) -> Vec<(u64, u8)> {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            if let Ok(Datagram::Packet { header, .. }) = classify(&buf[..n]) {
                got.push((header.counter, header.hops));
            }
        }
        got
    }

    /// While the engine holds a datagram a thread handed it, the thread
    /// forwards nothing itself (it would overtake it); once the engine is
    /// done, a GRO buffer of datagrams leaves straight, in order.
    #[test]
    fn a_thread_never_overtakes_what_it_handed_the_engine() {
        let parts = EngineParts::new().unwrap();
        let engine = parts.handle();
        let mut group = bind_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let sockets = RelaySockets {
            v4: group.remove(0),
            v6: None,
        };
        let dest_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = dest_socket.local_addr().unwrap();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (a, b, root) = (addr(1), addr(2), addr(3));
        let mut rng = NodeRng::from_seed([5; 32]);
        let mut hasher = || HashState::new(&mut rng);
        let without_a = RelayTable::builder(root, Arc::default(), 0).build();
        let mut sources = RelaySources::builder(0, 1);
        sources.add(from, a, 0);
        let mut full = RelayTable::builder(root, Arc::new(sources.build()), 1);
        full.add_route(b, to);
        let full = full.build();
        let counts = ThreadCounts::default();
        let mut budget = RelayBudget::new(hasher());
        let (mut handed_over, mut told, mut news) = (0, HashMap::with_hasher(hasher()), Vec::new());
        let mut sink = Sink {
            sockets: &sockets,
            engine: &engine,
            counts: &counts,
            budget: &mut budget,
            handed_over: &mut handed_over,
            told: &mut told,
            news: &mut news,
        };
        // Not in the table yet: to the engine.
        let mut p = packet(1, a, b);
        let len = p.len();
        sink.forward(&without_a, 10, from, &mut p, len);
        assert_eq!(*sink.handed_over, 1);
        // In the table now, but the engine still holds packet 1.
        let mut p = packet(2, a, b);
        sink.forward(&full, 10, from, &mut p, len);
        assert_eq!(*sink.handed_over, 2);
        assert_eq!(arrived(&dest_socket), vec![], "nothing overtook");
        // The engine handled both: a buffer of three goes out straight.
        counts.done.store(2, Ordering::Release);
        let mut buffer: Vec<u8> = (3..=5).flat_map(|c| packet(c, a, b)).collect();
        sink.forward(&full, 10, from, &mut buffer, len);
        assert_eq!(*sink.handed_over, 2);
        assert_eq!(arrived(&dest_socket), vec![(3, 1), (4, 1), (5, 1)]);
        assert_eq!(counts.relayed.load(Ordering::Relaxed), 3);
        assert_eq!(news, vec![(from, a, b, to)], "the pair is told once");
    }
}
