//! The TCP relay: datagrams carried over TCP when UDP is blocked.
//!
//! A node that hears nothing over UDP from any root connects to one over TCP
//! ([`TcpRelayClient`]) and sends its datagrams through the connection; roots
//! and moons accept such connections on their UDP port number
//! ([`TcpRelayServer`]). Each datagram is one record framed like TLS 1.2
//! application data (see [`crate::core::tls_record`]); the first record of a
//! connection is a HELLO.
//!
//! The server faces strangers: one thread serves all its connections (see
//! [`server`]). The client makes one connection, so it keeps blocking
//! sockets and plain threads, like the UDP packet path: a reader thread,
//! which calls the handler for every datagram, and a writer thread, which
//! drains a bounded queue. Sending never blocks: when a queue is full the
//! datagram is dropped and counted, as a congested UDP path would drop it.

mod server;

pub use server::TcpRelayServer;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, warn};

use crate::core::constants::{
    TCP_RELAY_CONNECT_TIMEOUT_MS, TCP_RELAY_CONNECTING_QUEUE_RECORDS, TCP_RELAY_HELLO_TIMEOUT_MS,
    TCP_RELAY_IDLE_TIMEOUT_MS, TCP_RELAY_MAX_CONNECTIONS, TCP_RELAY_MAX_CONNECTIONS_PER_IP,
    TCP_RELAY_QUEUE_BYTES, TCP_RELAY_QUEUE_RECORDS, TCP_RELAY_RECORD_TIMEOUT_MS,
    TCP_RELAY_RETRY_MAX_MS, TCP_RELAY_RETRY_MIN_MS, TCP_RELAY_WRITE_TIMEOUT_MS,
};
use crate::core::tls_record::{RecordDecoder, RecordError, encode_record};
use crate::core::verb::Verb;
use crate::core::wire::{Datagram, VERB_OFFSET, classify};

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
/// server's one relay thread.
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
    /// Most connections a server holds from one IPv4 address or IPv6 /64.
    pub max_connections_per_ip: usize,
    /// A server closes a connection whose first record (a HELLO) is not in by then.
    pub hello_timeout: Duration,
    /// A server closes a connection whose record, once begun, is not complete by then.
    pub record_timeout: Duration,
    /// A connection that brings no record for this long is closed.
    pub idle_timeout: Duration,
    /// A connection that accepts no bytes for this long while we write is closed.
    pub write_timeout: Duration,
    /// Bytes a server queues for sending per connection; more are dropped.
    pub queue_bytes: usize,
    /// Records a client queues for sending; more are dropped.
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
            max_connections_per_ip: TCP_RELAY_MAX_CONNECTIONS_PER_IP,
            hello_timeout: Duration::from_millis(TCP_RELAY_HELLO_TIMEOUT_MS),
            record_timeout: Duration::from_millis(TCP_RELAY_RECORD_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(TCP_RELAY_IDLE_TIMEOUT_MS),
            write_timeout: Duration::from_millis(TCP_RELAY_WRITE_TIMEOUT_MS),
            queue_bytes: TCP_RELAY_QUEUE_BYTES,
            queue_records: TCP_RELAY_QUEUE_RECORDS,
            connecting_queue_records: TCP_RELAY_CONNECTING_QUEUE_RECORDS,
            connect_timeout: Duration::from_millis(TCP_RELAY_CONNECT_TIMEOUT_MS),
            retry_min: Duration::from_millis(TCP_RELAY_RETRY_MIN_MS),
            retry_max: Duration::from_millis(TCP_RELAY_RETRY_MAX_MS),
        }
    }
}

/// Counters of a server or client, as read by [`TcpRelayServer::stats`] and
/// [`TcpRelayClient::stats`] (a root's are in `/status` as `tcpRelayStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRelayStats {
    /// Records received and handed to the handler.
    pub records_in: u64,
    /// Records written to the socket.
    pub records_out: u64,
    /// Datagrams not sent: queue full, or (client) no connection to be had
    /// now or the first datagram of one not a HELLO.
    pub dropped: u64,
    /// Connections closed because a record was malformed.
    pub framing_errors: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections refused by a server at its connection limit.
    pub connections_refused: u64,
    /// Connections refused by a server: their IPv4 address or IPv6 /64 held its limit.
    pub connections_refused_per_ip: u64,
    /// Connections a server closed: no HELLO as the first record in time.
    pub closed_no_hello: u64,
    /// Connections a server closed: a record begun was not complete in time.
    pub closed_slow_record: u64,
    /// Connections a server closed: no record for the idle timeout.
    pub closed_idle: u64,
}

