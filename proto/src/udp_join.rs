//! Joining a run of UDP datagrams of one flow into one USO super-frame, as
//! a NIC's UDP GRO does: on the way into a TAP device (the kernel then takes
//! them in one write and one pass through its receive path, and cuts them
//! apart again before the socket, or hands them whole to a socket reading
//! with `UDP_GRO`), and on the way out of one (the run then crosses as one
//! OFFLOAD_FRAME: sealed once, and written whole at the other end).
//!
//! Only frames next to each other join, so nothing is reordered, and only
//! frames USO cuts back to exactly what they were: the same Ethernet, IP
//! and port fields, IPv4 ids counting up by one, every payload as long as
//! the first (the last may be shorter), no Ethernet padding, a correct IPv4
//! header checksum, and a UDP checksum either left partial by the sender or
//! found correct here (the super-frame's is left partial, and the kernel
//! completes each cut datagram's where it leaves the host).

use etherparse::checksum::Sum16BitWords;

use crate::constants::{MAX_JOINED_DATAGRAMS, VIRTIO_NET_HDR_LEN_BYTES};
use crate::network_id::NetworkId;
use crate::node::TapFrame;
use crate::offload::{
    Layout, Offload, Segmentation, SegmentationKind, pseudo_header_sum, set_ip_length,
    set_udp_length,
};

const UDP_HEADER_LEN_BYTES: usize = 8;
const IPV4_HEADER_LEN_BYTES: usize = 20;
const IPV6_HEADER_LEN_BYTES: usize = 40;
/// The largest IPv4 total length, and IPv6 payload length.
const MAX_IP_LEN_BYTES: usize = 65_535;

