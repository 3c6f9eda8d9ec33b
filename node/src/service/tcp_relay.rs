//! The TCP relay: datagrams carried over TCP when UDP is blocked.
//!
//! A node that hears nothing over UDP from any root connects to one over TCP
//! ([`TcpRelayClient`]) and sends its datagrams through the connection; roots
//! and moons accept such connections on their UDP port number
//! ([`TcpRelayServer`]). Each datagram is one record framed like TLS 1.2
//! application data (see [`crate::core::tls_record`]).
//!
//! Blocking sockets and plain threads, like the UDP packet path (an async
//! runtime costs too much per packet): each connection has a reader thread,
//! which calls the handler for every datagram, and a writer thread, which
//! drains a bounded queue. Sending never blocks: when a queue is full the
//! datagram is dropped and counted, as a congested UDP path would drop it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::core::constants::{
    TCP_RELAY_CONNECT_TIMEOUT_MS, TCP_RELAY_CONNECTING_QUEUE_RECORDS, TCP_RELAY_IDLE_TIMEOUT_MS,
    TCP_RELAY_MAX_CONNECTIONS, TCP_RELAY_QUEUE_RECORDS, TCP_RELAY_RETRY_MAX_MS,
    TCP_RELAY_RETRY_MIN_MS, TCP_RELAY_WRITE_TIMEOUT_MS,
};
use crate::core::tls_record::{RecordDecoder, RecordError, encode_record};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Queued records are written together up to about this many bytes, so a
/// burst becomes few system calls and segments (TCP_NODELAY is on).
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Stack of writer threads: they only copy and write. Reader threads keep
/// the default, since they run the handler.
const WRITER_STACK_BYTES: usize = 128 * 1024;
/// Backlog of the IPv6 listener (std uses 128 for the IPv4 one).
const LISTEN_BACKLOG: i32 = 128;

/// What a server does with what its connections bring. Called from the
/// connections' reader threads, possibly several at once.
pub trait TcpRelayHandler: Send + Sync {
    /// One datagram from connection `conn`, whose peer is `from`; `bytes` may
    /// be changed in place (decrypted, say).
    fn datagram(&self, conn: u32, from: SocketAddr, bytes: &mut [u8]);
    /// Connection `conn` has ended; its id is never used again.
    fn closed(&self, conn: u32);
}

/// What a client does with what its connection brings. Called from the
/// connection's reader thread.
pub trait TcpRelayClientHandler: Send + Sync {
    /// One datagram from the server at `from`; `bytes` may be changed in place.
    fn datagram(&self, from: SocketAddr, bytes: &mut [u8]);
    /// The established connection to `from` has ended (whatever the cause,
    /// [`TcpRelayClient::close`] included). Failed attempts to connect are
    /// not reported.
    fn disconnected(&self, from: SocketAddr);
}

/// Limits and timers of the relay; [`Default`] takes them from
/// [`crate::core::constants`]. Tests shorten them.
#[derive(Debug, Clone)]
pub struct TcpRelayConfig {
    /// Most connections a server holds; more are closed as they come.
    pub max_connections: usize,
    /// A connection that brings no record for this long is closed.
    pub idle_timeout: Duration,
    /// A connection that accepts no bytes for this long while we write is closed.
    pub write_timeout: Duration,
    /// Records queued for sending per connection; more are dropped.
    pub queue_records: usize,
    /// Records a client holds while connecting; more are dropped.
    pub connecting_queue_records: usize,
    /// A client gives up connecting after this.
    pub connect_timeout: Duration,
    /// First wait before a client connects again after a failure...
    pub retry_min: Duration,
    /// ...doubling up to this.
    pub retry_max: Duration,
}

impl Default for TcpRelayConfig {
    fn default() -> Self {
        Self {
            max_connections: TCP_RELAY_MAX_CONNECTIONS,
            idle_timeout: Duration::from_millis(TCP_RELAY_IDLE_TIMEOUT_MS),
            write_timeout: Duration::from_millis(TCP_RELAY_WRITE_TIMEOUT_MS),
            queue_records: TCP_RELAY_QUEUE_RECORDS,
            connecting_queue_records: TCP_RELAY_CONNECTING_QUEUE_RECORDS,
            connect_timeout: Duration::from_millis(TCP_RELAY_CONNECT_TIMEOUT_MS),
            retry_min: Duration::from_millis(TCP_RELAY_RETRY_MIN_MS),
            retry_max: Duration::from_millis(TCP_RELAY_RETRY_MAX_MS),
        }
    }
}

