//! UDP trains: consecutive IPv4 UDP frames of one flow, written to a TAP
//! device as one super-frame behind a `virtio_net_hdr` asking for UDP
//! segmentation (`VIRTIO_NET_HDR_GSO_UDP_L4`); the kernel cuts it back into
//! the same datagrams. One write then carries many small frames (a VoIP or
//! game flow, a 64-byte flood) where each used to take its own.

use crate::constants::{ETHERNET_HEADER_LEN_BYTES, VIRTIO_NET_HDR_LEN_BYTES};

/// Most frames in one train (the kernel takes up to 64 segments).
pub const MAX_TRAIN_FRAMES: usize = 16;

const IPV4_HEADER_LEN_BYTES: usize = 20;
const UDP_HEADER_LEN_BYTES: usize = 8;
/// Ethernet, IPv4 without options, UDP.
const HEADERS_LEN_BYTES: usize =
    ETHERNET_HEADER_LEN_BYTES + IPV4_HEADER_LEN_BYTES + UDP_HEADER_LEN_BYTES;
const IP: usize = ETHERNET_HEADER_LEN_BYTES;
const UDP: usize = IP + IPV4_HEADER_LEN_BYTES;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;

/// The UDP payload length of `frame` if a train can carry it: untagged
/// IPv4 without options, not a fragment, UDP whose length matches the
/// packet's, a payload of at least one byte, nothing after the packet.
pub fn payload_len(frame: &[u8]) -> Option<usize> {
    if frame.len() <= HEADERS_LEN_BYTES || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[IP..];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] != 0x45 || ip[9] != 17 || fragment != 0 || IP + total != frame.len() {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([frame[UDP + 4], frame[UDP + 5]]));
    (udp_len == total - IPV4_HEADER_LEN_BYTES).then_some(udp_len - UDP_HEADER_LEN_BYTES)
}

/// A train being built: the first frame's headers, then payloads.
#[derive(Debug, Clone, Copy)]
pub struct UdpTrain {
    segment_len: usize,
    frames: usize,
    /// A shorter payload ended it.
    closed: bool,
}

impl UdpTrain {
    /// Starts a train with `first` (see [`payload_len`]) in `out`, after a
    /// `virtio_net_hdr` to be filled by [`UdpTrain::finish`].
    pub fn start(first: &[u8], out: &mut Vec<u8>) -> Option<Self> {
        let segment_len = payload_len(first)?;
        out.clear();
        out.resize(VIRTIO_NET_HDR_LEN_BYTES, 0);
        out.extend_from_slice(first);
        Some(Self {
            segment_len,
            frames: 1,
            closed: false,
        })
    }

    /// How many frames it carries.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Appends `next`'s payload if `next` belongs to the train: same
    /// Ethernet header, same IPv4 header but for id, length and checksum,
    /// same ports, a payload no longer than the first's (a shorter one
    /// ends the train), and room left. Returns whether it joined.
    pub fn push(&mut self, next: &[u8], out: &mut Vec<u8>) -> bool {
        if self.closed || self.frames >= MAX_TRAIN_FRAMES {
            return false;
        }
        let Some(len) = payload_len(next) else {
            return false;
        };
        let first = &out[VIRTIO_NET_HDR_LEN_BYTES..];
        let same = first[..IP] == next[..IP]
            && first[IP..IP + 2] == next[IP..IP + 2]
            && first[IP + 6..IP + 10] == next[IP + 6..IP + 10]
            && first[IP + 12..UDP + 4] == next[IP + 12..UDP + 4];
        let ip_total = first.len() - IP + len;
        if !same || len > self.segment_len || ip_total > usize::from(u16::MAX) {
            return false;
        }
        out.extend_from_slice(&next[HEADERS_LEN_BYTES..]);
        self.frames += 1;
        self.closed = len < self.segment_len;
        true
    }

