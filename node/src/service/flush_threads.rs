//! A member's flush threads: more than one core for its own traffic, no
//! flow ever reordered.
//!
//! The engine reads, decides and seals; what a round leaves in the outbox
//! still costs most of the work: a UDP `sendmsg` carries its datagrams
//! through the kernel to the peer inline, and a TAP write carries a frame
//! through the kernel's whole receive path (TCP included) inline. With
//! flush threads the engine hands a full outbox over and reads on while
//! the threads send and write it.
//!
//! Order: each transmit goes to the thread its destination hashes to, each
//! TAP frame to the thread its flow hashes to ([`flow_shard`]), and every
//! thread takes outboxes in the order the engine handed them over, so the
//! datagrams to one place, and the frames of one flow, leave in the order
//! the engine queued them. A small outbox while no outbox is in flight is
//! flushed by the engine itself (nothing can overtake it, and a lone ping
//! pays no thread hop); at most [`MAX_OUTBOXES_IN_FLIGHT`] are out at once,
//! past which the engine waits (the backpressure a blocking send would be).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use crate::core::constants::VIRTIO_NET_HDR_LEN_BYTES;
use crate::core::local_socket::LocalSocket;
use crate::core::network_id::NetworkId;
use crate::core::node::{Outbox, TapFrame};
use crate::core::udp_join::join_udp_runs;
use crate::service::tap::TapDevice;
use crate::service::udp_sockets::UdpSockets;

/// Outboxes handed to the threads and not yet flushed by all of them, at
/// most; the engine waits for one to come back beyond it.
pub const MAX_OUTBOXES_IN_FLIGHT: usize = 4;
/// An outbox holding fewer bytes is flushed by the engine itself when no
/// outbox is in flight: the thread hop would only add latency.
pub const INLINE_FLUSH_MAX_BYTES: usize = 16 * 1024;

/// How often the engine, waiting for an outbox, checks that the threads
/// still run.
const THREAD_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The TAP devices of the joined networks, as the engine had them when it
/// handed an outbox over.
pub type TapDevices = Arc<HashMap<NetworkId, TapDevice>>;

/// One outbox handed over, with which thread flushes which part of it.
struct Handover {
    out: Outbox,
    devices: TapDevices,
    /// The thread of each transmit (in `Outbox::transmits` order).
    transmit_shards: Vec<u8>,
    /// The thread of each frame (in `Outbox::frames` order).
    frame_shards: Vec<u8>,
    /// Some thread was given it (counted flushed by threads when done,
    /// whichever hold, the engine's or a thread's, is dropped last).
    to_threads: bool,
}

/// What the threads share with the engine.
struct Shared {
    udp: Arc<UdpSockets>,
    /// Outboxes handed over and not yet flushed by every thread given one.
    in_flight: AtomicUsize,
    /// Outboxes the threads flushed.
    flushed: AtomicU64,
    /// What the threads' TAP writes joined: writes, datagrams.
    joined_writes: AtomicU64,
    joined_datagrams: AtomicU64,
}

/// A member's flush threads.
pub struct FlushThreads {
    shared: Arc<Shared>,
    queues: Vec<Sender<Arc<Handover>>>,
    joins: Vec<JoinHandle<()>>,
    /// Flushed outboxes, emptied, for the engine to fill again.
    returned: Receiver<Outbox>,
    return_tx: Sender<Outbox>,
    /// Outboxes made so far (in flight, returned or the engine's).
    made: usize,
    hasher: FlowHasher,
}

/// Hashes destinations and flows to threads: fixed keys, so a flow keeps
/// its thread for the life of the process.
type FlowHasher = BuildHasherDefault<DefaultHasher>;

