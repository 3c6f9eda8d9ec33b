//! The caller's buffer for what the core sends: datagrams are built and
//! sealed in it in place, frames from the TAP are read into it with room for
//! the headers in front, and datagrams to the same place in a row are kept
//! together as one transmit with a segment size, so a driver can hand them to
//! the kernel in one call (UDP GSO). Reused between rounds: nothing is
//! allocated per frame once it has grown.

use std::net::SocketAddr;
use std::ops::Range;

use crate::constants::{
    MAX_SEGMENTS_PER_TRANSMIT, MAX_TRANSMIT_LEN_BYTES, OFFLOAD_FRAME_HEADROOM_BYTES,
    VIRTIO_NET_HDR_LEN_BYTES,
};
use crate::local_socket::LocalSocket;
use crate::network_id::NetworkId;
use crate::offload::Offload;

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

/// A frame for the TAP device of a joined network.
#[derive(Debug, Clone, Copy)]
pub struct TapFrame<'a> {
    /// The network.
    pub network: NetworkId,
    /// What is left to complete (checksum, segmentation).
    pub offload: Offload,
    /// The `virtio_net_hdr` for these offloads, then the frame.
    bytes: &'a [u8],
}

impl<'a> TapFrame<'a> {
    /// A frame behind its `virtio_net_hdr` (`bytes`), with its offloads.
    pub(crate) fn from_parts(network: NetworkId, offload: Offload, bytes: &'a [u8]) -> Self {
        Self {
            network,
            offload,
            bytes,
        }
    }

