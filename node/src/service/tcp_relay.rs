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
//! sockets and plain threads ([`client`]): a reader thread,
//! which calls the handler for every datagram, and a writer thread, which
//! drains a bounded queue. Sending never blocks: when a queue is full the
//! datagram is dropped and counted, as a congested UDP path would drop it.

mod client;
mod server;

pub use client::TcpRelayClient;
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

#[cfg(test)]
mod tests;
