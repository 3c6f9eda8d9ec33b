//! Identity checks (the memory-hard address hash, ~17 ms each) kept off the
//! packet path: a HELLO from an unknown identity, or a WHOIS answer, asks for
//! a check; the driver runs it outside the node (see
//! [`super::Node::next_identity_check`]) under a node-wide budget. Verified
//! identities and failures are remembered, so no identity is hashed twice
//! and known peers never wait.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use crate::address::Address;
use crate::c25519::PublicKey;
use crate::constants::{
    IDENTITY_CHECKS_PER_SECOND, MAX_ASKED_IDENTITIES, MAX_FAILED_IDENTITIES,
    MAX_PENDING_IDENTITY_CHECKS, MAX_VERIFIED_IDENTITIES,
};
use crate::hash_state::{HashMap, HashSet, HashState};
use crate::identity::{Identity, IdentityError, SharedIdentity, UncheckedIdentity};
use crate::identity_hash::IdentityHashScratch;
use crate::local_socket::LocalSocket;

/// A HELLO kept while its sender's identity is checked, handled again after.
pub(crate) struct StashedHello {
    pub socket: LocalSocket,
    pub from: SocketAddr,
    pub datagram: Vec<u8>,
}

/// An identity this node verified, as it keeps it across a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The identity (public part).
    pub identity: Identity,
    /// The timestamp of the last HELLO accepted from it (0 if none).
    pub hello_timestamp_ms: u64,
    /// Where it was last reached straight over UDP, if anywhere.
    pub last_path: Option<SocketAddr>,
}

/// One identity waiting for its check.
struct Waiting {
    identity: UncheckedIdentity,
    /// Asked for by our own WHOIS (answered by a root): checked first.
    from_whois: bool,
    hello: Option<StashedHello>,
    /// Handed to the driver, result not back yet.
    in_flight: bool,
    /// Asked for again (a retried HELLO): checked before first-time
    /// requests. A real node retries; a flood of forged identities does
    /// not, and if it does, each retried identity fails once and is cached.
    repeated: bool,
}

/// An identity check for the driver to run outside the node.
pub struct IdentityCheck {
    identity: UncheckedIdentity,
}

impl IdentityCheck {
    /// The address claimed.
    pub fn address(&self) -> Address {
        self.identity.address
    }

    /// Runs the memory-hard hash (the slow part) and gives the result back
    /// for [`super::Node::identity_check_done`].
    pub fn run(self, scratch: &mut IdentityHashScratch) -> IdentityCheckResult {
        let verdict = self.identity.clone().check(scratch);
        IdentityCheckResult {
            claimed: self.identity,
            verdict,
        }
    }
}

/// The outcome of an [`IdentityCheck`].
pub struct IdentityCheckResult {
    pub(crate) claimed: UncheckedIdentity,
    pub(crate) verdict: Result<Identity, IdentityError>,
}

/// The checks waiting, their budget, and what earlier checks found.
pub(crate) struct IdentityChecks {
    waiting: Vec<Waiting>,
    /// Token bucket: (last refill ms, tokens).
    budget: (u64, u32),
    /// Checks per second (also the burst).
    per_second: u32,
    /// Verified identities, with the timestamp of the last HELLO accepted
    /// from each (kept after its peer is forgotten: an old HELLO replayed
    /// later is still stale).
    /// Shared with the peer table: a peer's identity is counted once.
    verified: HashMap<Address, (SharedIdentity, u64)>,
    verified_order: VecDeque<Address>,
    failed: HashMap<(Address, [u8; 64]), ()>,
    failed_order: VecDeque<(Address, [u8; 64])>,
    /// Fingerprints of identities asked for lately (bounded ring), so that
    /// one asked for again after being pushed out of a full queue is
    /// recognised as a retry.
    asked: HashSet<u64>,
    asked_order: VecDeque<u64>,
    /// Checks run so far.
    pub run: u64,
    /// Identities added to `verified` so far (a change counter).
    pub verified_added: u64,
}

impl IdentityChecks {
    /// No checks waiting or done.
    pub fn new(hasher: HashState) -> Self {
        Self {
            waiting: Vec::new(),
            budget: (0, IDENTITY_CHECKS_PER_SECOND),
            per_second: IDENTITY_CHECKS_PER_SECOND,
            verified: HashMap::with_hasher(hasher.clone()),
            verified_order: VecDeque::new(),
            failed: HashMap::with_hasher(hasher.clone()),
            failed_order: VecDeque::new(),
            asked: HashSet::with_hasher(hasher),
            asked_order: VecDeque::new(),
            run: 0,
            verified_added: 0,
        }
    }
}

