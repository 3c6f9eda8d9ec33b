//! A peer's physical paths: where it has been heard from or told to be,
//! with send/receive times, latency, and which one to prefer.

use std::net::SocketAddr;

use crate::constants::{
    MAX_PATHS_PER_PEER, MAX_UNANSWERED_CANDIDATE_PROBES, PATH_ACTIVE_TIMEOUT_MS,
    PATH_ANSWER_TIMEOUT_MS, PATH_IDLE_TIMEOUT_MS, PATH_KEEPALIVE_INTERVAL_MS, PATH_MTU_BASE_BYTES,
    PATH_PROBE_INTERVAL_ACTIVE_MS, PATH_QUICK_PROBE_AFTER_MS, PATH_QUICK_PROBE_INTERVAL_MS,
};
use crate::local_socket::LocalSocket;
use crate::maybe_ms::MaybeMs;
use smallvec::SmallVec;
use thin_vec::ThinVec;

/// One physical path to a peer.
#[derive(Debug, Clone)]
pub struct Path {
    /// The peer's address and port on this path.
    pub addr: SocketAddr,
    /// Our socket it was last heard on (sends go out by the same one, so
    /// NAT mappings and TCP connections line up).
    pub socket: LocalSocket,
    /// When we last sent on it (ms), if ever.
    pub last_send_ms: MaybeMs,
    /// When an authenticated packet last arrived on it (ms), if ever.
    pub last_receive_ms: MaybeMs,
    /// When it was first learned (ms).
    pub learned_ms: u64,
    /// Round-trip time measured on it.
    pub latency_ms: MaybeMs,
    /// When the last probe was sent on it.
    last_probe_ms: MaybeMs,
    /// The first send not followed by any receive yet: a path that stops
    /// answering is dead within [`PATH_ANSWER_TIMEOUT_MS`], whatever its
    /// last receive.
    unanswered_since_ms: MaybeMs,
    /// Probes sent on it while it was never heard from: a candidate that
    /// never answers is given up after a few (it could be anyone's address).
    candidate_probes: u32,
    /// The largest datagram it carries, as discovered.
    pub mtu: crate::path_mtu::PathMtu,
}

impl Path {
    /// Whether it was never heard from and has been probed enough.
    fn given_up(&self) -> bool {
        self.last_receive_ms.is_none() && self.candidate_probes >= MAX_UNANSWERED_CANDIDATE_PROBES
    }

    /// Whether the path is alive: heard from recently enough for the peer's
    /// activity (a busy peer is probed often, so silence means more).
    pub fn is_alive(&self, now_ms: u64, active: bool) -> bool {
        let timeout = if active {
            PATH_ACTIVE_TIMEOUT_MS
        } else {
            PATH_IDLE_TIMEOUT_MS
        };
        self.last_receive_ms
            .get()
            .is_some_and(|t| now_ms.saturating_sub(t) < timeout)
            && !self.stopped_answering(now_ms)
    }

    /// Whether sends on it went unanswered for [`PATH_ANSWER_TIMEOUT_MS`]
    /// (quick probes were sent meanwhile): the path is silent, whatever
    /// it did before.
    pub fn stopped_answering(&self, now_ms: u64) -> bool {
        self.unanswered_since_ms
            .get()
            .is_some_and(|t| now_ms.saturating_sub(t) >= PATH_ANSWER_TIMEOUT_MS)
    }

    /// Whether a send has waited long enough for an answer to be suspicious.
    fn answer_overdue(&self, now_ms: u64) -> bool {
        self.unanswered_since_ms
            .get()
            .is_some_and(|t| now_ms.saturating_sub(t) >= PATH_QUICK_PROBE_AFTER_MS)
    }

