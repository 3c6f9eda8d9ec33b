//! The hasher of the core's tables: SipHash-1-3 (std's) keyed from the
//! node's random source. Strangers cannot predict the keys (no hash
//! flooding), and a node built from a fixed seed lays out and walks its
//! tables in the same order every run, so a simulation repeats exactly.

use std::hash::BuildHasher;

use siphasher::sip::SipHasher13;

use crate::rng::Rng;

/// Builds the keyed hashers of one node's tables.
#[derive(Clone, Debug)]
pub struct HashState {
    k0: u64,
    k1: u64,
}

impl HashState {
    /// Draws fresh keys from `rng`.
    pub fn new(rng: &mut impl Rng) -> Self {
        Self {
            k0: rng.next_u64(),
            k1: rng.next_u64(),
        }
    }
}

impl BuildHasher for HashState {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// A hash map with the node's keyed hasher.
pub type HashMap<K, V> = std::collections::HashMap<K, V, HashState>;
/// A hash set with the node's keyed hasher.
pub type HashSet<K> = std::collections::HashSet<K, HashState>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{NodeRng, SeedableRng};

    #[test]
    fn one_seed_gives_one_order_and_another_seed_another() {
        let order = |seed: u64| {
            let mut map = HashMap::with_hasher(HashState::new(&mut NodeRng::seed_from_u64(seed)));
            for i in 0..64u32 {
                map.insert(i, ());
            }
            map.keys().copied().collect::<Vec<u32>>()
        };
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
    }
}
