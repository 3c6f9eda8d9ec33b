//! The caller's buffer for what the core sends: datagrams are built and
//! sealed in it in place, frames from the TAP are read into it with room for
//! the headers in front, and datagrams to the same place in a row are kept
//! together as one transmit with a segment size, so a driver can hand them to
//! the kernel in one call (UDP GSO). Reused between rounds: nothing is
//! allocated per frame once it has grown.

use std::net::SocketAddr;
use std::ops::Range;

use crate::constants::{FRAME_HEADROOM_BYTES, MAX_SEGMENTS_PER_TRANSMIT, MAX_TRANSMIT_LEN_BYTES};
use crate::local_socket::LocalSocket;
use crate::network_id::NetworkId;

/// One or more datagrams to send to one place.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// By which of our sockets.
    pub socket: LocalSocket,
    /// Where to.
    pub to: SocketAddr,
    /// Each datagram's length; the last may be shorter.
    pub segment_size: usize,
    range: Range<usize>,
}

/// A transmit with its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TransmitView<'a> {
    /// By which of our sockets.
    pub socket: LocalSocket,
    /// Where to.
    pub to: SocketAddr,
    /// Each datagram's length; the last may be shorter.
    pub segment_size: usize,
    /// The datagrams, back to back.
    pub contents: &'a [u8],
}

impl<'a> TransmitView<'a> {
    /// The datagrams one by one.
    pub fn datagrams(&self) -> std::slice::Chunks<'a, u8> {
        self.contents.chunks(self.segment_size.max(1))
    }
}

/// Outgoing datagrams, and Ethernet frames for the TAP devices of joined
/// networks; cleared by the driver after sending and writing them.
#[derive(Debug, Default)]
pub struct Outbox {
    buffer: Vec<u8>,
    transmits: Vec<Transmit>,
    frames: Vec<(NetworkId, Range<usize>)>,
    /// Where the room handed out by [`Outbox::frame_room`] starts (headroom
    /// included), until the core takes the frame or something else is queued.
    open_frame: Option<usize>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for one frame read from a TAP device, at most `max_len` bytes,
    /// with [`FRAME_HEADROOM_BYTES`] kept free in front of it so the frame
    /// is sealed where it lies. Read into it, then pass the length read to
    /// [`crate::node::Node::handle_tap_read`]; asking again, or queueing
    /// anything else, gives the room back.
    pub fn frame_room(&mut self, max_len: usize) -> &mut [u8] {
        self.close_frame_room();
        let start = self.buffer.len();
        self.buffer
            .resize(start + FRAME_HEADROOM_BYTES + max_len, 0);
        self.open_frame = Some(start);
        &mut self.buffer[start + FRAME_HEADROOM_BYTES..]
    }

    /// The frame read into the room: where its headroom starts. The frame
    /// is `len` bytes after [`FRAME_HEADROOM_BYTES`]; the buffer ends there.
    pub(crate) fn take_frame(&mut self, len: usize) -> Option<usize> {
        let start = self.open_frame.take()?;
        let end = start + FRAME_HEADROOM_BYTES + len;
        if end > self.buffer.len() {
            self.buffer.truncate(start);
            return None;
        }
        self.buffer.truncate(end);
        Some(start)
    }

    fn close_frame_room(&mut self) {
        if let Some(start) = self.open_frame.take() {
            self.buffer.truncate(start);
        }
    }

    /// The buffer's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// The buffer, to build a datagram at its end and then
    /// [`Outbox::commit`] it (or truncate it back).
    pub(crate) fn buffer_mut(&mut self) -> &mut Vec<u8> {
        self.close_frame_room();
        &mut self.buffer
    }

    /// Queues `buffer[start..]`: datagrams of `segment_size` bytes back to
    /// back (the last may be shorter) to go out by `socket` to `to`. Joins
    /// the previous transmit when that goes to the same place, lies just
    /// before and holds only full segments, these are of its segment size
    /// (or are one datagram no longer), and the limits of one transmit allow.
    pub(crate) fn commit(
        &mut self,
        socket: LocalSocket,
        to: SocketAddr,
        start: usize,
        segment_size: usize,
    ) {
        let end = self.buffer.len();
        if start >= end || segment_size == 0 {
            return;
        }
        if let Some(last) = self.transmits.last_mut() {
            let last_len = last.range.len();
            let segments =
                last_len.div_ceil(last.segment_size) + (end - start).div_ceil(segment_size);
            let joins = last.socket == socket
                && last.to == to
                && last.range.end == start
                && (last.segment_size == segment_size || end - start <= last.segment_size)
                && last_len % last.segment_size == 0
                && segments <= MAX_SEGMENTS_PER_TRANSMIT
                && end - last.range.start <= MAX_TRANSMIT_LEN_BYTES;
            if joins {
                last.range.end = end;
                return;
            }
        }
        self.transmits.push(Transmit {
            socket,
            to,
            segment_size,
            range: start..end,
        });
    }