    /// When it is next probed, `wait` after the last probe; a keepalive
    /// (`keepalive`: an idle, answering path) also waits `wait` after the
    /// last packet received on it: whichever end probes first keeps it
    /// alive for both (a controller or root with thousands of idle members
    /// does not send a keepalive of its own to each). `None`: never probed.
    fn next_probe_ms(&self, wait: u64, keepalive: bool) -> Option<u64> {
        let last_probe = self.last_probe_ms.get()?;
        let since = match self.last_receive_ms.get() {
            Some(received) if keepalive => last_probe.max(received),
            _ => last_probe,
        };
        Some(since + wait)
    }

    /// Whether it has never been confirmed and is older than the idle timeout.
    fn is_stale(&self, now_ms: u64) -> bool {
        let since = self.last_receive_ms.get().unwrap_or(self.learned_ms);
        now_ms.saturating_sub(since) >= PATH_IDLE_TIMEOUT_MS
    }
}

/// The set of paths to one peer.
#[derive(Debug, Default, Clone)]
pub struct PathSet {
    /// The first one inline: a root holds one path per peer for thousands
    /// of peers.
    paths: SmallVec<[Path; 1]>,
    /// Candidates given up on (never answered), and when: not learned
    /// again for `GIVEN_UP_MEMORY_MS`, so a peer pushing them again and
    /// again gets no fresh round of probes.
    given_up: ThinVec<(SocketAddr, u64)>,
}

/// How long a candidate given up on stays refused.
const GIVEN_UP_MEMORY_MS: u64 = 600_000;

