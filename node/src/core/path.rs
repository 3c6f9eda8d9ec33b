//! A peer's physical paths: where it has been heard from or told to be,
//! with send/receive times, latency, and which one to prefer.

use std::net::SocketAddr;

use crate::core::constants::{
    MAX_PATHS_PER_PEER, PATH_ACTIVE_TIMEOUT_MS, PATH_IDLE_TIMEOUT_MS, PATH_KEEPALIVE_INTERVAL_MS,
    PATH_PROBE_INTERVAL_ACTIVE_MS,
};

/// One physical path to a peer.
#[derive(Debug, Clone)]
pub struct Path {
    /// The peer's address and port on this path.
    pub addr: SocketAddr,
    /// When we last sent on it (ms), if ever.
    pub last_send_ms: Option<u64>,
    /// When an authenticated packet last arrived on it (ms), if ever.
    pub last_receive_ms: Option<u64>,
    /// When it was first learned (ms).
    pub learned_ms: u64,
    /// Round-trip time measured on it.
    pub latency_ms: Option<u64>,
    /// When the last probe was sent on it.
    last_probe_ms: Option<u64>,
}

impl Path {
    /// Whether the path is alive: heard from recently enough for the peer's
    /// activity (a busy peer is probed often, so silence means more).
    pub fn is_alive(&self, now_ms: u64, active: bool) -> bool {
        let timeout = if active {
            PATH_ACTIVE_TIMEOUT_MS
        } else {
            PATH_IDLE_TIMEOUT_MS
        };
        self.last_receive_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < timeout)
    }

    /// Whether it has never been confirmed and is older than the idle timeout.
    fn is_stale(&self, now_ms: u64) -> bool {
        let since = self.last_receive_ms.unwrap_or(self.learned_ms);
        now_ms.saturating_sub(since) >= PATH_IDLE_TIMEOUT_MS
    }
}

/// The set of paths to one peer.
#[derive(Debug, Default, Clone)]
pub struct PathSet {
    paths: Vec<Path>,
}

impl PathSet {
    /// All paths.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter()
    }

    /// Learns a candidate path (from PUSH_DIRECT_PATHS, RENDEZVOUS or a world).
    /// Returns true if it is new.
    pub fn learn(&mut self, now_ms: u64, addr: SocketAddr) -> bool {
        if self.paths.iter().any(|p| p.addr == addr) {
            return false;
        }
        if self.paths.len() >= MAX_PATHS_PER_PEER {
            // Forget the stalest path that was never heard from, if any.
            if let Some(i) = self.paths.iter().position(|p| p.last_receive_ms.is_none()) {
                self.paths.remove(i);
            } else {
                return false;
            }
        }
        self.paths.push(Path {
            addr,
            last_send_ms: None,
            last_receive_ms: None,
            learned_ms: now_ms,
            latency_ms: None,
            last_probe_ms: None,
        });
        true
    }

    /// Records an authenticated packet from `addr`. Returns true when this
    /// made a path alive that was not (new or revived).
    pub fn received(&mut self, now_ms: u64, addr: SocketAddr, active: bool) -> bool {
        self.learn(now_ms, addr);
        let Some(p) = self.paths.iter_mut().find(|p| p.addr == addr) else {
            return false;
        };
        let was_alive = p.is_alive(now_ms, active);
        p.last_receive_ms = Some(now_ms);
        !was_alive
    }

    /// Records a send on `addr`.
    pub fn sent(&mut self, now_ms: u64, addr: SocketAddr) {
        if let Some(p) = self.paths.iter_mut().find(|p| p.addr == addr) {
            p.last_send_ms = Some(now_ms);
        }
    }

    /// Records a round-trip time measured on `addr`.
    pub fn measured(&mut self, addr: SocketAddr, rtt_ms: u64) {
        if let Some(p) = self.paths.iter_mut().find(|p| p.addr == addr) {
            // Smooth a little so one slow reply does not flip the preference.
            p.latency_ms = Some(match p.latency_ms {
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
                    p.latency_ms.unwrap_or(u64::MAX / 2),
                    u64::MAX - p.last_receive_ms.unwrap_or(0),
                )
            })
    }

    /// Paths due a probe now: alive ones for keepalive (often when the peer
    /// is active), and candidates not yet confirmed (to open NAT mappings).
    pub fn due_probes(&mut self, now_ms: u64, active: bool) -> Vec<SocketAddr> {
        let interval = if active {
            PATH_PROBE_INTERVAL_ACTIVE_MS
        } else {
            PATH_KEEPALIVE_INTERVAL_MS
        };
        let mut due = Vec::new();
        for p in &mut self.paths {
            let candidate = p.last_receive_ms.is_none();
            let wait = if candidate {
                PATH_PROBE_INTERVAL_ACTIVE_MS
            } else {
                interval
            };
            if p.last_probe_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= wait)
            {
                p.last_probe_ms = Some(now_ms);
                due.push(p.addr);
            }
        }
        due
    }

    /// Forgets paths not heard from for the idle timeout.
    pub fn expire(&mut self, now_ms: u64) {
        self.paths.retain(|p| !p.is_stale(now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn prefers_alive_low_latency_paths() {
        let mut set = PathSet::default();
        set.learn(0, addr(1));
        assert!(
            set.preferred(0, false).is_none(),
            "unconfirmed is not preferred"
        );
        assert!(set.received(10, addr(1), false));
        assert!(set.received(10, addr(2), false));
        set.measured(addr(1), 50);
        set.measured(addr(2), 5);
        assert_eq!(set.preferred(20, false).unwrap().addr, addr(2));
        // An active peer's path dies quickly when silent.
        assert!(set.preferred(10 + PATH_ACTIVE_TIMEOUT_MS, true).is_none());
        assert!(set.preferred(10 + PATH_ACTIVE_TIMEOUT_MS, false).is_some());
        set.expire(10 + PATH_IDLE_TIMEOUT_MS);
        assert_eq!(set.iter().count(), 0);
    }
}
