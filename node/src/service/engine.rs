//! The engine: one thread owns the [`Node`] and drives it from the UDP
//! sockets, the punch sockets, the TAP devices, the node's deadline and a
//! command channel, all through one epoll (mio). Nothing else touches the
//! node: the control plane sends [`Command`]s through an [`EngineHandle`]
//! and hears back by replies and [`Event`]s, so no lock is ever taken on the
//! packet path and a slow job elsewhere never stalls traffic.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::core::constants::{
    MAX_SUPER_FRAME_LEN_BYTES, MAX_TAP_FRAME_LEN_BYTES, PACKET_MAX_LEN_BYTES,
    VIRTIO_NET_HDR_LEN_BYTES,
};
use crate::core::identity_hash::IdentityHashScratch;
use crate::core::local_socket::LocalSocket;
use crate::core::network_id::NetworkId;
use crate::core::node::{Event, IdentityCheck, IdentityCheckResult, Node, Outbox};
use crate::service::flush_threads::{FlushThreads, TapDevices, TapWriter};
use crate::service::punch_sockets::PunchSockets;
use crate::service::relay_threads::RelayThreads;
use crate::service::tap::TapDevice;
use crate::service::tap_reader::TapReader;
use crate::service::tcp_relay::{TcpRelayClient, TcpRelayServer};
use crate::service::udp_sockets::{BatchedSocket, RECV_BATCH_CAPACITY, RecvBatch, UdpSockets};

/// Wakes the engine when a command is queued.
const WAKER: Token = Token(0);
/// The primary IPv4 socket.
const UDP_V4: Token = Token(1);
/// The primary IPv6 socket.
const UDP_V6: Token = Token(2);
/// The socket the gateway maps.
const UDP_MAPPED: Token = Token(3);
/// TAP devices and punch sockets get tokens from here up, never reused.
const FIRST_DYNAMIC_TOKEN: usize = 16;

/// Datagrams or frames read from one source before the engine turns to the
/// others (the rest is read on the next round), so a flood on one socket
/// cannot starve the TAP devices, the timer or the commands.
const READS_PER_SOURCE_PER_ROUND: usize = 64;
/// Datagrams from the TCP relay waiting for the engine at most; beyond it
/// they are dropped, as a full socket buffer would.
const RELAY_QUEUE_DATAGRAMS: usize = 1_024;
/// Batched reads (each up to `RECV_BATCH_BUFFERS` buffers) of one UDP
/// socket per round.
const UDP_BATCHES_PER_ROUND: usize = 8;
/// Datagrams queued before the engine sends them without waiting for the
/// end of the round of reads.
const FLUSH_DATAGRAMS: usize = 64;
/// Bytes queued (datagrams and frames) before the engine flushes early.
const FLUSH_BYTES: usize = 256 * 1024;
/// How long the engine sleeps at most while identity checks wait for the
/// node's budget to allow the next one.
const IDENTITY_CHECK_POLL: Duration = Duration::from_millis(20);

/// A job for the node, run on the engine thread with the time (ms on the
/// service clock) and an outbox the engine sends afterwards.
pub type NodeCall = Box<dyn FnOnce(&mut Node, u64, &mut Outbox) + Send>;

/// What the control plane and the helper threads ask of the engine.
pub enum Command {
    /// Runs a job on the node (join, leave, orbit, a status snapshot, ...).
    Call(NodeCall),
    /// Stops polling a network's TAP device and drops the engine's handle.
    RemoveDevice(NetworkId),
    /// Starts reading and writing a network's TAP device.
    AddDevice(NetworkId, TapDevice),
    /// A connection of the TCP relay closed.
    SocketClosed(LocalSocket),
    /// The identity checker finished a job.
    IdentityChecked(Box<IdentityCheckResult>),
    /// Stop the engine (shutdown).
    Stop,
}

/// A datagram handed to the engine by another thread: one that came over
/// the TCP relay, or one a relay thread leaves to the node.
struct RelayDatagram {
    socket: LocalSocket,
    from: SocketAddr,
    bytes: Vec<u8>,
    /// Counted up once the node handled it and what it queued was sent (a
    /// relay thread waits for that before it forwards again).
    done: Option<Arc<AtomicU64>>,
}

