//! The node's long-lived UDP sockets: the primary port (IPv4 on all
//! interfaces, and IPv6 v6-only on the same port where the system has
//! IPv6) and the port the gateway maps. Non-blocking, for the engine's poll.
//!
//! Batched both ways through quinn-udp: a transmit of same-size datagrams
//! goes out in one `sendmsg` with `UDP_SEGMENT` (GSO) where the kernel has
//! it, and reads take many datagrams per call (`recvmmsg`, with `UDP_GRO`
//! coalescing a peer's datagrams into one buffer). Socket buffers are raised
//! to [`SOCKET_BUFFER_BYTES`] so a burst is not dropped at the socket.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use mio::net::UdpSocket;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tracing::{debug, warn};

use crate::core::local_socket::LocalSocket;

/// Receive and send buffer asked for on each socket (the kernel's
/// `rmem_max`/`wmem_max` cap it unless the daemon may force it).
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Buffers filled by one batched read.
pub const RECV_BATCH_BUFFERS: usize = 8;
/// The most buffers one [`BatchedSocket::recv`] fills. A read that fills
/// fewer found the socket's queue empty: no error cuts a batch short (the
/// sockets do not ask for `IP_RECVERR`), and a datagram queued after it
/// raises a new readiness edge. So a reader stops there instead of paying a
/// read that only finds `EAGAIN`.
pub const RECV_BATCH_CAPACITY: usize = if RECV_BATCH_BUFFERS < quinn_udp::BATCH_SIZE {
    RECV_BATCH_BUFFERS
} else {
    quinn_udp::BATCH_SIZE
};
/// Bytes per receive buffer: room for the 64 datagrams of a full GRO batch.
const RECV_BUFFER_BYTES: usize = 64 * 1_500;

/// Why the sockets could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("UDP {addr}: {error}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub error: io::Error,
}

/// One socket and what quinn-udp knows of it (GSO segments, GRO).
pub struct BatchedSocket {
    /// The socket, registered with the engine's poll.
    pub socket: UdpSocket,
    state: UdpSocketState,
}

impl BatchedSocket {
    fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        raise_buffers(&socket, &state);
        let ipv6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        forbid_ip_fragmentation(&socket, ipv6);
        Ok(Self { socket, state })
    }

    /// Sends `contents`, datagrams of `segment_size` bytes back to back (the
    /// last may be shorter), to `to`: as few `sendmsg` calls as GSO allows.
    pub fn send(&self, to: SocketAddr, contents: &[u8], segment_size: usize) {
        let segment_size = segment_size.max(1);
        let per_call = segment_size * self.state.max_gso_segments().max(1);
        for chunk in contents.chunks(per_call) {
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: chunk,
                segment_size: (chunk.len() > segment_size).then_some(segment_size),
                src_ip: None,
            };
            match self
                .state
                .try_send(UdpSockRef::from(&self.socket), &transmit)
            {
                Ok(()) => {}
                // GSO refused (segments wider than the route's MTU, no
                // GSO on the device): send them one by one.
                Err(e)
                    if transmit.segment_size.is_some() && e.kind() != io::ErrorKind::WouldBlock =>
                {
                    for datagram in chunk.chunks(segment_size) {
                        self.send_one(to, datagram);
                    }
                }
                Err(e) => debug!(%to, error = %e, len = chunk.len(), "send failed; dropped"),
            }
        }
    }

    fn send_one(&self, to: SocketAddr, datagram: &[u8]) {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: datagram,
            segment_size: None,
            src_ip: None,
        };
        if let Err(e) = self
            .state
            .try_send(UdpSockRef::from(&self.socket), &transmit)
        {
            debug!(%to, error = %e, len = datagram.len(), "send failed; dropped");
        }
    }

    /// Reads what is waiting into `batch`: how many of its buffers were
    /// filled (`WouldBlock` when nothing was).
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let mut buffers = batch.buffers.chunks_exact_mut(RECV_BUFFER_BYTES);
        let mut slices: [IoSliceMut<'_>; RECV_BATCH_BUFFERS] =
            std::array::from_fn(|_| IoSliceMut::new(buffers.next().unwrap_or_default()));
        self.state
            .recv(UdpSockRef::from(&self.socket), &mut slices, &mut batch.meta)
    }
}