/// What became of a request for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Waiting for the budget.
    Waiting,
    /// Queued in place of another waiting check (the queue was full).
    Replaced,
    /// This identity already failed: nothing to do.
    KnownBad,
}

impl IdentityChecks {
    /// A verified identity with this address and key, if any.
    pub fn verified(&self, address: Address, public: &PublicKey) -> Option<&Identity> {
        self.verified
            .get(&address)
            .map(|(i, _)| &**i)
            .filter(|i| i.public_key().as_bytes() == public.as_bytes())
    }

    /// The timestamp of the last HELLO accepted from `address` (0 if none).
    pub fn hello_timestamp(&self, address: Address) -> u64 {
        self.verified.get(&address).map_or(0, |(_, t)| *t)
    }

    /// Records the timestamp of a HELLO accepted from a verified `address`.
    pub fn note_hello_timestamp(&mut self, address: Address, timestamp_ms: u64) {
        if let Some((_, t)) = self.verified.get_mut(&address) {
            *t = (*t).max(timestamp_ms);
        }
    }

    /// The identity verified for `address`, if any.
    pub fn verified_identity(&self, address: Address) -> Option<&Identity> {
        self.verified.get(&address).map(|(i, _)| &**i)
    }

    /// The key verified for `address`, if any (a different key claiming it is refused).
    pub fn verified_key(&self, address: Address) -> Option<&PublicKey> {
        self.verified.get(&address).map(|(i, _)| i.public_key())
    }

    /// Whether this address/key pair already failed its check.
    pub fn known_bad(&self, address: Address, public: &PublicKey) -> bool {
        self.failed.contains_key(&(address, *public.as_bytes()))
    }

    /// Whether a check is waiting for `address`.
    #[cfg(test)]
    pub fn is_waiting(&self, address: Address) -> bool {
        self.waiting.iter().any(|w| w.identity.address == address)
    }

    /// Checks waiting.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Sets the budget: checks per second, also the burst (at least 1).
    pub fn set_rate(&mut self, per_second: u32) {
        self.per_second = per_second.max(1);
        self.budget.1 = self.budget.1.min(self.per_second);
    }

    /// Whether a check could be handed out (some wait and none is in flight
    /// for each): for drivers deciding whether to wake their checker.
    pub fn has_ready(&self) -> bool {
        self.waiting.iter().any(|w| !w.in_flight)
    }

    /// Asks for a check of `identity`. A full queue takes a new HELLO in
    /// place of a random waiting HELLO, so that a flood of forged
    /// identities only thins the odds of a real one, never shuts it out.
    pub fn request(
        &mut self,
        identity: UncheckedIdentity,
        from_whois: bool,
        hello: Option<StashedHello>,
        random: u64,
    ) -> Queued {
        if self.known_bad(identity.address, &identity.public) {
            return Queued::KnownBad;
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| {
            w.identity.address == identity.address
                && w.identity.public.as_bytes() == identity.public.as_bytes()
        }) {
            w.from_whois |= from_whois;
            w.repeated = true;
            if hello.is_some() {
                w.hello = hello;
            }
            return Queued::Waiting;
        }
        let repeated = self.note_asked(&identity);
        let entry = Waiting {
            identity,
            from_whois,
            hello,
            in_flight: false,
            repeated,
        };
        if self.waiting.len() < MAX_PENDING_IDENTITY_CHECKS {
            self.waiting.push(entry);
            return Queued::Waiting;
        }
        // Full: replace a random HELLO-borne entry (our own WHOIS answers
        // stay), a first-time request before a retried one.
        let replaceable =
            |w: &Waiting, retried: bool| !w.from_whois && !w.in_flight && (w.repeated == retried);
        let mut victims: Vec<usize> = (0..self.waiting.len())
            .filter(|i| replaceable(&self.waiting[*i], false))
            .collect();
        if victims.is_empty() && entry.repeated {
            victims = (0..self.waiting.len())
                .filter(|i| replaceable(&self.waiting[*i], true))
                .collect();
        }
        if victims.is_empty() {
            return Queued::Replaced;
        }
        let victim = victims[(random % victims.len() as u64) as usize];
        self.waiting[victim] = entry;
        Queued::Replaced
    }

