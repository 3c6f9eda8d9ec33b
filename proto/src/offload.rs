//! Offloads of a frame (PROTOCOL.md §4.6): a TCP/UDP checksum left partial
//! (only the pseudo-header sum filled in) and TCP or UDP segmentation left
//! to the receiver (a super-frame of up to 64 KiB cut into segments of a
//! given size: TSO, or USO for UDP sent with `UDP_SEGMENT`). Read from and written to a TAP device as the `virtio_net_hdr`
//! in front of each frame (`IFF_VNET_HDR`), carried between members in an
//! OFFLOAD_FRAME, and done in software where the receiving TAP cannot.
//!
//! The positions of headers and checksum fields are never taken from the
//! sender: they are derived from the frame itself, so a peer can ask only
//! for what the frame really is.

use etherparse::checksum::Sum16BitWords;

use crate::constants::{ETHERNET_HEADER_LEN_BYTES, OFFLOAD_LEN_BYTES, VIRTIO_NET_HDR_LEN_BYTES};

/// What is wrong with a frame's offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// An offload byte outside the defined values.
    #[error("unknown offload {0}")]
    Unknown(&'static str),
    /// The frame is not IPv4/IPv6 carrying TCP or UDP (or is cut short).
    #[error("frame is not TCP or UDP over IP")]
    NotTransport,
    /// Segmentation asked for a frame it does not fit (protocol, IP version).
    #[error("segmentation does not fit the frame")]
    Mismatch,
    /// A segment size of zero.
    #[error("segment size zero")]
    ZeroSegmentSize,
}

/// The transport a super-frame carries, with its IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentationKind {
    /// TCP over IPv4.
    Tcp4,
    /// TCP over IPv6.
    Tcp6,
    /// UDP over IPv4 (each segment one datagram).
    Udp4,
    /// UDP over IPv6.
    Udp6,
}

impl SegmentationKind {
    /// Whether the segments are TCP (else UDP).
    pub fn is_tcp(self) -> bool {
        matches!(self, Self::Tcp4 | Self::Tcp6)
    }

    /// Whether the frame is IPv6 (else IPv4).
    pub fn is_ipv6(self) -> bool {
        matches!(self, Self::Tcp6 | Self::Udp6)
    }
}

/// A super-frame's segmentation: cut its TCP or UDP payload into segments
/// of `segment_size` bytes (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    /// TCP or UDP, over which IP version.
    pub kind: SegmentationKind,
    /// Payload bytes per segment (the MSS; for UDP, each datagram's payload).
    pub segment_size: u16,
}

/// A frame's offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// The TCP/UDP checksum holds only the pseudo-header sum; whoever
    /// delivers the frame completes it.
    pub partial_checksum: bool,
    /// A super-frame, to be cut into segments.
    pub segmentation: Option<Segmentation>,
}

const FLAG_PARTIAL_CHECKSUM: u8 = 0x01;
const WIRE_GSO_NONE: u8 = 0;
const WIRE_GSO_TCP4: u8 = 1;
const WIRE_GSO_TCP6: u8 = 2;
const WIRE_GSO_UDP4: u8 = 3;
const WIRE_GSO_UDP6: u8 = 4;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// UDP segmentation (USO), either IP version: the frame says which.
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
const UDP_LENGTH_OFFSET: usize = 4;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IP_PROTOCOL_TCP: u8 = 6;
const IP_PROTOCOL_UDP: u8 = 17;
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;
const IPV6_HEADER_LEN_BYTES: usize = 40;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_CWR: u8 = 0x80;

/// Where a TCP or UDP frame's headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Start of the IP header.
    pub(crate) l3: usize,
    pub(crate) ipv6: bool,
    /// Start of the TCP/UDP header.
    pub(crate) l4: usize,
    pub(crate) tcp: bool,
    /// Length of the TCP/UDP header.
    pub(crate) l4_len: usize,
}

