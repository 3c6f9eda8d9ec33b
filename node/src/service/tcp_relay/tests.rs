//! The TCP relay's server and client against real sockets on loopback.

use super::client::*;
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
    let server =
        Arc::new(TcpRelayServer::start_with_config(port, config, handler.clone()).expect("start"));
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
        aes_gcm: false,
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
        if s.write_all(std::slice::from_ref(byte)).is_err() || server.stats().closed_slow_record > 0
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