/// Raises a socket's buffers to [`SOCKET_BUFFER_BYTES`], past the system's
/// cap where the daemon is allowed to (`SO_RCVBUFFORCE`, CAP_NET_ADMIN).
fn raise_buffers(socket: &UdpSocket, state: &UdpSocketState) {
    let _ = state.set_recv_buffer_size(UdpSockRef::from(socket), SOCKET_BUFFER_BYTES);
    let _ = state.set_send_buffer_size(UdpSockRef::from(socket), SOCKET_BUFFER_BYTES);
    // The kernel reports twice what it grants (bookkeeping included).
    let short = |got: io::Result<usize>| got.map_or(true, |b| b < SOCKET_BUFFER_BYTES);
    if short(state.recv_buffer_size(UdpSockRef::from(socket))) {
        force_buffer(socket, libc::SO_RCVBUFFORCE);
    }
    if short(state.send_buffer_size(UdpSockRef::from(socket))) {
        force_buffer(socket, libc::SO_SNDBUFFORCE);
    }
    debug!(
        recv = ?state.recv_buffer_size(UdpSockRef::from(socket)).ok(),
        send = ?state.send_buffer_size(UdpSockRef::from(socket)).ok(),
        gso_segments = state.max_gso_segments(),
        gro_segments = state.gro_segments(),
        "UDP socket"
    );
}

/// Sets Don't Fragment on every datagram and ignores the kernel's path MTU
/// cache (`IP_PMTUDISC_PROBE`): the node discovers each path's MTU with its
/// own probes (PROTOCOL.md §3.10) and never relies on IP fragmentation, which
/// NATs and firewalls often drop. A datagram longer than the interface's
/// MTU fails to send (a probe too large, by design).
pub(crate) fn forbid_ip_fragmentation(socket: &impl std::os::fd::AsRawFd, ipv6: bool) {
    let set = |level, option, value: libc::c_int| {
        // SAFETY: a valid fd, and a c_int option value of the size given.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    let _ = set(
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    if ipv6 {
        let _ = set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
    }
}

fn force_buffer(socket: &UdpSocket, option: libc::c_int) {
    use std::os::fd::AsRawFd;
    let bytes = libc::c_int::try_from(SOCKET_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid fd, and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!(error = %io::Error::last_os_error(), "socket buffer stays at the system's cap");
    }
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic; libc has it for Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Binds `members` sockets to `addr` (IPv6 ones v6-only): one plain socket,
/// or, for more, an `SO_REUSEPORT` group (the first is bound first, at the
/// port it got for port 0) whose datagrams are steered by source IP. A port
/// already bound elsewhere is refused first, as a plain bind would be.
pub(crate) fn bind_group(addr: SocketAddr, members: usize) -> io::Result<Vec<BatchedSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let shared = members > 1;
    let socket = |addr: SocketAddr, reuse_port: bool| -> io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            // v6-only, so it can share the port with the IPv4 socket.
            s.set_only_v6(true)?;
        }
        s.set_reuse_port(reuse_port)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s)
    };
    if shared && addr.port() != 0 {
        // SO_REUSEPORT would let us join another daemon's group (same user):
        // the port must be free first.
        drop(socket(addr, false)?);
    }
    let bind = |addr: SocketAddr| -> io::Result<BatchedSocket> {
        BatchedSocket::new(UdpSocket::from_std(socket(addr, shared)?.into()))
    };
    let first = bind(addr)?;
    let at = first.socket.local_addr()?;
    let mut group = vec![first];
    for _ in 1..members {
        group.push(bind(at)?);
    }
    if shared && let Err(e) = steer_by_source_ip(&group[0].socket, at.is_ipv6(), members) {
        warn!(error = %e, "cannot steer datagrams by source IP; the kernel spreads them by address and port");
    }
    Ok(group)
}

/// Attaches to a reuseport group of `members` sockets a classic BPF program
/// that picks the socket by source IP (IPv4), or by the /64 of it (IPv6):
/// all of one source's datagrams reach one thread, in order, and its relay
/// budget is kept in one place.
fn steer_by_source_ip(
    socket: &impl std::os::fd::AsRawFd,
    ipv6: bool,
    members: usize,
) -> io::Result<()> {
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // Offsets into the IP header (SKF_NET_OFF): IPv4's source at 12, IPv6's
    // at 8 (its /64: the two words at 8 and 12).
    let net = |offset: i32| (libc::SKF_NET_OFF + offset) as u32;
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let modulo = op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, members as u32);
    let ret_a = op(libc::BPF_RET | libc::BPF_A, 0);
    let program = if ipv6 {
        vec![
            op(load, net(8)),
            op(libc::BPF_MISC | libc::BPF_TAX, 0),
            op(load, net(12)),
            op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0),
            modulo,
            ret_a,
        ]
    } else {
        vec![op(load, net(12)), modulo, ret_a]
    };
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: a valid fd, and a sock_fprog pointing at `program`, which
    // outlives the call (the kernel copies it).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Buffers one batched read fills, reused for every read.
pub struct RecvBatch {
    buffers: Vec<u8>,
    meta: [RecvMeta; RECV_BATCH_BUFFERS],
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            // Zeroed by the allocator (fresh pages): resident only once used.
            buffers: vec![0; RECV_BATCH_BUFFERS * RECV_BUFFER_BYTES],
            meta: [RecvMeta::default(); RECV_BATCH_BUFFERS],
        }
    }
}

