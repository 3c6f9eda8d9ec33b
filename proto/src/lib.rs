//! The sans-IO protocol core: identities, signatures, world files, the
//! packet format and its crypto, sessions, paths, and the node state machine.
//!
//! Nothing in here touches sockets, files, or the clock.

pub mod address;
pub mod armor;
pub mod c25519;
pub mod constants;
pub mod endpoint;
pub mod fragment;
pub mod hash_state;
pub mod identity;
pub mod identity_hash;
pub mod ip_prefix;
pub mod local_socket;
pub mod maybe_ms;
pub mod message;
pub mod multicast_message;
pub mod nat_mapping;
pub mod netconf;
pub mod network_id;
pub mod network_message;
pub mod node;
pub mod offload;
pub mod path;
pub mod path_mtu;
pub mod relay;
pub mod replay;
pub mod rng;
pub mod rules;
pub mod session;
pub mod switch;
pub mod tls_record;
pub mod udp_join;
pub mod verb;
pub mod wire;
pub mod world;
pub mod world_spec;

pub use address::Address;
pub use c25519::{KeyPair, PublicKey, SecretKey, Signature};
pub use identity::{Identity, SharedIdentity};
pub use world::{World, WorldKind};
