//! Path MTU discovery on one path (PROTOCOL.md §3.10): the largest datagram
//! the path carries, found with sealed probes of chosen sizes that the peer
//! answers (RFC 8899's packetization-layer search: no ICMP needed, and no
//! IP fragmentation relied on), confirmed now and then so that a path that
//! narrows is noticed.

use crate::constants::{
    PATH_MTU_BASE_BYTES, PATH_MTU_CONFIRM_INTERVAL_MS, PATH_MTU_MAX_BYTES,
    PATH_MTU_PRECISION_BYTES, PATH_MTU_PROBE_WAIT_MAX_MS, PATH_MTU_PROBE_WAIT_MIN_MS,
    PATH_MTU_SEARCH_INTERVAL_MS, PATH_MTU_SPREAD_PROBES,
};
use crate::maybe_ms::MaybeMs;

/// UDP payloads of common paths (Ethernet, PPPoE, WireGuard and other
/// tunnels, jumbo frames) less IPv4's 28 or IPv6's 48 header bytes, probed
/// first so a search lands on them exactly.
const COMMON_SIZES_BYTES: [u16; 13] = [
    1252, 1272, 1352, 1372, 1392, 1412, 1432, 1444, 1452, 1464, 1472, 8952, 8972,
];

/// What one path is known to carry, and the search or confirmation under way.
#[derive(Debug, Clone)]
pub struct PathMtu {
    usable: u16,
    probing: Option<Box<Probing>>,
    /// None until the first search: due at once.
    next_search_ms: MaybeMs,
    next_confirm_ms: u64,
    /// Times the usable size came down (u32: packed beside `usable`, one
    /// in every path a root holds).
    lowered: u32,
}

#[derive(Debug, Clone)]
struct Probing {
    confirming: bool,
    /// Largest size known to pass.
    lo: u16,
    /// Smallest size known not to pass.
    hi: u16,
    in_flight: Vec<u16>,
    round_ends_ms: u64,
}

impl Default for PathMtu {
    fn default() -> Self {
        Self {
            usable: PATH_MTU_BASE_BYTES,
            probing: None,
            next_search_ms: MaybeMs::NONE,
            next_confirm_ms: 0,
            lowered: 0,
        }
    }
}

impl PathMtu {
    /// The largest UDP payload to send on the path now.
    pub fn usable(&self) -> usize {
        usize::from(self.usable)
    }

    /// Whether probes are out (their round ends at [`PathMtu::next_due_ms`]).
    pub fn is_probing(&self) -> bool {
        self.probing.is_some()
    }

    /// How often the size in use stopped passing and fell back to the base.
    pub fn times_lowered(&self) -> u32 {
        self.lowered
    }

    /// The probe sizes to send now, empty when none is due. The caller sends
    /// each twice (one lost datagram is not taken for a narrow path) and
    /// reports answers with [`PathMtu::answered`]. `rtt_ms` sets how long a
    /// round waits for its answers.
    pub fn due_probes(&mut self, now_ms: u64, rtt_ms: Option<u64>) -> Vec<u16> {
        let wait_ms = rtt_ms.map_or(PATH_MTU_PROBE_WAIT_MAX_MS, |rtt| {
            (3 * rtt).clamp(PATH_MTU_PROBE_WAIT_MIN_MS, PATH_MTU_PROBE_WAIT_MAX_MS)
        });
        if self.probing.is_none() {
            if self.next_search_ms.get().is_none_or(|t| now_ms >= t) {
                self.probing = Some(Box::new(Probing::search(
                    self.usable,
                    PATH_MTU_MAX_BYTES + 1,
                )));
            } else if self.usable > PATH_MTU_BASE_BYTES && now_ms >= self.next_confirm_ms {
                self.probing = Some(Box::new(Probing {
                    confirming: true,
                    lo: PATH_MTU_BASE_BYTES,
                    hi: PATH_MTU_MAX_BYTES + 1,
                    in_flight: vec![self.usable],
                    round_ends_ms: now_ms + wait_ms,
                }));
                return vec![self.usable];
            } else {
                return Vec::new();
            }
        }
        let Some(p) = self.probing.as_mut() else {
            return Vec::new();
        };
        if !p.in_flight.is_empty() {
            if now_ms < p.round_ends_ms {
                return Vec::new();
            }
            // What did not come back within the round does not pass.
            let lost = p.in_flight.iter().copied().min().unwrap_or(p.hi);
            p.in_flight.clear();
            if p.confirming {
                // The size in use stopped passing: back to the base at once,
                // then search below what was lost.
                self.usable = PATH_MTU_BASE_BYTES;
                self.lowered = self.lowered.saturating_add(1);
                **p = Probing::search(PATH_MTU_BASE_BYTES, lost);
            } else {
                p.hi = p.hi.min(lost);
            }
        }
        if p.hi.saturating_sub(p.lo) <= PATH_MTU_PRECISION_BYTES {
            self.probing = None;
            self.next_search_ms = MaybeMs::at(now_ms + PATH_MTU_SEARCH_INTERVAL_MS);
            self.next_confirm_ms = now_ms + PATH_MTU_CONFIRM_INTERVAL_MS;
            return Vec::new();
        }
        p.in_flight = candidates(p.lo, p.hi);
        p.round_ends_ms = now_ms + wait_ms;
        p.in_flight.clone()
    }