impl Layout {
    /// Reads a frame: Ethernet (one VLAN tag at most), IPv4 (not a
    /// fragment) or IPv6 (no extension header), TCP or UDP.
    pub(crate) fn of(frame: &[u8]) -> Result<Self, OffloadError> {
        let be16 = |at: usize| {
            frame
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(OffloadError::NotTransport)
        };
        let (mut ethertype, mut l3) = (be16(12)?, ETHERNET_HEADER_LEN_BYTES);
        if ethertype == ETHERTYPE_VLAN {
            ethertype = be16(16)?;
            l3 += 4;
        }
        let byte = |at: usize| frame.get(at).copied().ok_or(OffloadError::NotTransport);
        let (ipv6, protocol, l4) = match ethertype {
            ETHERTYPE_IPV4 => {
                let first = byte(l3)?;
                let ihl = usize::from(first & 0x0f) * 4;
                // More fragments, or a fragment offset: not a whole segment.
                if first >> 4 != 4 || ihl < 20 || be16(l3 + 6)? & 0x3fff != 0 {
                    return Err(OffloadError::NotTransport);
                }
                (false, byte(l3 + 9)?, l3 + ihl)
            }
            ETHERTYPE_IPV6 if byte(l3)? >> 4 == 6 => {
                (true, byte(l3 + 6)?, l3 + IPV6_HEADER_LEN_BYTES)
            }
            _ => return Err(OffloadError::NotTransport),
        };
        let (tcp, l4_len) = match protocol {
            IP_PROTOCOL_TCP => (true, usize::from(byte(l4 + 12)? >> 4) * 4),
            IP_PROTOCOL_UDP => (false, 8),
            _ => return Err(OffloadError::NotTransport),
        };
        if (tcp && l4_len < 20) || l4 + l4_len > frame.len() {
            return Err(OffloadError::NotTransport);
        }
        Ok(Self {
            l3,
            ipv6,
            l4,
            tcp,
            l4_len,
        })
    }

    pub(crate) fn checksum_at(&self) -> usize {
        self.l4
            + if self.tcp {
                TCP_CHECKSUM_OFFSET
            } else {
                UDP_CHECKSUM_OFFSET
            }
    }
}

impl Offload {
    /// No offload: a frame complete as it is.
    pub const NONE: Self = Self {
        partial_checksum: false,
        segmentation: None,
    };

    /// Whether anything is left to the receiver.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }

    /// The wire form: flags, segmentation kind, segment size (big-endian).
    pub fn encode(&self) -> [u8; OFFLOAD_LEN_BYTES] {
        let flags = if self.partial_checksum {
            FLAG_PARTIAL_CHECKSUM
        } else {
            0
        };
        let (kind, size) = match self.segmentation {
            None => (WIRE_GSO_NONE, 0),
            Some(Segmentation { kind, segment_size }) => {
                let wire = match kind {
                    SegmentationKind::Tcp4 => WIRE_GSO_TCP4,
                    SegmentationKind::Tcp6 => WIRE_GSO_TCP6,
                    SegmentationKind::Udp4 => WIRE_GSO_UDP4,
                    SegmentationKind::Udp6 => WIRE_GSO_UDP6,
                };
                (wire, segment_size)
            }
        };
        let [s0, s1] = size.to_be_bytes();
        [flags, kind, s0, s1]
    }

    /// Reads the wire form and checks it against the frame it comes with.
    pub fn decode(bytes: [u8; OFFLOAD_LEN_BYTES], frame: &[u8]) -> Result<Self, OffloadError> {
        let [flags, kind, s0, s1] = bytes;
        if flags & !FLAG_PARTIAL_CHECKSUM != 0 {
            return Err(OffloadError::Unknown("flags"));
        }
        let segment_size = u16::from_be_bytes([s0, s1]);
        let kind = match kind {
            WIRE_GSO_NONE if segment_size == 0 => None,
            WIRE_GSO_NONE => {
                return Err(OffloadError::Unknown("segment size without segmentation"));
            }
            WIRE_GSO_TCP4 => Some(SegmentationKind::Tcp4),
            WIRE_GSO_TCP6 => Some(SegmentationKind::Tcp6),
            WIRE_GSO_UDP4 => Some(SegmentationKind::Udp4),
            WIRE_GSO_UDP6 => Some(SegmentationKind::Udp6),
            _ => return Err(OffloadError::Unknown("segmentation kind")),
        };
        let offload = Self {
            partial_checksum: flags & FLAG_PARTIAL_CHECKSUM != 0,
            segmentation: kind.map(|kind| Segmentation { kind, segment_size }),
        };
        offload.check(frame)?;
        Ok(offload)
    }