/// The engine is gone (it stopped or panicked).
#[derive(Debug, thiserror::Error)]
#[error("the engine has stopped")]
pub struct EngineGone;

/// How the rest of the daemon talks to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    relayed: SyncSender<RelayDatagram>,
    waker: Arc<Waker>,
}

impl EngineHandle {
    /// Queues a command and wakes the engine.
    pub fn send(&self, command: Command) -> Result<(), EngineGone> {
        self.commands.send(command).map_err(|_| EngineGone)?;
        self.waker.wake().map_err(|_| EngineGone)
    }

    /// Runs `f` on the node and returns what it returns.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, u64, &mut Outbox) -> R + Send + 'static,
    ) -> Result<R, EngineGone> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Call(Box::new(move |node, now, out| {
            let _ = tx.send(f(node, now, out));
        })))?;
        rx.await.map_err(|_| EngineGone)
    }

    /// Runs `f` on the node without waiting for it.
    pub fn cast(
        &self,
        f: impl FnOnce(&mut Node, u64, &mut Outbox) + Send + 'static,
    ) -> Result<(), EngineGone> {
        self.send(Command::Call(Box::new(f)))
    }

    /// Hands the engine a datagram that came over TCP; dropped when the
    /// engine is that far behind.
    pub fn relayed_datagram(&self, socket: LocalSocket, from: SocketAddr, bytes: &[u8]) {
        let d = RelayDatagram {
            socket,
            from,
            bytes: bytes.to_vec(),
            done: None,
        };
        match self.relayed.try_send(d) {
            Ok(()) => {
                let _ = self.waker.wake();
            }
            Err(TrySendError::Full(_)) => debug!("engine busy; TCP-relayed datagram dropped"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Hands the engine a datagram a relay thread read and leaves to the
    /// node; `done` is counted up once it is handled. False (dropped) when
    /// the engine is that far behind or gone.
    pub fn hand_over(
        &self,
        socket: LocalSocket,
        from: SocketAddr,
        bytes: &[u8],
        done: Arc<AtomicU64>,
    ) -> bool {
        let d = RelayDatagram {
            socket,
            from,
            bytes: bytes.to_vec(),
            done: Some(done),
        };
        match self.relayed.try_send(d) {
            Ok(()) => {
                let _ = self.waker.wake();
                true
            }
            Err(_) => false,
        }
    }
}

/// The TCP relay's two ends: a root's server, every other node's client.
#[derive(Clone, Default)]
pub struct TcpRelay {
    /// A root's listener.
    pub server: Option<Arc<TcpRelayServer>>,
    /// Our connection to a root.
    pub client: Option<Arc<TcpRelayClient>>,
}

/// What the engine reads besides the fixed sockets.
enum Source {
    Tap(NetworkId),
    Punch(u32),
}

/// A TAP device the engine reads.
struct Device {
    tap: TapDevice,
    token: Token,
}

/// Everything the engine needs before it starts, and its handle.
pub struct EngineParts {
    poll: Poll,
    commands: Receiver<Command>,
    relayed: Receiver<RelayDatagram>,
    handle: EngineHandle,
}

impl EngineParts {
    /// Makes the poll and the channels; the handle works at once (commands
    /// wait until the engine runs).
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands_tx, commands) = mpsc::channel();
        let (relayed_tx, relayed) = mpsc::sync_channel(RELAY_QUEUE_DATAGRAMS);
        Ok(Self {
            poll,
            commands,
            relayed,
            handle: EngineHandle {
                commands: commands_tx,
                relayed: relayed_tx,
                waker,
            },
        })
    }

    /// The handle, for the control plane and the helper threads.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }
}

