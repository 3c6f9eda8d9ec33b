//! The local API's request and answer bodies (docs/API.md), shared by the
//! service (`api.rs`) and `vnet-cli`.
//!
//! Two kinds of types live here:
//! - bodies the service builds itself (errors, ping, moons, orbit, leave, the
//!   service's part of a network): one definition, serialized by the service
//!   and read by the CLI;
//! - read views of answers that embed a snapshot of the core (`NodeStatus`,
//!   `PeerStatus`, `NetworkView`, `NetcheckStatus`) or of the controller
//!   (which `vnet_node` cannot depend on): the CLI reads them with these. Their
//!   enumerations (roles, routes, statuses) are plain strings and every field
//!   may be missing, so a newer node's new value or field never breaks an
//!   older CLI; the tests below check they read what the core writes.
//!
//! Unknown fields are ignored everywhere (no `deny_unknown_fields`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::node::{Counters, NetworkView, NodeStatus, TableSizes};
use crate::service::tcp_relay::TcpRelayStats;

/// Any error answer: `{"error": "<message>"}` with a 4xx/5xx status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong, for a person.
    pub error: String,
}

/// `POST /ping/<addr>` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PingRequest {
    /// How long to wait for the reply (ms); the node caps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `POST /ping/<addr>` answer: one echo came back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PingAnswer {
    /// The peer's address (10 hex digits).
    pub peer: String,
    /// The echo's sequence number, when the node gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Round-trip time (ms).
    pub rtt_ms: u64,
    /// `DIRECT`, `RELAY` or `TCP_RELAY`.
    pub route: String,
    /// The physical path the reply came over (`ip/port`).
    pub path: String,
    /// The relaying root, when relayed.
    pub root: Option<String>,
}

/// `POST /moon/<id>` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrbitRequest {
    /// The address of a root of the moon, asked for it.
    pub seed: String,
}

/// `POST /moon/<id>` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrbitAnswer {
    /// The moon's world id (16 hex digits).
    pub id: String,
    /// The root it is asked from.
    pub seed: String,
    /// Always true: the moon comes later.
    pub waiting: bool,
}

/// `DELETE /moon/<id>` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeorbitAnswer {
    /// The moon's world id (16 hex digits).
    pub id: String,
    /// Always true.
    pub deorbited: bool,
}

/// One element of the `GET /moon` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Moon {
    /// The world id (16 hex digits).
    pub id: String,
    /// The world's timestamp (ms); 0 while waiting.
    pub timestamp: u64,
    /// Asked for, not received yet.
    pub waiting: bool,
    /// The root it is asked from, while waiting.
    pub seed: Option<String>,
    /// Its roots, once received.
    pub roots: Vec<MoonRoot>,
}

/// One root of a moon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MoonRoot {
    /// Its public identity text.
    pub identity: String,
    /// Where it listens (`ip/port`).
    pub stable_endpoints: Vec<String>,
}

/// `DELETE /network/<nwid>` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaveAnswer {
    /// The network id (16 hex digits).
    pub id: String,
    /// Always true.
    pub left: bool,
}

/// What the service adds to the core's `NetworkView` in a network answer:
/// ZeroTier's names for what tools read most, and this host's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NetworkLocal {
    /// The network id again (ZeroTier's name).
    pub nwid: String,
    /// The TAP device.
    pub port_device_name: String,
    /// Whether managed addresses and routes are applied.
    pub allow_managed: bool,
    /// Whether managed addresses may be global ones.
    pub allow_global: bool,
    /// Whether a managed default route may be applied.
    pub allow_default: bool,
    /// Whether the network's DNS settings are applied.
    #[serde(rename = "allowDNS")]
    pub allow_dns: bool,
    /// Whether this host forwards IPv4 (unknown when it cannot be read).
    pub ip_forwarding: Option<bool>,
}

/// `GET /network/<nwid>` answer (an element of `GET /network`), as the
/// service writes it.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkAnswer {
    /// The core's view.
    #[serde(flatten)]
    pub view: NetworkView,
    /// The service's additions.
    #[serde(flatten)]
    pub local: NetworkLocal,
}

/// A network answer as the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Network {
    /// 16 hex digits.
    pub id: Option<String>,
    /// `REQUESTING_CONFIGURATION`, `OK`, `ACCESS_DENIED` or `NOT_FOUND`.
    pub status: Option<String>,
    /// Our MAC on it.
    pub mac: Option<String>,
    /// Name, once configured.
    pub name: Option<String>,
    /// `PRIVATE` or `PUBLIC`, once configured.
    pub r#type: Option<String>,
    /// Assigned addresses as `ip/prefix`.
    pub assigned_addresses: Vec<String>,
    /// Targets of the managed routes whose gateway is this member.
    pub gateway_for: Vec<String>,
    /// The service's additions.
    #[serde(flatten)]
    pub local: NetworkLocal,
}