/// Writes `frames` in order through `write`, each as queued or, where runs
/// of UDP datagrams of one flow can join (on a network whose device takes
/// USO: `joinable`), as one super-frame built in `scratch`; `write` also
/// gets how many datagrams the frame carries.
pub fn join_udp_runs<'a>(
    frames: impl IntoIterator<Item = TapFrame<'a>>,
    joinable: impl Fn(NetworkId) -> bool,
    scratch: &mut Vec<u8>,
    mut write: impl FnMut(&TapFrame<'_>, usize),
) {
    let mut run: Option<(TapFrame<'a>, JoinedRun)> = None;
    for frame in frames {
        let can_join = joinable(frame.network);
        if let Some((head, r)) = run.as_mut()
            && can_join
            && frame.network == head.network
        {
            let joined_so_far = if r.count() == 1 {
                head.frame()
            } else {
                &scratch[VIRTIO_NET_HDR_LEN_BYTES..]
            };
            if let Some(payload) = r.push(joined_so_far, usize::MAX, &frame.offload, frame.frame())
            {
                if r.count() == 2 {
                    scratch.clear();
                    scratch.extend_from_slice(head.with_virtio_header());
                }
                scratch.extend_from_slice(payload);
                continue;
            }
        }
        if let Some((head, r)) = run.take() {
            finish_write(head, r, scratch, &mut write);
        }
        match can_join
            .then(|| JoinedRun::start(&frame.offload, frame.frame()))
            .flatten()
        {
            Some(r) => run = Some((frame, r)),
            None => write(&frame, 1),
        }
    }
    if let Some((head, r)) = run {
        finish_write(head, r, scratch, &mut write);
    }
}

/// Writes a run's head alone, or the super-frame joined in `scratch`
/// (`virtio_net_hdr` included).
fn finish_write(
    head: TapFrame<'_>,
    run: JoinedRun,
    scratch: &mut [u8],
    write: &mut impl FnMut(&TapFrame<'_>, usize),
) {
    if run.count() == 1 {
        write(&head, 1);
        return;
    }
    let Some(offload) = run.finish_with_header(scratch) else {
        return;
    };
    write(
        &TapFrame::from_parts(head.network, offload, scratch),
        run.count(),
    );
}

/// A frame that could be part of a joined run: one whole UDP datagram.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    layout: Layout,
    payload_len: usize,
    ipv4_id: u16,
}

impl Datagram {
    /// The frame (with offloads `offload`) as a joinable datagram, if it is one.
    fn of(offload: &Offload, frame: &[u8]) -> Option<Self> {
        if offload.segmentation.is_some() {
            return None;
        }
        let layout = Layout::of(frame).ok()?;
        if layout.tcp {
            return None;
        }
        let be16 = |at: usize| usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
        let ip_len = frame.len() - layout.l3;
        // No IPv4 options, and lengths that say exactly the frame: Ethernet
        // padding would not survive the cut.
        let ip_len_ok = if layout.ipv6 {
            be16(layout.l3 + 4) + IPV6_HEADER_LEN_BYTES == ip_len
        } else {
            layout.l4 - layout.l3 == IPV4_HEADER_LEN_BYTES && be16(layout.l3 + 2) == ip_len
        };
        let udp_len = frame.len() - layout.l4;
        if !ip_len_ok || be16(layout.l4 + 4) != udp_len || udp_len <= UDP_HEADER_LEN_BYTES {
            return None;
        }
        // The cut writes each IPv4 header checksum anew: a wrong one (which
        // the kernel would drop) must not be mended by joining.
        if !layout.ipv6
            && Sum16BitWords::new()
                .add_slice(&frame[layout.l3..layout.l4])
                .ones_complement()
                != 0
        {
            return None;
        }
        if !offload.partial_checksum && !checksum_correct(frame, &layout) {
            return None;
        }
        Some(Self {
            layout,
            payload_len: udp_len - UDP_HEADER_LEN_BYTES,
            ipv4_id: u16::from_be_bytes([frame[layout.l3 + 4], frame[layout.l3 + 5]]),
        })
    }
}

/// Whether a complete UDP checksum is right; an IPv4 datagram without one
/// (zero) is not joined, as the cut would give it one.
fn checksum_correct(frame: &[u8], layout: &Layout) -> bool {
    let at = layout.checksum_at();
    if frame[at..at + 2] == [0, 0] {
        return false;
    }
    pseudo_header_sum(frame, layout)
        .add_slice(&frame[layout.l4..])
        .ones_complement()
        == 0
}

/// A run of UDP datagrams of one flow being joined: the first frame whole,
/// then each follower's payload after it, wherever the caller keeps them.
#[derive(Debug, Clone, Copy)]
pub struct JoinedRun {
    first: Datagram,
    count: usize,
    /// A shorter datagram ended it.
    closed: bool,
}

impl JoinedRun {
    /// Starts a run at `frame` (its offloads `offload`), if it is a datagram
    /// others could join.
    pub fn start(offload: &Offload, frame: &[u8]) -> Option<Self> {
        Datagram::of(offload, frame).map(|first| Self {
            first,
            count: 1,
            closed: false,
        })
    }

    /// The datagrams in the run.
    pub fn count(&self) -> usize {
        self.count
    }

    /// If `frame` (its offloads `offload`) can follow the run whose frame so
    /// far is `joined` (its headers are compared) without making it longer
    /// than `max_len` bytes, counts it in and returns its payload, for the
    /// caller to append.
    pub fn push<'f>(
        &mut self,
        joined: &[u8],
        max_len: usize,
        offload: &Offload,
        frame: &'f [u8],
    ) -> Option<&'f [u8]> {
        let d = Datagram::of(offload, frame)?;
        let l = self.first.layout;
        if self.closed
            || self.count >= MAX_JOINED_DATAGRAMS
            || joined.len() + d.payload_len > max_len
            || d.layout != l
            || d.payload_len > self.first.payload_len
            || joined.len() < l.l4 + UDP_HEADER_LEN_BYTES
        {
            return None;
        }
        let (a, b) = (joined, frame);
        let same = |r: std::ops::Range<usize>| a[r.clone()] == b[r];
        let ip_same = if l.ipv6 {
            // Version, traffic class and flow label; next header, hop
            // limit and addresses.
            same(l.l3..l.l3 + 4) && same(l.l3 + 6..l.l3 + 40)
        } else {
            // Version, header length and TOS; flags, TTL and protocol; addresses.
            same(l.l3..l.l3 + 2)
                && same(l.l3 + 6..l.l3 + 10)
                && same(l.l3 + 12..l.l3 + 20)
                && d.ipv4_id == self.first.ipv4_id.wrapping_add(self.count as u16)
        };
        let joined_ip_len = l.l4 - l.l3
            + UDP_HEADER_LEN_BYTES
            + self.first.payload_len * self.count
            + d.payload_len;
        let ip_len_fits = if l.ipv6 {
            joined_ip_len - IPV6_HEADER_LEN_BYTES <= MAX_IP_LEN_BYTES
        } else {
            joined_ip_len <= MAX_IP_LEN_BYTES
        };
        // Ethernet (and VLAN), IP, ports.
        if !(ip_len_fits && same(0..l.l3) && ip_same && same(l.l4..l.l4 + 4)) {
            return None;
        }
        self.count += 1;
        self.closed = d.payload_len < self.first.payload_len;
        Some(&frame[l.l4 + UDP_HEADER_LEN_BYTES..])
    }

    /// Makes `joined` (the first frame and every payload pushed, nothing
    /// else) one UDP super-frame: its IP and UDP lengths, the pseudo-header
    /// sum as its partial checksum. Returns its offloads; none for a run of
    /// one (left as it is).
    pub fn finish(&self, joined: &mut [u8]) -> Option<Offload> {
        if self.count < 2 {
            return None;
        }
        let l = self.first.layout;
        set_ip_length(joined, &l);
        set_udp_length(joined, &l);
        // Partial: the pseudo-header sum alone, as USO expects it.
        let at = l.checksum_at();
        let partial = !pseudo_header_sum(joined, &l).ones_complement();
        joined[at..at + 2].copy_from_slice(&partial.to_ne_bytes());
        Some(Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind: if l.ipv6 {
                    SegmentationKind::Udp6
                } else {
                    SegmentationKind::Udp4
                },
                segment_size: self.first.payload_len as u16,
            }),
        })
    }

    /// [`JoinedRun::finish`] for a frame behind its `virtio_net_hdr`
    /// (`with_header`), which is written for the super-frame too.
    pub fn finish_with_header(&self, with_header: &mut [u8]) -> Option<Offload> {
        let (header, frame) = with_header.split_at_mut(VIRTIO_NET_HDR_LEN_BYTES);
        let offload = self.finish(frame)?;
        // Cannot fail: the frame is UDP over the IP version of the kind.
        header.copy_from_slice(&offload.to_virtio(frame).ok()?);
        Some(offload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Outbox;
    use crate::offload::fill_ipv4_header_checksum;
    use etherparse::PacketBuilder;

    fn net(number: u32) -> NetworkId {
        NetworkId::from_u64(0x11_2233_4455_0000 | u64::from(number)).unwrap()
    }

    /// One datagram of a flow: IPv4 (with `id`) or IPv6, its payload
    /// marked with `mark`, its checksum complete.
    fn datagram(v6: bool, id: u16, payload_len: usize, mark: u8) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| mark ^ (i as u8)).collect();
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if v6 {
            b.ipv6([1; 16], [2; 16], 64)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let mut out = Vec::new();
        b.udp(5_000, 6_000).write(&mut out, &payload).unwrap();
        if !v6 {
            out[18..20].copy_from_slice(&id.to_be_bytes());
            let layout = Layout::of(&out).unwrap();
            fill_ipv4_header_checksum(&mut out, &layout);
        }
        out
    }

    /// The frame as a TAP with checksum offload hands it over: the UDP
    /// checksum holds only the pseudo-header sum.
    fn partial(mut frame: Vec<u8>) -> Vec<u8> {
        let l = Layout::of(&frame).unwrap();
        let sum = !pseudo_header_sum(&frame, &l).ones_complement();
        frame[l.checksum_at()..l.checksum_at() + 2].copy_from_slice(&sum.to_ne_bytes());
        frame
    }

    /// A frame queued for a network's TAP, its checksum partial or not.
    type Queued = (NetworkId, Vec<u8>, bool);

    /// What each written frame stands for once cut as the kernel's USO
    /// would (checksums completed), and how many datagrams `write` was told
    /// each carried.
    fn join(frames: &[Queued]) -> (Vec<Vec<u8>>, Vec<usize>) {
        join_on(frames, net(1))
    }

    /// As [`join`], with `joinable` the one network whose device takes USO.
    fn join_on(frames: &[Queued], joinable: NetworkId) -> (Vec<Vec<u8>>, Vec<usize>) {
        let mut out = Outbox::new();
        for (net, frame, partial) in frames {
            let offload = Offload {
                partial_checksum: *partial,
                segmentation: None,
            };
            out.push_frame(*net, offload, frame);
        }
        let (mut cut, mut counts, mut scratch, mut segments) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        join_udp_runs(
            out.frames(),
            |n| n == joinable,
            &mut scratch,
            |f, count| {
                counts.push(count);
                let made = f
                    .offload
                    .complete(f.frame(), &mut segments, |s| cut.push(s.to_vec()))
                    .unwrap();
                assert_eq!(made, count, "the count is what the frame cuts into");
                if count > 1 {
                    assert_eq!(
                        f.offload.to_virtio(f.frame()).unwrap(),
                        f.with_virtio_header()[..VIRTIO_NET_HDR_LEN_BYTES],
                    );
                }
            },
        );
        (cut, counts)
    }

    fn complete(frame: &[u8]) -> Vec<u8> {
        let mut done = Vec::new();
        let offload = Offload {
            partial_checksum: true,
            segmentation: None,
        };
        offload
            .complete(frame, &mut Vec::new(), |f| done = f.to_vec())
            .unwrap();
        done
    }

    #[test]
    fn a_flow_joins_and_cuts_back_to_the_same_datagrams() {
        for v6 in [false, true] {
            let flow: Vec<Vec<u8>> = (0..10)
                .map(|i| datagram(v6, 100 + i, 64, i as u8))
                .collect();
            let frames: Vec<_> = flow
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    (
                        net(1),
                        if i % 2 == 0 {
                            partial(f.clone())
                        } else {
                            f.clone()
                        },
                        i % 2 == 0,
                    )
                })
                .collect();
            let (cut, counts) = join(&frames);
            assert_eq!(counts, [10], "v6 {v6}");
            assert_eq!(cut, flow, "v6 {v6}");
        }
    }

    #[test]
    fn the_joined_checksum_is_the_pseudo_header_sum_of_the_whole() {
        let frames: Vec<_> = (0..3)
            .map(|i| (net(1), datagram(false, i, 100, 1), false))
            .collect();
        let mut out = Outbox::new();
        for (net, f, _) in &frames {
            out.push_frame(*net, Offload::NONE, f);
        }
        let mut joined = Vec::new();
        join_udp_runs(
            out.frames(),
            |_| true,
            &mut Vec::new(),
            |f, _| joined = f.frame().to_vec(),
        );
        let udp_len = 8 + 300u32;
        assert_eq!(joined.len(), 14 + 20 + udp_len as usize);
        // 10.0.0.1 + 10.0.0.2 + protocol + length, folded.
        let sum = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + udp_len;
        let folded = ((sum & 0xffff) + (sum >> 16)) as u16;
        assert_eq!(joined[40..42], folded.to_be_bytes());
        assert_eq!(u16::from_be_bytes([joined[38], joined[39]]), udp_len as u16);
        assert_eq!(
            u16::from_be_bytes([joined[16], joined[17]]),
            20 + udp_len as u16
        );
    }

    #[test]
    fn only_what_cuts_back_exactly_joins() {
        let d = |id: u16, len: usize| datagram(false, id, len, id as u8);
        let mut other_port = d(3, 64);
        other_port[36] ^= 1;
        let other_port = partial(other_port);
        let mut bad_checksum = d(3, 64);
        bad_checksum[40] ^= 1;
        let mut no_checksum = d(3, 64);
        no_checksum[40..42].fill(0);
        let mut padded = d(3, 64);
        padded.extend_from_slice(&[0; 4]);
        let mut tcp = datagram(false, 3, 64, 3);
        tcp[23] = 6;
        let cases: Vec<(&str, Vec<Queued>, Vec<usize>)> = vec![
            (
                "ids skip",
                vec![(net(1), d(1, 64), false), (net(1), d(3, 64), false)],
                vec![1, 1],
            ),
            (
                "other port",
                vec![
                    (net(1), d(1, 64), false),
                    (net(1), d(2, 64), false),
                    (net(1), other_port, true),
                ],
                vec![2, 1],
            ),
            (
                "longer after",
                vec![(net(1), d(1, 64), false), (net(1), d(2, 65), false)],
                vec![1, 1],
            ),
            (
                "shorter ends it",
                vec![
                    (net(1), d(1, 64), false),
                    (net(1), d(2, 10), false),
                    (net(1), d(3, 64), false),
                ],
                vec![2, 1],
            ),
            (
                "bad checksum",
                vec![
                    (net(1), d(1, 64), false),
                    (net(1), d(2, 64), false),
                    (net(1), bad_checksum, false),
                ],
                vec![2, 1],
            ),
            (
                "no checksum",
                vec![
                    (net(1), d(1, 64), false),
                    (net(1), d(2, 64), false),
                    (net(1), no_checksum, false),
                ],
                vec![2, 1],
            ),
            (
                "Ethernet padding",
                vec![
                    (net(1), d(1, 64), false),
                    (net(1), d(2, 64), false),
                    (net(1), padded, false),
                ],
                vec![2, 1],
            ),
            (
                "not UDP",
                vec![
                    (net(1), d(1, 64), false),
                    (net(1), tcp, false),
                    (net(1), d(2, 64), false),
                ],
                vec![1, 1, 1],
            ),
            (
                "device without USO",
                vec![(net(2), d(1, 64), false), (net(2), d(2, 64), false)],
                vec![1, 1],
            ),
            (
                "other network between",
                vec![
                    (net(1), d(1, 64), false),
                    (net(2), d(2, 64), false),
                    (net(1), d(2, 64), false),
                ],
                vec![1, 1, 1],
            ),
        ];
        for (what, frames, expected) in cases {
            let (cut, counts) = join(&frames);
            assert_eq!(counts, expected, "{what}");
            let originals: Vec<Vec<u8>> = frames
                .iter()
                .map(|(_, f, partial)| if *partial { complete(f) } else { f.clone() })
                .collect();
            assert_eq!(cut, originals, "{what}");
        }
    }

    #[test]
    fn a_run_stops_at_the_datagram_and_length_limits() {
        let long: Vec<_> = (0..150)
            .map(|i| (net(1), datagram(true, 0, 64, i as u8), false))
            .collect();
        assert_eq!(join(&long).1, [64, 64, 22]);
        // 1,400-byte payloads: 46 fit an IPv4 packet's 65,535 bytes.
        let big: Vec<_> = (0..50)
            .map(|i| (net(1), datagram(false, i, 1_400, i as u8), false))
            .collect();
        let (cut, counts) = join(&big);
        assert_eq!(counts, [46, 4]);
        assert_eq!(cut.len(), 50);
        // Ids wrap.
        let wrap: Vec<_> = (0..4)
            .map(|i| {
                (
                    net(1),
                    datagram(false, 65_534u16.wrapping_add(i), 64, 1),
                    false,
                )
            })
            .collect();
        assert_eq!(join(&wrap).1, [4]);
    }

    #[test]
    fn a_datagram_that_would_pass_the_length_given_is_left_out_uncounted() {
        let first = datagram(false, 1, 64, 1);
        let second = datagram(false, 2, 64, 2);
        let third = datagram(false, 3, 64, 3);
        let mut run = JoinedRun::start(&Offload::NONE, &first).unwrap();
        let mut joined = first.clone();
        let max = first.len() + 64;
        let p = run.push(&joined, max, &Offload::NONE, &second).unwrap();
        joined.extend_from_slice(p);
        assert_eq!(run.push(&joined, max, &Offload::NONE, &third), None);
        assert_eq!(run.count(), 2, "the third is not counted");
        let offload = run.finish(&mut joined).unwrap();
        let mut cut = Vec::new();
        offload
            .complete(&joined, &mut Vec::new(), |f| cut.push(f.to_vec()))
            .unwrap();
        assert_eq!(cut, [first, second]);
    }

    proptest::proptest! {
        #[test]
        fn whatever_is_queued_is_written_as_it_would_be_unjoined(
            v6 in proptest::bool::ANY,
            // Mostly one length, so runs form; any other now and then.
            lens in proptest::collection::vec(
                proptest::prop_oneof![4 => proptest::strategy::Just(64usize), 1 => 1usize..1_500],
                1..120,
            ),
            partials in proptest::collection::vec(proptest::bool::ANY, 120),
            // IPv4 ids mostly counting up by one.
            gaps in proptest::collection::vec(proptest::prop_oneof![4 => proptest::strategy::Just(1u16), 1 => 0u16..3], 120),
        ) {
            let mut id = 7u16;
            let mut frames = Vec::new();
            let mut originals = Vec::new();
            for (i, len) in lens.iter().enumerate() {
                id = id.wrapping_add(gaps[i]);
                let f = datagram(v6, id, *len, i as u8);
                originals.push(f.clone());
                frames.push((net(1), if partials[i] { partial(f) } else { f }, partials[i]));
            }
            let (cut, counts) = join(&frames);
            proptest::prop_assert_eq!(counts.iter().sum::<usize>(), lens.len());
            proptest::prop_assert_eq!(cut, originals);
        }

        #[test]
        fn damaged_frames_never_join_into_something_else(
            v6 in proptest::bool::ANY,
            count in 1usize..40,
            partials in proptest::collection::vec(proptest::bool::ANY, 40),
            damage in proptest::collection::vec((0usize..40, 0usize..200, 1u8..=255), 0..12),
            cut_short in proptest::collection::vec((0usize..40, 0usize..120), 0..3),
        ) {
            let mut frames: Vec<Queued> = (0..count)
                .map(|i| {
                    let f = datagram(v6, i as u16, 64, i as u8);
                    if partials[i] { (net(1), partial(f), true) } else { (net(1), f, false) }
                })
                .collect();
            for (which, at, xor) in damage {
                let f = &mut frames[which % count].1;
                let at = at % f.len();
                f[at] ^= xor;
            }
            for (which, len) in cut_short {
                let f = &mut frames[which % count].1;
                f.truncate(len.min(f.len()));
            }
            // Whatever the bytes, joining changes nothing the kernel ends
            // up with: the same frames as writing each alone.
            let (joined, counts) = join_on(&frames, net(1));
            let (alone, _) = join_on(&frames, net(2));
            proptest::prop_assert_eq!(counts.iter().sum::<usize>(), count);
            proptest::prop_assert_eq!(joined, alone);
        }
    }
}