/// The engine: owns the node and its I/O.
pub struct Engine {
    node: Node,
    poll: Poll,
    commands: Receiver<Command>,
    relayed: Receiver<RelayDatagram>,
    handle: EngineHandle,
    udp: Arc<UdpSockets>,
    punch: PunchSockets,
    devices: HashMap<NetworkId, Device>,
    /// The devices again, as the flush threads get them with an outbox.
    tap_devices: TapDevices,
    sources: HashMap<Token, Source>,
    next_token: usize,
    /// Sources that still had data when their read budget ran out.
    backlog: VecDeque<Token>,
    tcp: TcpRelay,
    /// The root the core relays through over TCP (set every tick): every
    /// datagram for TCP goes there, whatever root it is for.
    tcp_target: Option<SocketAddr>,
    events: tokio_mpsc::UnboundedSender<Event>,
    checker: SyncSender<IdentityCheck>,
    checker_jobs: Option<Receiver<IdentityCheck>>,
    checking: bool,
    start: Instant,
    next_timeout: Instant,
    out: Outbox,
    buf: Vec<u8>,
    /// Buffers for batched reads of the primary and mapped sockets.
    rx: RecvBatch,
    /// Writes the outbox's frames to the TAP devices.
    tap_writer: TapWriter,
    /// Reads frames from the TAP devices, joining runs of datagrams.
    tap_reader: TapReader,
    /// Sources to read this round.
    ready: Vec<Token>,
    /// A root's relay threads, if it runs any.
    relay_threads: Option<RelayThreads>,
    /// A member's flush threads, if it runs any.
    flush_threads: Option<FlushThreads>,
    /// How long to keep polling without sleeping after traffic (zero: sleep
    /// at once).
    busy_poll: Duration,
    /// Whether this round read or wrote a TAP frame.
    traffic: bool,
    /// When a round last read or wrote a TAP frame.
    traffic_at: Option<Instant>,
}

/// The threads that work beside the engine: a root's relay threads and the
/// number of flush threads a member starts.
pub struct WorkerThreads {
    /// A root's relay threads, already running.
    pub relay: Option<RelayThreads>,
    /// How many flush threads to start (0: the engine flushes inline).
    pub flush: usize,
}

impl Engine {
    /// Builds the engine around `node`; `start` is the service clock's zero.
    pub fn new(
        parts: EngineParts,
        node: Node,
        udp: UdpSockets,
        tcp: TcpRelay,
        workers: WorkerThreads,
        events: tokio_mpsc::UnboundedSender<Event>,
        start: Instant,
    ) -> io::Result<Self> {
        let EngineParts {
            poll,
            commands,
            relayed,
            handle,
        } = parts;
        let WorkerThreads {
            relay: relay_threads,
            flush: flush_threads,
        } = workers;
        let mut udp = udp;
        let registry = poll.registry();
        registry.register(&mut udp.v4.socket, UDP_V4, Interest::READABLE)?;
        if let Some(s) = udp.v6.as_mut() {
            registry.register(&mut s.socket, UDP_V6, Interest::READABLE)?;
        }
        if let Some(s) = udp.mapped.as_mut() {
            registry.register(&mut s.socket, UDP_MAPPED, Interest::READABLE)?;
        }
        let (checker, checker_jobs) = mpsc::sync_channel(1);
        let udp = Arc::new(udp);
        let flush_threads = if flush_threads > 0 {
            Some(FlushThreads::start(flush_threads, udp.clone())?)
        } else {
            None
        };
        Ok(Self {
            node,
            poll,
            commands,
            relayed,
            handle,
            udp,
            punch: PunchSockets::default(),
            devices: HashMap::new(),
            tap_devices: TapDevices::default(),
            sources: HashMap::new(),
            next_token: FIRST_DYNAMIC_TOKEN,
            backlog: VecDeque::new(),
            tcp,
            tcp_target: None,
            events,
            checker,
            checker_jobs: Some(checker_jobs),
            checking: false,
            start,
            next_timeout: start,
            out: Outbox::new(),
            buf: vec![0u8; PACKET_MAX_LEN_BYTES],
            rx: RecvBatch::default(),
            tap_writer: TapWriter::default(),
            tap_reader: TapReader::default(),
            ready: Vec::new(),
            relay_threads,
            flush_threads,
            busy_poll: Duration::ZERO,
            traffic: false,
            traffic_at: None,
        })
    }