    /// A probe of `size` bytes was answered: the path carries it. Returns
    /// whether it was one awaited (late and unknown answers change nothing).
    pub fn answered(&mut self, now_ms: u64, size: u16) -> bool {
        let Some(p) = self.probing.as_mut() else {
            return false;
        };
        let Some(i) = p.in_flight.iter().position(|s| *s == size) else {
            return false;
        };
        p.in_flight.swap_remove(i);
        if p.confirming {
            self.probing = None;
            self.next_confirm_ms = now_ms + PATH_MTU_CONFIRM_INTERVAL_MS;
            return true;
        }
        p.lo = p.lo.max(size);
        // Used at once: it passed.
        self.usable = self.usable.max(size);
        let lo = p.lo;
        p.in_flight.retain(|s| *s > lo);
        if p.in_flight.is_empty() {
            p.round_ends_ms = now_ms;
        }
        true
    }

    /// When [`PathMtu::due_probes`] next has work (None: never, until the
    /// path is used).
    pub fn next_due_ms(&self) -> Option<u64> {
        if let Some(p) = &self.probing {
            return Some(p.round_ends_ms);
        }
        let search = self.next_search_ms.get().unwrap_or(0);
        if self.usable > PATH_MTU_BASE_BYTES {
            Some(search.min(self.next_confirm_ms))
        } else {
            Some(search)
        }
    }
}

impl Probing {
    fn search(lo: u16, hi: u16) -> Self {
        Self {
            confirming: false,
            lo,
            hi,
            in_flight: Vec::new(),
            round_ends_ms: 0,
        }
    }
}

