//! Fragmentation (§3.3): cutting an armored packet longer than the path MTU
//! into a head and fragments, and putting received pieces back together.
//!
//! The head is the packet's first `mtu` bytes, unchanged: its flags must
//! already say *more fragments follow* (bit 6) when it is armored, because the
//! flags are part of the MAC'd header. So the sender asks [`fragment_count`]
//! first, sets [`crate::wire::PacketHeader::more_fragments`] when the answer is above one,
//! armors, and then calls [`write_fragments`], which only slices.
//!
//! [`Reassembler`] collects pieces by (datagram source IP:port, counter,
//! destination) and returns the whole packet, head flags and MAC as sent,
//! ready for dearmoring. It holds at most [`MAX_PENDING_REASSEMBLIES`]
//! incomplete packets for at most [`FRAGMENT_TIMEOUT_MS`] each, and at most
//! [`MAX_PENDING_REASSEMBLIES_PER_SOURCE`] per source host (IPv4 address or
//! IPv6 /64): a source over its quota evicts its own oldest, and a full table
//! evicts from the source holding the most, so one source cannot push out the
//! partial packets of a source holding fewer.
//!
//! Fragments carry no source address (PROTOCOL.md §3.3), so pieces of two
//! peers relayed by the same root with the same counter at the same time
//! cannot be told apart: the second head is refused
//! ([`ReassemblyError::SourceMismatch`]) and a packet completed with the
//! wrong pieces fails its MAC, so it is lost, never mis-delivered.

use std::net::{IpAddr, SocketAddr};

use crate::address::Address;
use crate::constants::{
    FRAGMENT_HEADER_LEN_BYTES, FRAGMENT_TIMEOUT_MS, MAX_FRAGMENTS, MAX_PENDING_REASSEMBLIES,
    MAX_PENDING_REASSEMBLIES_PER_SOURCE, PACKET_MAX_LEN_BYTES, PACKET_MIN_LEN_BYTES,
};
use crate::wire::{Datagram, FragmentHeader, WireError, classify};

/// Smallest MTU packets can be cut for: a head must hold a header and a verb.
pub const MIN_MTU_BYTES: usize = PACKET_MIN_LEN_BYTES;

/// Most spare buffers a [`Reassembler`] keeps for reuse.
const SPARE_BUFFERS: usize = 4;

/// Why a packet cannot be cut into fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The packet's header does not decode.
    #[error("not a valid packet: {0}")]
    Wire(#[from] WireError),
    /// The MTU cannot carry a head (below [`MIN_MTU_BYTES`]).
    #[error("MTU of {mtu} bytes is too small (at least {MIN_MTU_BYTES})")]
    MtuTooSmall {
        /// The MTU asked for.
        mtu: usize,
    },
    /// More than [`MAX_FRAGMENTS`] pieces would be needed.
    #[error("packet needs {needed} pieces, more than {MAX_FRAGMENTS}")]
    TooManyFragments {
        /// Pieces needed at this MTU.
        needed: usize,
    },
    /// The *more fragments* flag does not match whether the packet is cut.
    #[error("more-fragments flag must be {expected} for this packet and MTU")]
    MoreFragmentsFlag {
        /// What the flag should have been when the packet was armored.
        expected: bool,
    },
}

/// Why a received piece was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// The datagram is not a well-formed head or fragment.
    #[error("malformed piece: {0}")]
    Wire(#[from] WireError),
    /// A packet without the *more fragments* flag was offered as a head.
    #[error("packet is not the head of a fragmented packet")]
    NotAHead,
    /// A piece that has already arrived.
    #[error("duplicate piece {index}")]
    Duplicate {
        /// The piece's number (0 = head).
        index: u8,
    },
    /// A fragment's total differs from an earlier fragment's.
    #[error("fragment says {got} pieces, an earlier one said {expected}")]
    InconsistentTotal {
        /// What earlier fragments said.
        expected: u8,
        /// What this one says.
        got: u8,
    },
    /// A piece's destination differs from an earlier piece's.
    #[error("piece is for {got}, an earlier one was for {expected}")]
    DestinationMismatch {
        /// The earlier pieces' destination.
        expected: Address,
        /// This piece's destination.
        got: Address,
    },
    /// A second head for a packet already started by a head from another
    /// source address (two relayed peers with the same counter).
    #[error("head from {got}, an earlier head for this counter was from {expected}")]
    SourceMismatch {
        /// The earlier head's source address.
        expected: Address,
        /// This head's source address.
        got: Address,
    },
    /// The pieces add up to more than [`PACKET_MAX_LEN_BYTES`]; the whole
    /// packet is dropped.
    #[error("reassembled packet would exceed {PACKET_MAX_LEN_BYTES} bytes")]
    TooLong,
}