/// `config.settings` in the `GET /status` answer: local.conf's settings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Settings {
    /// The UDP and API port.
    pub primary_port: u16,
    /// Whether the port mapper runs.
    pub port_mapping_enabled: bool,
    /// Whether everything goes through a root over TCP.
    pub force_tcp_relay: bool,
    /// The identity check budget.
    pub identity_checks_per_second: u32,
    /// Relay threads running besides the engine (roots).
    pub relay_threads: usize,
    /// Flush threads running besides the engine (members).
    pub flush_threads: usize,
    /// How long the engine polls without sleeping after traffic, µs.
    pub busy_poll_micros: u64,
}

/// `config` in the `GET /status` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalConfig {
    /// The settings in force.
    pub settings: Settings,
}

/// `GET /status` answer, as the service writes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusAnswer {
    /// The core's status.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// This build's version.
    pub version: String,
    /// Packet counters.
    pub counters: Counters,
    /// Sizes of the bounded tables.
    pub tables: TableSizes,
    /// The controller's counters, when this node is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_counters: Option<BTreeMap<&'static str, u64>>,
    /// local.conf's settings in force.
    pub config: LocalConfig,
    /// The port mapper's state.
    pub port_mapping: Value,
    /// The TCP relay's counters (a root: its server; a node: its client).
    pub tcp_relay_stats: Option<TcpRelayStats>,
}

/// The `GET /status` answer as the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    /// 10 hex digits.
    pub address: Option<String>,
    /// The node's version.
    pub version: Option<String>,
    /// Whether a root answers.
    pub online: bool,
    /// Whether this node is a root.
    pub root: bool,
    /// How our NAT maps ports.
    pub nat_mapping: Option<String>,
    /// Whether packets go through a TCP relay connection.
    pub tcp_relay: bool,
    /// The root relayed through now.
    pub relay_root: Option<String>,
}

/// One element of the `GET /peer` answer, as the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Peer {
    /// 10 hex digits.
    pub address: Option<String>,
    /// Round-trip time (ms), -1 unknown.
    pub latency: Option<i64>,
    /// `LEAF`, `MOON` or `PLANET`.
    pub role: Option<String>,
    /// `major.minor.revision`, or `-`.
    pub version: Option<String>,
    /// `DIRECT`, `RELAY`, `TCP_RELAY` or `NONE`.
    pub route: Option<String>,
    /// The relaying root, when relayed.
    pub relay: Option<String>,
    /// Physical paths.
    pub paths: Vec<PeerPath>,
}

/// One path of a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PeerPath {
    /// `ip/port`.
    pub address: Option<String>,
    /// Milliseconds since the last send on it.
    pub last_send: Option<u64>,
    /// Milliseconds since the last receive on it.
    pub last_receive: Option<u64>,
    /// Alive.
    pub active: bool,
    /// Not alive.
    pub expired: bool,
    /// The one packets go out on.
    pub preferred: bool,
    /// The largest datagram sent on it (bytes), as path MTU discovery found.
    pub mtu: Option<usize>,
}

/// `GET /netcheck` answer, as the service writes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetcheckAnswer {
    /// The core's report.
    #[serde(flatten)]
    pub report: crate::core::node::NetcheckStatus,
    /// The port mapper's state.
    pub port_mapping: Value,
}

/// The `GET /netcheck` answer as the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Netcheck {
    /// `unknown`, `none`, `endpointIndependent` or `endpointDependent`.
    pub mapping: Option<String>,
    /// Whether a root answers over UDP.
    pub udp: bool,
    /// Whether UDP looks blocked.
    pub udp_blocked: bool,
    /// Whether packets go through a TCP relay connection.
    pub tcp_relay: bool,
    /// Whether TCP relay is forced by local.conf.
    pub force_tcp_relay: bool,
    /// The gateway-mapped endpoint we advertise.
    pub mapped_endpoint: Option<String>,
    /// Each root.
    pub roots: Vec<NetcheckRoot>,
    /// The port mapper's state.
    pub port_mapping: PortMapping,
}

/// One root in the netcheck answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NetcheckRoot {
    /// 10 hex digits.
    pub address: Option<String>,
    /// `PLANET` or `MOON`.
    pub role: Option<String>,
    /// Where it sees us (`ip/port`).
    pub reflected: Option<String>,
    /// Round-trip time (ms).
    pub latency: Option<u64>,
    /// Whether it answers over UDP.
    pub udp: bool,
    /// Whether we reach it over our TCP relay connection.
    pub tcp: bool,
}

