//! Forward-secret sessions between two nodes (PROTOCOL.md §3.4): the static
//! agreement authenticates a HELLO/OK exchange of ephemeral X25519 keys;
//! traffic keys come from both, one per direction.

use std::cell::OnceCell;

use crate::maybe_ms::MaybeMs;
use crate::rng::CryptoRng;
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

use crate::address::Address;
use crate::armor::{
    AeadKey, MacError, PacketKey, Suite, armor, dearmor, open_aes_gcm, seal_aes_gcm,
};
use crate::c25519::SharedKey;
use crate::constants::{
    KEY_OVERLAP_MS, MAX_SESSIONS_PER_PEER, REKEY_AFTER_PACKETS, REKEY_IDLE_INTERVAL_MS,
    REKEY_INTERVAL_MS, SESSION_MAX_AGE_MS, SESSION_PENDING_TIMEOUT_MS,
};
use crate::replay::ReplayWindow;
use crate::wire::{FLAG_AES_GCM, FLAGS_OFFSET};
use smallvec::SmallVec;

/// Domain separation for session key derivation.
const SESSION_KDF_LABEL: &[u8] = b"vnet session v1";
/// Domain separation for the key slot, drawn from public values only so
/// that no bit of key material shows in packet headers.
const SESSION_SLOT_LABEL: &[u8] = b"vnet session slot v1";

/// An ephemeral X25519 key pair, wiped on drop.
pub struct Ephemeral {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl Ephemeral {
    /// Draws a fresh ephemeral key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        #[cfg(fuzzing)]
        if crate::c25519::fuzz_mode::on() {
            // A stand-in public key (see `c25519::fuzz_mode`).
            let public: [u8; 64] = sha2::Sha512::digest(bytes).into();
            let secret = x25519_dalek::StaticSecret::from(bytes);
            bytes.zeroize();
            let public = public[..32].try_into().expect("32 bytes");
            return Self { secret, public };
        }
        let secret = x25519_dalek::StaticSecret::from(bytes);
        bytes.zeroize();
        let public = *x25519_dalek::PublicKey::from(&secret).as_bytes();
        Self { secret, public }
    }

    /// The public half, sent in HELLO or OK(HELLO).
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// X25519 with the peer's ephemeral; `None` for a low-order peer key.
    /// Consumes the key pair, so the secret is wiped as soon as it is used.
    fn agree(self, peer: &[u8; 32]) -> Option<[u8; 32]> {
        #[cfg(fuzzing)]
        if crate::c25519::fuzz_mode::on() {
            return Some(crate::c25519::fuzz_mode::shared(&self.public, peer));
        }
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        shared.was_contributory().then(|| *shared.as_bytes())
    }
}

/// Which side of a handshake this node was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the HELLO.
    Initiator,
    /// Answered it.
    Responder,
}

/// Derives a session from a completed handshake. `None` if the peer's
/// ephemeral key is of low order. Its first sending counter comes from
/// `random` (see [`first_counter`]).
#[allow(clippy::too_many_arguments)]
pub fn derive_session(
    now_ms: u64,
    role: Role,
    static_agreement: &SharedKey,
    mine: Ephemeral,
    theirs: &[u8; 32],
    my_address: Address,
    their_address: Address,
    random: u64,
) -> Option<Session> {
    let my_public = *mine.public();
    let mut dh = mine.agree(theirs)?;
    let (e_init, e_resp, a_init, a_resp) = match role {
        Role::Initiator => (&my_public, theirs, my_address, their_address),
        Role::Responder => (theirs, &my_public, their_address, my_address),
    };
    let mut h = Sha512::new();
    h.update(SESSION_KDF_LABEL);
    h.update(*static_agreement.material());
    h.update(dh);
    h.update(e_init);
    h.update(e_resp);
    h.update(a_init.to_bytes());
    h.update(a_resp.to_bytes());
    let mut t: [u8; 64] = h.finalize().into();
    dh.zeroize();
    let init_to_resp = PacketKey::from_bytes(t[..32].try_into().expect("32"));
    let resp_to_init = PacketKey::from_bytes(t[32..].try_into().expect("32"));
    t.zeroize();
    let slot = session_slot(e_init, e_resp);
    let (send, recv) = match role {
        Role::Initiator => (init_to_resp, resp_to_init),
        Role::Responder => (resp_to_init, init_to_resp),
    };
    Some(Session {
        slot,
        aead: OnceCell::new(),
        send,
        recv,
        first_counter: first_counter(random),
        next_counter: first_counter(random),
        replay: ReplayWindow::default(),
        established_ms: now_ms,
        superseded_ms: MaybeMs::NONE,
        last_receive_ms: MaybeMs::NONE,
    })
}