/// Counters of a server or client, as read by [`TcpRelayServer::stats`] and
/// [`TcpRelayClient::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpRelayStats {
    /// Records received and handed to the handler.
    pub records_in: u64,
    /// Records written to the socket.
    pub records_out: u64,
    /// Datagrams not sent: queue full, or (client) no connection to be had now.
    pub dropped: u64,
    /// Connections closed because a record was malformed.
    pub framing_errors: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections refused by a server at its connection limit.
    pub connections_refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    records_in: AtomicU64,
    records_out: AtomicU64,
    dropped: AtomicU64,
    framing_errors: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TcpRelayStats {
        TcpRelayStats {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            framing_errors: self.framing_errors.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why a connection's reader stopped.
#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("closed by the peer")]
    Eof,
    #[error("no record for {0:?}")]
    Idle(Duration),
    #[error("framing error: {0}")]
    Framing(#[from] RecordError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads records until the connection ends, handing each payload to
/// `on_record`. Closes after `idle` without a complete record, so a peer
/// trickling bytes cannot hold a connection open.
fn read_records(
    stream: &mut TcpStream,
    idle: Duration,
    counters: &Counters,
    mut on_record: impl FnMut(&mut [u8]),
) -> ReadEnd {
    // Wake now and then to check the idle deadline.
    let tick = (idle / 4).max(Duration::from_millis(10));
    if let Err(e) = stream.set_read_timeout(Some(tick)) {
        return ReadEnd::Io(e);
    }
    let mut decoder = RecordDecoder::new();
    let mut last_record = Instant::now();
    loop {
        match stream.read(decoder.spare(READ_CHUNK_BYTES)) {
            Ok(0) => return ReadEnd::Eof,
            Ok(n) => decoder.commit(n),
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ReadEnd::Io(e),
        }
        let mut got = 0;
        while let Some(record) = decoder.next_record() {
            match record {
                Ok(payload) => {
                    got += 1;
                    on_record(payload);
                }
                Err(e) => {
                    Counters::add(&counters.records_in, got);
                    Counters::add(&counters.framing_errors, 1);
                    return ReadEnd::Framing(e);
                }
            }
        }
        if got > 0 {
            Counters::add(&counters.records_in, got);
            last_record = Instant::now();
        } else if last_record.elapsed() >= idle {
            return ReadEnd::Idle(idle);
        }
    }
}

/// Writes queued records until the queue's sender is dropped or a write
/// fails; on failure shuts the socket down so the reader ends too.
fn write_records(rx: &Receiver<Vec<u8>>, mut stream: TcpStream, counters: &Counters) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        // One record alone goes out as it is; a burst is gathered into one write.
        let mut n = 1;
        let result = match rx.try_recv() {
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => stream.write_all(&first),
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                n += 1;
                while batch.len() < WRITE_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(r) => {
                            batch.extend_from_slice(&r);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                stream.write_all(&batch)
            }
        };
        if let Err(e) = result {
            debug!(peer = ?stream.peer_addr().ok(), error = %e, "TCP relay write failed");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        Counters::add(&counters.records_out, n);
    }
}

/// Sets the options every relay connection gets.
fn prepare_stream(stream: &TcpStream, config: &TcpRelayConfig) -> io::Result<()> {
    // Each record is a datagram someone waits for: no Nagle delay.
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(config.write_timeout))
}

fn spawn_writer(
    name: String,
    rx: Receiver<Vec<u8>>,
    stream: TcpStream,
    counters: Arc<impl AsRef<Counters> + Send + Sync + 'static>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(WRITER_STACK_BYTES)
        .spawn(move || write_records(&rx, stream, (*counters).as_ref()))
}

// ---------------------------------------------------------------- server

/// Accepts relay connections (on a root or moon) on a TCP port, IPv4 and,
/// where the system has it, IPv6.
///
/// Stopped by [`stop`](Self::stop) or when dropped.
pub struct TcpRelayServer {
    inner: Arc<ServerInner>,
    port: u16,
    /// Clones of the listeners, to shut them down; each accept thread owns one.
    listeners: Vec<TcpListener>,
    accept_threads: Mutex<Vec<JoinHandle<()>>>,
}

struct ServerInner {
    handler: Arc<dyn TcpRelayHandler>,
    config: TcpRelayConfig,
    conns: RwLock<HashMap<u32, ServerConn>>,
    next_id: AtomicU32,
    stopping: AtomicBool,
    counters: Counters,
}

impl AsRef<Counters> for ServerInner {
    fn as_ref(&self) -> &Counters {
        &self.counters
    }
}

struct ServerConn {
    tx: SyncSender<Vec<u8>>,
    /// A clone of the socket, to shut it down.
    stream: TcpStream,
    peer: SocketAddr,
}

impl TcpRelayServer {
    /// Listens on `0.0.0.0:port` and `[::]:port` (IPv6 optional: a warning
    /// if it fails) with the default limits. Port 0 picks a free port (see
    /// [`local_port`](Self::local_port)).
    pub fn start(port: u16, handler: Arc<dyn TcpRelayHandler>) -> io::Result<TcpRelayServer> {
        Self::start_with_config(port, TcpRelayConfig::default(), handler)
    }

    /// [`start`](Self::start) with other limits and timers.
    pub fn start_with_config(
        port: u16,
        config: TcpRelayConfig,
        handler: Arc<dyn TcpRelayHandler>,
    ) -> io::Result<TcpRelayServer> {
        let v4_addr = SocketAddr::from(([0, 0, 0, 0], port));
        // std sets SO_REUSEADDR, so a restart does not wait out TIME_WAIT.
        let v4 = TcpListener::bind(v4_addr)
            .map_err(|e| io::Error::new(e.kind(), format!("TCP {v4_addr}: {e}")))?;
        let port = v4.local_addr()?.port();
        let mut listeners = vec![v4];
        match bind_v6(port) {
            Ok(v6) => listeners.push(v6),
            Err(e) => warn!(port, error = %e, "no IPv6 TCP relay listener; IPv4 only"),
        }
        Self::start_listeners(listeners, port, config, handler)
    }

    /// Listens on each of `addrs` (those that fail are skipped with a
    /// warning; an error only if none binds). A node's local API holds
    /// `127.0.0.1:<port>`, so a root's relay listens on its interface
    /// addresses rather than the wildcard.
    pub fn start_on(
        addrs: &[SocketAddr],
        config: TcpRelayConfig,
        handler: Arc<dyn TcpRelayHandler>,
    ) -> io::Result<TcpRelayServer> {
        let mut listeners = Vec::new();
        let mut last_error = None;
        for addr in addrs {
            match TcpListener::bind(addr) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    warn!(%addr, error = %e, "no TCP relay listener here");
                    last_error = Some(io::Error::new(e.kind(), format!("TCP {addr}: {e}")));
                }
            }
        }
        if listeners.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to listen on")
            }));
        }
        let port = listeners[0].local_addr()?.port();
        Self::start_listeners(listeners, port, config, handler)
    }

    fn start_listeners(
        listeners: Vec<TcpListener>,
        port: u16,
        config: TcpRelayConfig,
        handler: Arc<dyn TcpRelayHandler>,
    ) -> io::Result<TcpRelayServer> {
        let inner = Arc::new(ServerInner {
            handler,
            config,
            conns: RwLock::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            stopping: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let mut server = TcpRelayServer {
            inner,
            port,
            listeners: Vec::new(),
            accept_threads: Mutex::new(Vec::new()),
        };
        for listener in listeners {
            let clone = listener.try_clone()?;
            let inner = server.inner.clone();
            let name = if clone.local_addr()?.is_ipv4() {
                "vnet-tcp-accept4"
            } else {
                "vnet-tcp-accept6"
            };
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || inner.accept_loop(&listener))?;
            server.listeners.push(clone);
            server.lock_threads().push(thread);
        }
        debug!(port, "TCP relay listening");
        Ok(server)
    }

    /// The port listened on.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Queues `datagram` for connection `conn`, without blocking. False if
    /// it was not queued: the connection is unknown or closed, its queue is
    /// full (counted in [`TcpRelayStats::dropped`]), or the datagram is empty
    /// or longer than a record carries.
    pub fn send(&self, conn: u32, datagram: &[u8]) -> bool {
        let mut record = Vec::new();
        if let Err(e) = encode_record(datagram, &mut record) {
            debug!(conn, error = %e, "TCP relay datagram not sent");
            return false;
        }
        let conns = self.inner.read_conns();
        let Some(c) = conns.get(&conn) else {
            return false;
        };
        match c.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                Counters::add(&self.inner.counters.dropped, 1);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Whether connection `conn` is open.
    pub fn is_open(&self, conn: u32) -> bool {
        self.inner.read_conns().contains_key(&conn)
    }

    /// The remote address of connection `conn`.
    pub fn peer_addr(&self, conn: u32) -> Option<SocketAddr> {
        self.inner.read_conns().get(&conn).map(|c| c.peer)
    }

    /// Closes connection `conn` (the handler hears `closed` from its reader
    /// thread). False if it is not open.
    pub fn close(&self, conn: u32) -> bool {
        match self.inner.read_conns().get(&conn) {
            Some(c) => {
                let _ = c.stream.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> TcpRelayStats {
        self.inner.counters.snapshot()
    }

    /// Stops listening and closes every connection; returns once the accept
    /// threads have ended. Connection threads end right after, each calling
    /// the handler's `closed`.
    pub fn stop(&self) {
        if self.inner.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for listener in &self.listeners {
            // On Linux this wakes a thread blocked in accept().
            if let Err(e) = socket2::SockRef::from(listener).shutdown(Shutdown::Read) {
                debug!(error = %e, "TCP relay listener shutdown");
            }
            // Elsewhere (or should that fail) a connection of our own wakes it.
            if let Ok(addr) = listener.local_addr() {
                let wake = if addr.is_ipv4() {
                    SocketAddr::from(([127, 0, 0, 1], addr.port()))
                } else {
                    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], addr.port()))
                };
                let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
            }
        }
        for c in self.inner.write_conns().values() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *self.lock_threads());
        for t in threads {
            let _ = t.join();
        }
        debug!(port = self.port, "TCP relay stopped");
    }

    fn lock_threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.accept_threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TcpRelayServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An IPv6-only listener on `port`, so it can share the port with IPv4.
fn bind_v6(port: u16) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::from(([0u16; 8], port));
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

impl ServerInner {
    // A poisoned lock means a panic in a handler; the map is still consistent.
    fn read_conns(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, ServerConn>> {
        self.conns.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_conns(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, ServerConn>> {
        self.conns.write().unwrap_or_else(|p| p.into_inner())
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        loop {
            let accepted = listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of file descriptors, say: do not spin.
                    warn!(error = %e, "TCP relay accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Registers an accepted connection and starts its threads; dropping
    /// `stream` instead closes it.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let clones = prepare_stream(&stream, &self.config)
            .and_then(|()| Ok((stream.try_clone()?, stream.try_clone()?)));
        let (for_map, for_writer) = match clones {
            Ok(c) => c,
            Err(e) => {
                debug!(%peer, error = %e, "TCP relay connection setup failed");
                return;
            }
        };
        let (tx, rx) = sync_channel(self.config.queue_records);
        let id = {
            let mut conns = self.write_conns();
            // Checked under the lock, so stop() sees every connection it must close.
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if conns.len() >= self.config.max_connections {
                Counters::add(&self.counters.connections_refused, 1);
                debug!(%peer, "TCP relay connection refused: too many");
                return;
            }
            let id = self.fresh_id(&conns);
            conns.insert(
                id,
                ServerConn {
                    tx,
                    stream: for_map,
                    peer,
                },
            );
            id
        };
        Counters::add(&self.counters.connections_open, 1);
        debug!(conn = id, %peer, "TCP relay connection");
        if let Err(e) = spawn_writer(format!("vnet-tcp-w{id}"), rx, for_writer, self.clone()) {
            warn!(error = %e, "TCP relay writer thread");
            self.remove(id);
            return;
        }
        let inner = self.clone();
        let reader = std::thread::Builder::new()
            .name(format!("vnet-tcp-r{id}"))
            .spawn(move || {
                let mut stream = stream;
                let handler = inner.handler.clone();
                let end = read_records(
                    &mut stream,
                    inner.config.idle_timeout,
                    &inner.counters,
                    |payload| handler.datagram(id, peer, payload),
                );
                debug!(conn = id, %peer, reason = %end, "TCP relay connection closed");
                inner.remove(id);
                handler.closed(id);
            });
        if let Err(e) = reader {
            warn!(error = %e, "TCP relay reader thread");
            self.remove(id);
        }
    }

    /// An id not in use and, in practice, never used before: 4 billion
    /// connections go by before the counter wraps.
    fn fresh_id(&self, conns: &HashMap<u32, ServerConn>) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Forgets connection `id` and shuts its socket down; dropping the
    /// queue's sender ends the writer thread.
    fn remove(&self, id: u32) {
        if let Some(c) = self.write_conns().remove(&id) {
            let _ = c.stream.shutdown(Shutdown::Both);
            self.counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------- client

/// One outgoing relay connection, to a root.
///
/// [`send`](Self::send) connects as needed, in the background: the caller
/// never waits. After a failure the next attempt waits 1 s, doubling up to
/// 30 s, and is only made when `send` is called again. Dropping the client
/// closes the connection.
pub struct TcpRelayClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    handler: Arc<dyn TcpRelayClientHandler>,
    config: TcpRelayConfig,
    state: Mutex<ClientState>,
    counters: Counters,
}

impl AsRef<Counters> for ClientInner {
    fn as_ref(&self) -> &Counters {
        &self.counters
    }
}

#[derive(Default)]
struct ClientState {
    conn: Option<ClientConn>,
    /// Numbers connections, so a thread of a replaced one leaves the new one alone.
    generation: u64,
    retry: Retry,
}

struct ClientConn {
    to: SocketAddr,
    generation: u64,
    link: Link,
}

enum Link {
    /// Records waiting for the connection.
    Connecting(VecDeque<Vec<u8>>),
    Connected {
        tx: SyncSender<Vec<u8>>,
        /// A clone of the socket, to shut it down.
        stream: TcpStream,
    },
}

/// Backoff after failures to connect (or connections that ended before
/// bringing a single record, e.g. a server at its limit).
#[derive(Default)]
struct Retry {
    addr: Option<SocketAddr>,
    delay: Duration,
    not_before: Option<Instant>,
}

impl Retry {
    fn failed(&mut self, to: SocketAddr, config: &TcpRelayConfig, now: Instant) {
        self.delay = if self.addr == Some(to) && self.not_before.is_some() {
            (self.delay * 2).min(config.retry_max)
        } else {
            config.retry_min
        };
        self.addr = Some(to);
        self.not_before = Some(now + self.delay);
    }

    fn blocks(&self, to: SocketAddr, now: Instant) -> bool {
        self.addr == Some(to) && self.not_before.is_some_and(|t| now < t)
    }
}

impl ClientState {
    /// Drops the connection (made or being made); its threads end on their own.
    fn drop_conn(&mut self) {
        if let Some(ClientConn {
            link: Link::Connected { stream, .. },
            ..
        }) = self.conn.take()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn is_current(&self, generation: u64) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.generation == generation)
    }
}

impl TcpRelayClient {
    /// A client with the default limits and timers, not connected.
    pub fn new(handler: Arc<dyn TcpRelayClientHandler>) -> TcpRelayClient {
        Self::with_config(TcpRelayConfig::default(), handler)
    }

    /// [`new`](Self::new) with other limits and timers.
    pub fn with_config(
        config: TcpRelayConfig,
        handler: Arc<dyn TcpRelayClientHandler>,
    ) -> TcpRelayClient {
        TcpRelayClient {
            inner: Arc::new(ClientInner {
                handler,
                config,
                state: Mutex::new(ClientState::default()),
                counters: Counters::default(),
            }),
        }
    }

    /// Queues `datagram` for the server at `to`, without blocking. Not
    /// connected there (or connected elsewhere, which is then dropped):
    /// starts connecting unless waiting out a backoff, and holds a few
    /// datagrams until connected. False if the datagram was not queued
    /// (queue full, backing off, empty or too long).
    pub fn send(&self, to: SocketAddr, datagram: &[u8]) -> bool {
        let mut record = Vec::new();
        if let Err(e) = encode_record(datagram, &mut record) {
            debug!(%to, error = %e, "TCP relay datagram not sent");
            return false;
        }
        let inner = &self.inner;
        let mut st = inner.lock_state();
        if st.conn.as_ref().is_some_and(|c| c.to != to) {
            debug!(%to, "TCP relay moving to another server");
            st.drop_conn();
        }
        let Some(conn) = st.conn.as_mut() else {
            if st.retry.blocks(to, Instant::now()) {
                Counters::add(&inner.counters.dropped, 1);
                return false;
            }
            return self.connect(st, to, record);
        };
        let queued = match &mut conn.link {
            Link::Connecting(q) => {
                if q.len() < inner.config.connecting_queue_records {
                    q.push_back(record);
                    true
                } else {
                    false
                }
            }
            Link::Connected { tx, .. } => tx.try_send(record).is_ok(),
        };
        if !queued {
            Counters::add(&inner.counters.dropped, 1);
        }
        queued
    }

    /// Starts connecting to `to` with `record` queued (`st` locked, so two
    /// senders do not both start).
    fn connect(
        &self,
        mut st: MutexGuard<'_, ClientState>,
        to: SocketAddr,
        record: Vec<u8>,
    ) -> bool {
        let inner = &self.inner;
        let generation = {
            st.generation += 1;
            let generation = st.generation;
            st.conn = Some(ClientConn {
                to,
                generation,
                link: Link::Connecting(VecDeque::from([record])),
            });
            drop(st);
            generation
        };
        let thread_inner = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("vnet-tcp-client".into())
            .spawn(move || thread_inner.run(to, generation));
        if let Err(e) = spawned {
            warn!(error = %e, "TCP relay client thread");
            let mut st = inner.lock_state();
            if st.is_current(generation) {
                st.conn = None;
            }
            Counters::add(&inner.counters.dropped, 1);
            return false;
        }
        true
    }

    /// Drops the connection, made or being made.
    pub fn close(&self) {
        self.inner.lock_state().drop_conn();
    }

    /// The server connected to (not while still connecting).
    pub fn connected_to(&self) -> Option<SocketAddr> {
        match &self.inner.lock_state().conn {
            Some(ClientConn {
                to,
                link: Link::Connected { .. },
                ..
            }) => Some(*to),
            _ => None,
        }
    }

    /// Whether a connection is established.
    pub fn is_connected(&self) -> bool {
        self.connected_to().is_some()
    }

    /// The counters.
    pub fn stats(&self) -> TcpRelayStats {
        self.inner.counters.snapshot()
    }
}

impl Drop for TcpRelayClient {
    fn drop(&mut self) {
        self.close();
    }
}

impl ClientInner {
    fn lock_state(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's thread: connects, starts the writer, then reads.
    fn run(self: &Arc<Self>, to: SocketAddr, generation: u64) {
        let connected =
            TcpStream::connect_timeout(&to, self.config.connect_timeout).and_then(|s| {
                prepare_stream(&s, &self.config)?;
                let clones = (s.try_clone()?, s.try_clone()?);
                Ok((s, clones))
            });
        let (mut stream, (for_state, for_writer)) = match connected {
            Ok(c) => c,
            Err(e) => {
                debug!(%to, error = %e, "TCP relay connect failed");
                let mut st = self.lock_state();
                if st.is_current(generation) {
                    st.conn = None;
                    st.retry.failed(to, &self.config, Instant::now());
                }
                return;
            }
        };
        let (tx, rx) = sync_channel(self.config.queue_records);
        {
            let mut st = self.lock_state();
            let Some(conn) = st.conn.as_mut().filter(|c| c.generation == generation) else {
                // Closed or replaced while connecting.
                return;
            };
            if let Link::Connecting(queue) = &mut conn.link {
                for record in queue.drain(..) {
                    if tx.try_send(record).is_err() {
                        Counters::add(&self.counters.dropped, 1);
                    }
                }
            }
            conn.link = Link::Connected {
                tx,
                stream: for_state,
            };
        }
        Counters::add(&self.counters.connections_open, 1);
        debug!(%to, "TCP relay connected");
        if let Err(e) = spawn_writer("vnet-tcp-client-w".into(), rx, for_writer, self.clone()) {
            warn!(error = %e, "TCP relay writer thread");
            let _ = stream.shutdown(Shutdown::Both);
        }
        let mut got_any = false;
        let end = read_records(
            &mut stream,
            self.config.idle_timeout,
            &self.counters,
            |payload| {
                if !got_any {
                    // The server answers: a sound connection, forget past failures.
                    got_any = true;
                    self.lock_state().retry = Retry::default();
                }
                self.handler.datagram(to, payload);
            },
        );
        debug!(%to, reason = %end, "TCP relay disconnected");
        let _ = stream.shutdown(Shutdown::Both);
        {
            let mut st = self.lock_state();
            if st.is_current(generation) {
                st.conn = None;
                if !got_any {
                    st.retry.failed(to, &self.config, Instant::now());
                }
            }
        }
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.handler.disconnected(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tls_record::TLS_RECORD_MAX_PAYLOAD_BYTES;
    use std::sync::mpsc::{self, Sender};
    use std::sync::{OnceLock, Weak};

    const WAIT: Duration = Duration::from_secs(10);

    #[derive(Debug, PartialEq)]
    enum ServerEvent {
        Datagram(u32, Vec<u8>),
        Closed(u32),
    }

    /// Reports what it hears; echoes datagrams back when given the server.
    struct ServerHandler {
        events: Mutex<Sender<ServerEvent>>,
        echo: OnceLock<Weak<TcpRelayServer>>,
    }

    impl TcpRelayHandler for ServerHandler {
        fn datagram(&self, conn: u32, from: SocketAddr, bytes: &mut [u8]) {
            assert!(from.ip().is_loopback());
            if let Some(server) = self.echo.get().and_then(Weak::upgrade) {
                server.send(conn, bytes);
            }
            let _ = self
                .events
                .lock()
                .unwrap()
                .send(ServerEvent::Datagram(conn, bytes.to_vec()));
        }

        fn closed(&self, conn: u32) {
            let _ = self.events.lock().unwrap().send(ServerEvent::Closed(conn));
        }
    }

    fn server(
        port: u16,
        config: TcpRelayConfig,
        echo: bool,
    ) -> (Arc<TcpRelayServer>, Receiver<ServerEvent>) {
        let (tx, rx) = mpsc::channel();
        let handler = Arc::new(ServerHandler {
            events: Mutex::new(tx),
            echo: OnceLock::new(),
        });
        let server = Arc::new(
            TcpRelayServer::start_with_config(port, config, handler.clone()).expect("start"),
        );
        if echo {
            let _ = handler.echo.set(Arc::downgrade(&server));
        }
        (server, rx)
    }

    #[derive(Debug, PartialEq)]
    enum ClientEvent {
        Datagram(SocketAddr, Vec<u8>),
        Disconnected(SocketAddr),
    }

    struct ClientHandler(Mutex<Sender<ClientEvent>>);

    impl TcpRelayClientHandler for ClientHandler {
        fn datagram(&self, from: SocketAddr, bytes: &mut [u8]) {
            let _ = self
                .0
                .lock()
                .unwrap()
                .send(ClientEvent::Datagram(from, bytes.to_vec()));
        }

        fn disconnected(&self, from: SocketAddr) {
            let _ = self.0.lock().unwrap().send(ClientEvent::Disconnected(from));
        }
    }

    fn client(config: TcpRelayConfig) -> (TcpRelayClient, Receiver<ClientEvent>) {
        let (tx, rx) = mpsc::channel();
        let client = TcpRelayClient::with_config(config, Arc::new(ClientHandler(Mutex::new(tx))));
        (client, rx)
    }

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(payload, &mut out).unwrap();
        out
    }

    /// Connects a plain socket and sends one record, returning the server's id for it.
    fn raw_peer(port: u16, events: &Receiver<ServerEvent>) -> (TcpStream, u32) {
        let mut s = TcpStream::connect(loopback(port)).unwrap();
        s.write_all(&record(b"hello")).unwrap();
        match events.recv_timeout(WAIT).unwrap() {
            ServerEvent::Datagram(id, bytes) => {
                assert_eq!(bytes, b"hello");
                (s, id)
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    /// Reads until the server closes the connection.
    fn expect_closed_by_server(s: &mut TcpStream) {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("connection not closed: {e}"),
            }
        }
    }

    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    #[test]
    fn tcp_echo_of_many_sizes() {
        let (server, _events) = server(0, TcpRelayConfig::default(), true);
        let to = loopback(server.local_port());
        let (client, replies) = client(TcpRelayConfig::default());
        let max = TLS_RECORD_MAX_PAYLOAD_BYTES;
        let mut sizes = vec![1, 2, 5, 100, 1432, 1500, 9000, max - 1, max];
        sizes.extend((0..1000).map(|i| (i * 7919) % max + 1));
        // The first datagram starts the connection.
        assert!(client.send(to, &payload(0, sizes[0])));
        wait_until("connected", || client.is_connected());
        assert_eq!(client.connected_to(), Some(to));
        let mut expect = vec![payload(0, sizes[0])];
        for (i, &len) in sizes.iter().enumerate().skip(1) {
            let p = payload(i, len);
            assert!(client.send(to, &p));
            expect.push(p);
            // Keep within the queues: this test is about content, not drops.
            if i % 200 == 0 || i == sizes.len() - 1 {
                for want in expect.drain(..) {
                    match replies.recv_timeout(WAIT).unwrap() {
                        ClientEvent::Datagram(from, got) => {
                            assert_eq!(from, to);
                            assert_eq!(got.len(), want.len());
                            assert!(got == want);
                        }
                        e => panic!("unexpected {e:?}"),
                    }
                }
            }
        }
        let n = sizes.len() as u64;
        // Counters trail the handler calls and the writes a little.
        wait_until("client counted", || {
            let c = client.stats();
            c.records_out == n && c.records_in == n
        });
        let c = client.stats();
        assert_eq!((c.records_in, c.records_out, c.dropped), (n, n, 0));
        assert_eq!(c.connections_open, 1);
        wait_until("server counted", || {
            let s = server.stats();
            s.records_out == n && s.records_in == n
        });
        let s = server.stats();
        assert_eq!((s.records_in, s.dropped, s.connections_open), (n, 0, 1));
    }

    #[test]
    fn tcp_non_application_data_record_disconnects() {
        let (server, events) = server(0, TcpRelayConfig::default(), false);
        let (mut s, id) = raw_peer(server.local_port(), &events);
        // A TLS handshake record: not ours.
        s.write_all(&[0x16, 0x03, 0x03, 0x00, 0x01, 0x00]).unwrap();
        expect_closed_by_server(&mut s);
        assert_eq!(events.recv_timeout(WAIT).unwrap(), ServerEvent::Closed(id));
        assert_eq!(server.stats().framing_errors, 1);
        wait_until("connection counted out", || {
            server.stats().connections_open == 0
        });
        assert!(!server.is_open(id));
    }

    #[test]
    fn tcp_send_to_closed_connection_fails() {
        let (server, events) = server(0, TcpRelayConfig::default(), false);
        let (mut s, id) = raw_peer(server.local_port(), &events);
        assert!(server.is_open(id));
        assert!(server.peer_addr(id).is_some_and(|a| a.ip().is_loopback()));
        assert!(server.send(id, b"to you"));
        let mut buf = vec![0u8; record(b"to you").len()];
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, record(b"to you"));
        assert!(!server.send(id.wrapping_add(1000), b"nobody"));
        assert!(!server.send(id, b""));
        drop(s);
        assert_eq!(events.recv_timeout(WAIT).unwrap(), ServerEvent::Closed(id));
        assert!(!server.send(id, b"gone"));
        // Ids are not reused.
        let (_s2, id2) = raw_peer(server.local_port(), &events);
        assert_ne!(id2, id);
    }

    #[test]
    fn tcp_client_reconnects_after_server_restart() {
        let (first, _events) = server(0, TcpRelayConfig::default(), true);
        let port = first.local_port();
        let to = loopback(port);
        let (client, replies) = client(TcpRelayConfig::default());
        assert!(client.send(to, b"one"));
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Datagram(to, b"one".to_vec())
        );
        first.stop();
        drop(first);
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Disconnected(to)
        );
        assert!(!client.is_connected());
        let (_second, _events) = server(port, TcpRelayConfig::default(), true);
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no reply after restart");
            client.send(to, b"two");
            match replies.recv_timeout(Duration::from_millis(100)) {
                Ok(ClientEvent::Datagram(from, bytes)) => {
                    assert_eq!((from, bytes.as_slice()), (to, &b"two"[..]));
                    break;
                }
                Ok(e) => panic!("unexpected {e:?}"),
                Err(_) => {}
            }
        }
        assert_eq!(client.connected_to(), Some(to));
    }

    #[test]
    fn tcp_unread_connection_does_not_block_send() {
        let config = TcpRelayConfig {
            queue_records: 64,
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let (_s, id) = raw_peer(server.local_port(), &events);
        // The peer never reads: socket buffers fill, then the queue.
        let big = vec![0xab; TLS_RECORD_MAX_PAYLOAD_BYTES];
        let started = Instant::now();
        let mut refused = 0;
        for _ in 0..2000 {
            let t = Instant::now();
            if !server.send(id, &big) {
                refused += 1;
            }
            assert!(t.elapsed() < Duration::from_secs(1), "send blocked");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(refused > 0);
        assert_eq!(server.stats().dropped, refused);
        assert!(server.is_open(id));
    }

    #[test]
    fn tcp_idle_connection_is_closed() {
        let config = TcpRelayConfig {
            idle_timeout: Duration::from_millis(300),
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let (mut s, id) = raw_peer(server.local_port(), &events);
        // Bytes that never make a record do not count as activity.
        s.write_all(&[0x17, 0x03]).unwrap();
        expect_closed_by_server(&mut s);
        assert_eq!(events.recv_timeout(WAIT).unwrap(), ServerEvent::Closed(id));
        assert_eq!(server.stats().framing_errors, 0);
    }

    #[test]
    fn tcp_connection_limit() {
        let config = TcpRelayConfig {
            max_connections: 1,
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let port = server.local_port();
        let (_a, a) = raw_peer(port, &events);
        let mut b = TcpStream::connect(loopback(port)).unwrap();
        expect_closed_by_server(&mut b);
        assert_eq!(server.stats().connections_refused, 1);
        assert!(server.send(a, b"still here"));
    }

    #[test]
    fn tcp_stop_closes_connections() {
        let (server, events) = server(0, TcpRelayConfig::default(), false);
        let port = server.local_port();
        let (mut s, id) = raw_peer(port, &events);
        server.stop();
        expect_closed_by_server(&mut s);
        assert_eq!(events.recv_timeout(WAIT).unwrap(), ServerEvent::Closed(id));
        assert!(!server.send(id, b"x"));
        assert!(TcpStream::connect(loopback(port)).is_err());
    }

    #[test]
    fn tcp_client_backs_off_after_failure() {
        let config = TcpRelayConfig {
            retry_min: Duration::from_millis(500),
            ..TcpRelayConfig::default()
        };
        // A port nobody listens on.
        let port = TcpListener::bind(loopback(0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let to = loopback(port);
        let (client, _replies) = client(config);
        assert!(client.send(to, b"x"));
        // Queued while connecting; refused once the attempt fails.
        wait_until("backoff", || !client.send(to, b"x"));
        let failed_at = Instant::now();
        assert!(!client.is_connected());
        assert!(!client.send(to, b"x"));
        // After the backoff the next send tries again.
        wait_until("retry", || client.send(to, b"x"));
        assert!(failed_at.elapsed() >= Duration::from_millis(400));
        // A second failure waits twice as long.
        wait_until("backoff again", || !client.send(to, b"x"));
        let failed_again = Instant::now();
        wait_until("retry again", || client.send(to, b"x"));
        assert!(failed_again.elapsed() >= Duration::from_millis(900));
        assert!(client.stats().dropped > 0);
    }

    #[test]
    fn tcp_client_close() {
        let (server, _events) = server(0, TcpRelayConfig::default(), true);
        let to = loopback(server.local_port());
        let (client, replies) = client(TcpRelayConfig::default());
        assert!(client.send(to, b"ping"));
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Datagram(to, b"ping".to_vec())
        );
        client.close();
        assert_eq!(client.connected_to(), None);
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Disconnected(to)
        );
        wait_until("server saw it", || server.stats().connections_open == 0);
        assert_eq!(client.stats().connections_open, 0);
    }
}
