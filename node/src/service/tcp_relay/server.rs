//! The root's side of the TCP relay.
//!
//! One thread running a single-threaded tokio runtime serves every
//! connection, so the threads of a root never grow with its connections and
//! a connection costs one socket. What a stranger can hold is bounded:
//! connections per source IP (per /64 for IPv6) and in total, a HELLO as the
//! first record within seconds, a record once begun complete within seconds
//! (trickled bytes never keep a slot), and what waits to be sent in bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, warn};

use super::{Counters, TcpRelayConfig, TcpRelayHandler, TcpRelayStats, bind_v6, is_hello};
use crate::core::constants::{
    TCP_RELAY_IPV6_PREFIX_LEN_BITS, TLS_RECORD_HEADER_LEN_BYTES, TLS_RECORD_MAX_PAYLOAD_BYTES,
};
use crate::core::tls_record::{RecordDecoder, RecordError, encode_record};

/// Bytes read from a socket at once (into one buffer shared by all
/// connections), so an idle connection holds no read buffer.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A write buffer larger than this is not kept once written.
const KEEP_WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (out of file descriptors, say): do not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

thread_local! {
    /// The relay thread's read buffer.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK_BYTES]);
}

/// Accepts relay connections (on a root or moon) on a TCP port, IPv4 and,
/// where the system has it, IPv6.
///
/// Stopped by [`stop`](Self::stop) or when dropped.
pub struct TcpRelayServer {
    inner: Arc<ServerInner>,
    port: u16,
    stop: Arc<Notify>,
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

struct ServerInner {
    handler: Arc<dyn TcpRelayHandler>,
    config: TcpRelayConfig,
    table: Mutex<Table>,
    next_id: AtomicU32,
    counters: Counters,
}

/// The open connections, and how many each source holds.
#[derive(Default)]
struct Table {
    conns: HashMap<u32, Arc<Conn>>,
    /// Connections per source (IPv4 address or IPv6 prefix); no zero entries.
    per_source: HashMap<IpAddr, usize>,
}

/// One connection, as [`TcpRelayServer::send`] and `close` reach it.
struct Conn {
    peer: SocketAddr,
    source: IpAddr,
    out: Mutex<Outbound>,
    /// Something to write.
    wake: Notify,
    /// Close it now.
    close: Notify,
}

/// Records waiting to be written, encoded back to back.
#[derive(Default)]
struct Outbound {
    pending: Vec<u8>,
    /// Records in `pending`.
    records: u64,
    /// Bytes being written now (taken out of `pending`).
    in_flight: usize,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("closed by the peer")]
    Eof,
    #[error("closed by us")]
    Closed,
    #[error("no HELLO in time")]
    NoHello,
    #[error("first record is not a HELLO")]
    NotHello,
    #[error("a record took too long to complete")]
    SlowRecord,
    #[error("no record for {0:?}")]
    Idle(Duration),
    #[error("framing error: {0}")]
    Framing(#[from] RecordError),
    #[error("read: {0}")]
    Read(io::Error),
    #[error("write: {0}")]
    Write(io::Error),
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
        let v4 = std::net::TcpListener::bind(v4_addr)
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
            match std::net::TcpListener::bind(addr) {
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

    /// Starts the relay thread, which serves `listeners` until stopped.
    fn start_listeners(
        listeners: Vec<std::net::TcpListener>,
        port: u16,
        config: TcpRelayConfig,
        handler: Arc<dyn TcpRelayHandler>,
    ) -> io::Result<TcpRelayServer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listeners = {
            // Registering with the runtime's reactor needs its context.
            let _context = runtime.enter();
            listeners
                .into_iter()
                .map(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        let inner = Arc::new(ServerInner {
            handler,
            config,
            table: Mutex::new(Table::default()),
            next_id: AtomicU32::new(1),
            counters: Counters::default(),
        });
        let stop = Arc::new(Notify::new());
        let thread = {
            let inner = inner.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("vnet-tcp-relay".into())
                .spawn(move || {
                    runtime.block_on(async {
                        for listener in listeners {
                            tokio::spawn(inner.clone().accept_loop(listener));
                        }
                        stop.notified().await;
                    });
                    // Dropping the runtime drops every connection's task,
                    // and so its socket; their handlers hear of it here.
                    drop(runtime);
                    inner.forget_all();
                })?
        };
        debug!(port, "TCP relay listening");
        Ok(TcpRelayServer {
            inner,
            port,
            stop,
            stopping: AtomicBool::new(false),
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
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
        if datagram.is_empty() || datagram.len() > TLS_RECORD_MAX_PAYLOAD_BYTES {
            debug!(conn, len = datagram.len(), "TCP relay datagram not sent");
            return false;
        }
        let Some(c) = self.inner.lock_table().conns.get(&conn).cloned() else {
            return false;
        };
        {
            let mut out = c.lock_out();
            let record_len = TLS_RECORD_HEADER_LEN_BYTES + datagram.len();
            if out.pending.len() + out.in_flight + record_len > self.inner.config.queue_bytes {
                Counters::add(&self.inner.counters.dropped, 1);
                return false;
            }
            if encode_record(datagram, &mut out.pending).is_err() {
                return false;
            }
            out.records += 1;
        }
        c.wake.notify_one();
        true
    }

    /// Bytes queued for connection `conn`, those being written included.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self, conn: u32) -> Option<usize> {
        let c = self.inner.lock_table().conns.get(&conn).cloned()?;
        let out = c.lock_out();
        Some(out.pending.len() + out.in_flight)
    }

    /// Whether connection `conn` is open.
    pub fn is_open(&self, conn: u32) -> bool {
        self.inner.lock_table().conns.contains_key(&conn)
    }

    /// The remote address of connection `conn`.
    pub fn peer_addr(&self, conn: u32) -> Option<SocketAddr> {
        self.inner.lock_table().conns.get(&conn).map(|c| c.peer)
    }

    /// Closes connection `conn` (the handler hears `closed` from the relay
    /// thread). False if it is not open.
    pub fn close(&self, conn: u32) -> bool {
        match self.inner.lock_table().conns.get(&conn) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> TcpRelayStats {
        self.inner.counters.snapshot()
    }

    /// Stops listening and closes every connection, the handler hearing
    /// `closed` for each; returns once that is done (unless called from a
    /// handler, on the relay thread itself).
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop.notify_one();
        if std::thread::current().id() == self.thread_id {
            return;
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        debug!(port = self.port, "TCP relay stopped");
    }
}

impl Drop for TcpRelayServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The key a connection's source is counted under: the IPv4 address, or the
/// IPv6 address cut to its [`TCP_RELAY_IPV6_PREFIX_LEN_BITS`] prefix.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let bits = TCP_RELAY_IPV6_PREFIX_LEN_BITS.min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl Conn {
    fn lock_out(&self) -> MutexGuard<'_, Outbound> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves what is pending into `batch` (empty), to be written; the
    /// number of records moved.
    fn take(&self, batch: &mut Vec<u8>) -> u64 {
        let mut out = self.lock_out();
        std::mem::swap(&mut out.pending, batch);
        out.in_flight = batch.len();
        std::mem::take(&mut out.records)
    }

    /// The batch taken is written.
    fn written(&self) {
        self.lock_out().in_flight = 0;
    }
}

impl ServerInner {
    // A poisoned lock means a panic in a handler; the table is still consistent.
    fn lock_table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    warn!(error = %e, "TCP relay accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Registers an accepted connection and starts serving it, or closes it
    /// at once (with a reset, so it leaves no TIME_WAIT here) when its
    /// source or the root holds as many as allowed.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let source = source_key(peer.ip());
        let conn = Arc::new(Conn {
            peer,
            source,
            out: Mutex::new(Outbound::default()),
            wake: Notify::new(),
            close: Notify::new(),
        });
        let admitted = {
            let mut table = self.lock_table();
            let held = table.per_source.get(&source).copied().unwrap_or(0);
            if table.conns.len() >= self.config.max_connections {
                Counters::add(&self.counters.connections_refused, 1);
                None
            } else if held >= self.config.max_connections_per_ip {
                Counters::add(&self.counters.connections_refused_per_ip, 1);
                None
            } else {
                table.per_source.insert(source, held + 1);
                let id = self.fresh_id(&table.conns);
                table.conns.insert(id, conn.clone());
                Some(id)
            }
        };
        let Some(id) = admitted else {
            debug!(%peer, "TCP relay connection refused: too many");
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        };
        Counters::add(&self.counters.connections_open, 1);
        debug!(conn = id, %peer, "TCP relay connection");
        // Each record is a datagram someone waits for: no Nagle delay.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(conn = id, error = %e, "TCP_NODELAY");
        }
        tokio::spawn(self.clone().serve(id, stream, conn));
    }

    /// An id not in use and, in practice, never used before: 4 billion
    /// connections go by before the counter wraps.
    fn fresh_id(&self, conns: &HashMap<u32, Arc<Conn>>) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Serves one connection until it ends, then forgets it.
    async fn serve(self: Arc<Self>, id: u32, stream: TcpStream, conn: Arc<Conn>) {
        let end = tokio::select! {
            end = self.read_loop(id, conn.peer, &stream) => end,
            end = self.write_loop(&conn, &stream) => end,
            () = conn.close.notified() => End::Closed,
        };
        debug!(conn = id, peer = %conn.peer, reason = %end, "TCP relay connection closed");
        let _ = socket2::SockRef::from(&stream).shutdown(Shutdown::Both);
        drop(stream);
        self.forget(id);
        self.handler.closed(id);
    }

    /// Reads records and hands them to the handler until the connection
    /// ends; enforces the HELLO, record and idle deadlines.
    async fn read_loop(&self, id: u32, peer: SocketAddr, stream: &TcpStream) -> End {
        let config = &self.config;
        let counters = &self.counters;
        let mut decoder = RecordDecoder::new();
        let opened = Instant::now();
        let mut hello_seen = false;
        let mut last_record = opened;
        // When the record now incomplete began (its first bytes came).
        let mut partial_since: Option<Instant> = None;
        loop {
            let record_deadline = partial_since.map(|t| t + config.record_timeout);
            let deadline = if hello_seen {
                let idle = last_record + config.idle_timeout;
                record_deadline.map_or(idle, |r| r.min(idle))
            } else {
                opened + config.hello_timeout
            };
            tokio::select! {
                ready = stream.readable() => {
                    if let Err(e) = ready {
                        return End::Read(e);
                    }
                }
                () = sleep_until(deadline) => {
                    return if !hello_seen {
                        Counters::add(&counters.closed_no_hello, 1);
                        End::NoHello
                    } else if record_deadline.is_some_and(|r| r <= Instant::now()) {
                        Counters::add(&counters.closed_slow_record, 1);
                        End::SlowRecord
                    } else {
                        Counters::add(&counters.closed_idle, 1);
                        End::Idle(config.idle_timeout)
                    };
                }
            }
            let read = READ_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                let n = stream.try_read(&mut buf)?;
                decoder.push(&buf[..n]);
                Ok::<_, io::Error>(n)
            });
            match read {
                Ok(0) => return End::Eof,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return End::Read(e),
            }
            let now = Instant::now();
            let mut got = false;
            while let Some(record) = decoder.next_record() {
                let payload = match record {
                    Ok(p) => p,
                    Err(e) => {
                        Counters::add(&counters.framing_errors, 1);
                        return End::Framing(e);
                    }
                };
                if !hello_seen {
                    if !is_hello(payload) {
                        Counters::add(&counters.closed_no_hello, 1);
                        return End::NotHello;
                    }
                    hello_seen = true;
                }
                got = true;
                Counters::add(&counters.records_in, 1);
                self.handler.datagram(id, peer, payload);
            }
            if got {
                last_record = now;
            }
            partial_since = match decoder.pending_len() {
                0 => None,
                _ if got => Some(now),
                _ => partial_since.or(Some(now)),
            };
        }
    }

    /// Writes what [`TcpRelayServer::send`] queues until a write fails or
    /// the peer takes no bytes for the write timeout.
    async fn write_loop(&self, conn: &Conn, stream: &TcpStream) -> End {
        let mut batch = Vec::new();
        loop {
            conn.wake.notified().await;
            loop {
                let records = conn.take(&mut batch);
                if records == 0 {
                    break;
                }
                if let Err(e) = write_all(stream, &batch, self.config.write_timeout).await {
                    return End::Write(e);
                }
                conn.written();
                Counters::add(&self.counters.records_out, records);
                batch.clear();
                if batch.capacity() > KEEP_WRITE_BUFFER_BYTES {
                    batch = Vec::new();
                }
            }
        }
    }

    /// Forgets connection `id`.
    fn forget(&self, id: u32) {
        let mut table = self.lock_table();
        if let Some(c) = table.conns.remove(&id) {
            release(&mut table.per_source, c.source);
            Counters::sub_open(&self.counters);
        }
    }

    /// After the runtime is gone: forgets every connection left, telling the handler.
    fn forget_all(&self) {
        let ids: Vec<u32> = {
            let mut table = self.lock_table();
            table.per_source.clear();
            table.conns.drain().map(|(id, _)| id).collect()
        };
        for id in ids {
            Counters::sub_open(&self.counters);
            self.handler.closed(id);
        }
    }
}

/// One connection fewer from `source`.
fn release(per_source: &mut HashMap<IpAddr, usize>, source: IpAddr) {
    if let Some(n) = per_source.get_mut(&source) {
        *n -= 1;
        if *n == 0 {
            per_source.remove(&source);
        }
    }
}

/// Writes all of `buf`; fails if the peer takes no bytes for `limit`.
async fn write_all(stream: &TcpStream, mut buf: &[u8], limit: Duration) -> io::Result<()> {
    while !buf.is_empty() {
        match timeout(limit, stream.writable()).await {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer reads nothing",
                ));
            }
            Ok(ready) => ready?,
        }
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_counted_per_ipv4_address_and_ipv6_prefix() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(source_key(a), a);
        let b: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let c: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let d: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(b), source_key(c));
        assert_eq!(source_key(b), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(source_key(b), source_key(d));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), a);
    }
}