/// A session's first sending counter: random below 2^62 (never 0), so the
/// packet ids that key fragment reassembly neither collide between peers
/// relayed by one root nor can be guessed by a stranger, and 2^62 counters
/// remain before the hard stop.
pub fn first_counter(random: u64) -> u64 {
    (random >> 2).max(1)
}

/// The key slot (1..=3) of a session, from the two public ephemerals.
fn session_slot(e_init: &[u8; 32], e_resp: &[u8; 32]) -> u8 {
    let mut h = Sha512::new();
    h.update(SESSION_SLOT_LABEL);
    h.update(e_init);
    h.update(e_resp);
    let digest: [u8; 64] = h.finalize().into();
    1 + digest[0] % 3
}

/// One session's keys and counters.
pub struct Session {
    slot: u8,
    send: PacketKey,
    recv: PacketKey,
    /// AES-256-GCM keys derived from `send` and `recv` together when first
    /// used (half a kilobyte each: a root's sessions, which carry only
    /// control packets in Salsa20/12, never make them).
    aead: OnceCell<Box<[AeadKey; 2]>>,
    /// The first counter this session sent (random).
    first_counter: u64,
    next_counter: u64,
    replay: ReplayWindow,
    established_ms: u64,
    superseded_ms: MaybeMs,
    last_receive_ms: MaybeMs,
}

impl Session {
    /// The key slot packets of this session carry.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The same session with a replay window spanning `packets` counters
    /// (see [`ReplayWindow::spanning`]); set before any packet is received.
    pub fn with_replay_window(mut self, packets: u64) -> Self {
        self.replay = ReplayWindow::spanning(packets);
        self
    }

    /// The AES-256-GCM keys to send and to receive with.
    fn aead(&self) -> &[AeadKey; 2] {
        self.aead
            .get_or_init(|| Box::new([AeadKey::derive(&self.send), AeadKey::derive(&self.recv)]))
    }

    fn send_aead(&self) -> &AeadKey {
        &self.aead()[0]
    }

    fn recv_aead(&self) -> &AeadKey {
        &self.aead()[1]
    }
}

/// How an accepted session packet arrived against the others of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Its counter is above every counter accepted before.
    InOrder,
    /// A later packet of the same session came first (reordered on the way,
    /// or sent out of order); still inside the replay window.
    Late,
}

/// Why a session packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// No live session has that key slot (or there is no session).
    NoSession,
    /// No session's key authenticates it.
    BadMac,
    /// Counter already seen, or too old.
    Replay,
}

/// Whether `counter`, accepted, came after a higher one (`highest`).
fn arrival(highest: u64, counter: u64) -> Arrival {
    if counter < highest {
        Arrival::Late
    } else {
        Arrival::InOrder
    }
}

/// The live sessions with one peer: the newest confirmed one sends; older
/// ones still receive until `KEY_OVERLAP_MS` after they were superseded.
/// A responder's new session is *pending* until a packet under it
/// authenticates (key confirmation): a replayed HELLO can never make us
/// send under keys its sender does not hold, nor evict a live session.
#[derive(Default)]
pub struct SessionSet {
    /// The first one inline: a root holds one session per peer for
    /// thousands of peers, and a separate allocation each costs its
    /// rounding and the allocator's free space between them.
    sessions: SmallVec<[Session; 1]>,
    /// Boxed: a session is 2 KB, and most peers have none pending.
    pending: Option<Box<Session>>,
    newly_confirmed: bool,
}

