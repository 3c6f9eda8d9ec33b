//! The control plane's state and what it does with the engine's events:
//! local settings, pings waiting for replies, the port mapper's state, the
//! TAP devices it made, netlink. The node is not here: the engine owns it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, error, info};

use crate::core::address::Address;
use crate::core::netconf::NetworkController;
use crate::core::network_id::NetworkId;
use crate::core::node::{Event, MemberAsked, PeerRoute};
use crate::core::world::WorldKind;
use crate::service::engine::{EngineGone, EngineHandle, TcpRelay};
use crate::service::home::Home;
use crate::service::managed_routes::NetworkSettings;
use crate::service::netlink::Netlink;
use crate::service::port_mapping::PortMappingState;
use crate::service::tcp_relay::TcpRelayStats;

/// The result of one ECHO.
#[derive(Debug, Clone)]
pub struct PingReply {
    /// Round-trip time.
    pub rtt_ms: u64,
    /// How the reply came.
    pub route: PeerRoute,
    /// Whether it came through our TCP relay connection.
    pub tcp: bool,
}

/// The control plane's state. The node is not here: the engine owns it.
pub struct ControlPlane {
    /// The engine, which owns the node.
    pub engine: EngineHandle,
    /// The home directory.
    pub home: Home,
    /// The API token.
    pub token: String,
    /// The port.
    pub port: u16,
    /// `portMappingEnabled` from local.conf.
    pub port_mapping_enabled: bool,
    /// `forceTcpRelay` from local.conf.
    pub force_tcp_relay: bool,
    /// Open TAP devices with offloads (local.conf `tapOffload`, default on).
    pub tap_offload: bool,
    /// `identityChecksPerSecond` from local.conf (or the default).
    pub identity_checks_per_second: u32,
    /// Relay threads running besides the engine (`relayThreads`, roots).
    pub relay_threads: usize,
    /// Flush threads running besides the engine (`flushThreads`, members).
    pub flush_threads: usize,
    /// How long the engine polls without sleeping after traffic
    /// (`busyPollMicros`, members), µs.
    pub busy_poll_micros: u64,
    /// Whether the node has an IPv6 socket.
    pub(crate) with_v6: bool,
    pub(crate) pings: Mutex<HashMap<u64, oneshot::Sender<PingReply>>>,
    pub(crate) next_ping: AtomicU64,
    /// Networks whose TAP device is up (the engine reads and writes them).
    pub(crate) devices: Mutex<HashSet<NetworkId>>,
    /// The network controller this node runs, if any: it answers the
    /// engine's config requests here, off the packet path.
    pub(crate) controller: Option<Mutex<Box<dyn NetworkController>>>,
    /// The TCP relay's ends, for their counters.
    pub(crate) tcp: TcpRelay,
    /// The port mapper's latest state.
    pub(crate) port_mapping_state: Mutex<PortMappingState>,
    /// Netlink, once connected (TAP devices, addresses, routes).
    pub(crate) netlink: std::sync::OnceLock<Arc<Netlink>>,
    /// Joined networks' local settings (allowManaged, ...).
    pub(crate) network_settings: Mutex<HashMap<NetworkId, NetworkSettings>>,
    /// Serializes route syncs (one netlink dump-and-fix at a time).
    pub(crate) route_sync: tokio::sync::Mutex<()>,
    /// Addresses we put on each network's device (only these are ever removed).
    pub(crate) managed_addresses: Mutex<HashMap<NetworkId, Vec<(std::net::IpAddr, u8)>>>,
    /// Client networks the API answers besides loopback (`allowManagementFrom`).
    pub allow_management_from: Vec<crate::core::ip_prefix::Cidr>,
    /// Netlink connections inside the namespaces networks' devices were
    /// moved to (`join --netns`).
    pub(crate) netns_links: Mutex<HashMap<NetworkId, Arc<crate::service::netlink::Netlink>>>,
    /// How this host's resolver is told a network's DNS settings.
    pub(crate) resolver: crate::service::dns_config::Resolver,
    /// The DNS settings in force for each network (`allowDNS` on).
    pub(crate) dns_applied: Mutex<HashMap<NetworkId, crate::core::netconf::NetworkDns>>,
}

