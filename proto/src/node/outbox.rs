//! Datagrams the core wants sent, collected in one reused buffer so the
//! driver can send them in a batch without an allocation per packet.

use std::net::SocketAddr;
use std::ops::Range;

use crate::local_socket::LocalSocket;

/// One datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// By which of our sockets.
    pub socket: LocalSocket,
    /// Where to.
    pub to: SocketAddr,
    range: Range<usize>,
}

/// Outgoing datagrams, and Ethernet frames for the TAP devices of joined
/// networks; cleared by the driver after sending and writing them.
#[derive(Debug, Default)]
pub struct Outbox {
    buffer: Vec<u8>,
    transmits: Vec<Transmit>,
    frames: Vec<(crate::network_id::NetworkId, Range<usize>)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a datagram to go out by `socket`.
    pub fn push(&mut self, socket: LocalSocket, to: SocketAddr, bytes: &[u8]) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(bytes);
        self.transmits.push(Transmit {
            socket,
            to,
            range: start..self.buffer.len(),
        });
    }

    /// The queued datagrams, in order: socket, destination, bytes.
    pub fn iter(&self) -> impl Iterator<Item = (LocalSocket, SocketAddr, &[u8])> {
        self.transmits
            .iter()
            .map(|t| (t.socket, t.to, &self.buffer[t.range.clone()]))
    }

    /// Queues a frame for the TAP device of network `nwid`.
    pub fn push_frame(&mut self, nwid: crate::network_id::NetworkId, frame: &[u8]) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(frame);
        self.frames.push((nwid, start..self.buffer.len()));
    }

    /// The queued frames for TAP devices, in order.
    pub fn frames(&self) -> impl Iterator<Item = (crate::network_id::NetworkId, &[u8])> {
        self.frames
            .iter()
            .map(|(n, r)| (*n, &self.buffer[r.clone()]))
    }

    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.transmits.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
    }

    /// Forgets everything queued, keeping the memory.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.transmits.clear();
        self.frames.clear();
    }
}
