//! Support for fuzz targets and tests outside the crate; the daemon never calls it.

use super::Node;
use super::peer::{Peer, PeerRole};
use crate::identity::Identity;

impl Node {
    /// Learns `identity` as a leaf peer, as an answered WHOIS would, but
    /// without the memory-hard identity check: the caller vouches for it.
    /// Lets a fuzz target handshake fresh nodes in microseconds. False if it
    /// is us, already known, or its key is unusable.
    #[doc(hidden)]
    pub fn learn_peer_unchecked(&mut self, identity: &Identity) -> bool {
        let addr = identity.address();
        if addr == self.address || self.peers.contains_key(&addr) {
            return false;
        }
        let Ok(agreement) = self.key_pair.agree(identity.public_key()) else {
            return false;
        };
        let peer = Peer::new(
            crate::identity::SharedIdentity::new(identity.to_public()),
            agreement,
            PeerRole::Leaf,
        );
        self.peers.insert(addr, Box::new(peer));
        self.wake(addr);
        true
    }

    /// Peers it holds NAT-traversal state for (a punch, a NAT type, path
    /// pushes, an upgrade): a root holds none.
    #[doc(hidden)]
    pub fn peers_with_traversal_state(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.traversal.is_some())
            .count()
    }
}