impl SessionSet {
    /// Installs a session known to be fresh (we initiated it, and the
    /// answer matched our own ephemeral): it becomes the one that sends.
    pub fn install(&mut self, now_ms: u64, session: Session) {
        for old in &mut self.sessions {
            old.superseded_ms.get_or_insert(now_ms);
        }
        // Grown one at a time past the inline one: a rekey holds two for
        // the overlap only.
        self.sessions.reserve_exact(1);
        self.sessions.push(session);
        self.expire(now_ms);
        while self.sessions.len() > MAX_SESSIONS_PER_PEER {
            self.sessions.remove(0);
        }
    }

    /// Installs a session answered to a HELLO: it receives at once, and
    /// sends only once a packet under it has authenticated. Replaces an
    /// earlier pending one; live sessions are untouched.
    pub fn install_pending(&mut self, now_ms: u64, session: Session) {
        self.pending = Some(Box::new(session));
        self.expire(now_ms);
    }

    /// Whether a session answered to a HELLO waits for its first packet.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the last [`SessionSet::open`] confirmed a pending session
    /// (it now sends); reading clears it.
    pub fn take_newly_confirmed(&mut self) -> bool {
        std::mem::take(&mut self.newly_confirmed)
    }

    /// Drops sessions superseded and unused for `KEY_OVERLAP_MS`, sessions
    /// older than `SESSION_MAX_AGE_MS` whatever their use (keys never live
    /// on when rekeys are blocked), and a pending session never confirmed
    /// within `SESSION_PENDING_TIMEOUT_MS`. A superseded session the peer
    /// still sends on stays (after simultaneous handshakes the two sides
    /// may each send on a different one until the next rekey).
    pub fn expire(&mut self, now_ms: u64) {
        self.sessions.retain(|s| {
            now_ms.saturating_sub(s.established_ms) < SESSION_MAX_AGE_MS
                && s.superseded_ms.get().is_none_or(|t| {
                    let last_use = t.max(s.last_receive_ms.get().unwrap_or(0));
                    now_ms.saturating_sub(last_use) < KEY_OVERLAP_MS
                })
        });
        // A rekey grows the set to two for the overlap; a root holds
        // thousands of sets, so the room is given back after it (one
        // session moves back inline).
        if self.sessions.capacity() > self.sessions.len().max(1) {
            self.sessions.shrink_to_fit();
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|s| now_ms.saturating_sub(s.established_ms) >= SESSION_PENDING_TIMEOUT_MS)
        {
            self.pending = None;
        }
    }

    /// When these sessions next need the timer (ms): the newest one's rekey
    /// time (as [`SessionSet::needs_rekey`] with `active`), or the earliest
    /// expiry of a superseded, pending or too old one; `None` without sessions.
    pub fn next_due_ms(&self, active: bool) -> Option<u64> {
        let rekey = self
            .sessions
            .last()
            .map(|s| s.established_ms + rekey_interval_ms(active));
        let expiries = self.sessions.iter().map(|s| {
            let old = s.established_ms + SESSION_MAX_AGE_MS;
            match s.superseded_ms.get() {
                Some(t) => old.min(t.max(s.last_receive_ms.get().unwrap_or(0)) + KEY_OVERLAP_MS),
                None => old,
            }
        });
        let pending = self
            .pending
            .as_ref()
            .map(|s| s.established_ms + SESSION_PENDING_TIMEOUT_MS);
        rekey.into_iter().chain(expiries).chain(pending).min()
    }

    /// Wipes every session (an idle peer's keys are not kept).
    pub fn clear(&mut self) {
        self.sessions.clear();
        self.pending = None;
    }

    /// Whether any session can send.
    pub fn is_established(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// Whether a new handshake is due: no session, or the newest is old
    /// (for a peer in use, `active`, or an idle one) or has used too many
    /// counters.
    pub fn needs_rekey(&self, now_ms: u64, active: bool) -> bool {
        match self.sessions.last() {
            None => true,
            Some(s) => {
                now_ms.saturating_sub(s.established_ms) >= rekey_interval_ms(active)
                    || s.next_counter - s.first_counter >= REKEY_AFTER_PACKETS
            }
        }
    }

    /// Milliseconds since the newest session was established.
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        self.sessions
            .last()
            .map(|s| now_ms.saturating_sub(s.established_ms))
    }

