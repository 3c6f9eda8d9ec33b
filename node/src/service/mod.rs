//! The service: drivers that feed the protocol core from the operating system.

pub mod api;
pub mod api_types;
pub mod atomic_file;
pub mod control_plane;
pub mod dns_config;
pub mod engine;
pub mod flush_threads;
pub mod home;
pub mod identity_file;
pub mod managed_routes;
pub mod metrics;
pub mod netlink;
pub mod network_devices;
pub mod port_mapping;
pub mod punch_sockets;
pub mod relay_threads;
pub mod runtime;
pub mod tap;
pub mod tap_reader;
pub mod tcp_relay;
pub mod udp_sockets;
pub mod verified_identities;

/// The operating system's random source, for the core's key generation
/// (the core itself never reads it).
pub fn os_rng() -> crate::core::rng::UnwrapErr<getrandom::SysRng> {
    crate::core::rng::UnwrapErr(getrandom::SysRng)
}
