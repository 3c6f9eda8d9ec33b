//! What a node knows about one peer.

use std::net::SocketAddr;

use serde::Serialize;
use thin_vec::ThinVec;

use crate::armor::PacketKey;
use crate::c25519::SharedKey;
use crate::identity::SharedIdentity;
use crate::maybe_ms::MaybeMs;
use crate::message::{Capabilities, Versions};
use crate::offload::Offload;
use crate::path::PathSet;
use crate::session::{Ephemeral, SessionSet};
use crate::verb::Verb;

/// PUSH_DIRECT_PATHS accepted in a burst from one peer.
const PUSH_BUDGET_BURST: u32 = 2;

/// Whether a peer is a root, and of which kind of world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeerRole {
    /// An ordinary node.
    Leaf,
    /// A root of a moon we orbit.
    Moon,
    /// A root of our planet.
    Planet,
}

/// How packets to a peer travel right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRoute {
    /// Straight to the peer at this address.
    Direct(SocketAddr),
    /// Through this root, reached at this address.
    Relayed {
        /// The relaying root.
        root: crate::address::Address,
        /// Where the root is reached.
        via: SocketAddr,
    },
}

/// A HELLO we sent and await the OK for.
pub(crate) struct PendingHandshake {
    pub ephemeral: Ephemeral,
    /// Counters of the HELLOs sent with this ephemeral (one per target:
    /// a counter never MACs two different messages).
    pub counters: Vec<u64>,
    pub sent_ms: u64,
}

/// The handshake states of a peer, boxed together: a HELLO of ours
/// awaiting its OK, and the last HELLO of its that we answered.
#[derive(Default)]
struct Handshakes {
    pending: Option<PendingHandshake>,
    /// The last HELLO ephemeral answered and our ephemeral public key in the
    /// answer: a HELLO repeated to another path gets the same answer, not a
    /// second session. Kept until the peer confirms the session (a copy
    /// coming later is no newer than the HELLO accepted: dropped as stale).
    answered: Option<([u8; 32], [u8; 32])>,
}

/// What a peer announced in CAPABILITIES this session, as the message's
/// bits: a root holds thousands of peers, and one byte fits where four
/// bools did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerCapabilities(u8);

impl PeerCapabilities {
    /// From the CAPABILITIES message.
    pub fn announced(c: &Capabilities) -> Self {
        // Every bit defined so far is in the low byte.
        Self(c.bits() as u8)
    }

    fn get(self) -> Capabilities {
        Capabilities::from_bits(u32::from(self.0))
    }

    /// It takes OFFLOAD_FRAME.
    pub fn offload_frames(self) -> bool {
        self.get().offload_frames
    }

    /// It opens AES-256-GCM session packets.
    pub fn aes_gcm(self) -> bool {
        self.get().aes_gcm
    }

    /// It answers PATH_MTU_PROBE.
    pub fn path_mtu_probes(self) -> bool {
        self.get().path_mtu_probes
    }

    /// It takes OFFLOAD_FRAMEs with UDP segmentation.
    pub fn udp_segmentation(self) -> bool {
        self.get().udp_segmentation
    }
}

/// Everything known about one peer. The rarely filled lists are `ThinVec`s
/// (8 bytes while empty): a root holds thousands of peers.
pub(crate) struct Peer {
    /// Shared with the verified-identity table.
    pub identity: SharedIdentity,
    pub static_agreement: SharedKey,
    pub sessions: SessionSet,
    /// Both sides of a handshake under way, boxed together as the other
    /// rarely set fields (a root holds thousands of peers); see the
    /// accessors below.
    handshakes: Option<Box<Handshakes>>,
    pub paths: PathSet,
    pub role: PeerRole,
    pub versions: Option<Versions>,
    /// What it announced (CAPABILITIES) this session.
    pub capabilities: PeerCapabilities,
    /// Round-trip time (ms; `u32::MAX`: not measured), beside the flags
    /// where a u64 would add a word: see [`Peer::latency_ms`].
    latency: u32,
    pub last_receive_ms: MaybeMs,
    /// Last time traffic that matters to the user went either way.
    pub last_active_ms: MaybeMs,
    /// Messages waiting for a session.
    pub queued: ThinVec<(Verb, Vec<u8>)>,
    /// World ids this peer holds an older copy of (or wants); sent once a
    /// session packet arrives straight from it (no amplification).
    pub worlds_due: ThinVec<u64>,
    /// When relayed traffic to/from this peer was first seen in the current relayed stretch.
    pub relayed_since_ms: MaybeMs,
    /// On a root: the root this peer's packets last came through (a node
    /// relaying over TCP is reached only through its TCP root).
    pub relayed_via: Option<crate::address::Address>,
    /// The sender's timestamp of the last HELLO accepted: an older or
    /// equal one (a replay) changes nothing.
    pub last_hello_timestamp_ms: u64,
    /// When this peer entry was made (an entry never heard from is
    /// forgotten like an idle one).
    pub admitted_ms: u64,
    /// Last time something other than a keepalive came from this peer.
    pub last_useful_ms: MaybeMs,
    /// When its timer work is next due (ms; `u64::MAX`: not scheduled).
    /// Matches its live entry in the node's timer heap.
    pub next_tick_ms: u64,
    /// What only getting through NATs to it needs; made on first use.
    pub traversal: Option<Box<PeerTraversal>>,
}