    /// Takes the next counter and key slot of the sending session.
    pub fn next_send(&mut self) -> Option<(u64, u8)> {
        let s = self.sessions.last_mut()?;
        // Hard stop before a counter could ever repeat under this key.
        if s.next_counter == u64::MAX {
            return None;
        }
        let counter = s.next_counter;
        s.next_counter += 1;
        Some((counter, s.slot))
    }

    /// Armors a packet (header written, counter from `next_send`) with the
    /// sending key, by `suite` (which flags bit 7 records).
    pub fn seal(&self, packet: &mut [u8], suite: Suite) {
        if let Some(s) = self.sessions.last() {
            match suite {
                Suite::Salsa2012Poly1305 => {
                    packet[FLAGS_OFFSET] &= !FLAG_AES_GCM;
                    armor(&s.send, packet, true);
                }
                Suite::Aes256Gcm => {
                    packet[FLAGS_OFFSET] |= FLAG_AES_GCM;
                    seal_aes_gcm(s.send_aead(), packet);
                }
            }
        }
    }

    /// Authenticates, replay-checks and decrypts a session packet in place,
    /// by the suite its flags name.
    /// Each candidate key's MAC is computed at most once per packet.
    pub fn open(
        &mut self,
        now_ms: u64,
        slot: u8,
        counter: u64,
        packet: &mut [u8],
    ) -> Result<Arrival, OpenError> {
        self.expire(now_ms);
        let mut any = false;
        let mut replayed = false;
        let candidates = self.sessions.iter().filter(|s| s.slot == slot).count()
            + usize::from(self.pending.as_ref().is_some_and(|p| p.slot == slot));
        // Newest first: that is almost always the one.
        for s in self.sessions.iter_mut().rev().filter(|s| s.slot == slot) {
            any = true;
            if counter == 0 || !s.replay.check(counter) {
                // Could be another session with the same slot; keep looking.
                // A replay of a genuine packet still authenticates: check
                // (without decrypting) only to tell replays from garbage.
                replayed |= counter != 0 && check_only(s, packet);
                continue;
            }
            match open_with(s, packet, candidates > 1) {
                Ok(()) => {
                    let arrival = arrival(s.replay.highest(), counter);
                    s.replay.accept(counter);
                    s.last_receive_ms = MaybeMs::at(now_ms);
                    return Ok(arrival);
                }
                Err(MacError) => continue,
            }
        }
        if let Some(p) = self.pending.as_mut().filter(|p| p.slot == slot) {
            any = true;
            if counter != 0 && p.replay.check(counter) && open_with(p, packet, false).is_ok() {
                let arrival = arrival(p.replay.highest(), counter);
                p.replay.accept(counter);
                p.last_receive_ms = MaybeMs::at(now_ms);
                // Key confirmed: the peer holds this session; it now sends.
                let confirmed = self.pending.take().expect("checked above");
                self.install(now_ms, *confirmed);
                self.newly_confirmed = true;
                return Ok(arrival);
            }
        }
        if !any {
            return Err(OpenError::NoSession);
        }
        Err(if replayed {
            OpenError::Replay
        } else {
            OpenError::BadMac
        })
    }
}

/// How old the newest session may grow before a rekey: two minutes for a
/// peer in use, ten for an idle one.
fn rekey_interval_ms(active: bool) -> u64 {
    if active {
        REKEY_INTERVAL_MS
    } else {
        REKEY_IDLE_INTERVAL_MS
    }
}

/// Opens a packet with a session's receiving key, by the suite its flags
/// name. AES-GCM may leave a failed body overwritten, so when another key
/// may still be tried (`others`) it is checked on a copy first.
fn open_with(s: &Session, packet: &mut [u8], others: bool) -> Result<(), MacError> {
    if packet
        .get(FLAGS_OFFSET)
        .is_some_and(|f| f & FLAG_AES_GCM != 0)
    {
        if others && !check_only(s, packet) {
            return Err(MacError);
        }
        open_aes_gcm(s.recv_aead(), packet)
    } else {
        dearmor(&s.recv, packet, true)
    }
}

