//! Replay protection (§3.4): a sliding window over a receiving key's packet
//! counters, kept as a bitmap made once per key (O(1) per in-order packet);
//! a root's small window lives inline, with no allocation of its own.
//!
//! The window is the `REPLAY_WINDOW_PACKETS` counters (or fewer, chosen per
//! node: a root's sessions carry only control packets) ending at the highest
//! counter accepted so far. A counter above it is new (and slides the window);
//! one inside it is new once; one below it is refused, as it can no longer be
//! told apart from a replay.

use smallvec::SmallVec;

use crate::constants::REPLAY_WINDOW_PACKETS;

/// Bits in one bitmap word.
const WORD_BITS: u64 = u64::BITS as u64;
const _: () = assert!(REPLAY_WINDOW_PACKETS.is_multiple_of(WORD_BITS));

/// Which counters of one receiving key have been seen. Counter `c` is bit
/// `c mod REPLAY_WINDOW_PACKETS` of a ring; bits for counters above the highest
/// are kept clear.
///
/// Use [`ReplayWindow::check`] before the MAC is verified (cheap early drop)
/// and [`ReplayWindow::accept`] after it verified: an unauthenticated counter
/// must never move the window.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (0 before any: counter 0 is then new).
    highest: u64,
    /// One bit per counter in `highest - (packets - 1) ..= highest`, where
    /// `packets` (the counters the window spans) is 64 per word (up to 128
    /// counters inline: a root holds thousands of sessions).
    bits: SmallVec<[u64; 2]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window of `REPLAY_WINDOW_PACKETS`: every counter is new.
    pub fn new() -> Self {
        Self::spanning(REPLAY_WINDOW_PACKETS)
    }

    /// An empty window spanning `packets` counters, rounded up to a multiple
    /// of 64 within 64..=`REPLAY_WINDOW_PACKETS`.
    pub fn spanning(packets: u64) -> Self {
        let packets = packets
            .clamp(WORD_BITS, REPLAY_WINDOW_PACKETS)
            .next_multiple_of(WORD_BITS);
        Self {
            highest: 0,
            bits: smallvec::smallvec![0; (packets / WORD_BITS) as usize],
        }
    }

    /// Counters the window spans.
    pub fn packets(&self) -> u64 {
        self.bits.len() as u64 * WORD_BITS
    }

    /// The highest counter accepted so far (0 if none).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `counter` would be accepted: above the highest seen, or inside
    /// the window and not seen yet. Changes nothing.
    pub fn check(&self, counter: u64) -> bool {
        if counter > self.highest {
            return true;
        }
        if self.highest - counter >= self.packets() {
            return false;
        }
        let (word, bit) = self.position(counter);
        self.bits[word] & bit == 0
    }

    /// Checks `counter` and, if new, records it. Returns whether it was new.
    /// Call only once the packet's MAC has verified.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter > self.highest {
            self.clear_above_highest(counter);
            self.highest = counter;
        }
        let (word, bit) = self.position(counter);
        self.bits[word] |= bit;
        true
    }

    /// Clears the bits of counters `highest + 1 ..= counter`, which reuse the
    /// ring positions of counters that are leaving the window.
    fn clear_above_highest(&mut self, counter: u64) {
        let distance = counter - self.highest;
        if distance >= self.packets() {
            self.bits.fill(0);
            return;
        }
        let mut next = self.highest + 1;
        let mut left = distance;
        while left > 0 {
            let (word, _) = self.position(next);
            let offset = next % WORD_BITS;
            let run = left.min(WORD_BITS - offset);
            let mask = if run == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << run) - 1) << offset
            };
            self.bits[word] &= !mask;
            next = next.wrapping_add(run);
            left -= run;
        }
    }
}