    /// Checks that the frame is what these offloads need: TCP/UDP over IP
    /// for a partial checksum, TCP over the right IP version (and a partial
    /// checksum, as the kernel's TSO and USO leave it) for segmentation.
    fn check(&self, frame: &[u8]) -> Result<Option<Layout>, OffloadError> {
        if self.is_none() {
            return Ok(None);
        }
        let layout = Layout::of(frame)?;
        if let Some(s) = self.segmentation {
            if layout.tcp != s.kind.is_tcp()
                || layout.ipv6 != s.kind.is_ipv6()
                || !self.partial_checksum
            {
                return Err(OffloadError::Mismatch);
            }
            if s.segment_size == 0 {
                return Err(OffloadError::ZeroSegmentSize);
            }
        }
        Ok(Some(layout))
    }

    /// For a super-frame, what follows the Ethernet header in its first and
    /// last segment, in bytes: the sizes of the frames it stands for, as
    /// the flow rules' frame-size matches see them. `None` for a frame that
    /// is not cut.
    pub fn segment_lengths(&self, frame: &[u8]) -> Option<(usize, usize)> {
        let s = self.segmentation?;
        let layout = self.check(frame).ok()??;
        let headers = layout.l4 + layout.l4_len - ETHERNET_HEADER_LEN_BYTES;
        let payload = frame.len() - (layout.l4 + layout.l4_len);
        let mss = usize::from(s.segment_size);
        let last = match payload % mss {
            0 => payload.min(mss),
            rest => rest,
        };
        Some((headers + payload.min(mss), headers + last))
    }

    /// Reads the `virtio_net_hdr` a TAP device put in front of `frame`.
    pub fn from_virtio(
        header: &[u8; VIRTIO_NET_HDR_LEN_BYTES],
        frame: &[u8],
    ) -> Result<Self, OffloadError> {
        let flags = header[0];
        if flags & !(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) != 0 {
            return Err(OffloadError::Unknown("virtio flags"));
        }
        let segment_size = u16::from_ne_bytes([header[4], header[5]]);
        let kind = match header[1] {
            VIRTIO_NET_HDR_GSO_NONE => None,
            VIRTIO_NET_HDR_GSO_TCPV4 => Some(SegmentationKind::Tcp4),
            VIRTIO_NET_HDR_GSO_TCPV6 => Some(SegmentationKind::Tcp6),
            VIRTIO_NET_HDR_GSO_UDP_L4 => match Layout::of(frame)?.ipv6 {
                false => Some(SegmentationKind::Udp4),
                true => Some(SegmentationKind::Udp6),
            },
            _ => return Err(OffloadError::Unknown("virtio segmentation")),
        };
        let offload = Self {
            partial_checksum: flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
            segmentation: kind.map(|kind| Segmentation { kind, segment_size }),
        };
        if let Some(layout) = offload.check(frame)?
            && offload.partial_checksum
        {
            // The kernel's own idea of where the checksum goes must be ours.
            let start = usize::from(u16::from_ne_bytes([header[6], header[7]]));
            let offset = usize::from(u16::from_ne_bytes([header[8], header[9]]));
            if start != layout.l4 || start + offset != layout.checksum_at() {
                return Err(OffloadError::Mismatch);
            }
        }
        Ok(offload)
    }

