//! Randomness comes in from outside: the core never asks the operating
//! system. The driver seeds each node from the OS; tests pass fixed seeds so
//! that a run repeats exactly.

pub use rand_core::{CryptoRng, Rng, SeedableRng, UnwrapErr};

/// The node's random source: ChaCha20 keyed by the 32-byte seed the driver
/// hands to [`crate::node::Node::new`] (`NodeConfig::rng_seed`).
pub type NodeRng = chacha20::ChaCha20Rng;

/// The operating system's random source, for unit tests.
#[cfg(test)]
pub(crate) fn os_rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}