impl ReplayWindow {
    /// Word index and bit mask of `counter` in the ring.
    fn position(&self, counter: u64) -> (usize, u64) {
        let slot = counter % self.packets();
        ((slot / WORD_BITS) as usize, 1u64 << (slot % WORD_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = REPLAY_WINDOW_PACKETS;

    #[test]
    fn in_order() {
        let mut w = ReplayWindow::new();
        for c in 1..10 * W {
            assert!(w.check(c));
            assert!(w.accept(c), "{c}");
            assert!(!w.check(c));
        }
        assert_eq!(w.highest(), 10 * W - 1);
    }

    #[test]
    fn a_smaller_window_refuses_what_falls_out_of_it() {
        let mut w = ReplayWindow::spanning(1_000);
        assert_eq!(w.packets(), 1_024, "rounded up to whole words");
        assert_eq!(ReplayWindow::spanning(0).packets(), 64);
        assert_eq!(ReplayWindow::spanning(u64::MAX).packets(), W);
        assert!(w.accept(5_000));
        assert!(w.check(5_000 - 1_023));
        assert!(!w.check(5_000 - 1_024));
        assert!(w.accept(4_990));
        assert!(!w.accept(4_990), "a replay inside the window");
        // Sliding far clears the ring: old positions are new again above.
        assert!(w.accept(5_000 + 1_024 + 4_990 % 1_024));
        assert!(!w.check(4_990));
    }

    #[test]
    fn duplicates_are_refused() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(!w.check(0));
        assert!(w.check(1) && w.check(2) && w.check(4));
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(W + 100));
        // Everything in the window below the highest is still new, once.
        for c in (101..W + 100).rev() {
            assert!(w.accept(c), "{c}");
        }
        for c in 101..=W + 100 {
            assert!(!w.accept(c), "{c} twice");
        }
        // 100 is exactly one below the window.
        assert!(!w.check(100));
    }

    /// The exact boundary PROTOCOL.md §3.4 documents, with the window's literal size.
    #[test]
    fn window_boundary_is_exact() {
        assert_eq!(W, 8192, "PROTOCOL.md §3.4 states the window size");
        let high = 1_000_000u64;
        let mut w = ReplayWindow::new();
        assert!(w.accept(high));
        assert!(w.check(high - 8191), "W - 1 behind the highest is inside");
        assert!(!w.check(high - 8192), "W behind the highest is outside");
        assert!(w.accept(high - 8191));
        assert!(!w.accept(high - 8191));
        assert!(!w.accept(high - 8192));
        // One step forward moves the boundary by one.
        assert!(w.accept(high + 1));
        assert!(!w.check(high + 1 - 8192));
        assert!(w.check(high + 1 - 8191));
    }

    #[test]
    fn too_old_is_refused() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(10_000));
        assert!(w.check(10_000 - W + 1));
        assert!(!w.check(10_000 - W));
        assert!(!w.accept(0));
        assert!(!w.accept(1));
    }

    #[test]
    fn huge_jumps() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(7));
        assert!(w.accept(1 << 40));
        assert!(!w.check(7));
        // The old bit for 7 must not leak into the new window's ring position.
        assert!(w.check((1 << 40) - W + 1));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(w.accept(u64::MAX - 1));
        assert!(w.accept(u64::MAX - (W - 1)));
        assert!(!w.check(u64::MAX - W));
        assert!(!w.check(1 << 40));
    }

    #[test]
    fn jumps_of_every_size_clear_exactly_the_reused_slots() {
        for start in [0u64, 1, 63, 64, 65, 1000, W - 1, W, 5 * W + 17] {
            for jump in [1u64, 2, 63, 64, 65, 127, 128, 500, W - 1, W, W + 1, 3 * W] {
                let mut w = ReplayWindow::new();
                // Fill the whole window ending at `start`.
                for c in start.saturating_sub(W - 1)..=start {
                    assert!(w.accept(c));
                }
                let top = start + jump;
                assert!(w.accept(top));
                for c in top.saturating_sub(W - 1)..=top {
                    let seen = c <= start || c == top;
                    assert_eq!(w.check(c), !seen, "start {start} jump {jump} counter {c}");
                }
            }
        }
    }

    /// Compares against a plain set-based model on a pseudo-random sequence.
    #[test]
    fn matches_a_simple_model() {
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest = 0u64;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut base = 0u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            base += state % 4;
            let c = match state % 16 {
                0 => base + (state >> 8) % (4 * W),
                1..=3 => base.saturating_sub((state >> 8) % (2 * W)),
                _ => base + (state >> 8) % 8,
            };
            let model = (c > highest || highest - c < W) && !seen.contains(&c);
            assert_eq!(w.accept(c), model, "counter {c}");
            if model {
                seen.insert(c);
                highest = highest.max(c);
            }
        }
    }
}