    /// Fills in the lengths, the IPv4 checksum, the UDP pseudo-header sum
    /// (the kernel completes the checksum of each datagram it cuts) and the
    /// `virtio_net_hdr`. `out` is then one write to the TAP device.
    pub fn finish(&self, out: &mut [u8]) {
        let (header, frame) = out.split_at_mut(VIRTIO_NET_HDR_LEN_BYTES);
        let ip_total = (frame.len() - IP) as u16;
        let udp_len = ip_total - IPV4_HEADER_LEN_BYTES as u16;
        frame[IP + 2..IP + 4].copy_from_slice(&ip_total.to_be_bytes());
        frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
        let ip_sum = !fold(sum(&frame[IP..UDP]));
        frame[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
        frame[UDP + 4..UDP + 6].copy_from_slice(&udp_len.to_be_bytes());
        // Pseudo header: addresses, protocol, UDP length; not complemented.
        let pseudo = sum(&frame[IP + 12..IP + 20]) + 17 + u32::from(udp_len);
        frame[UDP + 6..UDP + 8].copy_from_slice(&fold(pseudo).to_be_bytes());
        let ne16 = |v: usize| (v as u16).to_ne_bytes();
        header.fill(0);
        header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        header[1] = VIRTIO_NET_HDR_GSO_UDP_L4;
        header[2..4].copy_from_slice(&ne16(HEADERS_LEN_BYTES));
        header[4..6].copy_from_slice(&ne16(self.segment_len));
        header[6..8].copy_from_slice(&ne16(UDP));
        header[8..10].copy_from_slice(&ne16(6));
    }
}

/// The 32-bit one's-complement sum of big-endian 16-bit words.
fn sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn frame(src_port: u16, id: u16, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ip(etherparse::IpHeaders::Ipv4(
                etherparse::Ipv4Header {
                    identification: id,
                    time_to_live: 64,
                    protocol: etherparse::IpNumber::UDP,
                    source: [10, 0, 0, 1],
                    destination: [10, 0, 0, 2],
                    ..Default::default()
                },
                Default::default(),
            ))
            .udp(src_port, 5201);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    /// Cuts a train as the kernel does (`__udp_gso_segment`): headers
    /// repeated, lengths per segment, checksums completed.
    fn cut(train: &[u8]) -> Vec<Vec<u8>> {
        let (header, frame) = train.split_at(VIRTIO_NET_HDR_LEN_BYTES);
        assert_eq!(header[1], VIRTIO_NET_HDR_GSO_UDP_L4);
        let segment = usize::from(u16::from_ne_bytes([header[4], header[5]]));
        frame[HEADERS_LEN_BYTES..]
            .chunks(segment)
            .map(|payload| {
                let mut f = frame[..HEADERS_LEN_BYTES].to_vec();
                f.extend_from_slice(payload);
                let total = (f.len() - IP) as u16;
                f[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
                f[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
                let s = !fold(sum(&f[IP..UDP]));
                f[IP + 10..IP + 12].copy_from_slice(&s.to_be_bytes());
                let udp_len = total - 20;
                f[UDP + 4..UDP + 6].copy_from_slice(&udp_len.to_be_bytes());
                f[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
                let c = !fold(sum(&f[IP + 12..IP + 20]) + 17 + u32::from(udp_len) + sum(&f[UDP..]));
                f[UDP + 6..UDP + 8].copy_from_slice(&c.to_be_bytes());
                f
            })
            .collect()
    }

    #[test]
    fn a_train_carries_its_frames_and_their_checksums_verify() {
        let frames: Vec<Vec<u8>> = (0..5u8)
            .map(|i| frame(4000, 100 + u16::from(i), &[i; 64]))
            .chain([frame(4000, 200, &[9; 30])])
            .collect();
        let mut out = Vec::new();
        let mut train = UdpTrain::start(&frames[0], &mut out).unwrap();
        for f in &frames[1..] {
            assert!(train.push(f, &mut out));
        }
        // Closed by the shorter one.
        assert!(!train.push(&frames[1], &mut out));
        assert_eq!(train.frames(), 6);
        train.finish(&mut out);
        // The super-frame's own headers are valid, its UDP checksum the
        // pseudo-header sum of its whole length.
        let whole = &out[VIRTIO_NET_HDR_LEN_BYTES..];
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&whole[IP..]).unwrap();
        assert_eq!(ip.to_header().calc_header_checksum(), ip.header_checksum());
        assert_eq!(usize::from(ip.total_len()), whole.len() - IP);
        let cut = cut(&out);
        assert_eq!(cut.len(), 6);
        for (got, want) in cut.iter().zip(&frames) {
            // Same datagram (the kernel numbers the IP ids itself).
            assert_eq!(got[HEADERS_LEN_BYTES..], want[HEADERS_LEN_BYTES..]);
            let parsed = SlicedPacket::from_ethernet(got).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
                panic!("IPv4")
            };
            let Some(TransportSlice::Udp(udp)) = parsed.transport else {
                panic!("UDP")
            };
            let expected = udp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), expected);
        }
    }

    #[test]
    fn other_flows_and_longer_or_foreign_frames_do_not_join() {
        let first = frame(4000, 1, &[1; 64]);
        let mut out = Vec::new();
        let mut train = UdpTrain::start(&first, &mut out).unwrap();
        assert!(
            !train.push(&frame(4001, 2, &[1; 64]), &mut out),
            "another port"
        );
        assert!(!train.push(&frame(4000, 2, &[1; 65]), &mut out), "longer");
        let mut tcp = first.clone();
        tcp[IP + 9] = 6;
        assert!(!train.push(&tcp, &mut out), "not UDP");
        let mut fragment = frame(4000, 3, &[1; 64]);
        fragment[IP + 6] = 0x20;
        assert!(payload_len(&fragment).is_none(), "a fragment");
        let mut options = first.clone();
        options[IP] = 0x46;
        assert!(payload_len(&options).is_none(), "IPv4 options");
        assert!(payload_len(&first[..40]).is_none(), "short");
        assert_eq!(train.frames(), 1);
        for i in 0..MAX_TRAIN_FRAMES as u16 {
            train.push(&frame(4000, i, &[1; 64]), &mut out);
        }
        assert_eq!(train.frames(), MAX_TRAIN_FRAMES);
    }
}