    /// The `virtio_net_hdr` to write in front of `frame` on a TAP device
    /// that takes offloads.
    pub fn to_virtio(&self, frame: &[u8]) -> Result<[u8; VIRTIO_NET_HDR_LEN_BYTES], OffloadError> {
        let mut header = [0u8; VIRTIO_NET_HDR_LEN_BYTES];
        let Some(layout) = self.check(frame)? else {
            return Ok(header);
        };
        let ne16 = |v: usize| u16::try_from(v).unwrap_or(u16::MAX).to_ne_bytes();
        if self.partial_checksum {
            header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            header[6..8].copy_from_slice(&ne16(layout.l4));
            header[8..10].copy_from_slice(&ne16(layout.checksum_at() - layout.l4));
        }
        if let Some(s) = self.segmentation {
            header[1] = match s.kind {
                SegmentationKind::Tcp4 => VIRTIO_NET_HDR_GSO_TCPV4,
                SegmentationKind::Tcp6 => VIRTIO_NET_HDR_GSO_TCPV6,
                SegmentationKind::Udp4 | SegmentationKind::Udp6 => VIRTIO_NET_HDR_GSO_UDP_L4,
            };
            header[2..4].copy_from_slice(&ne16(layout.l4 + layout.l4_len));
            header[4..6].copy_from_slice(&s.segment_size.to_ne_bytes());
        }
        Ok(header)
    }

    /// Completes what these offloads left undone, as a TAP without offloads
    /// needs it: each frame `emit` gets is an ordinary frame with complete
    /// checksums (a super-frame becomes its segments, cut as the kernel's TSO
    /// or USO would). `scratch` holds each frame built. Returns how many.
    pub fn complete(
        &self,
        frame: &[u8],
        scratch: &mut Vec<u8>,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let Some(layout) = self.check(frame)? else {
            emit(frame);
            return Ok(1);
        };
        let Some(s) = self.segmentation else {
            scratch.clear();
            scratch.extend_from_slice(frame);
            fill_transport_checksum(scratch, &layout);
            emit(scratch);
            return Ok(1);
        };
        let mss = usize::from(s.segment_size);
        if !layout.tcp {
            // Each datagram's own UDP length.
            let fix = |segment: &mut [u8], _: usize, _: usize| set_udp_length(segment, &layout);
            return Ok(cut_segments(frame, &layout, mss, scratch, fix, emit));
        }
        let seq = u32::from_be_bytes(
            frame[layout.l4 + 4..layout.l4 + 8]
                .try_into()
                .unwrap_or_default(),
        );
        let flags = frame[layout.l4 + 13];
        // Each segment's sequence number; FIN and PSH on the last, CWR on
        // the first only.
        let fix = |segment: &mut [u8], i: usize, count: usize| {
            let seq_i = seq.wrapping_add((i * mss) as u32);
            segment[layout.l4 + 4..layout.l4 + 8].copy_from_slice(&seq_i.to_be_bytes());
            let mut f = flags;
            if i > 0 {
                f &= !TCP_FLAG_CWR;
            }
            if i + 1 < count {
                f &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
            }
            segment[layout.l4 + 13] = f;
        };
        Ok(cut_segments(frame, &layout, mss, scratch, fix, emit))
    }
}

/// Cuts a super-frame's payload into segments of `mss` bytes, as the
/// kernel's TSO or USO would: each behind a copy of the headers with its
/// own IP length and IPv4 id; `fix(segment, i, count)` sets the transport
/// fields, then the checksum is filled and the segment emitted. Returns
/// how many.
fn cut_segments(
    frame: &[u8],
    layout: &Layout,
    mss: usize,
    scratch: &mut Vec<u8>,
    mut fix: impl FnMut(&mut [u8], usize, usize),
    mut emit: impl FnMut(&[u8]),
) -> usize {
    let headers = layout.l4 + layout.l4_len;
    let payload = &frame[headers..];
    let ip_id = u16::from_be_bytes([frame[layout.l3 + 4], frame[layout.l3 + 5]]);
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = payload
            .get(i * mss..payload.len().min((i + 1) * mss))
            .unwrap_or_default();
        scratch.clear();
        scratch.extend_from_slice(&frame[..headers]);
        scratch.extend_from_slice(chunk);
        if !layout.ipv6 {
            let id = ip_id.wrapping_add(i as u16);
            scratch[layout.l3 + 4..layout.l3 + 6].copy_from_slice(&id.to_be_bytes());
        }
        set_ip_length(scratch, layout);
        fix(scratch, i, count);
        fill_transport_checksum(scratch, layout);
        emit(scratch);
    }
    count
}