/// What a node keeps about a peer only to get through NATs to it and to
/// tell it its own paths: boxed and made on first use, since a root holds
/// thousands of peers and sets none of it.
pub(crate) struct PeerTraversal {
    /// How the peer's NAT maps ports, as it told us in PUSH_DIRECT_PATHS.
    pub nat_mapping: Option<crate::node::NatMapping>,
    /// Where a root sees the peer (from RENDEZVOUS): the target of a birthday punch.
    pub root_observed: Option<SocketAddr>,
    /// A birthday hole punch in progress with this peer.
    pub punch: Option<Box<crate::node::traversal::Punch>>,
    /// Failed punches in a row, and no new one before this time.
    pub punch_failures: u32,
    pub punch_not_before_ms: u64,
    /// When we last pushed it our paths.
    pub last_paths_pushed_ms: MaybeMs,
    /// Whether the last route computed was direct, and since when.
    pub direct_since_ms: MaybeMs,
    /// When the route last went from relayed to direct.
    pub last_upgrade_ms: MaybeMs,
    /// The largest datagram that reaches it through a root, and that root:
    /// discovered end to end like a direct path's (PROTOCOL.md §3.10).
    pub relayed_mtu: Option<(crate::address::Address, crate::path_mtu::PathMtu)>,
    /// PUSH_DIRECT_PATHS budget: last refill (ms) and tokens.
    pub push_refill_ms: u64,
    pub push_tokens: u32,
}

impl Default for PeerTraversal {
    fn default() -> Self {
        Self {
            nat_mapping: None,
            root_observed: None,
            punch: None,
            punch_failures: 0,
            punch_not_before_ms: 0,
            last_paths_pushed_ms: MaybeMs::NONE,
            direct_since_ms: MaybeMs::NONE,
            last_upgrade_ms: MaybeMs::NONE,
            relayed_mtu: None,
            push_refill_ms: 0,
            push_tokens: PUSH_BUDGET_BURST,
        }
    }
}

impl Peer {
    /// Whether it takes a frame with these offloads whole, in an
    /// OFFLOAD_FRAME (else the frame is completed and cut here).
    pub fn takes_whole(&self, offload: Offload) -> bool {
        let caps = self.capabilities;
        caps.offload_frames()
            && (caps.udp_segmentation() || offload.segmentation.is_none_or(|s| s.kind.is_tcp()))
    }

    pub fn new(identity: SharedIdentity, static_agreement: SharedKey, role: PeerRole) -> Self {
        Self {
            identity,
            static_agreement,
            sessions: SessionSet::default(),
            handshakes: None,
            paths: PathSet::default(),
            role,
            versions: None,
            capabilities: PeerCapabilities::default(),
            latency: u32::MAX,
            last_receive_ms: MaybeMs::NONE,
            last_active_ms: MaybeMs::NONE,
            queued: ThinVec::new(),
            worlds_due: ThinVec::new(),
            relayed_since_ms: MaybeMs::NONE,
            relayed_via: None,
            last_hello_timestamp_ms: 0,
            admitted_ms: 0,
            last_useful_ms: MaybeMs::NONE,
            next_tick_ms: u64::MAX,
            traversal: None,
        }
    }