/// Counts of what a [`Reassembler`] did, for statistics (`/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReassemblyStats {
    /// Packets put back together and returned.
    pub completed: u64,
    /// Pieces refused as malformed or not a head.
    pub malformed: u64,
    /// Pieces refused because they had arrived already.
    pub duplicates: u64,
    /// Pieces refused for a total, destination or (heads) source that
    /// disagrees with earlier pieces.
    pub inconsistent: u64,
    /// Incomplete packets dropped for growing beyond the largest packet.
    pub too_long: u64,
    /// Incomplete packets dropped after `FRAGMENT_TIMEOUT_MS`.
    pub timed_out: u64,
    /// Incomplete packets dropped to make room for a newer one from another source.
    pub evicted: u64,
    /// Incomplete packets dropped because their source was at its quota.
    pub evicted_over_quota: u64,
}

/// How many datagrams a packet of `packet_len` bytes goes out as at `mtu`:
/// 1 if it fits, else the head and enough fragments of `mtu - 17` data bytes.
/// `usize::MAX` if `mtu` is below [`MIN_MTU_BYTES`].
pub fn fragment_count(packet_len: usize, mtu: usize) -> usize {
    if mtu < MIN_MTU_BYTES {
        return usize::MAX;
    }
    if packet_len <= mtu {
        return 1;
    }
    1 + (packet_len - mtu).div_ceil(mtu - FRAGMENT_HEADER_LEN_BYTES)
}

/// Sends an armored packet as datagrams of at most `mtu` bytes: calls `emit`
/// with the packet itself if it fits, else with the head (the packet's first
/// `mtu` bytes, unmodified) and then each fragment in order. Returns how many
/// datagrams were emitted.
///
/// The head is not modified: its *more fragments* flag must have been set
/// before armoring exactly when [`fragment_count`] is above one, else nothing
/// is emitted and [`FragmentError::MoreFragmentsFlag`] says which way. Each
/// fragment copies the head's counter, destination and hop count. One buffer
/// of `mtu` bytes is allocated per call; [`write_fragments_with`] reuses the
/// caller's instead.
pub fn write_fragments(
    packet: &[u8],
    mtu: usize,
    emit: impl FnMut(&[u8]),
) -> Result<usize, FragmentError> {
    write_fragments_with(packet, mtu, &mut Vec::new(), emit)
}

/// Checks that `packet` can be cut at `mtu` (a packet, not a fragment; at
/// most `MAX_FRAGMENTS` pieces; its *more fragments* flag set exactly when
/// it needs more than one) and returns how many datagrams it makes and the
/// header its fragments share (index to be set per piece).
fn plan_fragments(packet: &[u8], mtu: usize) -> Result<(usize, FragmentHeader), FragmentError> {
    if mtu < MIN_MTU_BYTES {
        return Err(FragmentError::MtuTooSmall { mtu });
    }
    let header = match classify(packet)? {
        Datagram::Packet { header, .. } => header,
        Datagram::Fragment { .. } => return Err(WireError::NotAPacket.into()),
    };
    let count = fragment_count(packet.len(), mtu);
    if count > MAX_FRAGMENTS {
        return Err(FragmentError::TooManyFragments { needed: count });
    }
    if header.more_fragments != (count > 1) {
        return Err(FragmentError::MoreFragmentsFlag {
            expected: count > 1,
        });
    }
    let fragment = FragmentHeader {
        counter: header.counter,
        dest: header.dest,
        total: count as u8,
        index: 0,
        hops: header.hops,
    };
    Ok((count, fragment))
}

