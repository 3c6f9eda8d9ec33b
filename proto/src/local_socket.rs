//! Which of the node's own sockets a datagram arrived on or leaves by: the
//! core names them, the service owns them.

use serde::Serialize;

/// One of this node's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LocalSocket {
    /// The primary UDP port (IPv4 or IPv6 by the address).
    #[default]
    Primary,
    /// The UDP socket whose port the gateway forwards (UPnP / NAT-PMP).
    Mapped,
    /// Short-lived UDP socket `n`, opened for a birthday hole punch (ids are never reused).
    Punch(u32),
    /// This node's TCP relay connection to a root (when UDP is blocked).
    TcpToRoot,
    /// TCP relay connection `n` accepted from a node (on a root; ids are never reused).
    TcpFromNode(u32),
}

impl LocalSocket {
    /// Whether datagrams on it travel over TCP.
    pub fn is_tcp(self) -> bool {
        matches!(self, LocalSocket::TcpToRoot | LocalSocket::TcpFromNode(_))
    }
}
