//! The service: drivers that feed the protocol core from the operating system.

pub mod atomic_file;
pub mod identity_file;