    /// Keeps polling without sleeping for `busy_poll` after each round that
    /// read or wrote a TAP frame (`busyPollMicros`). A sleeping engine is
    /// woken by the kernel, and on a virtual machine that wake-up (an idle
    /// vCPU, cold caches) is much of an idle round trip; a polling one
    /// yields its core to any other runnable thread between polls.
    pub fn with_busy_poll(mut self, busy_poll: Duration) -> Self {
        self.busy_poll = busy_poll;
        self
    }

    /// Whether the last traffic was less than `busy_poll` ago.
    fn busy_polling(&self, now: Instant) -> bool {
        self.traffic_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.busy_poll)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Runs until [`Command::Stop`] or until every handle is gone. Starts
    /// the identity checker thread, which ends with the engine.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(jobs) = self.checker_jobs.take() {
            let handle = self.handle.clone();
            std::thread::Builder::new()
                .name("vnet-idcheck".into())
                .spawn(move || identity_checker(&jobs, &handle))?;
        }
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if now >= self.next_timeout {
                self.handle_timeout();
            }
            let mut wait = self.next_timeout.saturating_duration_since(Instant::now());
            if !self.checking && self.node.identity_checks_waiting() {
                wait = wait.min(IDENTITY_CHECK_POLL);
            }
            if let Some(r) = &self.relay_threads {
                let at = self.start + Duration::from_millis(r.next_publish_ms());
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            let polling = self.busy_polling(now);
            if !self.backlog.is_empty() || polling {
                wait = Duration::ZERO;
            }
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if polling && events.is_empty() && self.backlog.is_empty() {
                std::thread::yield_now();
            }

            let mut ready = std::mem::take(&mut self.ready);
            ready.extend(self.backlog.drain(..));
            ready.extend(events.iter().map(|e| e.token()).filter(|t| *t != WAKER));
            for token in ready.drain(..) {
                self.read(token);
            }
            self.ready = ready;
            self.flush();
            if !self.run_commands() {
                if let Some(mut r) = self.relay_threads.take() {
                    r.stop();
                }
                if let Some(mut f) = self.flush_threads.take() {
                    f.stop();
                }
                return Ok(());
            }
            self.start_identity_check();
            self.publish_relay_table();
            if std::mem::take(&mut self.traffic) && !self.busy_poll.is_zero() {
                self.traffic_at = Some(Instant::now());
            }
        }
    }

    /// Reads what `token`'s source has, up to the per-round budget; a
    /// source with more left is read again next round.
    fn read(&mut self, token: Token) {
        let more = match token {
            UDP_V4 | UDP_V6 | UDP_MAPPED => self.read_udp(token),
            token => self.read_other(token),
        };
        if more {
            self.backlog.push_back(token);
        }
    }

    /// Batched reads of a primary or mapped socket; true if the budget ran
    /// out with data left.
    fn read_udp(&mut self, token: Token) -> bool {
        let local = if token == UDP_MAPPED {
            LocalSocket::Mapped
        } else {
            LocalSocket::Primary
        };
        for _ in 0..UDP_BATCHES_PER_ROUND {
            let got = match udp_socket(&self.udp, token) {
                Some(s) => s.recv(&mut self.rx),
                None => return false,
            };
            let filled = match got {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface on the next read; nothing to do.
                Err(e) => {
                    debug!(error = %e, "recv failed");
                    continue;
                }
            };
            let now = self.now_ms();
            for i in 0..filled {
                if let Some((from, datagrams)) = self.rx.datagrams(i) {
                    for datagram in datagrams {
                        self.node
                            .handle_datagram(now, local, from, datagram, &mut self.out);
                    }
                }
                self.flush_if_full();
            }
            if filled < RECV_BATCH_CAPACITY {
                return false;
            }
        }
        true
    }

    /// Reads of a punch socket or a TAP device, one datagram or frame each;
    /// true if the budget ran out with data left.
    fn read_other(&mut self, token: Token) -> bool {
        for _ in 0..READS_PER_SOURCE_PER_ROUND {
            let got = match self.sources.get(&token) {
                Some(Source::Punch(id)) => {
                    let id = *id;
                    self.punch
                        .recv_from(id, &mut self.buf)
                        .map(|r| (r, LocalSocket::Punch(id)))
                }
                Some(Source::Tap(nwid)) => {
                    let nwid = *nwid;
                    return self.read_tap(nwid);
                }
                None => return false,
            };
            match got {
                Ok(((len, from), socket)) => {
                    let now = self.now_ms();
                    self.node.handle_datagram(
                        now,
                        socket,
                        from,
                        &mut self.buf[..len],
                        &mut self.out,
                    );
                    self.flush_if_full();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => debug!(error = %e, "recv failed"),
            }
        }
        true
    }

    /// Reads the TAP device of `nwid`: at most `READS_PER_SOURCE_PER_ROUND`
    /// reads (each datagram of a joined run counts), and never leaves a
    /// frame read ahead behind; true if the budget ran out with data left.
    fn read_tap(&mut self, nwid: NetworkId) -> bool {
        let mut reads = 0;
        loop {
            if reads >= READS_PER_SOURCE_PER_ROUND && !self.tap_reader.has_ahead() {
                return true;
            }
            let Some(device) = self.devices.get(&nwid) else {
                self.tap_reader.forget_ahead();
                return false;
            };
            // Read with headroom: the frame is sealed where it lies.
            let virtio = device.tap.virtio_header();
            let room = if virtio {
                VIRTIO_NET_HDR_LEN_BYTES + MAX_SUPER_FRAME_LEN_BYTES
            } else {
                MAX_TAP_FRAME_LEN_BYTES
            };
            let read = self.tap_reader.read(
                &device.tap,
                self.out.frame_room(room, virtio),
                &mut reads,
                READS_PER_SOURCE_PER_ROUND,
            );
            match read {
                Ok(r) => {
                    self.traffic = true;
                    let now = self.now_ms();
                    if r.datagrams > 1 {
                        self.node.count_udp_joined_read(r.datagrams as u64);
                    }
                    self.node
                        .handle_tap_read(now, nwid, r.len, virtio, &mut self.out);
                    self.flush_if_full();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    warn!(%nwid, error = %e, "TAP read failed");
                    return false;
                }
            }
        }
    }

    /// Runs queued commands and TCP-relayed datagrams; false on Stop or
    /// when every handle is gone.
    fn run_commands(&mut self) -> bool {
        for _ in 0..RELAY_QUEUE_DATAGRAMS {
            let Ok(mut d) = self.relayed.try_recv() else {
                break;
            };
            let now = self.now_ms();
            self.node
                .handle_datagram(now, d.socket, d.from, &mut d.bytes, &mut self.out);
            self.flush();
            if let Some(done) = d.done {
                done.fetch_add(1, Ordering::Release);
            }
        }
        loop {
            let command = match self.commands.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            };
            match command {
                Command::Call(f) => {
                    if let Some(r) = &self.relay_threads {
                        r.fold_counts(&mut self.node);
                    }
                    if let Some(f) = &self.flush_threads {
                        self.node.count_flushed_by_threads(f.take_flushed());
                        let joined = f.take_joined();
                        self.node.count_udp_joined(joined.writes, joined.datagrams);
                    }
                    let now = self.now_ms();
                    f(&mut self.node, now, &mut self.out);
                }
                Command::AddDevice(nwid, tap) => self.add_device(nwid, tap),
                Command::RemoveDevice(nwid) => self.remove_device(nwid),
                Command::SocketClosed(socket) => self.node.socket_closed(socket),
                Command::IdentityChecked(result) => {
                    self.checking = false;
                    let now = self.now_ms();
                    self.node.identity_check_done(now, *result, &mut self.out);
                }
                Command::Stop => return false,
            }
            self.flush();
        }
    }

    fn add_device(&mut self, nwid: NetworkId, tap: TapDevice) {
        if self.devices.contains_key(&nwid) {
            return;
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        let registered = tap.set_nonblocking().and_then(|()| {
            self.poll.registry().register(
                &mut SourceFd(&tap.as_raw_fd()),
                token,
                Interest::READABLE,
            )
        });
        if let Err(e) = registered {
            warn!(%nwid, error = %e, "cannot poll the TAP device");
            return;
        }
        self.sources.insert(token, Source::Tap(nwid));
        self.devices.insert(nwid, Device { tap, token });
        self.snapshot_devices();
        // Frames may have queued before registration (edge-triggered).
        self.backlog.push_back(token);
    }

    /// The devices as the flush threads get them (rebuilt on a change).
    fn snapshot_devices(&mut self) {
        self.tap_devices = Arc::new(
            self.devices
                .iter()
                .map(|(nwid, d)| (*nwid, d.tap.clone()))
                .collect(),
        );
    }

    fn remove_device(&mut self, nwid: NetworkId) {
        if let Some(device) = self.devices.remove(&nwid) {
            self.snapshot_devices();
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&device.tap.as_raw_fd()));
            self.sources.remove(&device.token);
        }
    }

    /// The node's periodic work, and the I/O state that follows from it.
    fn handle_timeout(&mut self) {
        let now = self.now_ms();
        self.node.handle_timeout(now, &mut self.out);
        // Punch sockets the core no longer needs are closed.
        if !self.punch.is_empty() {
            let live = self.node.live_punch_sockets();
            for id in self.punch.retain(self.poll.registry(), &live) {
                self.node.socket_closed(LocalSocket::Punch(id));
            }
            self.sources
                .retain(|_, s| !matches!(s, Source::Punch(id) if !live.contains(id)));
        }
        self.tcp_target = self.node.tcp_relay_target(now);
        // Back on UDP: the TCP relay connection goes.
        if let Some(client) = &self.tcp.client
            && client.connected_to().is_some()
            && !self.node.tcp_relay_wanted(now)
        {
            info!("UDP works again; leaving the TCP relay");
            client.close();
        }
        self.flush();
        let next = self.node.next_timeout(now);
        self.next_timeout = self.start + Duration::from_millis(next.max(now + 1));
    }

    /// Gives the relay threads a fresh table when it is due.
    fn publish_relay_table(&mut self) {
        let Some(r) = self.relay_threads.as_mut() else {
            return;
        };
        let now = self.start.elapsed().as_millis() as u64;
        if now >= r.next_publish_ms() {
            r.publish(now, &mut self.node);
        }
    }

    /// Hands a waiting identity check to the checker thread when it is idle.
    fn start_identity_check(&mut self) {
        if self.checking {
            return;
        }
        let now = self.now_ms();
        if let Some(job) = self.node.next_identity_check(now) {
            match self.checker.try_send(job) {
                Ok(()) => self.checking = true,
                Err(_) => warn!("identity checker gone; check dropped"),
            }
        }
    }

    /// Flushes once the outbox holds a batch: what a round of reads queued
    /// goes out together at its end otherwise.
    fn flush_if_full(&mut self) {
        if self.out.len() >= FLUSH_DATAGRAMS || self.out.buffered_bytes() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Sends what the outbox holds, writes its frames to their TAP devices,
    /// passes the node's events on, and empties the outbox. With flush
    /// threads, a full outbox goes to them (the engine sends only what goes
    /// by punch sockets or the TCP relay) and the engine fills another.
    fn flush(&mut self) {
        let threads = self
            .flush_threads
            .as_ref()
            .is_some_and(|f| !f.flush_inline(&self.out));
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        for t in self.out.transmits() {
            bytes += t.contents.len() as u64;
            datagrams += t.datagrams().len() as u64;
            let primary = matches!(t.socket, LocalSocket::Primary | LocalSocket::Mapped);
            if primary {
                if !threads {
                    self.udp.send(t.socket, t.to, t.contents, t.segment_size);
                }
                continue;
            }
            for datagram in t.datagrams() {
                let to = t.to;
                match t.socket {
                    LocalSocket::Punch(id) => {
                        let next_token = &mut self.next_token;
                        let sources = &mut self.sources;
                        self.punch.send(
                            self.poll.registry(),
                            || {
                                let token = Token(*next_token);
                                *next_token += 1;
                                sources.insert(token, Source::Punch(id));
                                token
                            },
                            id,
                            to,
                            datagram,
                        );
                    }
                    LocalSocket::TcpToRoot => {
                        if let Some(c) = &self.tcp.client {
                            c.send(self.tcp_target.unwrap_or(to), datagram);
                        }
                    }
                    LocalSocket::TcpFromNode(conn) => {
                        if let Some(s) = &self.tcp.server {
                            s.send(conn, datagram);
                        }
                    }
                    LocalSocket::Primary | LocalSocket::Mapped => {}
                }
            }
        }
        self.node.count_sent(datagrams, bytes);
        self.traffic |= self.out.frames().next().is_some();
        match self.flush_threads.as_mut().filter(|_| threads) {
            Some(f) => {
                let full = std::mem::take(&mut self.out);
                self.out = f.hand_over(full, &self.tap_devices);
            }
            None => {
                let devices = &self.devices;
                let joined = self
                    .tap_writer
                    .write(self.out.frames(), |nwid| devices.get(&nwid).map(|d| &d.tap));
                if joined.writes > 0 {
                    self.node.count_udp_joined(joined.writes, joined.datagrams);
                }
                self.out.clear();
            }
        }
        while let Some(e) = self.node.poll_event() {
            let _ = self.events.send(e);
        }
    }
}