impl FlushThreads {
    /// Starts `threads` threads (at least one) sending on `udp`.
    pub fn start(threads: usize, udp: Arc<UdpSockets>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            udp,
            in_flight: AtomicUsize::new(0),
            flushed: AtomicU64::new(0),
            joined_writes: AtomicU64::new(0),
            joined_datagrams: AtomicU64::new(0),
        });
        let (return_tx, returned) = mpsc::channel();
        let mut queues = Vec::new();
        let mut joins = Vec::new();
        for index in 0..threads.clamp(1, usize::from(u8::MAX)) {
            let (tx, rx) = mpsc::channel::<Arc<Handover>>();
            let shared = shared.clone();
            let return_tx = return_tx.clone();
            joins.push(
                std::thread::Builder::new()
                    .name(format!("vnet-flush-{index}"))
                    .spawn(move || flush_thread(index as u8, &rx, &shared, &return_tx))?,
            );
            queues.push(tx);
        }
        Ok(Self {
            shared,
            queues,
            joins,
            returned,
            return_tx,
            made: 1,
            hasher: FlowHasher::default(),
        })
    }

    /// Threads running.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether no thread runs (never: `start` makes at least one).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Outboxes the threads flushed since the last call.
    pub fn take_flushed(&self) -> u64 {
        self.shared.flushed.swap(0, Ordering::Relaxed)
    }

    /// What the threads' TAP writes joined since the last call.
    pub fn take_joined(&self) -> Joined {
        Joined {
            writes: self.shared.joined_writes.swap(0, Ordering::Relaxed),
            datagrams: self.shared.joined_datagrams.swap(0, Ordering::Relaxed),
        }
    }

    /// Whether the engine should flush `out` itself: it is small and
    /// nothing handed over earlier is still being flushed.
    pub fn flush_inline(&self, out: &Outbox) -> bool {
        out.buffered_bytes() < INLINE_FLUSH_MAX_BYTES
            && self.shared.in_flight.load(Ordering::Acquire) == 0
    }

    /// Hands `out`'s datagrams on the primary and mapped sockets and its
    /// frames to the threads, and gives back an empty outbox to fill (after
    /// waiting for one when `MAX_OUTBOXES_IN_FLIGHT` are out). The engine
    /// sends punch-socket and TCP-relay datagrams itself.
    pub fn hand_over(&mut self, out: Outbox, devices: &TapDevices) -> Outbox {
        let threads = self.queues.len();
        let transmit_shards: Vec<u8> = out
            .transmits()
            .map(|t| match t.socket {
                LocalSocket::Primary | LocalSocket::Mapped => {
                    shard(self.hasher.hash_one(t.to), threads)
                }
                _ => u8::MAX,
            })
            .collect();
        let frame_shards: Vec<u8> = out
            .frames()
            .map(|f| shard(flow_shard(&self.hasher, f.frame()), threads))
            .collect();
        let mut involved = vec![false; threads];
        for &s in transmit_shards.iter().chain(&frame_shards) {
            if let Some(slot) = involved.get_mut(usize::from(s)) {
                *slot = true;
            }
        }
        let handover = Arc::new(Handover {
            out,
            devices: devices.clone(),
            transmit_shards,
            frame_shards,
            to_threads: involved.contains(&true),
        });
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        for (queue, _) in self.queues.iter().zip(&involved).filter(|(_, i)| **i) {
            if queue.send(handover.clone()).is_err() {
                warn!("a flush thread is gone");
            }
        }
        // If no thread was given it (only punch or TCP datagrams), ours is
        // the last hold and it comes back at once.
        finish(handover, &self.shared, &self.return_tx);
        self.next_outbox()
    }

    /// An empty outbox: a returned one, a new one while fewer than allowed
    /// exist, else the next to come back.
    fn next_outbox(&mut self) -> Outbox {
        if let Ok(out) = self.returned.try_recv() {
            return out;
        }
        if self.made < MAX_OUTBOXES_IN_FLIGHT + 1 {
            self.made += 1;
            return Outbox::new();
        }
        loop {
            match self.returned.recv_timeout(THREAD_CHECK_INTERVAL) {
                Ok(out) => return out,
                // A dead thread never gives its outboxes back: end the
                // engine loudly (the daemon stops; systemd restarts it)
                // rather than wait for ever with the packet path stalled.
                Err(_) if self.joins.iter().any(JoinHandle::is_finished) => {
                    panic!("a flush thread stopped")
                }
                Err(_) => {}
            }
        }
    }

    /// Stops the threads once they flushed what they hold, and waits.
    pub fn stop(&mut self) {
        self.queues.clear();
        for join in self.joins.drain(..) {
            if join.join().is_err() {
                warn!("a flush thread panicked");
            }
        }
    }
}

impl Drop for FlushThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread (of `threads`) for a hash.
fn shard(hash: u64, threads: usize) -> u8 {
    (hash % threads.max(1) as u64) as u8
}