    /// Queues a copy of one datagram to go out by `socket`.
    pub fn push(&mut self, socket: LocalSocket, to: SocketAddr, bytes: &[u8]) {
        let buffer = self.buffer_mut();
        let start = buffer.len();
        buffer.extend_from_slice(bytes);
        self.commit(socket, to, start, bytes.len());
    }

    /// The queued transmits, in order.
    pub fn transmits(&self) -> impl Iterator<Item = TransmitView<'_>> {
        self.transmits.iter().map(|t| TransmitView {
            socket: t.socket,
            to: t.to,
            segment_size: t.segment_size,
            contents: &self.buffer[t.range.clone()],
        })
    }

    /// The queued datagrams one by one, in order: socket, destination, bytes.
    pub fn iter(&self) -> impl Iterator<Item = (LocalSocket, SocketAddr, &[u8])> {
        self.transmits()
            .flat_map(|t| t.datagrams().map(move |d| (t.socket, t.to, d)))
    }

    /// Queues a frame for the TAP device of network `nwid`.
    pub fn push_frame(&mut self, nwid: NetworkId, frame: &[u8]) {
        let buffer = self.buffer_mut();
        let start = buffer.len();
        buffer.extend_from_slice(frame);
        self.frames.push((nwid, start..self.buffer.len()));
    }

    /// The queued frames for TAP devices, in order.
    pub fn frames(&self) -> impl Iterator<Item = (NetworkId, &[u8])> {
        self.frames
            .iter()
            .map(|(n, r)| (*n, &self.buffer[r.clone()]))
    }

    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.transmits()
            .map(|t| t.contents.len().div_ceil(t.segment_size))
            .sum()
    }

    /// Whether no datagram is queued.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
    }

    /// Bytes held (datagrams, frames and any open frame room).
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Forgets everything queued, keeping the memory.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.transmits.clear();
        self.frames.clear();
        self.open_frame = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn datagrams_to_one_place_in_a_row_share_a_transmit_until_a_short_one() {
        let mut out = Outbox::new();
        let s = LocalSocket::Primary;
        out.push(s, addr(1), &[1; 100]);
        out.push(s, addr(1), &[2; 100]);
        out.push(s, addr(1), &[3; 40]);
        // After a short one, a new transmit.
        out.push(s, addr(1), &[4; 100]);
        // Another destination, a new transmit.
        out.push(s, addr(2), &[5; 100]);
        // Longer than the segment size: a new transmit.
        out.push(s, addr(2), &[6; 120]);
        let t: Vec<_> = out.transmits().collect();
        assert_eq!(t.len(), 4);
        assert_eq!((t[0].segment_size, t[0].contents.len()), (100, 240));
        assert_eq!(t[0].datagrams().count(), 3);
        assert_eq!(t[1].contents, &[4; 100]);
        assert_eq!(t[3].segment_size, 120);
        assert_eq!(out.len(), 6);
        let lens: Vec<usize> = out.iter().map(|(_, _, d)| d.len()).collect();
        assert_eq!(lens, [100, 100, 40, 100, 100, 120]);
    }

    #[test]
    fn a_transmit_holds_at_most_its_segment_and_byte_limits() {
        let mut out = Outbox::new();
        for _ in 0..MAX_SEGMENTS_PER_TRANSMIT + 1 {
            out.push(LocalSocket::Primary, addr(1), &[0; 10]);
        }
        assert_eq!(out.transmits().count(), 2);
        out.clear();
        let big = vec![0; MAX_TRANSMIT_LEN_BYTES / 2 + 1];
        out.push(LocalSocket::Primary, addr(1), &big);
        out.push(LocalSocket::Primary, addr(1), &big);
        assert_eq!(out.transmits().count(), 2);
    }

    #[test]
    fn frame_room_is_given_back_unless_taken() {
        let mut out = Outbox::new();
        out.push(LocalSocket::Primary, addr(1), &[9; 10]);
        out.frame_room(1500)[..3].copy_from_slice(&[1, 2, 3]);
        // Not taken: queueing something else gives the room back.
        out.push_frame(NetworkId::from_u64(0x1234_5678_9a00_0001).unwrap(), &[7; 5]);
        assert_eq!(out.buffered_bytes(), 15);
        let room = out.frame_room(1500);
        room[..3].copy_from_slice(&[1, 2, 3]);
        let start = out.take_frame(3).unwrap();
        assert_eq!(start, 15);
        assert_eq!(out.buffered_bytes(), 15 + FRAME_HEADROOM_BYTES + 3);
        assert_eq!(out.take_frame(3), None);
        // A length beyond the room is refused and the room given back.
        out.frame_room(10);
        assert_eq!(out.take_frame(11), None);
        assert_eq!(out.buffered_bytes(), 15 + FRAME_HEADROOM_BYTES + 3);
    }
}
