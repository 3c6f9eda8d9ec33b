//! vnet network controller: networks, members, IP pools, routes and signed
//! network configs, plugged into the node through a trait its core defines.
//!
//! Empty until the virtual-networks work lands; nothing uses it yet.