/// Locks a control-plane table, even after a panic elsewhere (each is
/// changed in single steps).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ControlPlane {
    /// A joined network's local settings.
    pub fn network_settings(&self, nwid: NetworkId) -> NetworkSettings {
        lock(&self.network_settings)
            .get(&nwid)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets a left network's settings.
    pub fn forget_network_settings(&self, nwid: NetworkId) {
        lock(&self.network_settings).remove(&nwid);
    }

    /// The TCP relay's counters: a root's server, else the client (`GET /status`).
    pub fn tcp_relay_stats(&self) -> Option<TcpRelayStats> {
        match (&self.tcp.server, &self.tcp.client) {
            (Some(s), _) => Some(s.stats()),
            (None, Some(c)) => Some(c.stats()),
            (None, None) => None,
        }
    }

    /// The port mapper's state, as `GET /status` and `/netcheck` show it.
    pub fn port_mapping_json(&self) -> serde_json::Value {
        let state = lock(&self.port_mapping_state).clone();
        let mut v = serde_json::to_value(state).unwrap_or(serde_json::Value::Null);
        v["enabled"] = serde_json::json!(self.port_mapping_enabled);
        v
    }

    /// Sends one ECHO and waits for the reply.
    pub async fn ping(&self, addr: Address, timeout: Duration) -> Option<PingReply> {
        let id = self.next_ping.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pings).insert(id, tx);
        let sent = self
            .engine
            .cast(move |node, now, out| node.ping(now, addr, id, out));
        let reply = match sent {
            Ok(()) => tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(EngineGone) => None,
        };
        lock(&self.pings).remove(&id);
        reply
    }
}

pub(crate) fn handle_event(shared: &ControlPlane, event: Event) {
    match event {
        Event::EchoReply {
            id,
            rtt_ms,
            route,
            tcp,
            ..
        } => {
            let waiter = lock(&shared.pings).remove(&id);
            if let Some(tx) = waiter {
                let _ = tx.send(PingReply { rtt_ms, route, tcp });
            }
        }
        Event::PathUpgraded { peer, path } => info!(%peer, %path, "direct path up"),
        Event::PathLost { peer } => info!(%peer, "direct path lost; relaying"),
        Event::WorldUpdated(world) => {
            let saved = match world.kind() {
                WorldKind::Planet => shared.home.save_planet(&world),
                WorldKind::Moon => shared.home.save_moon(&world),
            };
            match saved {
                Ok(()) => info!(
                    id = format!("{:016x}", world.id()),
                    ts = world.timestamp_ms(),
                    kind = world.kind().name(),
                    "world saved"
                ),
                Err(e) => error!("cannot save world: {e}"),
            }
        }
        Event::WhoisFailed(addr) => debug!(%addr, "no root knows this address"),
        Event::NetworkChanged(nwid) => info!(%nwid, "network changed"),
        Event::ConfigRequested {
            network,
            member,
            asked,
        } => answer_config_request(shared, network, member, asked.as_deref()),
        Event::CertificatesDue(due) => answer_certificates_due(shared, due),
    }
}

/// Answers the engine's `Event::CertificatesDue`: which of these members
/// the controller still admits (a busy controller skips this round; the
/// certificates' lifetime allows for several).
fn answer_certificates_due(shared: &ControlPlane, due: Vec<(NetworkId, Address)>) {
    let Some(controller) = shared.controller.as_ref() else {
        return;
    };
    let Some(admitted) = lock(controller).still_admitted(&due) else {
        return;
    };
    let decisions: Vec<_> = due.into_iter().zip(admitted).collect();
    let _ = shared
        .engine
        .cast(move |node, now, out| node.refresh_certificates(now, &decisions, out));
}

/// Answers the engine's `Event::ConfigRequested` with the controller's
/// decision (the controller never waits for its own lock: a busy one says
/// "later" and pushes the answer when it can).
pub(crate) fn answer_config_request(
    shared: &ControlPlane,
    network: NetworkId,
    member: Address,
    asked: Option<&MemberAsked>,
) {
    let Some(controller) = shared.controller.as_ref() else {
        return;
    };
    let answer = lock(controller).request(network, member, asked);
    let _ = shared
        .engine
        .cast(move |node, now, out| node.answer_config(now, network, member, answer, out));
}

/// Tells the engine which members' configs the controller changed, so
/// they get them pushed.
pub(crate) fn report_config_changes(shared: &ControlPlane) {
    let Some(controller) = shared.controller.as_ref() else {
        return;
    };
    let changed = lock(controller).take_changed();
    if !changed.is_empty() {
        let _ = shared.engine.cast(move |node, _, _| {
            for (network, member) in changed {
                node.config_changed(network, member);
            }
        });
    }
}

impl ControlPlane {
    /// The controller's drop/deferral counters by name (none without one).
    pub fn controller_counters(&self) -> Option<Vec<(&'static str, u64)>> {
        self.controller.as_ref().map(|c| lock(c).counters())
    }
}