/// Writes a frame's IP length, the frame's length from the IP header on
/// (and for IPv4 the header checksum).
pub(crate) fn set_ip_length(frame: &mut [u8], layout: &Layout) {
    let ip_len = frame.len() - layout.l3;
    if layout.ipv6 {
        let payload_len = (ip_len - IPV6_HEADER_LEN_BYTES) as u16;
        frame[layout.l3 + 4..layout.l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    } else {
        frame[layout.l3 + 2..layout.l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        fill_ipv4_header_checksum(frame, layout);
    }
}

/// Writes a UDP frame's UDP length, the frame's length from the UDP header on.
pub(crate) fn set_udp_length(frame: &mut [u8], layout: &Layout) {
    let udp_len = (frame.len() - layout.l4) as u16;
    frame[layout.l4 + UDP_LENGTH_OFFSET..layout.l4 + UDP_LENGTH_OFFSET + 2]
        .copy_from_slice(&udp_len.to_be_bytes());
}

/// Writes the IPv4 header checksum.
pub(crate) fn fill_ipv4_header_checksum(frame: &mut [u8], layout: &Layout) {
    let header = layout.l3..layout.l4;
    frame[layout.l3 + 10..layout.l3 + 12].fill(0);
    let sum = Sum16BitWords::new().add_slice(&frame[header]);
    frame[layout.l3 + 10..layout.l3 + 12]
        .copy_from_slice(&sum.ones_complement().to_be().to_be_bytes());
}

/// Computes and writes the TCP/UDP checksum over the pseudo-header and the
/// whole segment (the IP lengths must be right).
fn fill_transport_checksum(frame: &mut [u8], layout: &Layout) {
    let at = layout.checksum_at();
    frame[at..at + 2].fill(0);
    let sum = pseudo_header_sum(frame, layout).add_slice(&frame[layout.l4..]);
    let checksum = if layout.tcp {
        sum.ones_complement()
    } else {
        sum.to_ones_complement_with_no_zero()
    };
    frame[at..at + 2].copy_from_slice(&checksum.to_be().to_be_bytes());
}

/// The sum of the TCP/UDP pseudo-header (addresses, protocol, and the
/// transport length: the frame's bytes from the TCP/UDP header on).
pub(crate) fn pseudo_header_sum(frame: &[u8], layout: &Layout) -> Sum16BitWords {
    let l4_len = frame.len() - layout.l4;
    let protocol = if layout.tcp {
        IP_PROTOCOL_TCP
    } else {
        IP_PROTOCOL_UDP
    };
    let addresses = if layout.ipv6 {
        layout.l3 + 8..layout.l3 + 40
    } else {
        layout.l3 + 12..layout.l3 + 20
    };
    Sum16BitWords::new()
        .add_slice(&frame[addresses])
        .add_2bytes([0, protocol])
        .add_slice(&(l4_len as u32).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn tcp4(payload_len: usize, flags_fin_psh: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40_000, 5_201, 1_000_000, 64_000)
            .ack(77)
            .cwr();
        if flags_fin_psh {
            b = b.fin().psh();
        }
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 % 251) as u8).collect();
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    fn tcp6(payload_len: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .tcp(40_000, 5_201, 7, 64_000)
            .ack(9)
            .psh();
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 % 253) as u8).collect();
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    fn udp4(payload_len: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5_000, 6_000);
        let mut out = Vec::new();
        b.write(&mut out, &vec![3u8; payload_len]).unwrap();
        out
    }

    fn udp6(payload_len: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(5_000, 6_000);
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 13 % 241) as u8).collect();
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    /// A UDP super-frame as the kernel's USO hands it over: one UDP header
    /// for the whole payload (its length field may exceed 16 bits' worth
    /// of segments; the receiver rewrites it), IP lengths of the whole.
    fn udp_super(v6: bool, payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 17 % 239) as u8).collect();
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if v6 {
            b.ipv6([1; 16], [2; 16], 64)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let mut out = Vec::new();
        b.udp(5_000, 6_000).write(&mut out, &payload).unwrap();
        out
    }

    /// The frame with its transport checksum made partial, as a TAP with
    /// checksum offload hands it over: only the pseudo-header sum.
    fn partial(mut frame: Vec<u8>) -> Vec<u8> {
        let layout = Layout::of(&frame).unwrap();
        fill_transport_checksum(&mut frame, &layout);
        let at = layout.checksum_at();
        // The checksum of the whole minus the segment: any value other than
        // the right one shows whether it is recomputed.
        frame[at] ^= 0x5a;
        frame
    }

    /// Whether a frame's IP and transport checksums verify (etherparse).
    fn checksums_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (src, dst, v6) = match p.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => {
                let h = ip.header().to_header();
                if h.calc_header_checksum() != h.header_checksum {
                    return false;
                }
                (h.source.to_vec(), h.destination.to_vec(), false)
            }
            etherparse::NetSlice::Ipv6(ip) => {
                let h = ip.header().to_header();
                (h.source.to_vec(), h.destination.to_vec(), true)
            }
            _ => return false,
        };
        match p.transport.unwrap() {
            TransportSlice::Tcp(t) => {
                let h = t.to_header();
                let want = if v6 {
                    h.calc_checksum_ipv6_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        t.payload(),
                    )
                    .unwrap()
                } else {
                    h.calc_checksum_ipv4_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        t.payload(),
                    )
                    .unwrap()
                };
                want == h.checksum
            }
            TransportSlice::Udp(u) => {
                let h = u.to_header();
                if usize::from(h.length) != 8 + u.payload().len() {
                    return false;
                }
                let want = if v6 {
                    h.calc_checksum_ipv6_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        u.payload(),
                    )
                    .unwrap()
                } else {
                    h.calc_checksum_ipv4_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        u.payload(),
                    )
                    .unwrap()
                };
                want == h.checksum
            }
            _ => false,
        }
    }

    #[test]
    fn the_wire_form_round_trips_and_unknown_values_are_refused() {
        let frame = tcp4(3_000, false);
        let o = Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind: SegmentationKind::Tcp4,
                segment_size: 1_400,
            }),
        };
        assert_eq!(Offload::decode(o.encode(), &frame), Ok(o));
        assert_eq!(
            Offload::decode(Offload::NONE.encode(), b"x"),
            Ok(Offload::NONE)
        );
        assert!(Offload::decode([2, 0, 0, 0], &frame).is_err());
        assert!(Offload::decode([1, 9, 0, 1], &frame).is_err());
        assert!(Offload::decode([0, 0, 0, 1], &frame).is_err());
        // Segmentation must fit the frame: not IPv6 for an IPv4 frame, not
        // UDP, not without a partial checksum, not of size 0.
        assert_eq!(
            Offload::decode([1, 2, 5, 0], &frame),
            Err(OffloadError::Mismatch)
        );
        assert_eq!(
            Offload::decode([1, 1, 5, 0], &udp4(100)),
            Err(OffloadError::Mismatch)
        );
        assert_eq!(
            Offload::decode([0, 1, 5, 0], &frame),
            Err(OffloadError::Mismatch)
        );
        assert_eq!(
            Offload::decode([1, 1, 0, 0], &frame),
            Err(OffloadError::ZeroSegmentSize)
        );
        // UDP segmentation: only for UDP over the IP version it names.
        let udp = Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind: SegmentationKind::Udp4,
                segment_size: 1_000,
            }),
        };
        assert_eq!(udp.encode(), [1, 3, 0x03, 0xe8]);
        assert_eq!(Offload::decode(udp.encode(), &udp4(3_000)), Ok(udp));
        assert_eq!(
            Offload::decode([1, 4, 3, 0], &udp4(3_000)),
            Err(OffloadError::Mismatch)
        );
        assert_eq!(
            Offload::decode([1, 3, 3, 0], &frame),
            Err(OffloadError::Mismatch)
        );
        assert!(Offload::decode([1, 4, 3, 0], &udp6(3_000)).is_ok());
        assert!(Offload::decode([1, 5, 3, 0], &udp6(3_000)).is_err());
        // A partial checksum needs TCP or UDP.
        assert_eq!(
            Offload::decode([1, 0, 0, 0], &[0u8; 60]),
            Err(OffloadError::NotTransport)
        );
    }

    #[test]
    fn the_virtio_header_round_trips_with_positions_from_the_frame() {
        let frame = tcp6(5_000);
        let o = Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind: SegmentationKind::Tcp6,
                segment_size: 1_200,
            }),
        };
        let h = o.to_virtio(&frame).unwrap();
        assert_eq!(h[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(h[1], VIRTIO_NET_HDR_GSO_TCPV6);
        assert_eq!(u16::from_ne_bytes([h[2], h[3]]), 14 + 40 + 20);
        assert_eq!(u16::from_ne_bytes([h[6], h[7]]), 14 + 40);
        assert_eq!(u16::from_ne_bytes([h[8], h[9]]), 16);
        assert_eq!(Offload::from_virtio(&h, &frame), Ok(o));
        // A kernel header that puts the checksum elsewhere is refused.
        let mut wrong = h;
        wrong[8] = 6;
        assert_eq!(
            Offload::from_virtio(&wrong, &frame),
            Err(OffloadError::Mismatch)
        );
        assert_eq!(Offload::NONE.to_virtio(&frame).unwrap(), [0; 10]);
    }

    #[test]
    fn a_uso_virtio_header_round_trips_with_the_ip_version_from_the_frame() {
        for (v6, kind) in [
            (false, SegmentationKind::Udp4),
            (true, SegmentationKind::Udp6),
        ] {
            let frame = udp_super(v6, 4_000);
            let o = Offload {
                partial_checksum: true,
                segmentation: Some(Segmentation {
                    kind,
                    segment_size: 1_100,
                }),
            };
            let h = o.to_virtio(&frame).unwrap();
            let l4 = if v6 { 14 + 40 } else { 14 + 20 };
            assert_eq!(h[1], VIRTIO_NET_HDR_GSO_UDP_L4);
            assert_eq!(usize::from(u16::from_ne_bytes([h[2], h[3]])), l4 + 8);
            assert_eq!(usize::from(u16::from_ne_bytes([h[6], h[7]])), l4);
            assert_eq!(u16::from_ne_bytes([h[8], h[9]]), 6);
            assert_eq!(Offload::from_virtio(&h, &frame), Ok(o));
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        for frame in [tcp4(500, true), tcp6(700), udp4(300)] {
            let broken = partial(frame.clone());
            assert!(!checksums_ok(&broken));
            let o = Offload {
                partial_checksum: true,
                segmentation: None,
            };
            let mut got = Vec::new();
            let n = o
                .complete(&broken, &mut Vec::new(), |f| got.push(f.to_vec()))
                .unwrap();
            assert_eq!(n, 1);
            assert_eq!(got, [frame]);
        }
    }

    #[test]
    fn a_super_frame_gives_the_sizes_of_its_first_and_last_segment() {
        let udp = |kind, mss| Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind,
                segment_size: mss,
            }),
        };
        // 20 + 8 header bytes after Ethernet; 2,500 payload bytes in 1,000s.
        let frame = udp_super(false, 2_500);
        let cut = cut(&frame, SegmentationKind::Udp4, 1_000);
        let sizes = udp(SegmentationKind::Udp4, 1_000).segment_lengths(&frame);
        assert_eq!(sizes, Some((cut[0].len() - 14, cut[2].len() - 14)));
        assert_eq!(sizes, Some((1_028, 528)));
        // Evenly cut, and a super-frame of one segment.
        assert_eq!(
            udp(SegmentationKind::Udp4, 500).segment_lengths(&frame),
            Some((528, 528))
        );
        assert_eq!(
            udp(SegmentationKind::Udp4, 9_000).segment_lengths(&frame),
            Some((2_528, 2_528))
        );
        assert_eq!(Offload::NONE.segment_lengths(&frame), None);
        // Segmentation that does not fit the frame: no sizes.
        assert_eq!(
            udp(SegmentationKind::Tcp4, 1_000).segment_lengths(&frame),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn a_super_frame_is_cut_as_tso_would(
            payload in 1..20_000usize,
            mss in 1..3_000u16,
            v6 in proptest::bool::ANY,
        ) {
            let frame = if v6 { tcp6(payload) } else { tcp4(payload, true) };
            let layout = Layout::of(&frame).unwrap();
            let headers = layout.l4 + layout.l4_len;
            let kind = if v6 { SegmentationKind::Tcp6 } else { SegmentationKind::Tcp4 };
            let segments = cut(&frame, kind, mss);
            proptest::prop_assert_eq!(segments.len(), payload.div_ceil(usize::from(mss)));
            let mut data = Vec::new();
            for (i, s) in segments.iter().enumerate() {
                proptest::prop_assert!(checksums_ok(s), "segment {} checksums", i);
                proptest::prop_assert!(s.len() - headers <= usize::from(mss));
                let seq = u32::from_be_bytes(s[layout.l4 + 4..layout.l4 + 8].try_into().unwrap());
                let first = u32::from_be_bytes(frame[layout.l4 + 4..layout.l4 + 8].try_into().unwrap());
                proptest::prop_assert_eq!(seq, first.wrapping_add(data.len() as u32));
                let flags = s[layout.l4 + 13];
                let last = i + 1 == segments.len();
                proptest::prop_assert_eq!(flags & TCP_FLAG_FIN != 0, last && !v6);
                proptest::prop_assert_eq!(flags & TCP_FLAG_PSH != 0, last);
                proptest::prop_assert_eq!(flags & TCP_FLAG_CWR != 0, i == 0 && !v6);
                data.extend_from_slice(&s[headers..]);
            }
            proptest::prop_assert_eq!(&data[..], &frame[headers..]);
        }

        #[test]
        fn a_udp_super_frame_is_cut_as_uso_would(
            payload in 1..20_000usize,
            mss in 1..3_000u16,
            v6 in proptest::bool::ANY,
        ) {
            let frame = udp_super(v6, payload);
            let layout = Layout::of(&frame).unwrap();
            let headers = layout.l4 + 8;
            let kind = if v6 { SegmentationKind::Udp6 } else { SegmentationKind::Udp4 };
            let segments = cut(&frame, kind, mss);
            proptest::prop_assert_eq!(segments.len(), payload.div_ceil(usize::from(mss)));
            let mut data = Vec::new();
            for (i, s) in segments.iter().enumerate() {
                // Lengths (IP and UDP) and both checksums per datagram.
                proptest::prop_assert!(checksums_ok(s), "segment {} checksums", i);
                let last = i + 1 == segments.len();
                let len = s.len() - headers;
                proptest::prop_assert!(len == usize::from(mss) || (last && len < usize::from(mss)));
                proptest::prop_assert_eq!(&s[..layout.l4 + 4], &with_ip_fields(&frame, s, &layout)[..]);
                data.extend_from_slice(&s[headers..]);
            }
            proptest::prop_assert_eq!(&data[..], &frame[headers..]);
        }
    }

    /// The segments `complete` cuts `frame` into (its checksum made
    /// partial first, as the kernel hands it over); checks the count it
    /// returns.
    fn cut(frame: &[u8], kind: SegmentationKind, mss: u16) -> Vec<Vec<u8>> {
        let o = Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind,
                segment_size: mss,
            }),
        };
        let mut segments = Vec::new();
        let n = o
            .complete(&partial(frame.to_vec()), &mut Vec::new(), |f| {
                segments.push(f.to_vec())
            })
            .unwrap();
        assert_eq!(n, segments.len());
        segments
    }

    /// The super-frame's headers up to the UDP length, with the segment's
    /// own IP length, id and header checksum: all a datagram may change
    /// there.
    fn with_ip_fields(frame: &[u8], segment: &[u8], layout: &Layout) -> Vec<u8> {
        let mut h = frame[..layout.l4 + 4].to_vec();
        let fields = if layout.ipv6 {
            layout.l3 + 4..layout.l3 + 6
        } else {
            layout.l3 + 2..layout.l3 + 12
        };
        h[fields.clone()].copy_from_slice(&segment[fields]);
        h
    }
}
