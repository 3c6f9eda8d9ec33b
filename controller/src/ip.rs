//! IP helpers: CIDR prefixes and addresses as integers (the protocol
//! core's, shared with members that advertise routes).

pub use vnet_node::core::ip_prefix::{Cidr, CidrError, is_assignable, max_prefix_len, to_u128};