/// [`write_fragments`] building fragments in `scratch` (cleared first, and
/// left holding the last fragment), so a caller sending many packets
/// allocates nothing.
pub fn write_fragments_with(
    packet: &[u8],
    mtu: usize,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, FragmentError> {
    let (count, mut fragment) = plan_fragments(packet, mtu)?;
    if count == 1 {
        emit(packet);
        return Ok(1);
    }
    emit(&packet[..mtu]);
    let data_per_fragment = mtu - FRAGMENT_HEADER_LEN_BYTES;
    for (i, chunk) in packet[mtu..].chunks(data_per_fragment).enumerate() {
        fragment.index = (i + 1) as u8;
        scratch.clear();
        scratch.resize(FRAGMENT_HEADER_LEN_BYTES, 0);
        fragment.encode_into(scratch);
        scratch.extend_from_slice(chunk);
        emit(scratch);
    }
    Ok(count)
}

/// Cuts the armored packet that makes up `buf[start..]` into datagrams
/// where it lies, as [`write_fragments`] would emit them: the head keeps its
/// first `mtu` bytes and each following piece moves right to make room for
/// its fragment header. Every datagram but the last is then exactly `mtu`
/// bytes, so they form one run of `mtu`-byte segments. Returns how many.
pub fn fragment_in_place(
    buf: &mut Vec<u8>,
    start: usize,
    mtu: usize,
) -> Result<usize, FragmentError> {
    let packet = buf.get(start..).unwrap_or_default();
    let packet_len = packet.len();
    let (count, mut fragment) = plan_fragments(packet, mtu)?;
    if count == 1 {
        return Ok(1);
    }
    let data_per_fragment = mtu - FRAGMENT_HEADER_LEN_BYTES;
    buf.resize(
        start + packet_len + (count - 1) * FRAGMENT_HEADER_LEN_BYTES,
        0,
    );
    // Last piece first: each moves right by the headers in front of it, so
    // none lands on a piece not yet moved.
    for i in (1..count).rev() {
        let from = mtu + (i - 1) * data_per_fragment;
        let len = data_per_fragment.min(packet_len - from);
        let at = start + i * mtu;
        buf.copy_within(
            start + from..start + from + len,
            at + FRAGMENT_HEADER_LEN_BYTES,
        );
        fragment.index = i as u8;
        fragment.encode_into(&mut buf[at..at + FRAGMENT_HEADER_LEN_BYTES]);
    }
    Ok(count)
}

/// One packet being put back together.
#[derive(Debug)]
struct Pending {
    /// Where its pieces come from.
    from: SocketAddr,
    /// The host `from` counts against for quotas.
    host: SourceHost,
    /// The source address its head named, once the head arrived.
    src: Option<Address>,
    /// Its counter.
    counter: u64,
    /// Its destination, which every piece must agree on.
    dest: Address,
    /// When its first piece arrived.
    started_ms: u64,
    /// Number of pieces, head included; 0 until a fragment says.
    total: u8,
    /// Bit `i` set: piece `i` (0 = head) is in `storage`.
    received: u64,
    /// Pieces appended so far.
    appended: u8,
    /// Whether the pieces arrived in order, so `storage` is already the packet.
    in_order: bool,
    /// Where each piece is in `storage`: (start, length).
    pieces: [(u32, u32); MAX_FRAGMENTS],
    /// The pieces' bytes, in arrival order.
    storage: Vec<u8>,
}

impl Pending {
    fn len(&self) -> usize {
        self.storage.len()
    }

    fn complete(&self) -> bool {
        self.total != 0 && self.received == all_pieces(self.total)
    }
}

/// Bit mask of pieces `0..total`.
fn all_pieces(total: u8) -> u64 {
    if usize::from(total) >= MAX_FRAGMENTS {
        u64::MAX
    } else {
        (1u64 << total) - 1
    }
}

/// The host a datagram source counts as for quotas: an IPv4 address, or an
/// IPv6 /64 (one subscriber's prefix, which a stranger can fill with addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceHost {
    V4(u32),
    V6(u64),
}

impl SourceHost {
    fn of(from: SocketAddr) -> Self {
        match from.ip().to_canonical() {
            IpAddr::V4(ip) => Self::V4(u32::from(ip)),
            IpAddr::V6(ip) => Self::V6((u128::from(ip) >> 64) as u64),
        }
    }
}