    /// Remembers that `identity` was asked for; returns whether it had been
    /// asked for before (within the ring's memory).
    fn note_asked(&mut self, identity: &UncheckedIdentity) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        identity.address.hash(&mut hasher);
        identity.public.as_bytes().hash(&mut hasher);
        let fingerprint = hasher.finish();
        if self.asked.contains(&fingerprint) {
            return true;
        }
        self.asked.insert(fingerprint);
        self.asked_order.push_back(fingerprint);
        while self.asked_order.len() > MAX_ASKED_IDENTITIES {
            if let Some(old) = self.asked_order.pop_front() {
                self.asked.remove(&old);
            }
        }
        false
    }

    /// The next check to run, if the budget allows one now: WHOIS answers
    /// first, then retried HELLOs, else a random waiting HELLO.
    pub fn next(&mut self, now_ms: u64, random: u64) -> Option<IdentityCheck> {
        let ready: Vec<usize> = (0..self.waiting.len())
            .filter(|i| !self.waiting[*i].in_flight)
            .collect();
        if ready.is_empty() {
            return None;
        }
        let (last, tokens) = &mut self.budget;
        let per_second = u64::from(self.per_second);
        let refill = now_ms.saturating_sub(*last) * per_second / 1000;
        if refill > 0 {
            *tokens = (*tokens as u64 + refill).min(per_second) as u32;
            *last = now_ms;
        }
        if *tokens == 0 {
            return None;
        }
        *tokens -= 1;
        let i = ready
            .iter()
            .copied()
            .find(|i| self.waiting[*i].from_whois)
            .or_else(|| ready.iter().copied().find(|i| self.waiting[*i].repeated))
            .unwrap_or(ready[(random % ready.len() as u64) as usize]);
        self.run += 1;
        // The entry stays (its stash is taken on completion).
        self.waiting[i].in_flight = true;
        Some(IdentityCheck {
            identity: self.waiting[i].identity.clone(),
        })
    }

    /// Records a result; returns whether it was asked for by WHOIS and the
    /// HELLO that waited for it (to handle again when verified).
    pub fn done(
        &mut self,
        claimed: &UncheckedIdentity,
        verified: Option<&Identity>,
    ) -> (bool, Option<StashedHello>) {
        let position = self.waiting.iter().position(|w| {
            w.identity.address == claimed.address
                && w.identity.public.as_bytes() == claimed.public.as_bytes()
        });
        let waiting = position.map(|i| self.waiting.swap_remove(i));
        match verified {
            Some(identity) => {
                self.remember_verified(identity.to_public());
            }
            None => {
                let key = (claimed.address, *claimed.public.as_bytes());
                if self.failed.insert(key, ()).is_none() {
                    self.failed_order.push_back(key);
                    while self.failed_order.len() > MAX_FAILED_IDENTITIES {
                        if let Some(old) = self.failed_order.pop_front() {
                            self.failed.remove(&old);
                        }
                    }
                }
            }
        }
        match waiting {
            Some(w) => (w.from_whois, w.hello),
            None => (false, None),
        }
    }

    /// Verified identities, oldest first, each with the timestamp of the
    /// last HELLO accepted from it.
    pub fn verified_list(&self) -> Vec<(Identity, u64)> {
        self.verified_order
            .iter()
            .filter_map(|a| self.verified.get(a))
            .map(|(i, t)| ((**i).clone(), *t))
            .collect()
    }

    /// Remembers an identity as verified (bounded, oldest forgotten first);
    /// returns it shared, for the peer table to hold the same copy.
    pub fn remember_verified(&mut self, identity: Identity) -> SharedIdentity {
        let address = identity.address();
        if let Some((known, _)) = self.verified.get(&address) {
            if known.public_key().as_bytes() == identity.public_key().as_bytes() {
                return known.clone();
            }
            return SharedIdentity::new(identity);
        }
        let shared = SharedIdentity::new(identity);
        self.verified.insert(address, (shared.clone(), 0));
        self.verified_added += 1;
        self.verified_order.push_back(address);
        while self.verified_order.len() > MAX_VERIFIED_IDENTITIES {
            if let Some(old) = self.verified_order.pop_front() {
                self.verified.remove(&old);
            }
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unchecked(i: &Identity) -> UncheckedIdentity {
        UncheckedIdentity {
            address: i.address(),
            public: *i.public_key(),
            secret: None,
        }
    }

    fn forged(n: u64) -> UncheckedIdentity {
        let mut key = [0u8; 64];
        key[..8].copy_from_slice(&n.to_be_bytes());
        UncheckedIdentity {
            address: Address::from_u64(0x1000000000 + n).unwrap(),
            public: PublicKey::from_bytes(key),
            secret: None,
        }
    }

    #[test]
    fn the_budget_bounds_checks_per_second() {
        let mut checks = IdentityChecks::new(crate::switch::tests_hasher());
        for n in 0..1000 {
            checks.request(forged(n), false, None, n * 7919);
        }
        assert_eq!(checks.waiting_len(), MAX_PENDING_IDENTITY_CHECKS);
        let mut ran = 0;
        let mut scratch = IdentityHashScratch::new();
        // Ten seconds, asked every 10 ms.
        for t in 0..1000u64 {
            while let Some(job) = checks.next(1_000_000 + t * 10, t) {
                let result = job.run(&mut scratch);
                checks.done(&result.claimed, result.verdict.as_ref().ok());
                ran += 1;
                checks.request(forged(10_000 + t * 100 + ran), false, None, t);
            }
        }
        let most = 11 * u64::from(IDENTITY_CHECKS_PER_SECOND);
        assert!(ran <= most, "{ran} checks in 10 s, budget {most}");
        assert!(
            ran >= 10 * u64::from(IDENTITY_CHECKS_PER_SECOND) - 1,
            "{ran}"
        );
    }

    #[test]
    fn failures_and_successes_are_never_hashed_again() {
        let real = Identity::generate(&mut crate::rng::os_rng());
        let mut checks = IdentityChecks::new(crate::switch::tests_hasher());
        let mut scratch = IdentityHashScratch::new();
        checks.request(forged(1), false, None, 0);
        checks.request(unchecked(&real), false, None, 0);
        while let Some(job) = checks.next(5_000_000, 1) {
            let result = job.run(&mut scratch);
            checks.done(&result.claimed, result.verdict.as_ref().ok());
        }
        assert!(checks.known_bad(forged(1).address, &forged(1).public));
        assert_eq!(checks.request(forged(1), false, None, 0), Queued::KnownBad);
        assert!(checks.verified(real.address(), real.public_key()).is_some());
        assert_eq!(checks.run, 2);
    }

    #[test]
    fn a_verified_identity_is_held_once_and_shared_with_its_peer() {
        let real = Identity::generate(&mut crate::rng::os_rng()).to_public();
        let mut checks = IdentityChecks::new(crate::switch::tests_hasher());
        let first = checks.remember_verified(real.clone());
        let again = checks.remember_verified(real.clone());
        assert!(
            SharedIdentity::ptr_eq(&first, &again),
            "one copy for the table and the peer"
        );
        assert_eq!(SharedIdentity::count(&first), 3);
        // Another key claiming the address is not taken for the verified one.
        let other = Identity::generate(&mut crate::rng::os_rng()).to_public();
        let claim = Identity::previously_verified(real.address(), *other.public_key());
        let separate = checks.remember_verified(claim);
        assert!(!SharedIdentity::ptr_eq(&first, &separate));
        assert_eq!(
            checks.verified_key(real.address()).map(|k| *k.as_bytes()),
            Some(*real.public_key().as_bytes())
        );
    }

    #[test]
    fn whois_answers_go_first_and_are_never_replaced() {
        let mut checks = IdentityChecks::new(crate::switch::tests_hasher());
        checks.request(forged(0), true, None, 0);
        for n in 1..500 {
            checks.request(forged(n), false, None, n);
        }
        assert!(checks.is_waiting(forged(0).address));
        let job = checks.next(1_000_000, 3).unwrap();
        assert_eq!(job.address(), forged(0).address);
    }

    #[test]
    fn a_retried_hello_is_checked_ahead_of_a_flood() {
        // 200 forged HELLOs per second (each a new identity, as forging is
        // free) against one real HELLO retried every second: the retry is
        // recognised and checked at once, whatever the draws.
        let real = forged(999_999);
        let mut checks = IdentityChecks::new(crate::switch::tests_hasher());
        let mut picked_at = None;
        let mut rng = 0x9e3779b97f4a7c15u64;
        'outer: for ms in (0..30_000u64).step_by(5) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            checks.request(forged(ms), false, None, rng);
            if ms % 1000 == 0 {
                checks.request(real.clone(), false, None, rng >> 3);
            }
            while let Some(job) = checks.next(1_000_000 + ms, rng >> 5) {
                if job.address() == real.address {
                    picked_at = Some(ms);
                    break 'outer;
                }
                checks.done(&job.identity, None);
            }
        }
        let at = picked_at.expect("the real identity was never checked in 30 s");
        assert!(at <= 1_100, "checked only after {at} ms");
    }
}