impl PathSet {
    /// All paths.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter()
    }

    /// Learns a candidate path (from PUSH_DIRECT_PATHS, RENDEZVOUS or a world).
    /// Returns true if it is new.
    pub fn learn(&mut self, now_ms: u64, addr: SocketAddr) -> bool {
        self.learn_on(now_ms, addr, LocalSocket::Primary)
    }

    /// Learns a candidate a root introduced (RENDEZVOUS): a fresh
    /// observation, so a candidate given up on earlier gets a new round of
    /// probes (the network between may have changed). Roots' introductions
    /// are rate-limited at the root; a peer's own pushes never do this.
    pub fn learn_introduced(&mut self, now_ms: u64, addr: SocketAddr) -> bool {
        self.given_up.retain(|(a, _)| *a != addr);
        if let Some(p) = self.paths.iter_mut().find(|p| p.addr == addr) {
            p.candidate_probes = 0;
            return false;
        }
        self.learn(now_ms, addr)
    }

    /// Learns a candidate path reached through our socket `socket`.
    pub fn learn_on(&mut self, now_ms: u64, addr: SocketAddr, socket: LocalSocket) -> bool {
        if self.paths.iter().any(|p| p.addr == addr) {
            return false;
        }
        self.given_up
            .retain(|(_, t)| now_ms.saturating_sub(*t) < GIVEN_UP_MEMORY_MS);
        if self.given_up.iter().any(|(a, _)| *a == addr) {
            return false;
        }
        if self.paths.len() >= MAX_PATHS_PER_PEER {
            // Forget a path never heard from: one given up on first, else the stalest.
            let i = self
                .paths
                .iter()
                .position(|p| p.given_up())
                .or_else(|| self.paths.iter().position(|p| p.last_receive_ms.is_none()));
            match i {
                Some(i) => {
                    let gone = self.paths.remove(i);
                    self.remember_given_up(now_ms, &gone);
                }
                None => return false,
            }
        }
        // Grown one at a time: a Vec's first push reserves four, and most
        // peers (all of a root's) have one path.
        self.paths.reserve_exact(1);
        self.paths.push(Path {
            addr,
            socket,
            last_send_ms: MaybeMs::NONE,
            last_receive_ms: MaybeMs::NONE,
            learned_ms: now_ms,
            latency_ms: MaybeMs::NONE,
            last_probe_ms: MaybeMs::NONE,
            unanswered_since_ms: MaybeMs::NONE,
            candidate_probes: 0,
            mtu: Default::default(),
        });
        true
    }

    /// The path to `addr`, if known.
    pub fn get_mut(&mut self, addr: SocketAddr) -> Option<&mut Path> {
        self.paths.iter_mut().find(|p| p.addr == addr)
    }

    /// The largest datagram to send to `addr`: what discovery found on that
    /// path, else [`PATH_MTU_BASE_BYTES`].
    pub fn mtu_to(&self, addr: SocketAddr) -> usize {
        self.paths
            .iter()
            .find(|p| p.addr == addr)
            .map_or(usize::from(PATH_MTU_BASE_BYTES), |p| p.mtu.usable())
    }

    /// Records a probe sent on `addr`; returns false if it is a candidate
    /// given up on (the probe must not go).
    pub fn note_probe(&mut self, addr: SocketAddr) -> bool {
        match self.paths.iter_mut().find(|p| p.addr == addr) {
            Some(p) if p.last_receive_ms.is_none() => {
                if p.given_up() {
                    return false;
                }
                p.candidate_probes += 1;
                true
            }
            _ => true,
        }
    }

    /// Records an authenticated packet from `addr`. Returns true when this
    /// made a path alive that was not (new or revived).
    pub fn received(
        &mut self,
        now_ms: u64,
        addr: SocketAddr,
        socket: LocalSocket,
        active: bool,
    ) -> bool {
        self.learn_on(now_ms, addr, socket);
        let Some(p) = self.paths.iter_mut().find(|p| p.addr == addr) else {
            return false;
        };
        let was_alive = p.is_alive(now_ms, active);
        // A birthday punch can land on several of our sockets: the first
        // that works keeps the path (the others are closed after the punch),
        // so both sides settle on one mapping.
        let other_punch = matches!((p.socket, socket),
            (LocalSocket::Punch(a), LocalSocket::Punch(b)) if a != b);
        if !(other_punch && was_alive) {
            p.socket = socket;
        }
        p.last_receive_ms = MaybeMs::at(now_ms);
        p.unanswered_since_ms = MaybeMs::NONE;
        if !was_alive {
            // The peer may have moved (a new address, a restart elsewhere, a
            // standby taking over its identity): its other paths must answer
            // within PATH_ANSWER_TIMEOUT_MS or give way, rather than keep
            // the traffic for the idle timeout on the strength of an old
            // latency figure.
            for other in self.paths.iter_mut().filter(|o| o.addr != addr) {
                if other.is_alive(now_ms, active) {
                    other.unanswered_since_ms.get_or_insert(now_ms);
                }
            }
        }
        !was_alive
    }

    /// Records a send on `addr` by `socket` (a send by another socket, such
    /// as a UDP probe to a root reached over TCP, is not this path's). Only
    /// a send that calls for something back (not an answer, not a NOP) waits
    /// for it: answers arming the wait made two idle peers probe each other
    /// every second, each answer calling for the next probe.
    pub fn sent(
        &mut self,
        now_ms: u64,
        addr: SocketAddr,
        socket: LocalSocket,
        expects_answer: bool,
    ) {
        if let Some(p) = self
            .paths
            .iter_mut()
            .find(|p| p.addr == addr && p.socket == socket)
        {
            p.last_send_ms = MaybeMs::at(now_ms);
            if expects_answer {
                p.unanswered_since_ms.get_or_insert(now_ms);
            }
        }
    }

    /// Our socket for sending to `addr`, if it is a known path.
    pub fn socket_of(&self, addr: SocketAddr) -> Option<LocalSocket> {
        self.paths.iter().find(|p| p.addr == addr).map(|p| p.socket)
    }

    /// Forgets every path through our socket `socket` (it was closed).
    pub fn forget_socket(&mut self, socket: LocalSocket) {
        self.paths.retain(|p| p.socket != socket);
    }

    /// Records a round-trip time measured on `addr`.
    pub fn measured(&mut self, addr: SocketAddr, rtt_ms: u64) {
        if let Some(p) = self.paths.iter_mut().find(|p| p.addr == addr) {
            // Smooth a little so one slow reply does not flip the preference.
            p.latency_ms = MaybeMs::at(match p.latency_ms.get() {
                Some(old) => (old * 3 + rtt_ms) / 4,
                None => rtt_ms,
            });
        }
    }

    /// The path to send on: alive, lowest latency, most recently heard.
    pub fn preferred(&self, now_ms: u64, active: bool) -> Option<&Path> {
        self.paths
            .iter()
            .filter(|p| p.is_alive(now_ms, active))
            .min_by_key(|p| {
                (
                    // A path whose answers are overdue ranks after those that answer.
                    p.answer_overdue(now_ms),
                    p.latency_ms.get().unwrap_or(u64::MAX / 2),
                    u64::MAX - p.last_receive_ms.get().unwrap_or(0),
                )
            })
    }

    /// Paths due a probe now: alive ones for keepalive (often when the peer
    /// is active), candidates not yet confirmed or silent (to open or reopen
    /// NAT mappings), and, every tick, paths whose answer is overdue (so a
    /// dead path is told from a lost packet within a second).
    pub fn due_probes(&mut self, now_ms: u64, active: bool) -> Vec<SocketAddr> {
        let interval = if active {
            PATH_PROBE_INTERVAL_ACTIVE_MS
        } else {
            PATH_KEEPALIVE_INTERVAL_MS
        };
        let mut due = Vec::new();
        for p in &mut self.paths {
            if p.given_up() {
                continue;
            }
            let candidate = p.last_receive_ms.is_none() || p.stopped_answering(now_ms);
            let quick = p.answer_overdue(now_ms) && !p.stopped_answering(now_ms);
            let wait = if quick {
                PATH_QUICK_PROBE_INTERVAL_MS
            } else if candidate {
                PATH_PROBE_INTERVAL_ACTIVE_MS
            } else {
                interval
            };
            if p.next_probe_ms(wait, !quick && !candidate && !active)
                .is_none_or(|t| now_ms >= t)
            {
                p.last_probe_ms = MaybeMs::at(now_ms);
                due.push(p.addr);
            }
        }
        due
    }

    /// When the paths of an idle peer next need the timer (ms), as
    /// [`PathSet::due_probes`] and [`PathSet::expire`] see them: a
    /// candidate's or dead path's next probe, the quick probes and the
    /// answer deadline of a send awaiting its answer, else the next
    /// keepalive; and each path's idle expiry. `None` without paths.
    pub fn next_due_ms(&self, now_ms: u64) -> Option<u64> {
        self.paths
            .iter()
            .map(|p| {
                let since = p.last_receive_ms.get().unwrap_or(p.learned_ms);
                let stale = since + PATH_IDLE_TIMEOUT_MS;
                if p.given_up() {
                    return stale;
                }
                let probe_after = |wait: u64| p.next_probe_ms(wait, false).unwrap_or(0);
                let probe = if p.last_receive_ms.is_none() || p.stopped_answering(now_ms) {
                    probe_after(PATH_PROBE_INTERVAL_ACTIVE_MS)
                } else if let Some(t) = p.unanswered_since_ms.get() {
                    if p.answer_overdue(now_ms) {
                        probe_after(PATH_QUICK_PROBE_INTERVAL_MS).min(t + PATH_ANSWER_TIMEOUT_MS)
                    } else {
                        t + PATH_QUICK_PROBE_AFTER_MS
                    }
                } else {
                    p.next_probe_ms(PATH_KEEPALIVE_INTERVAL_MS, true)
                        .unwrap_or(0)
                };
                probe.min(stale)
            })
            .min()
    }

    /// Forgets paths not heard from for the idle timeout.
    pub fn expire(&mut self, now_ms: u64) {
        if !self.paths.iter().any(|p| p.is_stale(now_ms)) {
            return;
        }
        let stale: Vec<Path> = self
            .paths
            .iter()
            .filter(|p| p.is_stale(now_ms))
            .cloned()
            .collect();
        // In place, and shrunk: a root keeps thousands of these.
        self.paths.retain(|p| !p.is_stale(now_ms));
        self.paths.shrink_to_fit();
        for p in &stale {
            self.remember_given_up(now_ms, p);
        }
    }

    fn remember_given_up(&mut self, now_ms: u64, path: &Path) {
        if path.given_up() && !self.given_up.iter().any(|(a, _)| *a == path.addr) {
            if self.given_up.len() >= 2 * MAX_PATHS_PER_PEER {
                self.given_up.remove(0);
            }
            self.given_up.push((path.addr, now_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_candidate_that_never_answers_is_given_up() {
        let mut set = PathSet::default();
        set.learn(0, addr(9));
        let mut probes = 0;
        for t in 0..60u64 {
            for a in set.due_probes(t * 1000, true) {
                if set.note_probe(a) {
                    probes += 1;
                }
            }
        }
        assert_eq!(probes, MAX_UNANSWERED_CANDIDATE_PROBES);
        // Pushed again, it is not learned anew (no fresh round of probes).
        assert!(!set.learn(60_000, addr(9)));
        assert!(!set.note_probe(addr(9)));
        // A path that answers is never given up.
        set.received(1, addr(10), LocalSocket::Primary, true);
        for _ in 0..20 {
            assert!(set.note_probe(addr(10)));
        }
    }

    #[test]
    fn a_peer_heard_on_a_new_path_has_its_old_paths_checked_and_a_dead_one_gives_way() {
        let mut set = PathSet::default();
        assert!(set.received(0, addr(1), LocalSocket::Primary, false));
        set.measured(addr(1), 1);
        // Heard from again on the old path 10 s later, then from a new address
        // (the peer moved); the new path has no latency figure yet.
        set.received(10_000, addr(1), LocalSocket::Primary, false);
        assert!(set.received(10_100, addr(2), LocalSocket::Primary, false));
        assert_eq!(set.preferred(10_100, false).unwrap().addr, addr(1));
        // The old path is probed quickly; unanswered, it gives way within a second.
        set.due_probes(10_100, false);
        let due = set.due_probes(10_100 + PATH_QUICK_PROBE_AFTER_MS, false);
        assert_eq!(
            due,
            vec![addr(1)],
            "a quick probe, the new path waits for its keepalive"
        );
        let t = 10_100 + PATH_ANSWER_TIMEOUT_MS;
        assert_eq!(set.preferred(t, false).unwrap().addr, addr(2));
        // A path that still answers keeps its place.
        let mut set = PathSet::default();
        set.received(0, addr(1), LocalSocket::Primary, false);
        set.measured(addr(1), 1);
        set.received(100, addr(2), LocalSocket::Primary, false);
        set.received(400, addr(1), LocalSocket::Primary, false);
        assert_eq!(
            set.preferred(100 + PATH_ANSWER_TIMEOUT_MS, false)
                .unwrap()
                .addr,
            addr(1)
        );
    }

    #[test]
    fn an_idle_path_the_peer_keeps_alive_gets_no_keepalive_of_ours() {
        let mut set = PathSet::default();
        set.received(0, addr(1), LocalSocket::Primary, false);
        assert_eq!(set.due_probes(0, false), vec![addr(1)]);
        // The peer's own keepalives arrive every 10 s: ours never fall due.
        let mut ours = 0;
        for second in 1..=60u64 {
            let t = second * 1000;
            if second % 10 == 0 {
                set.received(t, addr(1), LocalSocket::Primary, false);
            }
            ours += set.due_probes(t, false).len();
        }
        assert_eq!(ours, 0);
        assert_eq!(
            set.next_due_ms(60_000),
            Some(60_000 + PATH_KEEPALIVE_INTERVAL_MS)
        );
        // Once the peer falls silent, ours go out again.
        assert!(
            set.due_probes(60_000 + PATH_KEEPALIVE_INTERVAL_MS - 1, false)
                .is_empty()
        );
        assert_eq!(
            set.due_probes(60_000 + PATH_KEEPALIVE_INTERVAL_MS, false),
            vec![addr(1)]
        );
        // A path in use is probed every second whatever it receives.
        set.received(80_000, addr(1), LocalSocket::Primary, false);
        assert_eq!(set.due_probes(80_000, true), vec![addr(1)]);
    }

    #[test]
    fn prefers_alive_low_latency_paths() {
        let mut set = PathSet::default();
        set.learn(0, addr(1));
        assert!(
            set.preferred(0, false).is_none(),
            "unconfirmed is not preferred"
        );
        assert!(set.received(10, addr(1), LocalSocket::Primary, false));
        assert!(set.received(10, addr(2), LocalSocket::Mapped, false));
        assert_eq!(set.socket_of(addr(2)), Some(LocalSocket::Mapped));
        set.measured(addr(1), 50);
        set.measured(addr(2), 5);
        assert_eq!(set.preferred(20, false).unwrap().addr, addr(2));
        // An active peer's path dies quickly when silent.
        assert!(set.preferred(10 + PATH_ACTIVE_TIMEOUT_MS, true).is_none());
        assert!(set.preferred(10 + PATH_ACTIVE_TIMEOUT_MS, false).is_some());
        set.expire(10 + PATH_IDLE_TIMEOUT_MS);
        assert_eq!(set.iter().count(), 0);
    }

    #[test]
    fn a_path_that_stops_answering_dies_within_the_answer_timeout() {
        let mut set = PathSet::default();
        set.received(0, addr(1), LocalSocket::Primary, true);
        set.received(0, addr(2), LocalSocket::Primary, true);
        set.measured(addr(1), 1);
        set.measured(addr(2), 50);
        // Sends on path 1 at 100 ms; no answer.
        set.sent(100, addr(1), LocalSocket::Primary, true);
        assert_eq!(set.preferred(200, true).unwrap().addr, addr(1));
        // Overdue: path 2 (answering) is preferred, path 1 gets quick probes.
        let t = 100 + PATH_QUICK_PROBE_AFTER_MS;
        assert_eq!(set.preferred(t, true).unwrap().addr, addr(2));
        let _ = set.due_probes(t - 1, true);
        assert!(
            set.due_probes(t + PATH_QUICK_PROBE_INTERVAL_MS, true)
                .contains(&addr(1))
        );
        // Silent for the answer timeout: dead, even though heard 1.1 s ago.
        let dead = 100 + PATH_ANSWER_TIMEOUT_MS;
        assert!(
            !set.iter()
                .find(|p| p.addr == addr(1))
                .unwrap()
                .is_alive(dead, true)
        );
        // An answer revives it at once.
        assert!(set.received(dead + 10, addr(1), LocalSocket::Primary, true));
        assert_eq!(set.preferred(dead + 10, true).unwrap().addr, addr(1));
    }

    #[test]
    fn sockets_follow_the_last_receive_and_closed_sockets_forget_their_paths() {
        let mut set = PathSet::default();
        set.learn(0, addr(1));
        assert_eq!(set.socket_of(addr(1)), Some(LocalSocket::Primary));
        set.received(1, addr(1), LocalSocket::Punch(7), false);
        assert_eq!(set.socket_of(addr(1)), Some(LocalSocket::Punch(7)));
        // A second punch socket hit later does not take the live path over.
        set.received(2, addr(1), LocalSocket::Punch(9), false);
        assert_eq!(set.socket_of(addr(1)), Some(LocalSocket::Punch(7)));
        set.received(1, addr(2), LocalSocket::TcpFromNode(3), false);
        set.forget_socket(LocalSocket::TcpFromNode(3));
        assert_eq!(set.socket_of(addr(2)), None);
        assert_eq!(set.iter().count(), 1);
    }
}