/// Puts fragmented packets back together, in whatever order their pieces
/// arrive. Bounded: at most `max_pending` incomplete packets and at most
/// `max_per_source` per source host (see the module doc for who is evicted),
/// each dropped [`FRAGMENT_TIMEOUT_MS`] after its first piece, each at most
/// [`PACKET_MAX_LEN_BYTES`]. Nothing a peer sends makes it panic.
#[derive(Debug)]
pub struct Reassembler {
    pending: Vec<Pending>,
    max_pending: usize,
    max_per_source: usize,
    spare: Vec<Vec<u8>>,
    stats: ReassemblyStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembler {
    /// A reassembler holding up to [`MAX_PENDING_REASSEMBLIES`] packets,
    /// [`MAX_PENDING_REASSEMBLIES_PER_SOURCE`] per source host.
    pub fn new() -> Self {
        Self::with_limits(
            MAX_PENDING_REASSEMBLIES,
            MAX_PENDING_REASSEMBLIES_PER_SOURCE,
        )
    }

    /// A reassembler holding up to `max_pending` (at least 1) packets, as
    /// many from one source host.
    pub fn with_max_pending(max_pending: usize) -> Self {
        Self::with_limits(max_pending, max_pending)
    }

    /// A reassembler holding up to `max_pending` packets (at least 1), at
    /// most `max_per_source` (at least 1) from one source host.
    pub fn with_limits(max_pending: usize, max_per_source: usize) -> Self {
        let max_pending = max_pending.max(1);
        Self {
            pending: Vec::with_capacity(max_pending),
            max_pending,
            max_per_source: max_per_source.clamp(1, max_pending),
            spare: Vec::new(),
            stats: ReassemblyStats::default(),
        }
    }

    /// What has happened so far.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// How many incomplete packets are held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Gives back a buffer returned by [`Reassembler::push_head`] or
    /// [`Reassembler::push_fragment`] once done with it, to be reused.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Drops incomplete packets whose first piece arrived
    /// [`FRAGMENT_TIMEOUT_MS`] or more before `now_ms`. The push methods do
    /// this too; call it from a timer to free memory when nothing arrives.
    pub fn expire(&mut self, now_ms: u64) {
        let mut i = 0;
        while i < self.pending.len() {
            if now_ms.saturating_sub(self.pending[i].started_ms) >= FRAGMENT_TIMEOUT_MS {
                let gone = self.pending.swap_remove(i);
                self.stats.timed_out += 1;
                self.recycle(gone.storage);
            } else {
                i += 1;
            }
        }
    }

    /// Takes the head of a fragmented packet (a packet with the *more
    /// fragments* flag), received from `from`. Returns the whole packet if this
    /// was the last piece missing.
    pub fn push_head(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        head: &[u8],
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        let header = match classify(head) {
            Ok(Datagram::Packet { header, .. }) => header,
            Ok(Datagram::Fragment { .. }) => return Err(self.malformed(WireError::NotAPacket)),
            Err(e) => return Err(self.malformed(e)),
        };
        if !header.more_fragments {
            self.stats.malformed += 1;
            return Err(ReassemblyError::NotAHead);
        }
        let key = PieceKey {
            counter: header.counter,
            dest: header.dest,
        };
        self.push(now_ms, from, &key, Some(header.src), 0, None, head)
    }

    /// Takes a fragment (piece 1 or later) received from `from`. Returns the
    /// whole packet if this was the last piece missing.
    pub fn push_fragment(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        fragment: &[u8],
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        let (header, data) = match classify(fragment) {
            Ok(Datagram::Fragment { header, data }) => (header, data),
            Ok(Datagram::Packet { .. }) => return Err(self.malformed(WireError::NotAFragment)),
            Err(e) => return Err(self.malformed(e)),
        };
        let key = PieceKey {
            counter: header.counter,
            dest: header.dest,
        };
        self.push(
            now_ms,
            from,
            &key,
            None,
            header.index,
            Some(header.total),
            data,
        )
    }

    fn malformed(&mut self, e: WireError) -> ReassemblyError {
        self.stats.malformed += 1;
        ReassemblyError::Wire(e)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        key: &PieceKey,
        src: Option<Address>,
        index: u8,
        total: Option<u8>,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        self.expire(now_ms);
        let slot = match self
            .pending
            .iter()
            .position(|p| p.counter == key.counter && p.dest == key.dest && p.from == from)
        {
            Some(slot) => slot,
            None => {
                // A piece whose destination disagrees with a packet already
                // started for this counter: the same packet, corrupted.
                if let Some(p) = self
                    .pending
                    .iter()
                    .find(|p| p.counter == key.counter && p.from == from)
                {
                    self.stats.inconsistent += 1;
                    return Err(ReassemblyError::DestinationMismatch {
                        expected: p.dest,
                        got: key.dest,
                    });
                }
                self.start(now_ms, from, key)
            }
        };
        let entry = &mut self.pending[slot];

        if let Some(src) = src {
            match entry.src {
                Some(expected) if expected != src => {
                    self.stats.inconsistent += 1;
                    return Err(ReassemblyError::SourceMismatch { expected, got: src });
                }
                _ => entry.src = Some(src),
            }
        }
        if let Some(total) = total {
            if entry.total == 0 {
                entry.total = total;
            } else if entry.total != total {
                self.stats.inconsistent += 1;
                return Err(ReassemblyError::InconsistentTotal {
                    expected: entry.total,
                    got: total,
                });
            }
        }
        let bit = 1u64 << index;
        if entry.received & bit != 0 {
            self.stats.duplicates += 1;
            return Err(ReassemblyError::Duplicate { index });
        }
        if entry.len() + bytes.len() > PACKET_MAX_LEN_BYTES {
            let gone = self.pending.swap_remove(slot);
            self.stats.too_long += 1;
            self.recycle(gone.storage);
            return Err(ReassemblyError::TooLong);
        }

        // Lengths fit in u32: storage never exceeds PACKET_MAX_LEN_BYTES.
        entry.pieces[usize::from(index)] = (entry.storage.len() as u32, bytes.len() as u32);
        entry.storage.extend_from_slice(bytes);
        entry.in_order &= index == entry.appended;
        entry.appended += 1;
        entry.received |= bit;
        if !entry.complete() {
            return Ok(None);
        }

        let done = self.pending.swap_remove(slot);
        self.stats.completed += 1;
        if done.in_order {
            return Ok(Some(done.storage));
        }
        let mut packet = self.spare.pop().unwrap_or_default();
        packet.reserve(done.storage.len());
        for &(start, len) in &done.pieces[..usize::from(done.total)] {
            let start = start as usize;
            packet.extend_from_slice(&done.storage[start..start + len as usize]);
        }
        self.recycle(done.storage);
        Ok(Some(packet))
    }

    /// The slot of `host`'s oldest entry.
    fn oldest_of(&self, host: SourceHost) -> Option<usize> {
        self.pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.host == host)
            .min_by_key(|(_, p)| p.started_ms)
            .map(|(i, _)| i)
    }

