//! MACs learned behind bridges: which bridge member a foreign MAC sits behind.

use crate::address::Address;
use crate::constants::{MAC_TABLE_ENTRY_TTL_MS, MAX_LEARNED_MACS};
use crate::hash_state::{HashMap, HashState};
use crate::network_id::Mac;

#[derive(Debug, Clone, Copy)]
struct Entry {
    bridge: Address,
    seen_ms: u64,
}

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The MAC was known behind the same bridge; its age was reset.
    Refreshed,
    /// The MAC was new, or had moved to another bridge.
    Added,
    /// The MAC was new and the table full: the least recently seen entry was forgotten.
    AddedEvictingOldest,
}

/// Learned MAC → bridge member, each entry forgotten [`MAC_TABLE_ENTRY_TTL_MS`]
/// after the last frame from it, at most [`MAX_LEARNED_MACS`] entries.
#[derive(Debug, Clone)]
pub struct MacTable {
    entries: HashMap<Mac, Entry>,
    capacity: usize,
    ttl_ms: u64,
}

impl MacTable {
    /// An empty table with the standard limits.
    pub fn new(hasher: HashState) -> Self {
        Self::with_limits(MAX_LEARNED_MACS, MAC_TABLE_ENTRY_TTL_MS, hasher)
    }

    /// An empty table of at most `capacity` (at least 1) entries, each lasting `ttl_ms`.
    pub fn with_limits(capacity: usize, ttl_ms: u64, hasher: HashState) -> Self {
        Self {
            entries: HashMap::with_hasher(hasher),
            capacity: capacity.max(1),
            ttl_ms,
        }
    }

    /// Records that a frame from `mac` came through `bridge` at `now_ms`.
    ///
    /// A full table first drops expired entries, then (if still full) the least
    /// recently seen one: a linear scan, done only when a new MAC meets a full table.
    pub fn learn(&mut self, now_ms: u64, mac: Mac, bridge: Address) -> Learned {
        if let Some(e) = self.entries.get_mut(&mac) {
            let moved = e.bridge != bridge;
            *e = Entry {
                bridge,
                seen_ms: now_ms,
            };
            return if moved {
                Learned::Added
            } else {
                Learned::Refreshed
            };
        }
        let mut evicted = false;
        if self.entries.len() >= self.capacity {
            self.expire(now_ms);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.seen_ms)
                    .map(|(m, _)| *m);
                if let Some(m) = oldest {
                    self.entries.remove(&m);
                    evicted = true;
                }
            }
        }
        self.entries.insert(
            mac,
            Entry {
                bridge,
                seen_ms: now_ms,
            },
        );
        if evicted {
            Learned::AddedEvictingOldest
        } else {
            Learned::Added
        }
    }

    /// The bridge `mac` was last seen behind, unless that was too long ago.
    pub fn lookup(&self, now_ms: u64, mac: Mac) -> Option<Address> {
        self.entries
            .get(&mac)
            .filter(|e| now_ms.saturating_sub(e.seen_ms) < self.ttl_ms)
            .map(|e| e.bridge)
    }

    /// Forgets entries not refreshed within the time to live; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        let ttl = self.ttl_ms;
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.seen_ms) < ttl);
        before - self.entries.len()
    }

    /// Forgets every MAC learned behind a bridge not in `bridges`.
    pub fn retain_bridges(&mut self, bridges: &[Address]) {
        self.entries.retain(|_, e| bridges.contains(&e.bridge));
    }

    /// Forgets every MAC learned behind `bridge`.
    pub fn forget_bridge(&mut self, bridge: Address) {
        self.entries.retain(|_, e| e.bridge != bridge);
    }

    /// Entries held (live or not yet expired away).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u64) -> Address {
        Address::from_u64(0x02_0000_0000 + n).unwrap()
    }

    fn mac(n: u8) -> Mac {
        Mac([0x00, 0x16, 0x3e, 0, 0, n])
    }

    #[test]
    fn learns_moves_and_expires() {
        let mut t = MacTable::with_limits(8, 1000, crate::switch::tests_hasher());
        assert_eq!(t.learn(0, mac(1), addr(1)), Learned::Added);
        assert_eq!(t.learn(500, mac(1), addr(1)), Learned::Refreshed);
        assert_eq!(t.lookup(1499, mac(1)), Some(addr(1)));
        assert_eq!(
            t.lookup(1500, mac(1)),
            None,
            "expired 1000 ms after last seen"
        );
        assert_eq!(t.learn(600, mac(1), addr(2)), Learned::Added, "moved");
        assert_eq!(t.lookup(700, mac(1)), Some(addr(2)));
        assert_eq!(t.lookup(700, mac(2)), None);
        assert_eq!(t.expire(1599), 0);
        assert_eq!(t.expire(1600), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_evicts_the_least_recently_seen() {
        let mut t = MacTable::with_limits(3, 10_000, crate::switch::tests_hasher());
        t.learn(10, mac(1), addr(1));
        t.learn(20, mac(2), addr(1));
        t.learn(30, mac(3), addr(1));
        t.learn(40, mac(1), addr(1)); // mac(2) is now the oldest
        assert_eq!(t.learn(50, mac(4), addr(1)), Learned::AddedEvictingOldest);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(50, mac(2)), None);
        for m in [1, 3, 4] {
            assert_eq!(t.lookup(50, mac(m)), Some(addr(1)));
        }
        // Expired entries go first, with no eviction of live ones.
        assert_eq!(t.learn(10_030, mac(5), addr(1)), Learned::Added);
        assert_eq!(t.lookup(10_030, mac(1)), Some(addr(1)));
        assert_eq!(t.lookup(10_030, mac(4)), Some(addr(1)));
    }

    #[test]
    fn bridges_that_go_away_take_their_macs() {
        let mut t = MacTable::new(crate::switch::tests_hasher());
        t.learn(0, mac(1), addr(1));
        t.learn(0, mac(2), addr(2));
        t.learn(0, mac(3), addr(3));
        t.retain_bridges(&[addr(1), addr(2)]);
        assert_eq!(t.lookup(0, mac(3)), None);
        t.forget_bridge(addr(1));
        assert_eq!(t.lookup(0, mac(1)), None);
        assert_eq!(t.lookup(0, mac(2)), Some(addr(2)));
        assert_eq!(t.len(), 1);
    }
}