    /// The HELLO we sent it and await the OK for, if any.
    pub fn pending_handshake(&self) -> Option<&PendingHandshake> {
        self.handshakes.as_ref()?.pending.as_ref()
    }

    /// Takes the HELLO awaiting its OK, if any and if `pred` holds for it.
    pub fn take_pending_handshake_if(
        &mut self,
        pred: impl FnOnce(&PendingHandshake) -> bool,
    ) -> Option<PendingHandshake> {
        let h = self.handshakes.as_mut()?;
        let taken = h.pending.take_if(|p| pred(p));
        self.drop_empty_handshakes();
        taken
    }

    /// Takes the HELLO awaiting its OK, if any (its ephemeral secret is
    /// wiped when dropped).
    pub fn take_pending_handshake(&mut self) -> Option<PendingHandshake> {
        self.take_pending_handshake_if(|_| true)
    }

    /// Records the HELLO we just sent it.
    pub fn set_pending_handshake(&mut self, pending: PendingHandshake) {
        self.handshakes.get_or_insert_with(Box::default).pending = Some(pending);
    }

    /// The last HELLO ephemeral of its that we answered, and our answer's.
    pub fn answered(&self) -> Option<&([u8; 32], [u8; 32])> {
        self.handshakes.as_ref()?.answered.as_ref()
    }

    /// Records the HELLO ephemeral we answered and our answer's.
    pub fn set_answered(&mut self, theirs: [u8; 32], ours: [u8; 32]) {
        self.handshakes.get_or_insert_with(Box::default).answered = Some((theirs, ours));
    }

    /// Forgets the HELLO answered (the session it set up is confirmed).
    pub fn clear_answered(&mut self) {
        if let Some(h) = self.handshakes.as_mut() {
            h.answered = None;
            self.drop_empty_handshakes();
        }
    }

    fn drop_empty_handshakes(&mut self) {
        if self
            .handshakes
            .as_ref()
            .is_some_and(|h| h.pending.is_none() && h.answered.is_none())
        {
            self.handshakes = None;
        }
    }

    /// Its traversal state, if any was ever set.
    pub fn traversal(&self) -> Option<&PeerTraversal> {
        self.traversal.as_deref()
    }

    /// Its traversal state, made on first use.
    pub fn traversal_mut(&mut self) -> &mut PeerTraversal {
        self.traversal.get_or_insert_with(Box::default)
    }

    /// The key of packets armored under the static agreement (HELLO, OK,
    /// ERROR), made when needed (a root holds thousands of peers and uses
    /// it rarely).
    pub fn static_key(&self) -> PacketKey {
        self.static_agreement.packet_key()
    }

    pub fn is_root(&self) -> bool {
        self.role != PeerRole::Leaf
    }

    /// The largest datagram to send on `route` to it: the direct path's
    /// discovered MTU, the relayed route's through that root, else the base.
    pub fn route_mtu(&self, route: PeerRoute) -> usize {
        match route {
            PeerRoute::Direct(to) => self.paths.mtu_to(to),
            PeerRoute::Relayed { root, .. } => {
                match self.traversal().and_then(|t| t.relayed_mtu.as_ref()) {
                    Some((via, mtu)) if *via == root => mtu.usable(),
                    _ => usize::from(crate::constants::PATH_MTU_BASE_BYTES),
                }
            }
        }
    }