    /// Makes room if needed and starts a new entry; returns its slot.
    ///
    /// A source at its quota loses its own oldest entry. Otherwise, if the
    /// table is full, the victim is the oldest entry of the source holding
    /// the most: a source never loses an entry to one holding fewer (after
    /// this one is added) than it does.
    fn start(&mut self, now_ms: u64, from: SocketAddr, key: &PieceKey) -> usize {
        let host = SourceHost::of(from);
        let held = |host: SourceHost, pending: &[Pending]| {
            pending.iter().filter(|p| p.host == host).count()
        };
        let victim = if held(host, &self.pending) >= self.max_per_source {
            self.stats.evicted_over_quota += 1;
            self.oldest_of(host)
        } else if self.pending.len() >= self.max_pending {
            self.stats.evicted += 1;
            let most = self
                .pending
                .iter()
                .map(|p| held(p.host, &self.pending))
                .max()
                .unwrap_or(0);
            self.pending
                .iter()
                .enumerate()
                .filter(|(_, p)| held(p.host, &self.pending) == most)
                .min_by_key(|(_, p)| p.started_ms)
                .map(|(i, _)| i)
        } else {
            None
        };
        if let Some(victim) = victim {
            let gone = self.pending.swap_remove(victim);
            self.recycle(gone.storage);
        }
        self.pending.push(Pending {
            from,
            host,
            src: None,
            counter: key.counter,
            dest: key.dest,
            started_ms: now_ms,
            total: 0,
            received: 0,
            appended: 0,
            in_order: true,
            pieces: [(0, 0); MAX_FRAGMENTS],
            storage: self.spare.pop().unwrap_or_default(),
        });
        self.pending.len() - 1
    }
}

/// What identifies a piece's packet, besides the datagram's source.
struct PieceKey {
    counter: u64,
    dest: Address,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::UDP_PAYLOAD_MTU_BYTES;
    use crate::wire::PacketHeader;
    use crate::wire::{FRAGMENT_INDEX_OFFSET, FRAGMENT_TOTAL_OFFSET};

    fn from() -> SocketAddr {
        "192.0.2.1:9993".parse().unwrap()
    }

    /// A packet of `len` bytes with valid header fields, flagged as needed for `mtu`.
    fn packet(len: usize, counter: u64, mtu: usize) -> Vec<u8> {
        packet_from(0x5544332211, len, counter, mtu)
    }

    /// [`packet`] from source address `src`, its bytes depending on `src` too.
    fn packet_from(src: u64, len: usize, counter: u64, mtu: usize) -> Vec<u8> {
        let mut buf: Vec<u8> = (0..len).map(|i| (i as u64 * 7 + 3 + src) as u8).collect();
        PacketHeader {
            counter,
            dest: Address::from_u64(0x1122334455).unwrap(),
            src: Address::from_u64(src).unwrap(),
            hops: 1,
            key_slot: 1,
            more_fragments: fragment_count(len, mtu) > 1,
            clear: false,
            aes_gcm: false,
        }
        .encode_into(&mut buf);
        buf
    }

    fn pieces(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = write_fragments(packet, mtu, |d| out.push(d.to_vec())).unwrap();
        assert_eq!(n, out.len());
        out
    }

    proptest::proptest! {
        #[test]
        fn fragmenting_in_place_gives_the_datagrams_write_fragments_emits(
            len in PACKET_MIN_LEN_BYTES..9_000usize,
            mtu in MIN_MTU_BYTES + FRAGMENT_HEADER_LEN_BYTES..2_000usize,
            before in 0..50usize,
        ) {
            proptest::prop_assume!(fragment_count(len, mtu) <= MAX_FRAGMENTS);
            let p = packet(len, 77, mtu);
            let mut buf = vec![0xaa; before];
            buf.extend_from_slice(&p);
            let n = fragment_in_place(&mut buf, before, mtu).unwrap();
            let expected = pieces(&p, mtu);
            proptest::prop_assert_eq!(n, expected.len());
            proptest::prop_assert!(buf[..before].iter().all(|b| *b == 0xaa));
            let got: Vec<Vec<u8>> = buf[before..].chunks(mtu).map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn fragmenting_in_place_checks_the_flag_like_write_fragments() {
        let mtu = 200;
        let mut p = packet(500, 1, mtu);
        p[crate::wire::FLAGS_OFFSET] &= !crate::wire::FLAG_MORE_FRAGMENTS;
        assert!(matches!(
            fragment_in_place(&mut p.clone(), 0, mtu),
            Err(FragmentError::MoreFragmentsFlag { expected: true })
        ));
        assert!(matches!(
            fragment_in_place(&mut p, 0, 10),
            Err(FragmentError::MtuTooSmall { .. })
        ));
    }

    #[test]
    fn counts() {
        let mtu = UDP_PAYLOAD_MTU_BYTES;
        assert_eq!(fragment_count(36, mtu), 1);
        assert_eq!(fragment_count(mtu, mtu), 1);
        assert_eq!(fragment_count(mtu + 1, mtu), 2);
        assert_eq!(fragment_count(mtu + 1415, mtu), 2);
        assert_eq!(fragment_count(mtu + 1416, mtu), 3);
        // The spec's claim: 64 pieces at the default MTU carry the largest packet.
        assert!(fragment_count(PACKET_MAX_LEN_BYTES, mtu) <= MAX_FRAGMENTS);
        assert_eq!(fragment_count(100, MIN_MTU_BYTES - 1), usize::MAX);
    }

    #[test]
    fn small_packets_go_whole() {
        let p = packet(500, 1, 1432);
        assert_eq!(pieces(&p, 1432), vec![p]);
    }

    #[test]
    fn pieces_are_bounded_by_the_mtu_and_well_formed() {
        let mtu = 1432;
        let p = packet(5000, 77, mtu);
        let out = pieces(&p, mtu);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], p[..mtu]);
        for (i, d) in out.iter().enumerate().skip(1) {
            assert!(d.len() <= mtu);
            match classify(d).unwrap() {
                Datagram::Fragment { header, .. } => {
                    assert_eq!(
                        (header.counter, header.index, header.total),
                        (77, i as u8, 4)
                    );
                    assert_eq!(header.hops, 1);
                }
                other => panic!("{other:?}"),
            }
        }
        let data: Vec<u8> = out[1..]
            .iter()
            .flat_map(|d| d[FRAGMENT_HEADER_LEN_BYTES..].to_vec())
            .collect();
        assert_eq!(data, p[mtu..]);
    }