/// A hash of the flow an Ethernet frame belongs to: addresses, protocol and
/// ports of TCP and UDP over IPv4 and IPv6, the MAC addresses for anything
/// else. Ports count only where the frame cannot be a fragment (IPv4 with
/// DF, IPv6 with TCP or UDP as the first header), so every frame of a flow
/// hashes alike.
pub fn flow_shard(hasher: &impl BuildHasher, frame: &[u8]) -> u64 {
    const ETHERTYPE_AT: usize = 12;
    let Some(&[a, b]) = frame.get(ETHERTYPE_AT..ETHERTYPE_AT + 2) else {
        return hasher.hash_one(frame);
    };
    let (ethertype, l3) = match u16::from_be_bytes([a, b]) {
        0x8100 => match frame.get(16..18) {
            Some(&[c, d]) => (u16::from_be_bytes([c, d]), 18),
            _ => return hasher.hash_one(frame),
        },
        t => (t, 14),
    };
    let ip = &frame[l3.min(frame.len())..];
    let macs = &frame[..ETHERTYPE_AT];
    match ethertype {
        0x0800 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            let protocol = ip[9];
            let dont_fragment = ip[6] & 0x40 != 0;
            let ports = (dont_fragment && matches!(protocol, 6 | 17))
                .then(|| ip.get(header_len..header_len + 4))
                .flatten();
            hasher.hash_one((&ip[12..20], protocol, ports))
        }
        0x86dd if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            let next = ip[6];
            let ports = matches!(next, 6 | 17).then(|| ip.get(40..44)).flatten();
            hasher.hash_one((&ip[8..40], next, ports))
        }
        _ => hasher.hash_one((macs, ethertype)),
    }
}

/// One thread: flushes its part of each outbox in the order they came.
fn flush_thread(
    index: u8,
    queue: &Receiver<Arc<Handover>>,
    shared: &Shared,
    returned: &Sender<Outbox>,
) {
    let mut writer = TapWriter::default();
    while let Ok(handover) = queue.recv() {
        for (t, _) in handover
            .out
            .transmits()
            .zip(&handover.transmit_shards)
            .filter(|(_, s)| **s == index)
        {
            shared.udp.send(t.socket, t.to, t.contents, t.segment_size);
        }
        let mine = handover
            .out
            .frames()
            .zip(&handover.frame_shards)
            .filter(|(_, s)| **s == index)
            .map(|(f, _)| f);
        let joined = writer.write(mine, |nwid| handover.devices.get(&nwid));
        if joined.writes > 0 {
            shared
                .joined_writes
                .fetch_add(joined.writes, Ordering::Relaxed);
            shared
                .joined_datagrams
                .fetch_add(joined.datagrams, Ordering::Relaxed);
        }
        finish(handover, shared, returned);
    }
}

/// Drops one hold of `handover`; the last one sends the outbox back
/// emptied and counts it flushed by threads if any had a part of it.
fn finish(handover: Arc<Handover>, shared: &Shared, returned: &Sender<Outbox>) {
    let Some(done) = Arc::into_inner(handover) else {
        return;
    };
    let mut out = done.out;
    out.clear();
    if done.to_threads {
        shared.flushed.fetch_add(1, Ordering::Relaxed);
    }
    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    let _ = returned.send(out);
}

/// Writes frames to their TAP devices, joining runs of UDP datagrams of
/// one flow into super-frames where the device takes USO
/// ([`join_udp_runs`]); keeps its buffers between calls.
#[derive(Default)]
pub struct TapWriter {
    /// The super-frame being joined.
    joined: Vec<u8>,
    /// Frames a super-frame is cut into for a TAP without offloads.
    segments: Vec<u8>,
    /// One of them behind an all-zero `virtio_net_hdr`.
    with_header: Vec<u8>,
}

/// What a [`TapWriter`] joined: writes of joined datagrams, and datagrams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// TAP writes that carried joined datagrams.
    pub writes: u64,
    /// The datagrams they carried.
    pub datagrams: u64,
}

impl TapWriter {
    /// Writes `frames` in order, each to the device `device` gives for its
    /// network (none: dropped).
    pub fn write<'a, 'd>(
        &mut self,
        frames: impl IntoIterator<Item = TapFrame<'a>>,
        device: impl Fn(NetworkId) -> Option<&'d TapDevice>,
    ) -> Joined {
        let mut joined = Joined::default();
        let (segments, with_header) = (&mut self.segments, &mut self.with_header);
        join_udp_runs(
            frames,
            |nwid| device(nwid).is_some_and(|tap| tap.uso()),
            &mut self.joined,
            |f, datagrams| {
                if datagrams > 1 {
                    joined.writes += 1;
                    joined.datagrams += datagrams as u64;
                }
                if let Some(tap) = device(f.network) {
                    write_frame(tap, f, segments, with_header);
                }
            },
        );
        joined
    }
}

