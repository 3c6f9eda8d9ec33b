//! vnet node: a ZeroTier-style layer-2 virtual network.
//!
//! Two layers with one direction of imports: [`core`] is the sans-IO protocol
//! core (the `vnet-proto` crate: no sockets, no async runtime, no clock reads;
//! time comes in as an argument), and [`service`] holds the drivers that feed
//! it from the operating system. [`generated_docs`] writes the binaries'
//! man pages and shell completions for packaging.

pub use vnet_proto as core;
pub mod generated_docs;
pub mod service;