#[derive(Debug, Default)]
struct Counters {
    records_in: AtomicU64,
    records_out: AtomicU64,
    dropped: AtomicU64,
    framing_errors: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    connections_refused_per_ip: AtomicU64,
    closed_no_hello: AtomicU64,
    closed_slow_record: AtomicU64,
    closed_idle: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TcpRelayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TcpRelayStats {
            records_in: get(&self.records_in),
            records_out: get(&self.records_out),
            dropped: get(&self.dropped),
            framing_errors: get(&self.framing_errors),
            connections_open: get(&self.connections_open),
            connections_refused: get(&self.connections_refused),
            connections_refused_per_ip: get(&self.connections_refused_per_ip),
            closed_no_hello: get(&self.closed_no_hello),
            closed_slow_record: get(&self.closed_slow_record),
            closed_idle: get(&self.closed_idle),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_open(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `datagram` is a HELLO as far as its header says (key slot 0, in
/// clear, verb HELLO): what a relay connection must begin with. Nothing is
/// authenticated here; the node checks the rest.
pub(crate) fn is_hello(datagram: &[u8]) -> bool {
    matches!(
        classify(datagram),
        Ok(Datagram::Packet { header, .. }) if header.key_slot == 0 && header.clear
    ) && datagram.get(VERB_OFFSET) == Some(&Verb::Hello.code())
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
    /// starts connecting if `datagram` is a HELLO, unless waiting out a
    /// backoff, and holds a few datagrams until connected. False if the
    /// datagram was not queued (queue full, backing off, not a HELLO while
    /// not connected, empty or too long).
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
            // A server closes a connection that does not begin with a HELLO;
            // the node says HELLO to a root it does not hear from every second.
            if st.retry.blocks(to, Instant::now()) || !is_hello(datagram) {
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
    use crate::core::address::Address;
    use crate::core::constants::{PACKET_HEADER_LEN_BYTES, TLS_RECORD_MAX_PAYLOAD_BYTES};
    use crate::core::wire::PacketHeader;
    use std::net::{IpAddr, Ipv4Addr};
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

    /// A datagram whose header says HELLO (key slot 0, clear, verb HELLO),
    /// followed by `tag`: what a relay connection must begin with.
    fn hello(tag: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; PACKET_HEADER_LEN_BYTES];
        PacketHeader {
            counter: 1,
            dest: Address::from_u64(0x11_1111_1111).unwrap(),
            src: Address::from_u64(0x22_2222_2222).unwrap(),
            hops: 0,
            key_slot: 0,
            more_fragments: false,
            clear: true,
        }
        .encode_into(&mut d);
        d.push(Verb::Hello.code());
        d.extend_from_slice(tag);
        assert!(is_hello(&d));
        d
    }

    /// A plain socket from `source` (a loopback address) to the server.
    fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        s.connect(&loopback(port).into()).unwrap();
        s.into()
    }

    /// Sends a HELLO on `s`; the server's id for the connection.
    fn say_hello(s: &mut TcpStream, events: &Receiver<ServerEvent>) -> u32 {
        s.write_all(&record(&hello(b"hi"))).unwrap();
        match events.recv_timeout(WAIT).unwrap() {
            ServerEvent::Datagram(id, bytes) => {
                assert_eq!(bytes, hello(b"hi"));
                id
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    /// Connects a plain socket and sends a HELLO, returning the server's id for it.
    fn raw_peer(port: u16, events: &Receiver<ServerEvent>) -> (TcpStream, u32) {
        let mut s = TcpStream::connect(loopback(port)).unwrap();
        let id = say_hello(&mut s, events);
        (s, id)
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
        let mut sizes = vec![1, 1, 2, 5, 100, 1432, 1500, 9000, max - 1, max];
        sizes.extend((0..1000).map(|i| (i * 7919) % max + 1));
        // The first datagram, a HELLO, starts the connection.
        let first = hello(&payload(0, 100));
        assert!(client.send(to, &first));
        wait_until("connected", || client.is_connected());
        assert_eq!(client.connected_to(), Some(to));
        let mut expect = vec![first];
        for (i, &len) in sizes.iter().enumerate().skip(1) {
            let p = payload(i, len);
            assert!(client.send(to, &p));
            expect.push(p);
            // Keep within the queues: this test is about content, not drops.
            if i % 10 == 0 || i == sizes.len() - 1 {
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
        assert!(client.send(to, &hello(b"one")));
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Datagram(to, hello(b"one"))
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
            client.send(to, &hello(b"two"));
            match replies.recv_timeout(Duration::from_millis(100)) {
                Ok(ClientEvent::Datagram(from, bytes)) => {
                    assert_eq!((from, bytes), (to, hello(b"two")));
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
        let (server, events) = server(0, TcpRelayConfig::default(), false);
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
        let stats = server.stats();
        assert_eq!((stats.framing_errors, stats.closed_idle), (0, 1));
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
        let x = hello(b"x");
        assert!(client.send(to, &x));
        // Queued while connecting; refused once the attempt fails.
        wait_until("backoff", || !client.send(to, &x));
        let failed_at = Instant::now();
        assert!(!client.is_connected());
        assert!(!client.send(to, &x));
        // After the backoff the next send tries again.
        wait_until("retry", || client.send(to, &x));
        assert!(failed_at.elapsed() >= Duration::from_millis(400));
        // A second failure waits twice as long.
        wait_until("backoff again", || !client.send(to, &x));
        let failed_again = Instant::now();
        wait_until("retry again", || client.send(to, &x));
        assert!(failed_again.elapsed() >= Duration::from_millis(900));
        assert!(client.stats().dropped > 0);
    }

    #[test]
    fn tcp_client_close() {
        let (server, _events) = server(0, TcpRelayConfig::default(), true);
        let to = loopback(server.local_port());
        let (client, replies) = client(TcpRelayConfig::default());
        assert!(client.send(to, &hello(b"ping")));
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Datagram(to, hello(b"ping"))
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

    #[test]
    fn tcp_client_connects_only_with_a_hello() {
        let (server, _events) = server(0, TcpRelayConfig::default(), true);
        let to = loopback(server.local_port());
        let (client, replies) = client(TcpRelayConfig::default());
        // Not a HELLO: the server would close the connection, so none is made.
        assert!(!client.send(to, b"not a hello"));
        assert_eq!(client.stats().dropped, 1);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(server.stats().connections_open, 0);
        assert!(client.send(to, &hello(b"first")));
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Datagram(to, hello(b"first"))
        );
        // Connected: anything goes.
        assert!(client.send(to, b"then this"));
        assert_eq!(
            replies.recv_timeout(WAIT).unwrap(),
            ClientEvent::Datagram(to, b"then this".to_vec())
        );
    }

    #[test]
    fn tcp_per_ip_cap() {
        let config = TcpRelayConfig {
            max_connections_per_ip: 2,
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let port = server.local_port();
        let one = Ipv4Addr::new(127, 0, 0, 1);
        let (_a, a) = raw_peer(port, &events);
        let (b, b_id) = raw_peer(port, &events);
        // A third from the same address is closed at once, HELLO or not.
        let mut c = connect_from(one, port);
        let _ = c.write_all(&record(&hello(b"c")));
        expect_closed_by_server(&mut c);
        assert_eq!(server.stats().connections_refused_per_ip, 1);
        assert_eq!(server.stats().connections_refused, 0);
        // Another address is let in, and the first ones stay.
        let mut d = connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
        let d_id = say_hello(&mut d, &events);
        assert_eq!(
            server.peer_addr(d_id).map(|p| p.ip()),
            Some(IpAddr::from([127, 0, 0, 2]))
        );
        assert!(server.send(a, b"still here"));
        assert_eq!(server.stats().connections_open, 3);
        // A slot freed is a slot again.
        drop(b);
        assert_eq!(
            events.recv_timeout(WAIT).unwrap(),
            ServerEvent::Closed(b_id)
        );
        let mut e = connect_from(one, port);
        say_hello(&mut e, &events);
        assert_eq!(server.stats().connections_refused_per_ip, 1);
    }

    #[test]
    fn tcp_total_cap() {
        let config = TcpRelayConfig {
            max_connections: 3,
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let port = server.local_port();
        let mut held = Vec::new();
        for i in 1..=3 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, i), port);
            say_hello(&mut s, &events);
            held.push(s);
        }
        let mut over = connect_from(Ipv4Addr::new(127, 0, 0, 4), port);
        expect_closed_by_server(&mut over);
        let stats = server.stats();
        assert_eq!(stats.connections_refused, 1);
        assert_eq!(stats.connections_refused_per_ip, 0);
        assert_eq!(stats.connections_open, 3);
    }

    #[test]
    fn tcp_no_hello_within_the_deadline_is_closed() {
        let config = TcpRelayConfig {
            hello_timeout: Duration::from_millis(500),
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let port = server.local_port();
        // Silent.
        let started = Instant::now();
        let mut silent = TcpStream::connect(loopback(port)).unwrap();
        expect_closed_by_server(&mut silent);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(matches!(
            events.recv_timeout(WAIT).unwrap(),
            ServerEvent::Closed(_)
        ));
        // Bytes, but no complete record.
        let mut partial = TcpStream::connect(loopback(port)).unwrap();
        let hello_record = record(&hello(b"late"));
        partial.write_all(&hello_record[..10]).unwrap();
        expect_closed_by_server(&mut partial);
        // A complete record, not a HELLO: closed at once, never handed on.
        let started = Instant::now();
        let mut wrong = TcpStream::connect(loopback(port)).unwrap();
        wrong.write_all(&record(b"hello")).unwrap();
        expect_closed_by_server(&mut wrong);
        assert!(started.elapsed() < Duration::from_millis(400));
        assert!(matches!(
            events.recv_timeout(WAIT).unwrap(),
            ServerEvent::Closed(_)
        ));
        assert!(matches!(
            events.recv_timeout(WAIT).unwrap(),
            ServerEvent::Closed(_)
        ));
        let stats = server.stats();
        assert_eq!((stats.closed_no_hello, stats.records_in), (3, 0));
        assert_eq!(stats.connections_open, 0);
    }

    #[test]
    fn tcp_trickle_of_one_byte_per_second_is_closed() {
        let config = TcpRelayConfig {
            record_timeout: Duration::from_secs(2),
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let (mut s, id) = raw_peer(server.local_port(), &events);
        // One record of 100 bytes, a byte a second: it would take 105 s,
        // within the idle timeout if bytes counted as activity.
        let slow = record(&[0x5a; 100]);
        let started = Instant::now();
        for byte in &slow {
            if s.write_all(std::slice::from_ref(byte)).is_err()
                || server.stats().closed_slow_record > 0
            {
                break;
            }
            assert!(started.elapsed() < WAIT, "trickle not closed");
            std::thread::sleep(Duration::from_secs(1));
        }
        assert_eq!(events.recv_timeout(WAIT).unwrap(), ServerEvent::Closed(id));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
            "closed after {elapsed:?}"
        );
        let stats = server.stats();
        assert_eq!((stats.closed_slow_record, stats.closed_idle), (1, 0));
        assert!(!server.is_open(id));
    }

    #[test]
    fn tcp_outbound_queue_is_bounded_in_bytes() {
        let queue_bytes = 64 * 1024;
        let config = TcpRelayConfig {
            queue_bytes,
            ..TcpRelayConfig::default()
        };
        let (server, events) = server(0, config, false);
        let (_s, id) = raw_peer(server.local_port(), &events);
        // The peer never reads: socket buffers fill, then the queue.
        let big = vec![0xcd; TLS_RECORD_MAX_PAYLOAD_BYTES];
        let mut refused = 0;
        let mut sent = 0u64;
        while refused < 100 {
            if server.send(id, &big) {
                sent += 1;
            } else {
                refused += 1;
            }
            let queued = server.queued_bytes(id).unwrap();
            assert!(queued <= queue_bytes, "{queued} bytes queued");
            assert!(sent < 100_000, "never refused");
        }
        // Each refused datagram is counted.
        assert_eq!(server.stats().dropped, refused);
        assert!(sent > 0);
        assert!(server.is_open(id));
    }
}