/// Writes one frame to its TAP device: behind a `virtio_net_hdr` where the
/// device takes one, else whole, else cut into the frames the kernel would
/// have made (a TAP without offloads).
fn write_frame(
    tap: &TapDevice,
    f: &TapFrame<'_>,
    segments: &mut Vec<u8>,
    with_header: &mut Vec<u8>,
) {
    let udp_super_frame = f.offload.segmentation.is_some_and(|s| !s.kind.is_tcp());
    let written = if tap.virtio_header() && (tap.uso() || !udp_super_frame) {
        tap.write(f.with_virtio_header()).map(drop)
    } else if f.offload.is_none() {
        tap.write(f.frame()).map(drop)
    } else {
        // Completed here: each frame behind an all-zero header if the
        // device expects one.
        let mut result = Ok(());
        let _ = f.offload.complete(f.frame(), segments, |frame| {
            let written = if tap.virtio_header() {
                with_header.clear();
                with_header.resize(VIRTIO_NET_HDR_LEN_BYTES, 0);
                with_header.extend_from_slice(frame);
                tap.write(with_header)
            } else {
                tap.write(frame)
            };
            if let Err(e) = written {
                result = Err(e);
            }
        });
        result
    };
    if let Err(e) = written {
        debug!(nwid = %f.network, error = %e, "TAP write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};

    /// An Ethernet frame with an IPv4 header (`df`: don't fragment) and
    /// the first bytes of a TCP header.
    fn ipv4_tcp(src_port: u16, dst_port: u16, df: bool, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[14 + 6] = if df { 0x40 } else { 0 };
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        // Sequence numbers and payload differ from frame to frame.
        f[38] = payload as u8;
        f
    }

    #[test]
    fn every_frame_of_a_flow_hashes_alike_and_flows_spread() {
        let h = FlowHasher::default();
        let one = flow_shard(&h, &ipv4_tcp(40_000, 5201, true, 10));
        for payload in [0, 1, 100, 1_400] {
            assert_eq!(flow_shard(&h, &ipv4_tcp(40_000, 5201, true, payload)), one);
        }
        let threads = 4;
        let shards: std::collections::HashSet<u8> = (0..64)
            .map(|port| {
                shard(
                    flow_shard(&h, &ipv4_tcp(40_000 + port, 5201, true, 0)),
                    threads,
                )
            })
            .collect();
        assert!(
            shards.len() > 1,
            "flows by port land on one thread: {shards:?}"
        );
        // Without DF a frame could be a fragment: ports are not looked at,
        // so fragments and whole packets of a flow stay together.
        let no_df = flow_shard(&h, &ipv4_tcp(1, 2, false, 0));
        assert_eq!(flow_shard(&h, &ipv4_tcp(3, 4, false, 9)), no_df);
        // Short or odd frames still hash (no panic).
        for len in 0..40 {
            let _ = flow_shard(&h, &ipv4_tcp(1, 2, true, 0)[..len]);
        }
    }

    /// Outboxes of datagrams to four places, handed to three threads:
    /// every datagram arrives, and those to one place in the order queued.
    #[test]
    fn datagrams_to_one_place_leave_in_the_order_queued() {
        let (udp, _) = UdpSockets::bind(0, None, 0).unwrap();
        let mut threads = FlushThreads::start(3, Arc::new(udp)).unwrap();
        let receivers: Vec<UdpSocket> = (0..4)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s
            })
            .collect();
        let addrs: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        const OUTBOXES: u32 = 100;
        const PER_PLACE: u32 = 3;
        let readers: Vec<_> = receivers
            .into_iter()
            .map(|r| {
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 64];
                    while got.len() < (OUTBOXES * PER_PLACE) as usize {
                        let Ok(n) = r.recv(&mut buf) else { break };
                        got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                        assert_eq!(n, 40);
                    }
                    got
                })
            })
            .collect();
        let devices = TapDevices::default();
        let mut out = Outbox::new();
        let mut seq = 0u32;
        for _ in 0..OUTBOXES {
            for _ in 0..PER_PLACE {
                for to in &addrs {
                    let mut d = [0u8; 40];
                    d[..4].copy_from_slice(&seq.to_be_bytes());
                    out.push(LocalSocket::Primary, *to, &d);
                    seq += 1;
                }
            }
            out = threads.hand_over(out, &devices);
            assert!(threads.made <= MAX_OUTBOXES_IN_FLIGHT + 1);
        }
        for (place, reader) in readers.into_iter().enumerate() {
            let got = reader.join().unwrap();
            assert_eq!(got.len(), (OUTBOXES * PER_PLACE) as usize, "place {place}");
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "place {place} reordered"
            );
        }
        let mut flushed = 0;
        for _ in 0..200 {
            flushed += threads.take_flushed();
            if flushed == u64::from(OUTBOXES) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(flushed, u64::from(OUTBOXES));
        assert!(threads.flush_inline(&Outbox::new()), "nothing in flight");
        threads.stop();
    }
}