/// MAC check without decrypting the packet (on a copy): used only to
/// classify a drop whose counter was already seen, or before trying one of
/// several AES-GCM keys.
fn check_only(s: &Session, packet: &[u8]) -> bool {
    let mut copy = packet.to_vec();
    if packet
        .get(FLAGS_OFFSET)
        .is_some_and(|f| f & FLAG_AES_GCM != 0)
    {
        open_aes_gcm(s.recv_aead(), &mut copy).is_ok()
    } else {
        dearmor(&s.recv, &mut copy, false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c25519::KeyPair;

    fn pair() -> (Address, Address, SharedKey) {
        let a = KeyPair::generate(&mut crate::rng::os_rng());
        let b = KeyPair::generate(&mut crate::rng::os_rng());
        let shared = a.agree(b.public()).unwrap();
        (
            Address::from_u64(0x1111111111).unwrap(),
            Address::from_u64(0x2222222222).unwrap(),
            shared,
        )
    }

    fn handshake(now: u64, a: Address, b: Address, s: &SharedKey) -> (Session, Session) {
        let ea = Ephemeral::generate(&mut crate::rng::os_rng());
        let eb = Ephemeral::generate(&mut crate::rng::os_rng());
        let (pa, pb) = (*ea.public(), *eb.public());
        let sa = derive_session(now, Role::Initiator, s, ea, &pb, a, b, 0x1234_5678_9abc).unwrap();
        let sb = derive_session(now, Role::Responder, s, eb, &pa, b, a, 0x0fed_cba9_8765).unwrap();
        (sa, sb)
    }

    fn packet(counter: u64, slot: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 35];
        p[..8].copy_from_slice(&counter.to_be_bytes());
        p[18] = slot << 3;
        p.extend_from_slice(body);
        p
    }

    /// B holds an older and a newer session with A in the same key slot; A
    /// seals with the older one by AES-GCM. B tries the newer key first
    /// (which fails, and could have overwritten the body) and still opens
    /// it with the older one; a replay is still told from garbage.
    #[test]
    fn aes_gcm_opens_with_the_right_one_of_two_sessions_in_a_slot() {
        let (a, b, s) = pair();
        let (old_a, old_b) = handshake(0, a, b, &s);
        let (new_a, new_b) = loop {
            let (x, y) = handshake(0, a, b, &s);
            if x.slot == old_a.slot {
                break (x, y);
            }
        };
        drop(new_a);
        let (mut set_a, mut set_b) = (SessionSet::default(), SessionSet::default());
        set_a.install(0, old_a);
        set_b.install(0, old_b);
        set_b.install(1, new_b);
        let (counter, slot) = set_a.next_send().unwrap();
        let body = vec![0x5au8; 300];
        let mut p = packet(counter, slot, &body);
        set_a.seal(&mut p, Suite::Aes256Gcm);
        assert_ne!(p[FLAGS_OFFSET] & FLAG_AES_GCM, 0);
        let sealed = p.clone();
        assert_eq!(set_b.open(2, slot, counter, &mut p), Ok(Arrival::InOrder));
        assert_eq!(p[35..], body[..]);
        assert_eq!(
            set_b.open(2, slot, counter, &mut sealed.clone()),
            Err(OpenError::Replay)
        );
        let mut garbage = sealed;
        garbage[40] ^= 1;
        garbage[..8].copy_from_slice(&(counter + 1).to_be_bytes());
        assert_eq!(
            set_b.open(2, slot, counter + 1, &mut garbage),
            Err(OpenError::BadMac)
        );
    }

    /// A packet accepted after a later one of its session is told apart
    /// (the node counts it as `receivedLate`); in order, none is.
    #[test]
    fn a_packet_overtaken_by_a_later_one_is_accepted_as_late() {
        let (a, b, s) = pair();
        let (sa, sb) = handshake(0, a, b, &s);
        let (mut set_a, mut set_b) = (SessionSet::default(), SessionSet::default());
        set_a.install(0, sa);
        set_b.install(0, sb);
        let sealed = seal_n(&mut set_a, 4);
        let order = [0, 2, 1, 3];
        let arrivals: Vec<_> = order
            .iter()
            .map(|&i| {
                let (c, slot, mut p) = sealed[i].clone();
                set_b.open(1, slot, c, &mut p)
            })
            .collect();
        assert_eq!(
            arrivals,
            [
                Ok(Arrival::InOrder),
                Ok(Arrival::InOrder),
                Ok(Arrival::Late),
                Ok(Arrival::InOrder)
            ]
        );
    }

    #[test]
    fn both_sides_derive_matching_directional_keys() {
        let (a, b, s) = pair();
        let (sa, sb) = handshake(0, a, b, &s);
        assert_eq!(sa.slot, sb.slot);
        let (mut set_a, mut set_b) = (SessionSet::default(), SessionSet::default());
        set_a.install(0, sa);
        set_b.install(0, sb);
        let (counter, slot) = set_a.next_send().unwrap();
        let mut p = packet(counter, slot, b"hello there");
        set_a.seal(&mut p, Suite::Salsa2012Poly1305);
        assert_ne!(&p[35..], b"hello there");
        let sealed = p.clone();
        assert_eq!(set_b.open(1, slot, counter, &mut p), Ok(Arrival::InOrder));
        assert_eq!(&p[35..], b"hello there");
        // The same packet again is a replay.
        let mut again = sealed.clone();
        assert_eq!(
            set_b.open(1, slot, counter, &mut again),
            Err(OpenError::Replay)
        );
        // A's own key does not open what A sent (directional keys).
        let mut own = sealed;
        assert!(set_a.open(1, slot, counter, &mut own).is_err());
    }

    /// Why a genuine packet of an expired session is refused: no live session
    /// has its slot, or the live one with that slot has another key. Never
    /// `Replay`: the tests give such packets a counter never seen.
    fn expired(live_slot: u8, gone_slot: u8) -> OpenError {
        if live_slot == gone_slot {
            OpenError::BadMac
        } else {
            OpenError::NoSession
        }
    }

    /// Seals `n` packets under `set`'s sending session, each with its own counter.
    fn seal_n(set: &mut SessionSet, n: usize) -> Vec<(u64, u8, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let (c, slot) = set.next_send().unwrap();
                let mut p = packet(c, slot, &[i as u8; 4]);
                set.seal(&mut p, Suite::Salsa2012Poly1305);
                (c, slot, p)
            })
            .collect()
    }

    #[test]
    fn old_session_is_accepted_only_during_the_overlap() {
        let (a, b, s) = pair();
        let (a1, b1) = handshake(0, a, b, &s);
        let (a2, b2) = handshake(1000, a, b, &s);
        let live_slot = b2.slot();
        let (mut set_a, mut set_b) = (SessionSet::default(), SessionSet::default());
        set_a.install(0, a1);
        set_b.install(0, b1);
        // A seals three packets under session 1, then both move to session 2.
        let mut sealed = seal_n(&mut set_a, 3).into_iter();
        set_a.install(1000, a2);
        set_b.install(1000, b2);
        // Inside the overlap the superseded session still opens.
        let (c, slot1, mut late) = sealed.next().unwrap();
        let t = 1000 + KEY_OVERLAP_MS - 1;
        assert_eq!(set_b.open(t, slot1, c, &mut late), Ok(Arrival::InOrder));
        assert_eq!(&late[35..], &[0; 4]);
        // The peer still sends on it: the overlap runs from that last use.
        let (c, _, mut still) = sealed.next().unwrap();
        let t = t + KEY_OVERLAP_MS - 1;
        assert_eq!(set_b.open(t, slot1, c, &mut still), Ok(Arrival::InOrder));
        // A full overlap after its last use it is gone: a packet whose
        // counter was never seen is refused for expiry, not as a replay.
        let (c, _, mut too_late) = sealed.next().unwrap();
        let t = t + KEY_OVERLAP_MS;
        assert_eq!(
            set_b.open(t, slot1, c, &mut too_late),
            Err(expired(live_slot, slot1))
        );
        assert_eq!(set_b.sessions.len(), 1, "only session 2 is left");
        assert!(!set_b.needs_rekey(1000 + REKEY_INTERVAL_MS - 1, true));
        assert!(set_b.needs_rekey(1000 + REKEY_INTERVAL_MS, true));
        // An idle peer's session lives longer before its rekey.
        assert!(!set_b.needs_rekey(1000 + REKEY_IDLE_INTERVAL_MS - 1, false));
        assert!(set_b.needs_rekey(1000 + REKEY_IDLE_INTERVAL_MS, false));
        assert_eq!(set_b.next_due_ms(true), Some(1000 + REKEY_INTERVAL_MS));
    }

    #[test]
    fn unused_superseded_session_expires_one_overlap_after_the_rekey() {
        let (a, b, s) = pair();
        let (a1, b1) = handshake(0, a, b, &s);
        let (a2, b2) = handshake(1000, a, b, &s);
        let live_slot = b2.slot();
        let (mut set_a, mut set_b) = (SessionSet::default(), SessionSet::default());
        set_a.install(0, a1);
        set_b.install(0, b1);
        let (c, slot1, mut p) = seal_n(&mut set_a, 1).remove(0);
        assert!(!set_b.sessions.spilled(), "one session is held inline");
        set_a.install(1000, a2);
        set_b.install(1000, b2);
        assert!(set_b.sessions.spilled(), "two for the overlap");
        assert_eq!(
            set_b.open(1000 + KEY_OVERLAP_MS, slot1, c, &mut p),
            Err(expired(live_slot, slot1))
        );
        assert_eq!(set_b.sessions.len(), 1, "only session 2 is left");
        assert!(
            !set_b.sessions.spilled(),
            "the room of the overlap is given back: the one left is inline again"
        );
    }

    #[test]
    fn a_session_in_use_is_wiped_at_its_maximum_age() {
        let (a, b, s) = pair();
        let (a1, b1) = handshake(0, a, b, &s);
        let (mut set_a, mut set_b) = (SessionSet::default(), SessionSet::default());
        set_a.install(0, a1);
        set_b.install(0, b1);
        // Used all along, never rekeyed (rekeys blocked).
        let mut t = 0;
        while t + 10_000 < SESSION_MAX_AGE_MS {
            t += 10_000;
            let (c, slot, mut p) = seal_n(&mut set_a, 1).remove(0);
            assert_eq!(set_b.open(t, slot, c, &mut p), Ok(Arrival::InOrder));
        }
        let (c, slot, mut p) = seal_n(&mut set_a, 1).remove(0);
        assert!(set_b.open(SESSION_MAX_AGE_MS, slot, c, &mut p).is_err());
        set_a.expire(SESSION_MAX_AGE_MS);
        assert!(
            !set_a.is_established(),
            "keys never outlive the maximum age"
        );
        assert!(set_a.next_send().is_none());
    }

    #[test]
    fn first_counters_are_random_and_rekeys_count_from_them() {
        let (a, b, s) = pair();
        let e = Ephemeral::generate(&mut crate::rng::os_rng());
        let theirs = *Ephemeral::generate(&mut crate::rng::os_rng()).public();
        let one = derive_session(0, Role::Initiator, &s, e, &theirs, a, b, u64::MAX).unwrap();
        assert_eq!(one.next_counter, first_counter(u64::MAX));
        assert!(one.next_counter > 1 << 61, "a random start, not 1");
        assert!(
            one.next_counter < 1 << 62,
            "2^62 counters left before the hard stop"
        );
        assert_eq!(first_counter(0), 1, "never 0");
        let mut set = SessionSet::default();
        set.install(0, one);
        assert!(!set.needs_rekey(1, true));
        // Rekey after REKEY_AFTER_PACKETS sent, counted from the first counter.
        set.sessions[0].next_counter += REKEY_AFTER_PACKETS - 1;
        assert!(!set.needs_rekey(1, true));
        set.sessions[0].next_counter += 1;
        assert!(set.needs_rekey(1, true));
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let (a, b, s) = pair();
        let e = Ephemeral::generate(&mut crate::rng::os_rng());
        assert!(derive_session(0, Role::Initiator, &s, e, &[0u8; 32], a, b, 0).is_none());
    }
}
