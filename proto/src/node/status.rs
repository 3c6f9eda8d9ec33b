//! Snapshots of the node's state for the local API, with ZeroTier's field names.

use serde::Serialize;

use super::{Node, PeerRole, PeerRoute};
use crate::endpoint::format_endpoint;
use crate::local_socket::LocalSocket;

/// One path of a peer, as `GET /peer` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PathStatus {
    /// `ip/port`.
    pub address: String,
    /// Milliseconds since the last send on it (ZeroTier gives a timestamp; we give an age, clock-free).
    pub last_send: Option<u64>,
    /// Milliseconds since the last receive on it.
    pub last_receive: Option<u64>,
    /// Alive.
    pub active: bool,
    /// Not alive.
    pub expired: bool,
    /// The one packets go out on.
    pub preferred: bool,
    /// Round-trip time on it.
    pub latency: Option<u64>,
    /// The largest UDP payload sent on it in one datagram (bytes): what
    /// path MTU discovery found, else the base every path carries.
    pub mtu: usize,
    /// Our socket on it: `udp`, `mapped` (the gateway-mapped port), `punch`
    /// (a birthday-punch socket) or `tcp` (a TCP relay connection).
    pub socket: &'static str,
}

/// One peer, as `GET /peer/<addr>` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// 10 hex digits.
    pub address: String,
    /// Smoothed round-trip time (ms), -1 if unknown (as ZeroTier).
    pub latency: i64,
    /// LEAF, MOON or PLANET.
    pub role: PeerRole,
    /// `major.minor.revision`, or "-" before a handshake.
    pub version: String,
    /// DIRECT, RELAY (through a root over UDP), TCP_RELAY (through a root
    /// over our TCP relay connection), or NONE.
    pub route: &'static str,
    /// How the peer's NAT maps ports, as it told us (null before it did).
    pub nat_mapping: Option<crate::nat_mapping::NatMapping>,
    /// The relaying root, when relayed.
    pub relay: Option<String>,
    /// Whether a session (forward-secret keys) is established.
    pub session: bool,
    /// Milliseconds since the newest session was established.
    pub session_age: Option<u64>,
    /// Milliseconds since the route last went from relayed to direct.
    pub upgraded_ago: Option<u64>,
    /// The largest UDP payload sent to it in one datagram (bytes) on its
    /// route now: the direct path's, or the relayed route's, as path MTU
    /// discovery found (PROTOCOL.md §3.10).
    pub mtu: usize,
    /// Physical paths.
    pub paths: Vec<PathStatus>,
}

/// The node, as `GET /status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// 10 hex digits.
    pub address: String,
    /// Public identity text.
    pub public_identity: String,
    /// Whether a root answers.
    pub online: bool,
    /// Whether this node is a root of a world it holds.
    pub root: bool,
    /// Planet id.
    pub planet_world_id: u64,
    /// Planet timestamp (ms).
    pub planet_world_timestamp: u64,
    /// Addresses the roots see us at.
    pub reflected_addresses: Vec<String>,
    /// How our NAT maps ports (from the roots' reflections).
    pub nat_mapping: crate::nat_mapping::NatMapping,
    /// Whether packets go through a TCP relay connection to a root.
    pub tcp_relay: bool,
    /// The gateway-mapped endpoint advertised to peers (`ip/port`), if any.
    pub mapped_endpoint: Option<String>,
    /// The root this node relays through and asks now (10 hex digits).
    pub relay_root: Option<String>,
}

impl Node {
    /// The node's status.
    pub fn status(&self, now_ms: u64) -> NodeStatus {
        let mut reflected: Vec<String> = self
            .root_reflections()
            .map(|(_, r)| format_endpoint(&r))
            .collect();
        reflected.sort();
        reflected.dedup();
        let relay_root = self.best_root(now_ms);
        NodeStatus {
            address: self.address.to_string(),
            public_identity: self.identity.to_text(false),
            online: relay_root.is_some(),
            relay_root: relay_root.map(|a| a.to_string()),
            root: self.is_root(),
            planet_world_id: self.planet.id(),
            planet_world_timestamp: self.planet.timestamp_ms(),
            reflected_addresses: reflected,
            nat_mapping: self.nat_mapping(),
            tcp_relay: self.tcp_relay_wanted(now_ms),
            mapped_endpoint: self.mapped_endpoint().map(|a| format_endpoint(&a)),
        }
    }

    /// Every peer's status, sorted by address.
    pub fn peer_statuses(&self, now_ms: u64) -> Vec<PeerStatus> {
        let mut addrs: Vec<_> = self.peers.keys().copied().collect();
        addrs.sort();
        addrs
            .into_iter()
            .filter_map(|a| self.peer_status(now_ms, a))
            .collect()
    }

    /// One peer's status.
    pub fn peer_status(&self, now_ms: u64, addr: crate::address::Address) -> Option<PeerStatus> {
        let peer = self.peers.get(&addr)?;
        let active = peer.is_active(now_ms);
        let route = self.route(now_ms, addr);
        // The path packets go out on: the direct route's, if any.
        let preferred = match route {
            Some(PeerRoute::Direct(a)) => Some(a),
            _ => None,
        };
        let tcp = self.is_tcp_relayed(now_ms, addr);
        let (route_name, relay) = match route {
            Some(PeerRoute::Direct(_)) if tcp => ("TCP_RELAY", None),
            Some(PeerRoute::Direct(_)) => ("DIRECT", None),
            Some(PeerRoute::Relayed { root, .. }) if tcp => ("TCP_RELAY", Some(root.to_string())),
            Some(PeerRoute::Relayed { root, .. }) => ("RELAY", Some(root.to_string())),
            None => ("NONE", None),
        };
        Some(PeerStatus {
            address: addr.to_string(),
            latency: peer.latency_ms().get().map_or(-1, |l| l as i64),
            role: peer.role,
            version: peer.versions.map_or_else(
                || "-".to_string(),
                |v| format!("{}.{}.{}", v.major, v.minor, v.revision),
            ),
            route: route_name,
            nat_mapping: peer.traversal().and_then(|t| t.nat_mapping),
            relay,
            session: peer.sessions.is_established(),
            session_age: peer.sessions.age_ms(now_ms),
            upgraded_ago: peer
                .traversal()
                .and_then(|t| t.last_upgrade_ms.get())
                .map(|t| now_ms.saturating_sub(t)),
            mtu: route.map_or(usize::from(crate::constants::PATH_MTU_BASE_BYTES), |r| {
                peer.route_mtu(r)
            }),
            paths: peer
                .paths
                .iter()
                .map(|p| {
                    let alive = p.is_alive(now_ms, active);
                    PathStatus {
                        address: format_endpoint(&p.addr),
                        last_send: p.last_send_ms.get().map(|t| now_ms.saturating_sub(t)),
                        last_receive: p.last_receive_ms.get().map(|t| now_ms.saturating_sub(t)),
                        active: alive,
                        expired: !alive,
                        preferred: Some(p.addr) == preferred,
                        latency: p.latency_ms.get(),
                        mtu: p.mtu.usable(),
                        socket: match p.socket {
                            LocalSocket::Primary => "udp",
                            LocalSocket::Mapped => "mapped",
                            LocalSocket::Punch(_) => "punch",
                            LocalSocket::TcpToRoot | LocalSocket::TcpFromNode(_) => "tcp",
                        },
                    }
                })
                .collect(),
        })
    }
}