impl RecvBatch {
    /// Buffer `i` of the last read: its source and its datagrams (several
    /// when the kernel coalesced them), each to be handled in place.
    pub fn datagrams(&mut self, i: usize) -> Option<(SocketAddr, std::slice::ChunksMut<'_, u8>)> {
        let (from, bytes, stride) = self.buffer(i)?;
        Some((from, bytes.chunks_mut(stride)))
    }

    /// Buffer `i` of the last read whole: its source, its bytes, and the
    /// length of each datagram in it (back to back; the last may be shorter).
    pub fn buffer(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize)> {
        let meta = self.meta.get(i)?;
        let start = i * RECV_BUFFER_BYTES;
        let len = meta.len.min(RECV_BUFFER_BYTES);
        let stride = if meta.stride == 0 {
            len.max(1)
        } else {
            meta.stride
        };
        let addr = match meta.addr {
            // A v6 socket reports IPv4 peers as mapped addresses.
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::from((v4, a.port())),
                None => meta.addr,
            },
            v4 => v4,
        };
        Some((addr, &mut self.buffers[start..start + len], stride))
    }
}

/// The primary and mapped sockets.
pub struct UdpSockets {
    /// Primary port, IPv4.
    pub v4: BatchedSocket,
    /// Primary port, IPv6 (v6-only), where the system has IPv6.
    pub v6: Option<BatchedSocket>,
    /// The socket the gateway maps, when port mapping is on.
    pub mapped: Option<BatchedSocket>,
}

/// A relay thread's own sockets on the primary port (members of the
/// port's `SO_REUSEPORT` group with the engine's).
pub struct RelaySockets {
    /// IPv4.
    pub v4: BatchedSocket,
    /// IPv6, where the engine has an IPv6 socket.
    pub v6: Option<BatchedSocket>,
}