/// The primary or mapped socket a poll token stands for.
fn udp_socket(udp: &UdpSockets, token: Token) -> Option<&BatchedSocket> {
    match token {
        UDP_V4 => Some(&udp.v4),
        UDP_V6 => udp.v6.as_ref(),
        UDP_MAPPED => udp.mapped.as_ref(),
        _ => None,
    }
}

/// Runs `engine` (in practice `|| engine.run()`) on a thread named `name`;
/// if it ever ends by itself (a panic, or an error from the poll) the
/// returned receiver gets why, after a log line, so the daemon can exit
/// instead of living on with a dead packet path. A normal stop (after
/// [`Command::Stop`]) sends nothing.
pub fn spawn_supervised(
    name: &str,
    engine: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<(std::thread::JoinHandle<()>, oneshot::Receiver<String>)> {
    let (stopped_tx, stopped) = oneshot::channel::<String>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(engine)) {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("poll failed: {e}"),
                Err(panic) => panic
                    .downcast_ref::<&str>()
                    .map(|s| format!("panic: {s}"))
                    .or_else(|| {
                        panic
                            .downcast_ref::<String>()
                            .map(|s| format!("panic: {s}"))
                    })
                    .unwrap_or_else(|| "panic".into()),
            };
            tracing::error!("engine thread stopped ({why}); vnet-node exits");
            let _ = stopped_tx.send(why);
        })?;
    Ok((thread, stopped))
}