    #[test]
    fn sender_errors() {
        let mtu = 1432;
        let mut p = packet(5000, 1, mtu);
        let nothing = |_: &[u8]| panic!("nothing may be emitted");
        assert_eq!(
            write_fragments(&p, 20, nothing),
            Err(FragmentError::MtuTooSmall { mtu: 20 })
        );
        assert_eq!(fragment_count(5000, 60), 116);
        assert_eq!(
            write_fragments(&p, 60, nothing),
            Err(FragmentError::TooManyFragments { needed: 116 })
        );
        assert_eq!(
            write_fragments(&p[..1000], mtu, nothing),
            Err(FragmentError::MoreFragmentsFlag { expected: false })
        );
        p[18] &= !0x40;
        assert_eq!(
            write_fragments(&p, mtu, nothing),
            Err(FragmentError::MoreFragmentsFlag { expected: true })
        );
        assert!(matches!(
            write_fragments(&p[..10], mtu, nothing),
            Err(FragmentError::Wire(_))
        ));
    }

    #[test]
    fn reassembles_in_order_and_reversed() {
        for mtu in [MIN_MTU_BYTES, 100, 1432] {
            for len in [mtu + 1, 3 * mtu, 5000.min(fragment_limit(mtu))] {
                let p = packet(len, 9, mtu);
                let out = pieces(&p, mtu);
                for reversed in [false, true] {
                    let mut r = Reassembler::new();
                    let mut order: Vec<usize> = (0..out.len()).collect();
                    if reversed {
                        order.reverse();
                    }
                    let mut result = None;
                    for (n, &i) in order.iter().enumerate() {
                        let got = if i == 0 {
                            r.push_head(0, from(), &out[i])
                        } else {
                            r.push_fragment(0, from(), &out[i])
                        }
                        .unwrap();
                        assert_eq!(got.is_some(), n == order.len() - 1);
                        result = result.or(got);
                    }
                    assert_eq!(
                        result.unwrap(),
                        p,
                        "mtu {mtu} len {len} reversed {reversed}"
                    );
                    assert_eq!(r.pending(), 0);
                    assert_eq!(r.stats().completed, 1);
                }
            }
        }
    }

    fn fragment_limit(mtu: usize) -> usize {
        mtu + (MAX_FRAGMENTS - 1) * (mtu - FRAGMENT_HEADER_LEN_BYTES)
    }

    #[test]
    fn duplicates_and_inconsistencies_are_refused() {
        let mtu = 200;
        let p = packet(700, 5, mtu);
        let out = pieces(&p, mtu);
        assert_eq!(out.len(), 4);
        let mut r = Reassembler::new();
        assert_eq!(r.push_fragment(0, from(), &out[2]), Ok(None));
        assert_eq!(
            r.push_fragment(0, from(), &out[2]),
            Err(ReassemblyError::Duplicate { index: 2 })
        );
        let mut wrong_total = out[1].clone();
        wrong_total[FRAGMENT_TOTAL_OFFSET] = 9;
        assert_eq!(
            r.push_fragment(0, from(), &wrong_total),
            Err(ReassemblyError::InconsistentTotal {
                expected: 4,
                got: 9
            })
        );
        let mut wrong_dest = out[1].clone();
        wrong_dest[12] ^= 1;
        assert!(matches!(
            r.push_fragment(0, from(), &wrong_dest),
            Err(ReassemblyError::DestinationMismatch { .. })
        ));
        let mut bad_index = out[1].clone();
        bad_index[FRAGMENT_INDEX_OFFSET] = 4;
        assert!(matches!(
            r.push_fragment(0, from(), &bad_index),
            Err(ReassemblyError::Wire(WireError::BadFragmentNumbers { .. }))
        ));
        assert_eq!(r.push_head(0, from(), &out[0]), Ok(None));
        assert_eq!(
            r.push_head(0, from(), &out[0]),
            Err(ReassemblyError::Duplicate { index: 0 })
        );
        assert_eq!(
            r.push_head(0, from(), &packet(100, 5, mtu)),
            Err(ReassemblyError::NotAHead)
        );
        assert!(r.push_head(0, from(), &out[1]).is_err());
        assert!(r.push_fragment(0, from(), &out[0]).is_err());
        assert_eq!(r.push_fragment(0, from(), &out[1]), Ok(None));
        assert_eq!(r.push_fragment(0, from(), &out[3]), Ok(Some(p)));
        let stats = *r.stats();
        assert_eq!(stats.duplicates, 2);
        assert_eq!(stats.inconsistent, 2);
        assert_eq!(stats.malformed, 4);
        assert_eq!(stats.completed, 1);
    }

