//! Datagrams the core wants sent, collected in one reused buffer so the
//! driver can send them in a batch without an allocation per packet.

use std::net::SocketAddr;
use std::ops::Range;

/// One datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    range: Range<usize>,
}

/// Outgoing datagrams; cleared by the driver after sending.
#[derive(Debug, Default)]
pub struct Outbox {
    buffer: Vec<u8>,
    transmits: Vec<Transmit>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a datagram.
    pub fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(bytes);
        self.transmits.push(Transmit {
            to,
            range: start..self.buffer.len(),
        });
    }

    /// The queued datagrams, in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.transmits
            .iter()
            .map(|t| (t.to, &self.buffer[t.range.clone()]))
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
    }
}