impl UdpSockets {
    /// Binds the primary port and, given one, a socket for the gateway to
    /// map (the preferred port, else any). With `relay_threads`, the primary
    /// port is shared (`SO_REUSEPORT`) with that many more sockets of each
    /// family, one pair per relay thread, and each source IP (IPv6 /64) is
    /// steered to one of them; a port another process holds is refused as
    /// without them.
    pub fn bind(
        port: u16,
        mapped_port: Option<u16>,
        relay_threads: usize,
    ) -> Result<(Self, Vec<RelaySockets>), BindError> {
        let v4_addr = SocketAddr::from(([0, 0, 0, 0], port));
        let mut v4_group = bind_group(v4_addr, relay_threads + 1)
            .map_err(|error| BindError {
                addr: v4_addr,
                error,
            })?
            .into_iter();
        let v4 = v4_group.next().expect("a group of at least one");
        let v6_addr = SocketAddr::from(([0u16; 8], port));
        let mut v6_group = match bind_group(v6_addr, relay_threads + 1) {
            Ok(group) => Some(group.into_iter()),
            Err(e) => {
                warn!(error = %e, "no IPv6 socket; IPv4 only");
                None
            }
        };
        let v6 = v6_group.as_mut().and_then(|g| g.next());
        let relay = v4_group
            .map(|v4| RelaySockets {
                v4,
                v6: v6_group.as_mut().and_then(|g| g.next()),
            })
            .collect();
        let mapped = mapped_port.and_then(|p| {
            let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], p)))
                .or_else(|_| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))))
                .and_then(BatchedSocket::new);
            match s {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "no socket for port mapping");
                    None
                }
            }
        });
        Ok((Self { v4, v6, mapped }, relay))
    }

    /// Sends a transmit on the primary or mapped socket; false if `socket`
    /// is not one of these (punch and TCP relay sockets are sent elsewhere).
    pub fn send(
        &self,
        socket: LocalSocket,
        to: SocketAddr,
        contents: &[u8],
        segment_size: usize,
    ) -> bool {
        let udp = match (socket, to, &self.v6, &self.mapped) {
            (LocalSocket::Primary, SocketAddr::V6(_), Some(v6), _) => v6,
            (LocalSocket::Primary, _, _, _) => &self.v4,
            (LocalSocket::Mapped, SocketAddr::V4(_), _, Some(m)) => m,
            (LocalSocket::Mapped, _, _, _) => {
                debug!(%to, "no mapped socket for this address; datagram dropped");
                return true;
            }
            _ => return false,
        };
        udp.send(to, contents, segment_size);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (BatchedSocket, BatchedSocket) {
        let bind = || {
            BatchedSocket::new(UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap()
        };
        (bind(), bind())
    }

    /// Reads until `want` datagrams came (or a second passed).
    fn read_all(socket: &BatchedSocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < deadline {
            match socket.recv(&mut batch) {
                Ok(n) => {
                    for i in 0..n {
                        let (from, datagrams) = batch.datagrams(i).unwrap();
                        got.extend(datagrams.map(|d| (from, d.to_vec())));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    /// Sends `count` datagrams of distinct sizes (so nothing coalesces them)
    /// from `a` to `b`, one `sendmsg` each.
    fn send_separately(a: &BatchedSocket, b: &BatchedSocket, count: usize) {
        let to = b.socket.local_addr().unwrap();
        for i in 0..count {
            a.send(to, &vec![i as u8; 100 + i], 2_000);
        }
    }

    /// What the engine's reads rely on: reads fill whole batches while the
    /// queue lasts, a read that fills fewer than `RECV_BATCH_CAPACITY`
    /// buffers has emptied it, and a datagram queued afterwards makes the
    /// (edge-triggered) poll report the socket readable again.
    #[test]
    fn a_short_batch_empties_the_queue_and_the_next_datagram_raises_a_new_edge() {
        let (a, mut b) = pair();
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        let token = mio::Token(7);
        poll.registry()
            .register(&mut b.socket, token, mio::Interest::READABLE)
            .unwrap();
        let count = 2 * RECV_BATCH_CAPACITY + 3;
        send_separately(&a, &b, count);
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == token));
        let mut batch = RecvBatch::default();
        let mut fills = Vec::new();
        loop {
            let n = b.recv(&mut batch).unwrap();
            fills.push(n);
            if n < RECV_BATCH_CAPACITY {
                break;
            }
        }
        assert_eq!(fills, [RECV_BATCH_CAPACITY, RECV_BATCH_CAPACITY, 3]);
        // Nothing new: no edge (and no read that meets EAGAIN first).
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(events.is_empty(), "readable with nothing queued");
        // One more datagram: a new edge, and it is there to read.
        send_separately(&a, &b, 1);
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == token));
        assert_eq!(b.recv(&mut batch).unwrap(), 1);
        let after = b.recv(&mut batch).map(|_| ()).unwrap_err();
        assert_eq!(after.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_transmit_arrives_as_its_datagrams_in_order() {
        let (a, b) = pair();
        let to = b.socket.local_addr().unwrap();
        let from = a.socket.local_addr().unwrap();
        // 100 segments of 1,000 bytes and a short one: more than one GSO
        // call, each datagram numbered.
        let mut contents = Vec::new();
        for i in 0..100u16 {
            contents.extend(std::iter::repeat_n(i as u8, 998));
            contents.extend_from_slice(&i.to_be_bytes());
        }
        contents.extend_from_slice(b"tail");
        a.send(to, &contents, 1_000);
        let got = read_all(&b, 101);
        assert_eq!(got.len(), 101);
        for (i, (src, d)) in got.iter().take(100).enumerate() {
            assert_eq!(*src, from);
            assert_eq!(d.len(), 1_000);
            assert_eq!(d[998..], (i as u16).to_be_bytes());
        }
        assert_eq!(got[100].1, b"tail");
    }

    #[test]
    fn a_shared_port_steers_each_source_ip_to_one_socket() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let to = group[0].socket.local_addr().unwrap();
        assert_eq!(group[1].socket.local_addr().unwrap(), to);
        // Eight source ports on each of two source IPs: the kernel's own
        // hash (address and port) would spread each IP over both sockets.
        for ip in ["127.0.0.1", "127.0.0.2"] {
            for _ in 0..8 {
                let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
                s.send_to(ip.as_bytes(), to).unwrap();
            }
        }
        let got: Vec<Vec<(SocketAddr, Vec<u8>)>> = group.iter().map(|s| read_all(s, 8)).collect();
        // The source IP modulo the group's size picks the socket.
        for (i, want) in [(0, "127.0.0.2"), (1, "127.0.0.1")] {
            assert_eq!(got[i].len(), 8, "socket {i}: {:?}", got[i]);
            assert!(
                got[i]
                    .iter()
                    .all(|(from, d)| from.ip().to_string() == want && d == want.as_bytes()),
                "socket {i}: {:?}",
                got[i]
            );
        }
    }

    #[test]
    fn a_shared_port_held_by_another_socket_is_refused() {
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = other.local_addr().unwrap();
        assert_eq!(
            bind_group(at, 3).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }

    #[test]
    fn socket_buffers_are_raised() {
        let (a, _) = pair();
        let sock = UdpSockRef::from(&a.socket);
        let recv = a.state.recv_buffer_size(sock).unwrap();
        // Raised beyond the usual 208 KiB default (the kernel's cap here is
        // what a non-root test gets; as root the size is forced).
        assert!(recv > 212_992, "receive buffer {recv}");
    }
}