    #[test]
    fn sources_and_counters_are_kept_apart() {
        let mtu = 200;
        let a = packet(500, 1, mtu);
        let b = packet(500, 2, mtu);
        let (pa, pb) = (pieces(&a, mtu), pieces(&b, mtu));
        let other: SocketAddr = "[2001:db8::1]:9993".parse().unwrap();
        let mut r = Reassembler::new();
        assert_eq!(r.push_head(0, from(), &pa[0]), Ok(None));
        assert_eq!(r.push_head(0, other, &pa[0]), Ok(None));
        assert_eq!(r.push_head(0, from(), &pb[0]), Ok(None));
        for f in &pa[1..pa.len() - 1] {
            assert_eq!(r.push_fragment(0, from(), f), Ok(None));
        }
        for f in &pb[1..pb.len() - 1] {
            assert_eq!(r.push_fragment(0, from(), f), Ok(None));
        }
        assert_eq!(r.pending(), 3);
        assert_eq!(r.push_fragment(0, from(), pa.last().unwrap()), Ok(Some(a)));
        assert_eq!(r.push_fragment(0, from(), pb.last().unwrap()), Ok(Some(b)));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn timeouts_and_eviction() {
        let mtu = 200;
        let mut r = Reassembler::with_max_pending(3);
        let heads: Vec<Vec<u8>> = (1..=5)
            .map(|c| pieces(&packet(500, c, mtu), mtu)[0].clone())
            .collect();
        for (t, head) in heads.iter().enumerate().take(3) {
            assert_eq!(r.push_head(t as u64, from(), head), Ok(None));
        }
        assert_eq!(r.pending(), 3);
        // A fourth evicts the oldest (counter 1): the source's own.
        assert_eq!(r.push_head(3, from(), &heads[3]), Ok(None));
        assert_eq!(r.pending(), 3);
        assert_eq!(r.stats().evicted_over_quota, 1);
        // Counter 1's head is new again, not a duplicate, and evicts counter 2.
        assert_eq!(r.push_head(4, from(), &heads[0]), Ok(None));
        assert_eq!(r.stats().evicted_over_quota, 2);
        assert_eq!(r.stats().evicted, 0);
        // At 1002 ms, the entry started at 2 ms has timed out; the rest not yet.
        r.expire(FRAGMENT_TIMEOUT_MS + 2);
        assert_eq!(r.pending(), 2);
        assert_eq!(r.stats().timed_out, 1);
        // Pushing expires too.
        assert_eq!(
            r.push_head(FRAGMENT_TIMEOUT_MS + 10, from(), &heads[4]),
            Ok(None)
        );
        assert_eq!(r.pending(), 1);
        assert_eq!(r.stats().timed_out, 3);
        // A clock going backwards expires nothing.
        r.expire(0);
        assert_eq!(r.pending(), 1);
    }

    /// Pushes all pieces of `p` (cut at `mtu`) from `from`; returns what the last push gave.
    fn push_all(
        r: &mut Reassembler,
        now: u64,
        from: SocketAddr,
        out: &[Vec<u8>],
    ) -> Option<Vec<u8>> {
        let mut last = None;
        for (i, piece) in out.iter().enumerate() {
            last = if i == 0 {
                r.push_head(now, from, piece)
            } else {
                r.push_fragment(now, from, piece)
            }
            .unwrap();
        }
        last
    }

    #[test]
    fn a_source_cannot_evict_another_sources_partial_packet() {
        let mtu = 200;
        let victim: SocketAddr = "192.0.2.1:9993".parse().unwrap();
        let p = packet(700, 7, mtu);
        let out = pieces(&p, mtu);
        let mut r = Reassembler::with_limits(6, 3);
        assert_eq!(r.push_head(0, victim, &out[0]), Ok(None));
        // One stranger host, from many ports, with many counters: it only
        // ever pushes out its own oldest.
        for c in 1..200u64 {
            let from = SocketAddr::new("198.51.100.9".parse().unwrap(), 1000 + c as u16);
            let head = &pieces(&packet(700, 1000 + c, mtu), mtu)[0];
            assert_eq!(r.push_head(c, from, head), Ok(None));
        }
        assert_eq!(r.pending(), 4);
        assert_eq!(r.stats().evicted, 0);
        // A second stranger (an IPv6 /64, any address in it) fills the table:
        // the victim is taken from the first stranger, which holds the most.
        for c in 1..200u64 {
            let from: SocketAddr = format!("[2001:db8:1:2::{c:x}]:9993").parse().unwrap();
            let head = &pieces(&packet(700, 5000 + c, mtu), mtu)[0];
            assert_eq!(r.push_head(200 + c, from, head), Ok(None));
        }
        assert_eq!(r.pending(), 6);
        assert!(r.stats().evicted >= 1);
        // The victim's packet is still there and completes.
        let mut got = None;
        for f in &out[1..] {
            got = r.push_fragment(500, victim, f).unwrap();
        }
        assert_eq!(got, Some(p));
    }

    #[test]
    fn quotas_follow_the_source_host() {
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:2".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:3".parse().unwrap();
        let other: SocketAddr = "[2001:db8:1:3::1]:3".parse().unwrap();
        assert_eq!(SourceHost::of(a), SourceHost::of(b));
        assert_eq!(SourceHost::of(a), SourceHost::of(mapped));
        assert_ne!(
            SourceHost::of(other),
            SourceHost::of("[2001:db8:1:2::1]:3".parse().unwrap())
        );
        assert_eq!(
            SourceHost::of("[2001:db8:1:2::1]:3".parse().unwrap()),
            SourceHost::of("[2001:db8:1:2:ffff::9]:4".parse().unwrap())
        );
    }

    #[test]
    fn peers_behind_one_root_reassemble_apart() {
        let mtu = 200;
        let root: SocketAddr = "203.0.113.1:9993".parse().unwrap();
        let (x, y) = (0x0101010101, 0x0202020202);
        let mut r = Reassembler::new();

        // Different counters (two sessions rarely share one), pieces
        // interleaved: each peer gets its own packet back.
        let px = packet_from(x, 700, 0x3a7f_0000_0001, mtu);
        let py = packet_from(y, 700, 0x0c11_0000_0001, mtu);
        let (ox, oy) = (pieces(&px, mtu), pieces(&py, mtu));
        let mut got = Vec::new();
        for i in (0..ox.len()).rev() {
            for o in [&ox, &oy] {
                let pushed = if i == 0 {
                    r.push_head(0, root, &o[i])
                } else {
                    r.push_fragment(0, root, &o[i])
                };
                got.extend(pushed.unwrap());
            }
        }
        assert_eq!(got, vec![px, py]);

        // The same counter one after the other: both complete.
        let px = packet_from(x, 700, 1, mtu);
        let py = packet_from(y, 700, 1, mtu);
        assert_eq!(
            push_all(&mut r, 1, root, &pieces(&px, mtu)),
            Some(px.clone())
        );
        assert_eq!(
            push_all(&mut r, 2, root, &pieces(&py, mtu)),
            Some(py.clone())
        );

        // The same counter at the same time: the second head is refused, not
        // merged, and the first packet still completes.
        let (ox, oy) = (pieces(&px, mtu), pieces(&py, mtu));
        assert_eq!(r.push_head(3, root, &ox[0]), Ok(None));
        assert_eq!(
            r.push_head(3, root, &oy[0]),
            Err(ReassemblyError::SourceMismatch {
                expected: Address::from_u64(x).unwrap(),
                got: Address::from_u64(y).unwrap(),
            })
        );
        let mut done = None;
        for f in &ox[1..] {
            done = r.push_fragment(3, root, f).unwrap();
        }
        assert_eq!(done, Some(px));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn oversize_is_dropped() {
        // Pieces claiming a packet beyond PACKET_MAX_LEN_BYTES: 64 fragments of
        // a big MTU.
        let mtu = 2000;
        let mut r = Reassembler::new();
        let mut frag = vec![0u8; mtu];
        let mut result = Ok(None);
        for index in 1..64u8 {
            FragmentHeader {
                counter: 1,
                dest: Address::from_u64(1).unwrap(),
                total: 64,
                index,
                hops: 0,
            }
            .encode_into(&mut frag);
            result = r.push_fragment(0, from(), &frag);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ReassemblyError::TooLong));
        assert_eq!(r.pending(), 0);
        assert_eq!(r.stats().too_long, 1);
    }

    #[test]
    fn buffers_are_reused() {
        let mtu = 200;
        let p = packet(1000, 3, mtu);
        let out = pieces(&p, mtu);
        let mut r = Reassembler::new();
        for round in 0..3 {
            // Out of order, so the packet is copied out of the entry's storage.
            for f in out[1..].iter().rev() {
                assert_eq!(r.push_fragment(round, from(), f), Ok(None));
            }
            let got = r.push_head(round, from(), &out[0]).unwrap().unwrap();
            assert_eq!(got, p);
            r.recycle(got);
            assert!(!r.spare.is_empty() && r.spare.len() <= SPARE_BUFFERS);
        }
    }
}
