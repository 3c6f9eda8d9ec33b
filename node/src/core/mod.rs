//! The sans-IO protocol core: identities, signatures and world files.
//!
//! Nothing in here touches sockets, files, or the clock.

pub mod address;
pub mod c25519;
pub mod constants;
pub mod endpoint;
pub mod identity;
pub mod identity_hash;
pub mod world;
pub mod world_spec;

pub use address::Address;
pub use c25519::{KeyPair, PublicKey, SecretKey, Signature};
pub use identity::Identity;
pub use world::{World, WorldKind};
