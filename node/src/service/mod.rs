//! The service: drivers that feed the protocol core from the operating system.

pub mod api;
pub mod atomic_file;
pub mod home;
pub mod identity_file;
pub mod managed_routes;
pub mod netlink;
pub mod port_mapping;
pub mod punch_sockets;
pub mod runtime;
pub mod tap;
pub mod tcp_relay;