    /// The Ethernet frame.
    pub fn frame(&self) -> &'a [u8] {
        &self.bytes[VIRTIO_NET_HDR_LEN_BYTES..]
    }

    /// The frame behind its `virtio_net_hdr`: what a TAP device opened with
    /// `IFF_VNET_HDR` takes in one write.
    pub fn with_virtio_header(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Outgoing datagrams, and Ethernet frames for the TAP devices of joined
/// networks; cleared by the driver after sending and writing them.
#[derive(Debug, Default)]
pub struct Outbox {
    buffer: Vec<u8>,
    transmits: Vec<Transmit>,
    frames: Vec<(NetworkId, Offload, Range<usize>)>,
    /// The room handed out by [`Outbox::frame_room`]: where it starts
    /// (headroom included) and where the driver reads into, until the core
    /// takes the frame or something else is queued.
    open_frame: Option<(usize, usize)>,
    /// The allocation (address, capacity) whose every byte has been written
    /// once, so frame room can be handed out without zeroing it again.
    initialized: (usize, usize),
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for one frame read from a TAP device, at most `max_len` bytes
    /// (counting the `virtio_net_hdr` in front of it when the device was
    /// opened with `IFF_VNET_HDR`: `virtio_header`), with room kept free in
    /// front so the frame is sealed where it lies. Read into it, then pass
    /// the length read to [`crate::node::Node::handle_tap_read`]; asking
    /// again, or queueing anything else, gives the room back.
    pub fn frame_room(&mut self, max_len: usize, virtio_header: bool) -> &mut [u8] {
        self.close_frame_room();
        let start = self.buffer.len();
        // The frame itself always lands OFFLOAD_FRAME_HEADROOM_BYTES in.
        let read_at = start + OFFLOAD_FRAME_HEADROOM_BYTES
            - if virtio_header {
                VIRTIO_NET_HDR_LEN_BYTES
            } else {
                0
            };
        let end = read_at + max_len;
        self.grow_initialized(end);
        self.open_frame = Some((start, read_at));
        &mut self.buffer[read_at..end]
    }

    /// Makes the buffer `len` bytes long, zeroing only memory never
    /// written before: a 64 KiB room per TAP read costs no memset.
    fn grow_initialized(&mut self, len: usize) {
        if len <= self.buffer.len() {
            self.buffer.truncate(len);
            return;
        }
        let allocation = (self.buffer.as_ptr() as usize, self.buffer.capacity());
        if len > self.buffer.capacity() || allocation != self.initialized {
            self.buffer.reserve(len - self.buffer.len());
            for byte in self.buffer.spare_capacity_mut() {
                byte.write(0);
            }
            self.initialized = (self.buffer.as_ptr() as usize, self.buffer.capacity());
        }
        // SAFETY: every byte below the capacity of this allocation has been
        // written (zeroed just above, or earlier on the same allocation, and
        // a truncation does not un-write bytes), and u8 has no invalid values.
        unsafe { self.buffer.set_len(len) };
    }

    /// The frame read into the room: where the room starts and where the
    /// read went (the frame, or its `virtio_net_hdr`, which `len` counts).
    /// The buffer then ends with what was read.
    pub(crate) fn take_frame(&mut self, len: usize) -> Option<(usize, usize)> {
        let (start, read_at) = self.open_frame.take()?;
        let end = read_at + len;
        if end > self.buffer.len() {
            self.buffer.truncate(start);
            return None;
        }
        self.buffer.truncate(end);
        Some((start, read_at))
    }

    fn close_frame_room(&mut self) {
        if let Some((start, _)) = self.open_frame.take() {
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

    /// Queues a frame for the TAP device of network `nwid`, with what is
    /// left to complete; its `virtio_net_hdr` is written in front of it.
    pub fn push_frame(&mut self, nwid: NetworkId, offload: Offload, frame: &[u8]) {
        // Checked when the offloads were read; none if that ever failed.
        let (offload, header) = match offload.to_virtio(frame) {
            Ok(header) => (offload, header),
            Err(_) => (Offload::NONE, [0; VIRTIO_NET_HDR_LEN_BYTES]),
        };
        let buffer = self.buffer_mut();
        let start = buffer.len();
        buffer.extend_from_slice(&header);
        buffer.extend_from_slice(frame);
        self.frames.push((nwid, offload, start..self.buffer.len()));
    }

    /// The queued frames for TAP devices, in order.
    pub fn frames(&self) -> impl Iterator<Item = TapFrame<'_>> {
        self.frames.iter().map(|(network, offload, r)| TapFrame {
            network: *network,
            offload: *offload,
            bytes: &self.buffer[r.clone()],
        })
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
        let nwid = NetworkId::from_u64(0x1234_5678_9a00_0001).unwrap();
        out.push(LocalSocket::Primary, addr(1), &[9; 10]);
        out.frame_room(1500, false)[..3].copy_from_slice(&[1, 2, 3]);
        // Not taken: queueing something else gives the room back.
        out.push_frame(nwid, Offload::NONE, &[7; 5]);
        let queued = 10 + VIRTIO_NET_HDR_LEN_BYTES + 5;
        assert_eq!(out.buffered_bytes(), queued);
        let frames: Vec<_> = out.frames().collect();
        assert_eq!(frames[0].frame(), &[7; 5]);
        assert_eq!(
            frames[0].with_virtio_header()[..VIRTIO_NET_HDR_LEN_BYTES],
            [0; 10]
        );
        let room = out.frame_room(1500, false);
        room[..3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(
            out.take_frame(3),
            Some((queued, queued + OFFLOAD_FRAME_HEADROOM_BYTES))
        );
        assert_eq!(
            out.buffered_bytes(),
            queued + OFFLOAD_FRAME_HEADROOM_BYTES + 3
        );
        assert_eq!(out.take_frame(3), None);
        // A length beyond the room is refused and the room given back.
        out.frame_room(10, false);
        assert_eq!(out.take_frame(11), None);
        assert_eq!(
            out.buffered_bytes(),
            queued + OFFLOAD_FRAME_HEADROOM_BYTES + 3
        );
        // With a virtio_net_hdr, the read starts that much earlier, so the
        // frame itself lands at the same place.
        out.clear();
        out.frame_room(100, true);
        let expected = OFFLOAD_FRAME_HEADROOM_BYTES - VIRTIO_NET_HDR_LEN_BYTES;
        assert_eq!(out.take_frame(50), Some((0, expected)));
    }

    #[test]
    fn frame_room_keeps_what_was_written_and_zeroes_only_new_memory() {
        let mut out = Outbox::new();
        out.frame_room(64, false).fill(0xee);
        out.clear();
        // Same allocation: the old bytes are still there (no memset).
        assert!(out.frame_room(64, false).iter().all(|b| *b == 0xee));
        out.clear();
        // A bigger room: reallocated, and the new memory reads as zero.
        let room = out.frame_room(1 << 20, false);
        assert_eq!(room.len(), 1 << 20);
        assert!(room[64..].iter().all(|b| *b == 0));
    }
}