/// How long the identity checker keeps its scratch after its last check.
const CHECKER_SCRATCH_KEEP: Duration = Duration::from_secs(2);

/// Runs identity checks (the memory-hard hash, ~17 ms each) off the engine
/// thread: packets never wait for them.
fn identity_checker(jobs: &Receiver<IdentityCheck>, engine: &EngineHandle) {
    let mut scratch = IdentityHashScratch::new();
    loop {
        let job = match jobs.recv_timeout(CHECKER_SCRATCH_KEEP) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The scratch is 2 MiB: a root's whole table of 2,000
                // peers. Kept through a burst of checks, not between them.
                scratch.release();
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let result = job.run(&mut scratch);
        if engine
            .send(Command::IdentityChecked(Box::new(result)))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_engine_is_reported_with_its_message() {
        let (thread, stopped) = spawn_supervised("test-engine", || panic!("boom")).unwrap();
        let _ = thread.join();
        assert_eq!(stopped.blocking_recv().unwrap(), "panic: boom");
    }

    #[test]
    fn a_failed_poll_is_reported_and_a_normal_stop_is_not() {
        let (thread, stopped) =
            spawn_supervised("test-engine", || Err(io::Error::other("gone"))).unwrap();
        let _ = thread.join();
        assert_eq!(stopped.blocking_recv().unwrap(), "poll failed: gone");
        let (thread, stopped) = spawn_supervised("test-engine", || Ok(())).unwrap();
        let _ = thread.join();
        assert!(
            stopped.blocking_recv().is_err(),
            "a normal stop says nothing"
        );
    }
}