    /// Whether user traffic flowed recently (its paths are then probed often).
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.last_active_ms
            .get()
            .is_some_and(|t| now_ms.saturating_sub(t) < crate::constants::PEER_ACTIVE_WINDOW_MS)
    }

    /// Whether a PUSH_DIRECT_PATHS from this peer is within its budget (one
    /// per `PUSH_DIRECT_PATHS_MIN_INTERVAL_MS`, burst 2); charges it.
    pub fn push_allowed(&mut self, now_ms: u64) -> bool {
        use crate::constants::PUSH_DIRECT_PATHS_MIN_INTERVAL_MS;
        let t = self.traversal_mut();
        let (last, tokens) = (&mut t.push_refill_ms, &mut t.push_tokens);
        let refill = now_ms.saturating_sub(*last) / PUSH_DIRECT_PATHS_MIN_INTERVAL_MS;
        if refill > 0 {
            *tokens = (*tokens as u64 + refill).min(PUSH_BUDGET_BURST as u64) as u32;
            *last = now_ms;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }

    /// When the peer was last worth keeping: on a root, anything heard from
    /// it (a member keeping its root session alive is one the root relays
    /// for); elsewhere, only use ([`Peer::last_heard_ms`]).
    pub fn last_wanted_ms(&self, am_root: bool) -> u64 {
        if am_root {
            self.last_heard_ms()
                .max(self.last_receive_ms.get().unwrap_or(0))
        } else {
            self.last_heard_ms()
        }
    }

    /// Last time the peer was in use: something other than a keepalive
    /// came from it, user traffic went to it, or it was admitted.
    pub fn last_heard_ms(&self) -> u64 {
        self.admitted_ms
            .max(self.last_useful_ms.get().unwrap_or(0))
            .max(self.last_active_ms.get().unwrap_or(0))
    }

    pub fn measured(&mut self, rtt_ms: u64) {
        // Delays only ever add to a round trip: a lower sample is believed
        // at once, a higher one only a quarter.
        let rtt_ms = rtt_ms.min(u64::from(u32::MAX - 1));
        let latency = match self.latency_ms().get() {
            Some(old) if rtt_ms < old => rtt_ms,
            Some(old) => (old * 3 + rtt_ms) / 4,
            None => rtt_ms,
        };
        self.latency = latency as u32;
    }

    /// Its round-trip time, if measured.
    pub fn latency_ms(&self) -> MaybeMs {
        if self.latency == u32::MAX {
            MaybeMs::NONE
        } else {
            MaybeMs::at(u64::from(self.latency))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root keeps one per peer, for tens of thousands of peers: a field
    /// added here costs that many times over (672 bytes before times became
    /// `MaybeMs` and the rare lists `ThinVec`s; 568 with its first session
    /// and path inline, which were separate allocations of 176 and 136;
    /// 504 with the traversal state boxed; 488 with the latency in 32 bits
    /// beside the flags; 472 with both handshake states in one box and the
    /// roots' endpoints kept by the node: one allocation of 480 a peer).
    #[test]
    fn a_peer_and_its_path_stay_small() {
        assert!(
            std::mem::size_of::<Peer>() <= 472,
            "{}",
            std::mem::size_of::<Peer>()
        );
        assert!(std::mem::size_of::<crate::path::Path>() <= 128);
        // Shared with a count and no weak count: 88 bytes, a 96-byte chunk.
        assert!(std::mem::size_of::<crate::identity::Identity>() <= 80);
    }

    #[test]
    fn handshake_state_is_boxed_only_while_some_is_held() {
        use crate::rng::{NodeRng, SeedableRng};
        let mut rng = NodeRng::seed_from_u64(3);
        let ours = crate::c25519::KeyPair::generate(&mut rng);
        let theirs = crate::c25519::KeyPair::generate(&mut rng);
        let address = crate::address::Address::from_u64(0x12_3456_789a).unwrap();
        let identity = crate::identity::Identity::previously_verified(address, *theirs.public());
        let agreement = ours.agree(theirs.public()).unwrap();
        let mut peer = Peer::new(SharedIdentity::new(identity), agreement, PeerRole::Leaf);
        assert!(peer.handshakes.is_none());
        peer.set_answered([1; 32], [2; 32]);
        peer.set_pending_handshake(PendingHandshake {
            ephemeral: Ephemeral::generate(&mut rng),
            counters: vec![7, 9],
            sent_ms: 5,
        });
        assert_eq!(peer.answered(), Some(&([1; 32], [2; 32])));
        assert!(
            peer.take_pending_handshake_if(|h| h.counters.contains(&8))
                .is_none()
        );
        let taken = peer.take_pending_handshake_if(|h| h.counters.contains(&9));
        assert_eq!(taken.map(|h| h.sent_ms), Some(5));
        assert!(peer.pending_handshake().is_none());
        assert!(peer.handshakes.is_some(), "the answer is still held");
        peer.clear_answered();
        assert!(peer.handshakes.is_none(), "nothing held: the box is gone");
        peer.set_pending_handshake(PendingHandshake {
            ephemeral: Ephemeral::generate(&mut rng),
            counters: vec![1],
            sent_ms: 6,
        });
        assert!(peer.take_pending_handshake().is_some());
        assert!(peer.handshakes.is_none());
    }
}