/// `portMapping` in the netcheck and status answers, as the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PortMapping {
    /// Whether the port mapper runs.
    pub enabled: bool,
    /// `upnp` or `natpmp`, while a mapping is held.
    pub protocol: Option<String>,
    /// The external IP the gateway reports.
    pub external_ip: Option<String>,
    /// The mapped external UDP port.
    pub external_port: Option<u16>,
    /// The last failure.
    pub error: Option<String>,
}

/// A controller network (`GET /controller/network/<nwid>`), as the CLI reads
/// it; the controller crate writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ControllerNetwork {
    /// 16 hex digits.
    pub id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Whether members need authorization (missing: private).
    pub private: Option<bool>,
}

/// A controller member (`GET /controller/network/<nwid>/member/<addr>`), as
/// the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ControllerMember {
    /// 10 hex digits.
    pub address: Option<String>,
    /// Whether it may use the network.
    pub authorized: bool,
    /// Whether it bridges other Ethernet hosts.
    pub active_bridge: bool,
    /// Its addresses.
    pub ip_assignments: Vec<String>,
    /// Why an authorized member has no IPv4 address.
    pub ip_assignment_error: Option<String>,
    /// Routes it advertises (CIDR).
    #[serde(default)]
    pub advertised_routes: Vec<String>,
    /// Routes of those an admin approved.
    #[serde(default)]
    pub approved_routes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::nat_mapping::NatMapping;
    use crate::core::node::{NetcheckRoot as CoreRoot, NetcheckStatus, PathStatus, PeerStatus};
    use crate::core::node::{NetworkStatus, PeerRole};
    use serde_json::json;

    /// `GET /peer` as a node answered it (captured), plus a field this CLI
    /// does not know.
    const CAPTURED_PEERS: &str = r#"[{"address":"8056c2e21c","latency":12,"natMapping":null,
        "paths":[{"active":true,"address":"203.0.113.5/9993","expired":false,"lastReceive":130,
        "lastSend":120,"latency":12,"mtu":1472,"preferred":true,"socket":"udp"}],"relay":null,"role":"PLANET",
        "route":"DIRECT","session":true,"sessionAge":5000,"upgradedAgo":null,"version":"0.1.0",
        "someFutureField":{"x":1}}]"#;

    #[test]
    fn a_captured_peer_list_parses() {
        let peers: Vec<Peer> = serde_json::from_str(CAPTURED_PEERS).unwrap();
        assert_eq!(
            peers,
            [Peer {
                address: Some("8056c2e21c".into()),
                latency: Some(12),
                role: Some("PLANET".into()),
                version: Some("0.1.0".into()),
                route: Some("DIRECT".into()),
                relay: None,
                paths: vec![PeerPath {
                    address: Some("203.0.113.5/9993".into()),
                    last_send: Some(120),
                    last_receive: Some(130),
                    active: true,
                    expired: false,
                    preferred: true,
                    mtu: Some(1472),
                }],
            }]
        );
    }

    #[test]
    fn missing_fields_read_as_absent() {
        assert_eq!(
            serde_json::from_str::<Status>("{}").unwrap(),
            Status::default()
        );
        assert_eq!(
            serde_json::from_str::<Peer>(r#"{"version": null}"#).unwrap(),
            Peer::default()
        );
        assert_eq!(
            serde_json::from_str::<Netcheck>(r#"{"portMapping": {}}"#).unwrap(),
            Netcheck::default()
        );
    }

    #[test]
    fn the_core_s_peer_reads_back() {
        let core = PeerStatus {
            address: "a1b2c3d4e5".into(),
            latency: -1,
            role: PeerRole::Moon,
            version: "-".into(),
            route: "TCP_RELAY",
            nat_mapping: Some(NatMapping::EndpointDependent),
            relay: Some("8056c2e21c".into()),
            session: false,
            session_age: None,
            upgraded_ago: Some(3),
            mtu: 1232,
            paths: vec![PathStatus {
                address: "[2001:db8::1]/9993".into(),
                last_send: Some(4000),
                last_receive: None,
                active: true,
                expired: false,
                preferred: false,
                latency: Some(15),
                mtu: 1232,
                socket: "tcp",
            }],
        };
        let read: Peer = serde_json::from_value(serde_json::to_value(&core).unwrap()).unwrap();
        assert_eq!(read.address.as_deref(), Some("a1b2c3d4e5"));
        assert_eq!(read.latency, Some(-1));
        assert_eq!(read.role.as_deref(), Some("MOON"));
        assert_eq!(read.version.as_deref(), Some("-"));
        assert_eq!(read.route.as_deref(), Some("TCP_RELAY"));
        assert_eq!(read.relay.as_deref(), Some("8056c2e21c"));
        let path = &read.paths[0];
        assert_eq!(path.address.as_deref(), Some("[2001:db8::1]/9993"));
        assert_eq!((path.last_send, path.last_receive), (Some(4000), None));
        assert!(path.active && !path.expired && !path.preferred);
        assert_eq!(path.mtu, Some(1232));
    }

    #[test]
    fn the_service_s_status_reads_back() {
        let answer = StatusAnswer {
            node: NodeStatus {
                address: "8056c2e21c".into(),
                public_identity: "8056c2e21c:0:00".into(),
                online: true,
                root: false,
                planet_world_id: 7,
                planet_world_timestamp: 8,
                reflected_addresses: vec!["198.51.100.7/41000".into()],
                nat_mapping: NatMapping::EndpointIndependent,
                tcp_relay: false,
                mapped_endpoint: None,
                relay_root: Some("1122334455".into()),
            },
            version: "0.1.0".into(),
            counters: Counters::default(),
            tables: TableSizes::default(),
            controller_counters: None,
            config: LocalConfig::default(),
            port_mapping: json!({"enabled": false}),
            tcp_relay_stats: None,
        };
        let v = serde_json::to_value(&answer).unwrap();
        // The field names docs/API.md promises.
        for key in [
            "address",
            "publicIdentity",
            "online",
            "version",
            "root",
            "planetWorldId",
            "planetWorldTimestamp",
            "reflectedAddresses",
            "natMapping",
            "tcpRelay",
            "mappedEndpoint",
            "relayRoot",
            "portMapping",
            "counters",
            "tables",
            "tcpRelayStats",
            "config",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert!(v.get("controllerCounters").is_none());
        assert_eq!(v["config"]["settings"]["identityChecksPerSecond"], json!(0));
        assert_eq!(v["tcpRelayStats"], Value::Null);
        let read: Status = serde_json::from_value(v).unwrap();
        assert_eq!(read.address.as_deref(), Some("8056c2e21c"));
        assert_eq!(read.version.as_deref(), Some("0.1.0"));
        assert!(read.online);
        assert_eq!(read.nat_mapping.as_deref(), Some("endpointIndependent"));
        assert_eq!(read.relay_root.as_deref(), Some("1122334455"));
    }

    #[test]
    fn the_service_s_network_reads_back() {
        let view = NetworkView {
            id: "8056c2e21c000001".into(),
            status: NetworkStatus::Ok,
            mac: "32:0f:2a:e4:54:40".into(),
            name: Some("office".into()),
            r#type: Some("PRIVATE"),
            assigned_addresses: vec!["10.147.17.5/24".into()],
            mtu: Some(2800),
            revision: Some(3),
            bridge: Some(false),
            counters: None,
            routes: vec![json!({"target": "10.147.17.0/24", "via": null})],
            gateway_for: vec!["0.0.0.0/0".into()],
            dns: crate::core::netconf::NetworkDns {
                domain: "vnet.lan".into(),
                servers: vec!["10.147.17.1".parse().unwrap()],
            },
            tags: vec![(1000, 100)],
            capabilities: vec![2000],
        };
        let local = NetworkLocal {
            nwid: view.id.clone(),
            port_device_name: "vnc21c000001".into(),
            allow_managed: true,
            allow_dns: true,
            ip_forwarding: Some(false),
            ..NetworkLocal::default()
        };
        let v = serde_json::to_value(NetworkAnswer {
            view,
            local: local.clone(),
        })
        .unwrap();
        assert_eq!(v["allowDNS"], json!(true));
        assert_eq!(v["portDeviceName"], json!("vnc21c000001"));
        assert_eq!(v["ipForwarding"], json!(false));
        assert_eq!(v["tags"], json!([[1000, 100]]));
        assert_eq!(v["capabilities"], json!([2000]));
        let read: Network = serde_json::from_value(v).unwrap();
        assert_eq!(
            read,
            Network {
                id: Some("8056c2e21c000001".into()),
                status: Some("OK".into()),
                mac: Some("32:0f:2a:e4:54:40".into()),
                name: Some("office".into()),
                r#type: Some("PRIVATE".into()),
                assigned_addresses: vec!["10.147.17.5/24".into()],
                gateway_for: vec!["0.0.0.0/0".into()],
                local,
            }
        );
    }

    #[test]
    fn the_service_s_netcheck_reads_back() {
        let answer = NetcheckAnswer {
            report: NetcheckStatus {
                mapping: NatMapping::EndpointDependent,
                udp: true,
                udp_blocked: false,
                tcp_relay: false,
                force_tcp_relay: false,
                mapped_endpoint: Some("198.51.100.7/20100".into()),
                roots: vec![CoreRoot {
                    address: "1111111111".into(),
                    role: PeerRole::Planet,
                    reflected: None,
                    latency: Some(3),
                    udp: true,
                    tcp: false,
                }],
            },
            port_mapping: json!({"enabled": true, "protocol": "upnp", "externalIp": null,
                "externalPort": 20100, "gateway": "192.168.1.1", "renewals": 2}),
        };
        let read: Netcheck =
            serde_json::from_value(serde_json::to_value(&answer).unwrap()).unwrap();
        assert_eq!(read.mapping.as_deref(), Some("endpointDependent"));
        assert!(read.udp && !read.udp_blocked);
        assert_eq!(read.mapped_endpoint.as_deref(), Some("198.51.100.7/20100"));
        assert_eq!(read.roots[0].role.as_deref(), Some("PLANET"));
        assert_eq!(read.roots[0].latency, Some(3));
        assert_eq!(
            read.port_mapping,
            PortMapping {
                enabled: true,
                protocol: Some("upnp".into()),
                external_ip: None,
                external_port: Some(20100),
                error: None,
            }
        );
    }

    #[test]
    fn shared_bodies_keep_their_field_names() {
        let ping = PingAnswer {
            peer: "a1b2c3d4e5".into(),
            seq: None,
            rtt_ms: 4,
            route: "RELAY".into(),
            path: "198.51.100.1/9993".into(),
            root: Some("8056c2e21c".into()),
        };
        let v = serde_json::to_value(&ping).unwrap();
        assert_eq!(
            v,
            json!({"peer": "a1b2c3d4e5", "rttMs": 4, "route": "RELAY",
                   "path": "198.51.100.1/9993", "root": "8056c2e21c"})
        );
        assert_eq!(serde_json::from_value::<PingAnswer>(v).unwrap(), ping);
        assert_eq!(
            serde_json::to_value(PingRequest {
                timeout_ms: Some(2000)
            })
            .unwrap(),
            json!({"timeoutMs": 2000})
        );
        assert_eq!(
            serde_json::from_str::<PingRequest>("{}").unwrap(),
            PingRequest::default()
        );
        let waiting = Moon {
            id: "000000deadbeef00".into(),
            waiting: true,
            seed: Some("deadbeef00".into()),
            ..Moon::default()
        };
        assert_eq!(
            serde_json::to_value(&waiting).unwrap(),
            json!({"id": "000000deadbeef00", "timestamp": 0, "waiting": true,
                   "seed": "deadbeef00", "roots": []})
        );
        let root = MoonRoot {
            identity: "x".into(),
            stable_endpoints: vec!["192.0.2.1/9993".into()],
        };
        assert_eq!(
            serde_json::to_value(&root).unwrap(),
            json!({"identity": "x", "stableEndpoints": ["192.0.2.1/9993"]})
        );
        assert_eq!(
            serde_json::to_value(ErrorAnswer {
                error: "timeout".into()
            })
            .unwrap(),
            json!({"error": "timeout"})
        );
        let err: ErrorAnswer = serde_json::from_str(r#"{"error": "e", "code": 7}"#).unwrap();
        assert_eq!(err.error, "e");
    }

    #[test]
    fn controller_objects_parse_with_unknown_fields() {
        let m: ControllerMember = serde_json::from_value(json!({
            "id": "a1b2c3d4e5", "address": "a1b2c3d4e5", "nwid": "8056c2e21c000001",
            "objtype": "member", "authorized": true, "activeBridge": false,
            "ipAssignments": ["10.0.0.1"], "noAutoAssignIps": false, "creationTime": 1,
            "revision": 2, "ipAssignmentError": null}))
        .unwrap();
        assert!(m.authorized && !m.active_bridge);
        assert_eq!(m.ip_assignments, ["10.0.0.1"]);
        let n: ControllerNetwork = serde_json::from_value(json!({
            "id": "8056c2e21c000001", "objtype": "network", "name": "lab", "private": false,
            "mtu": 2800, "routes": []}))
        .unwrap();
        assert_eq!(n.private, Some(false));
        assert_eq!(n.name.as_deref(), Some("lab"));
    }
}