/// A round's sizes strictly between `lo` (passes) and `hi` (does not): the
/// common ones there and a few evenly spaced, ascending.
fn candidates(lo: u16, hi: u16) -> Vec<u16> {
    let mut sizes: Vec<u16> = COMMON_SIZES_BYTES
        .iter()
        .copied()
        .filter(|s| *s > lo && *s < hi)
        .collect();
    let span = u32::from(hi - lo);
    let parts = u32::from(PATH_MTU_SPREAD_PROBES) + 1;
    for k in 1..parts {
        let s = u32::from(lo) + span * k / parts;
        if let Ok(s) = u16::try_from(s)
            && s > lo
            && s < hi
        {
            sizes.push(s);
        }
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs discovery against a path that carries `carries` bytes, losing
    /// every probe whose number `lose` picks; returns the usable size and
    /// the time taken.
    fn discover(mtu: &mut PathMtu, start_ms: u64, carries: u16, lose: &dyn Fn(u32) -> bool) -> u64 {
        let mut now = start_ms;
        let mut n = 0u32;
        loop {
            let sizes = mtu.due_probes(now, Some(1));
            for s in sizes {
                // Each is sent twice; it passes if either copy does.
                let first = lose(n);
                let second = lose(n + 1);
                n += 2;
                if s <= carries && !(first && second) {
                    mtu.answered(now + 1, s);
                }
            }
            if !mtu.is_probing() {
                return now - start_ms;
            }
            now = mtu.next_due_ms().unwrap_or(now).max(now + 1);
            assert!(now - start_ms < 60_000, "search did not end");
        }
    }

    #[test]
    fn common_paths_are_found_exactly() {
        for carries in [1252, 1272, 1372, 1432, 1452, 1472, 8972] {
            let mut mtu = PathMtu::default();
            discover(&mut mtu, 0, carries, &|_| false);
            assert_eq!(mtu.usable(), usize::from(carries));
        }
    }

    #[test]
    fn a_path_narrower_than_the_base_keeps_the_base() {
        let mut mtu = PathMtu::default();
        let took = discover(&mut mtu, 0, 1000, &|_| false);
        assert_eq!(mtu.usable(), usize::from(PATH_MTU_BASE_BYTES));
        // No confirmation of the base: the next search is all that is due.
        assert_eq!(mtu.next_due_ms(), Some(took + PATH_MTU_SEARCH_INTERVAL_MS));
    }

    #[test]
    fn a_path_that_narrows_is_noticed_at_the_next_confirmation() {
        let mut mtu = PathMtu::default();
        let took = discover(&mut mtu, 0, 1472, &|_| false);
        assert_eq!(mtu.usable(), 1472);
        // Nothing is due before the confirmation.
        assert!(mtu.due_probes(took + 1, Some(1)).is_empty());
        let confirm_at = mtu.next_due_ms().unwrap();
        assert_eq!(confirm_at, took + PATH_MTU_CONFIRM_INTERVAL_MS);
        // The path now carries 1,300 bytes: the confirmation is lost.
        assert_eq!(mtu.due_probes(confirm_at, Some(1)), vec![1472]);
        let round_end = mtu.next_due_ms().unwrap();
        // Back to the base at once, then up to what passes.
        let sizes = mtu.due_probes(round_end, Some(1));
        assert!(
            sizes.iter().all(|s| *s < 1472) && !sizes.is_empty(),
            "{sizes:?}"
        );
        assert_eq!(mtu.usable(), usize::from(PATH_MTU_BASE_BYTES));
        assert_eq!(mtu.times_lowered(), 1);
        for s in sizes.into_iter().filter(|s| *s <= 1300) {
            mtu.answered(round_end + 1, s);
        }
        discover(&mut mtu, round_end + 2, 1300, &|_| false);
        assert!((1292..=1300).contains(&mtu.usable()), "{}", mtu.usable());
    }

    #[test]
    fn stray_and_late_answers_change_nothing() {
        let mut mtu = PathMtu::default();
        assert!(!mtu.answered(0, 1472));
        let sizes = mtu.due_probes(0, Some(1));
        assert!(sizes.contains(&1472));
        assert!(!mtu.answered(1, 1473), "a size never probed");
        assert_eq!(mtu.usable(), usize::from(PATH_MTU_BASE_BYTES));
        assert!(mtu.answered(1, 1472));
        assert!(!mtu.answered(2, 1472), "the second copy");
        assert_eq!(mtu.usable(), 1472);
    }

    proptest! {
        /// Whatever the path carries, the search ends within a few seconds
        /// at most `PATH_MTU_PRECISION_BYTES` below it (never above it), and
        /// a lost datagram here and there never makes it end above.
        #[test]
        fn the_search_ends_close_below_what_the_path_carries(
            carries in PATH_MTU_BASE_BYTES..=PATH_MTU_MAX_BYTES + 200,
            loss_seed in any::<u64>(),
        ) {
            let mut mtu = PathMtu::default();
            let took = discover(&mut mtu, 5, carries, &|_| false);
            let want = usize::from(carries.min(PATH_MTU_MAX_BYTES));
            prop_assert!(mtu.usable() <= want);
            prop_assert!(mtu.usable() + usize::from(PATH_MTU_PRECISION_BYTES) >= want, "{} for {}", mtu.usable(), want);
            prop_assert!(took <= 20 * PATH_MTU_PROBE_WAIT_MIN_MS, "took {took} ms");
            let mut lossy = PathMtu::default();
            discover(&mut lossy, 5, carries, &|n| (loss_seed >> (n % 64)) & 1 == 1);
            prop_assert!(lossy.usable() <= want);
        }
    }
}
