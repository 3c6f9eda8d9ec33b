//! Managed routes: which of a network's routes and addresses a member
//! installs (its local `allow*` settings decide), the host routes that keep
//! the tunnel's own traffic on the physical network, and syncing the
//! kernel's main table to that plan over netlink.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::core::constants::{JOIN_KEY_MAX_LEN_BYTES, MAX_ADVERTISED_ROUTES};
use crate::core::ip_prefix::{Cidr, contains};
use crate::core::netconf::NetworkConfigData;
use crate::core::network_message::RequestMeta;

/// Routing protocol number on every route vnet installs, so a restart finds
/// and replaces them (free in iproute2's `rt_protos`). Each daemon also sets
/// the route metric to its port, so two daemons on one host (a node and a
/// controller) keep out of each other's routes.
pub const VNET_ROUTE_PROTOCOL: u8 = 157;

/// A member's local settings for one network: ZeroTier's `allow*`, and
/// what its config requests tell the controller (routes it offers to be a
/// gateway for, a join key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkSettings {
    /// Assigned addresses and routes inside private ranges (default on).
    pub allow_managed: bool,
    /// Addresses and routes that overlap public ranges (default off).
    pub allow_global: bool,
    /// A default route (0.0.0.0/0 or ::/0): the network's exit node (default off).
    pub allow_default: bool,
    /// DNS settings pushed by the controller (default off).
    #[serde(rename = "allowDNS")]
    pub allow_dns: bool,
    /// Networks behind this member it offers to route (`advertiseRoutes`):
    /// managed routes via it once the controller's admin approves them.
    pub advertise_routes: Vec<Cidr>,
    /// Offers to be the network's exit node (`0.0.0.0/0` and `::/0`).
    pub advertise_default: bool,
    /// The join key given with `join --key`, presented until authorized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_key: Option<String>,
    /// Another network namespace the network's device lives in (`join
    /// --netns`: a name under `/run/netns`, or a path such as
    /// `/proc/<pid>/ns/net`); none: the daemon's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            allow_managed: true,
            allow_global: false,
            allow_default: false,
            allow_dns: false,
            advertise_routes: Vec::new(),
            advertise_default: false,
            join_key: None,
            netns: None,
        }
    }
}

/// The settings `POST /network/<nwid>` and `vnet-cli set` take.
pub const SETTING_NAMES: &str = "allowManaged, allowGlobal, allowDefault, allowDNS, \
     advertiseRoutes, advertiseDefault, joinKey, netns";

/// The file of network namespace `netns`: a name (`ip netns` names, under
/// `/run/netns`) or an absolute path (`/proc/<pid>/ns/net`, a bind mount).
pub fn netns_path(netns: &str) -> Result<std::path::PathBuf, String> {
    if netns.starts_with('/') {
        return Ok(netns.into());
    }
    let ok = !netns.is_empty()
        && netns.len() <= 255
        && netns != "."
        && netns != ".."
        && netns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(std::path::Path::new("/run/netns").join(netns))
    } else {
        Err(format!(
            "netns: {netns:?} is neither a namespace name nor an absolute path"
        ))
    }
}

impl NetworkSettings {
    /// Sets one setting from its JSON value: booleans as ZeroTier reads
    /// them (`true`/`false`, `1`/`0`, or a string starting with `t`, `T` or
    /// `1`), `advertiseRoutes` as an array of CIDR strings or one
    /// comma-separated string (`""`: none), `joinKey` as a string.
    pub fn set(&mut self, name: &str, value: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value;
        let flag = |value: &Value| match value {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
            Value::String(s) => match s.as_bytes().first() {
                Some(b't' | b'T' | b'1') => Ok(true),
                Some(b'f' | b'F' | b'0') => Ok(false),
                _ => Err(format!("{name}: expected true/false or 1/0, got {value}")),
            },
            other => Err(format!("{name}: expected true/false or 1/0, got {other}")),
        };
        match name {
            "allowManaged" => self.allow_managed = flag(value)?,
            "allowGlobal" => self.allow_global = flag(value)?,
            "allowDefault" => self.allow_default = flag(value)?,
            "allowDNS" => self.allow_dns = flag(value)?,
            "advertiseDefault" => self.advertise_default = flag(value)?,
            "advertiseRoutes" => self.advertise_routes = advertised_routes(value)?,
            "joinKey" => {
                self.join_key = match value {
                    Value::Null => None,
                    Value::String(k) if k.is_empty() => None,
                    Value::String(k)
                        if k.len() <= JOIN_KEY_MAX_LEN_BYTES
                            && k.bytes().all(|b| b.is_ascii_graphic()) =>
                    {
                        Some(k.clone())
                    }
                    _ => return Err(format!("joinKey: {value} is not a join key")),
                }
            }
            "netns" => {
                self.netns = match value {
                    Value::Null => None,
                    Value::String(n) if n.is_empty() => None,
                    Value::String(n) => {
                        netns_path(n)?;
                        Some(n.clone())
                    }
                    other => return Err(format!("netns: expected a name or a path, got {other}")),
                }
            }
            other => return Err(format!("unknown setting {other:?} ({SETTING_NAMES})")),
        }
        Ok(())
    }

    /// What this member's config requests tell the controller.
    pub fn request_meta(&self) -> RequestMeta {
        let mut routes = self.advertise_routes.clone();
        if self.advertise_default {
            for default in ["0.0.0.0/0", "::/0"] {
                let cidr: Cidr = default.parse().expect("a valid prefix");
                if !routes.contains(&cidr) {
                    routes.push(cidr);
                }
            }
        }
        RequestMeta {
            join_key: self.join_key.clone(),
            advertise_routes: routes,
        }
    }
}

/// `advertiseRoutes` from an array of CIDR strings or one comma-separated string.
fn advertised_routes(value: &serde_json::Value) -> Result<Vec<Cidr>, String> {
    let texts: Vec<String> = match value {
        serde_json::Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or("advertiseRoutes: expected CIDR strings")?,
        other => {
            return Err(format!(
                "advertiseRoutes: expected CIDR strings, got {other}"
            ));
        }
    };
    let mut routes: Vec<Cidr> = Vec::new();
    for t in texts {
        let cidr: Cidr = t.parse().map_err(|e| format!("advertiseRoutes: {e}"))?;
        if !routes.contains(&cidr) {
            routes.push(cidr);
        }
    }
    if routes.len() > MAX_ADVERTISED_ROUTES {
        return Err(format!(
            "advertiseRoutes: at most {MAX_ADVERTISED_ROUTES} routes"
        ));
    }
    Ok(routes)
}

/// One route in the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelRoute {
    /// Network address of the target.
    pub target: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway, if any.
    pub via: Option<IpAddr>,
    /// Output device.
    pub device: String,
}

impl std::fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.target, self.prefix_len)?;
        if let Some(v) = self.via {
            write!(f, " via {v}")?;
        }
        write!(f, " dev {}", self.device)
    }
}

/// Whether an address is in a private range (RFC 1918, shared 100.64/10,
/// link-local, ULA fc00::/7, IPv6 link-local).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Whether a whole prefix is private (its first and last address are).
fn prefix_is_private(target: IpAddr, prefix_len: u8) -> bool {
    is_private(target) && is_private(last_address(target, prefix_len))
}

fn last_address(target: IpAddr, prefix_len: u8) -> IpAddr {
    match target {
        IpAddr::V4(v4) => {
            let host = if prefix_len >= 32 {
                0
            } else {
                u32::MAX >> prefix_len
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) | host))
        }
        IpAddr::V6(v6) => {
            let host = if prefix_len >= 128 {
                0
            } else {
                u128::MAX >> prefix_len
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) | host))
        }
    }
}

/// The addresses a member puts on its device, by its settings.
pub fn allowed_addresses(
    config: &NetworkConfigData,
    settings: &NetworkSettings,
) -> Vec<(IpAddr, u8)> {
    if !settings.allow_managed {
        return Vec::new();
    }
    config
        .assigned
        .iter()
        .filter(|a| settings.allow_global || is_private(a.ip))
        .map(|a| (a.ip, a.prefix_len))
        .collect()
}

/// The routes a member installs for one network on `device`: the managed
/// routes its settings allow, never one via itself, never one the kernel
/// already has for an assigned address's subnet; a default route as two
/// halves (0/1 and 128/1), so the original default route stays untouched
/// and comes back exactly when the halves go.
pub fn plan_routes(
    device: &str,
    config: &NetworkConfigData,
    settings: &NetworkSettings,
) -> Vec<KernelRoute> {
    let addresses = allowed_addresses(config, settings);
    if !settings.allow_managed {
        return Vec::new();
    }
    let mut out = Vec::new();
    for r in &config.routes {
        if r.via
            .is_some_and(|v| addresses.iter().any(|(a, _)| *a == v))
        {
            continue; // we are the gateway
        }
        if r.via.is_some_and(|v| v.is_ipv4() != r.target.is_ipv4()) {
            continue;
        }
        let route = |target, prefix_len| KernelRoute {
            target,
            prefix_len,
            via: r.via,
            device: device.to_string(),
        };
        if r.prefix_len == 0 {
            if !settings.allow_default || r.via.is_none() {
                continue;
            }
            match r.target {
                IpAddr::V4(_) => {
                    out.push(route(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1));
                    out.push(route(IpAddr::V4(Ipv4Addr::new(128, 0, 0, 0)), 1));
                }
                IpAddr::V6(_) => {
                    out.push(route(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 1));
                    out.push(route(
                        IpAddr::V6(Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0)),
                        1,
                    ));
                }
            }
            continue;
        }
        if !settings.allow_global && !prefix_is_private(r.target, r.prefix_len) {
            continue;
        }
        let on_link_subnet = r.via.is_none()
            && addresses
                .iter()
                .any(|(a, p)| *p == r.prefix_len && contains(r.target, r.prefix_len, *a));
        if on_link_subnet {
            continue; // the kernel made it with the address
        }
        out.push(route(r.target, r.prefix_len));
    }
    out
}

/// A route of the main table as read back: target, device index, gateway, protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRoute {
    /// Network address of the target.
    pub target: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway, if any.
    pub via: Option<IpAddr>,
    /// Output device index.
    pub oif: Option<u32>,
    /// Installed by vnet (protocol [`VNET_ROUTE_PROTOCOL`]).
    pub vnet: bool,
    /// Its metric.
    pub metric: u32,
    /// The message, for deleting it.
    pub message: RouteMessage,
}

/// Host routes that keep `protected` addresses (roots, peers' physical
/// addresses) on the path they take now, wherever a planned route would
/// capture them: the longest matching route of `table` that is neither
/// vnet's nor through one of `vnet_devices`.
pub fn plan_pins(
    planned: &[KernelRoute],
    protected: &[IpAddr],
    table: &[TableRoute],
    vnet_devices: &HashSet<u32>,
    device_name: impl Fn(u32) -> Option<String>,
) -> Vec<KernelRoute> {
    let mut pins = Vec::new();
    for ip in protected {
        if !planned
            .iter()
            .any(|r| contains(r.target, r.prefix_len, *ip))
        {
            continue;
        }
        let physical = table
            .iter()
            .filter(|t| !t.vnet && t.oif.is_none_or(|o| !vnet_devices.contains(&o)))
            .filter(|t| contains(t.target, t.prefix_len, *ip))
            .max_by_key(|t| t.prefix_len);
        let Some(p) = physical else { continue };
        let Some(device) = p.oif.and_then(&device_name) else {
            continue;
        };
        let pin = KernelRoute {
            target: *ip,
            prefix_len: if ip.is_ipv4() { 32 } else { 128 },
            via: p.via,
            device,
        };
        if !pins.contains(&pin) {
            pins.push(pin);
        }
    }
    pins
}

/// Why a route could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The kernel refused.
    #[error("netlink {what} {route}: {error}")]
    Request {
        /// add or delete.
        what: &'static str,
        /// The route.
        route: String,
        /// The kernel's answer.
        error: rtnetlink::Error,
    },
    /// A route that cannot be expressed.
    #[error("route {0}: {1}")]
    Invalid(String, String),
    /// No such device.
    #[error("no network device named {0}")]
    NoDevice(String),
}

/// Reads the main table (IPv4 and IPv6).
pub async fn read_table(handle: &Handle) -> Result<Vec<TableRoute>, RouteError> {
    let mut out = Vec::new();
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut stream = handle.route().get(request).execute();
        while let Some(msg) = stream.try_next().await.map_err(|e| RouteError::Request {
            what: "dump",
            route: "main table".into(),
            error: e,
        })? {
            if msg.header.table != RouteMessage::default().header.table && msg.header.table != 254 {
                continue;
            }
            let mut target = None;
            let mut via = None;
            let mut oif = None;
            let mut table_attr = None;
            let mut metric = 0;
            for a in &msg.attributes {
                match a {
                    RouteAttribute::Destination(d) => target = ip_of(d),
                    RouteAttribute::Gateway(g) => via = ip_of(g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table_attr = Some(*t),
                    RouteAttribute::Priority(p) => metric = *p,
                    _ => {}
                }
            }
            if table_attr.is_some_and(|t| t != 254) {
                continue;
            }
            let v4 = msg.header.address_family == rtnetlink::packet_route::AddressFamily::Inet;
            let target = target.unwrap_or(if v4 {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            });
            out.push(TableRoute {
                target,
                prefix_len: msg.header.destination_prefix_length,
                via,
                oif,
                vnet: msg.header.protocol == RouteProtocol::Other(VNET_ROUTE_PROTOCOL),
                metric,
                message: msg,
            });
        }
    }
    Ok(out)
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Makes this daemon's routes in the main table exactly `desired`: removes
/// those (tagged with [`VNET_ROUTE_PROTOCOL`] and metric `metric`) no longer
/// wanted, adds the missing. `index` names a device's index. Returns the
/// errors met (one bad route does not stop the others).
pub async fn sync_routes(
    handle: &Handle,
    table: &[TableRoute],
    desired: &[KernelRoute],
    metric: u32,
    index: impl Fn(&str) -> Option<u32>,
) -> Vec<RouteError> {
    let ours = |t: &TableRoute| t.vnet && t.metric == metric;
    let mut errors = Vec::new();
    let wanted: Vec<(KernelRoute, u32)> = desired
        .iter()
        .filter_map(|r| match index(&r.device) {
            Some(i) => Some((r.clone(), i)),
            None => {
                errors.push(RouteError::NoDevice(r.device.clone()));
                None
            }
        })
        .collect();
    let matches = |t: &TableRoute, (r, i): &(KernelRoute, u32)| {
        t.target == r.target && t.prefix_len == r.prefix_len && t.via == r.via && t.oif == Some(*i)
    };
    for t in table.iter().filter(|t| ours(t)) {
        if !wanted.iter().any(|w| matches(t, w)) {
            let route = format!("{}/{}", t.target, t.prefix_len);
            if let Err(error) = handle.route().del(t.message.clone()).execute().await {
                errors.push(RouteError::Request {
                    what: "delete",
                    route,
                    error,
                });
            }
        }
    }
    for w in &wanted {
        if table.iter().any(|t| ours(t) && matches(t, w)) {
            continue;
        }
        let (r, i) = w;
        let message = match build(r, *i, metric) {
            Ok(m) => m,
            Err(e) => {
                errors.push(RouteError::Invalid(r.to_string(), e));
                continue;
            }
        };
        if let Err(error) = handle.route().add(message).replace().execute().await {
            errors.push(RouteError::Request {
                what: "add",
                route: r.to_string(),
                error,
            });
        }
    }
    errors
}

fn build(r: &KernelRoute, oif: u32, metric: u32) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.target, r.prefix_len)
        .map_err(|e| e.to_string())?
        .output_interface(oif)
        .priority(metric)
        .protocol(RouteProtocol::Other(VNET_ROUTE_PROTOCOL));
    match r.via {
        Some(v) => b = b.gateway(v).map_err(|e| e.to_string())?,
        None => b = b.scope(RouteScope::Link),
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::netconf::{AssignedIp, ManagedRoute};
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(routes: &[(&str, u8, Option<&str>)], assigned: &[(&str, u8)]) -> NetworkConfigData {
        let mut c = NetworkConfigData {
            pull_interval_ms: None,
            rules: None,
            capabilities: Vec::new(),
            grants: Default::default(),
            dns: None,
            name: "t".into(),
            revision: 1,
            timestamp_ms: 0,
            private: true,
            mtu: 2800,
            multicast_limit: 32,
            enable_broadcast: true,
            active_bridge: false,
            assigned: Vec::new(),
            routes: Vec::new(),
            bridges: Vec::new(),
        };
        c.routes = routes
            .iter()
            .map(|(t, p, v)| ManagedRoute {
                target: ip(t),
                prefix_len: *p,
                via: v.map(ip),
            })
            .collect();
        c.assigned = assigned
            .iter()
            .map(|(a, p)| AssignedIp {
                ip: ip(a),
                prefix_len: *p,
            })
            .collect();
        c
    }

    #[test]
    fn plan_follows_the_settings() {
        let c = config(
            &[
                ("10.147.17.0", 24, None),
                ("192.168.1.0", 24, Some("10.147.17.10")),
                ("203.0.113.0", 24, Some("10.147.17.10")),
                ("0.0.0.0", 0, Some("10.147.17.10")),
            ],
            &[("10.147.17.20", 24)],
        );
        let s = NetworkSettings::default();
        let routes = plan_routes("vn1", &c, &s);
        let shown: Vec<String> = routes.iter().map(ToString::to_string).collect();
        // Own subnet: the kernel has it; public target: not without allowGlobal; no default.
        assert_eq!(shown, ["192.168.1.0/24 via 10.147.17.10 dev vn1"]);
        let all = NetworkSettings {
            allow_global: true,
            allow_default: true,
            ..s
        };
        let shown: Vec<String> = plan_routes("vn1", &c, &all)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "192.168.1.0/24 via 10.147.17.10 dev vn1",
                "203.0.113.0/24 via 10.147.17.10 dev vn1",
                "0.0.0.0/1 via 10.147.17.10 dev vn1",
                "128.0.0.0/1 via 10.147.17.10 dev vn1",
            ]
        );
        let off = NetworkSettings {
            allow_managed: false,
            ..all
        };
        assert!(plan_routes("vn1", &c, &off).is_empty());
        assert!(allowed_addresses(&c, &off).is_empty());
    }

    #[test]
    fn a_member_never_routes_via_itself() {
        let c = config(
            &[("192.168.1.0", 24, Some("10.147.17.10"))],
            &[("10.147.17.10", 24)],
        );
        assert!(plan_routes("vn1", &c, &NetworkSettings::default()).is_empty());
    }

    #[test]
    fn public_addresses_need_allow_global() {
        let c = config(&[], &[("10.147.17.10", 24), ("203.0.113.5", 24)]);
        assert_eq!(
            allowed_addresses(&c, &NetworkSettings::default()),
            vec![(ip("10.147.17.10"), 24)]
        );
        let g = NetworkSettings {
            allow_global: true,
            ..NetworkSettings::default()
        };
        assert_eq!(allowed_addresses(&c, &g).len(), 2);
    }

    #[test]
    fn pins_keep_roots_and_peers_on_their_physical_route() {
        let planned = vec![KernelRoute {
            target: ip("0.0.0.0"),
            prefix_len: 1,
            via: Some(ip("10.147.17.10")),
            device: "vn1".into(),
        }];
        let table = vec![
            TableRoute {
                target: ip("0.0.0.0"),
                prefix_len: 0,
                via: Some(ip("10.9.0.1")),
                oif: Some(2),
                vnet: false,
                metric: 0,
                message: RouteMessage::default(),
            },
            TableRoute {
                target: ip("10.147.17.0"),
                prefix_len: 24,
                via: None,
                oif: Some(7),
                vnet: false,
                metric: 0,
                message: RouteMessage::default(),
            },
        ];
        let vnet = HashSet::from([7]);
        let pins = plan_pins(
            &planned,
            &[ip("98.51.100.1"), ip("198.51.100.9")],
            &table,
            &vnet,
            |i| (i == 2).then(|| "eth0".to_string()),
        );
        let shown: Vec<String> = pins.iter().map(ToString::to_string).collect();
        // 98.51.100.1 falls in 0/1 and is pinned; 198.51.100.9 is in 128/1, not planned.
        assert_eq!(shown, ["98.51.100.1/32 via 10.9.0.1 dev eth0"]);
    }

    #[test]
    fn settings_parse_and_default_as_zerotier() {
        let s: NetworkSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, NetworkSettings::default());
        let s: NetworkSettings =
            serde_json::from_str(r#"{"allowDefault": true, "allowDNS": true}"#).unwrap();
        assert!(s.allow_default && s.allow_dns && s.allow_managed);
        let mut s = NetworkSettings::default();
        assert!(s.set("allowGlobal", &json!(true)).is_ok());
        assert!(s.allow_global);
        for (value, on) in [
            (json!(0), false),
            (json!("t"), true),
            (json!("false"), false),
        ] {
            s.set("allowDNS", &value).unwrap();
            assert_eq!(s.allow_dns, on, "{value}");
        }
        assert!(s.set("allowDNS", &json!("maybe")).is_err());
        assert!(
            s.set("allowEverything", &json!(true))
                .unwrap_err()
                .contains("unknown setting")
        );
    }

    #[test]
    fn netns_names_and_paths() {
        assert_eq!(
            netns_path("web-1").unwrap(),
            std::path::Path::new("/run/netns/web-1")
        );
        assert_eq!(
            netns_path("/proc/42/ns/net").unwrap(),
            std::path::Path::new("/proc/42/ns/net")
        );
        for bad in ["", "..", "a/b", "web 1"] {
            assert!(netns_path(bad).is_err(), "{bad:?}");
        }
        let mut s = NetworkSettings::default();
        s.set("netns", &json!("web")).unwrap();
        assert_eq!(s.netns.as_deref(), Some("web"));
        assert!(s.set("netns", &json!("../etc")).is_err());
        s.set("netns", &json!("")).unwrap();
        assert_eq!(s.netns, None);
    }

    #[test]
    fn advertised_routes_and_join_key_become_the_request_meta() {
        let mut s = NetworkSettings::default();
        assert!(s.request_meta().is_empty());
        s.set(
            "advertiseRoutes",
            &json!("192.168.31.0/24, 10.9.0.0/16,192.168.31.0/24"),
        )
        .unwrap();
        s.set("advertiseDefault", &json!(1)).unwrap();
        s.set("joinKey", &json!("vnk_abc_def")).unwrap();
        let meta = s.request_meta();
        let routes: Vec<String> = meta
            .advertise_routes
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            routes,
            ["192.168.31.0/24", "10.9.0.0/16", "0.0.0.0/0", "::/0"]
        );
        assert_eq!(meta.join_key.as_deref(), Some("vnk_abc_def"));
        // Kept across a restart as local.conf JSON.
        let back: NetworkSettings =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        for bad in [json!("10.0.0.1/24"), json!(["nope"]), json!(5)] {
            assert!(s.set("advertiseRoutes", &bad).is_err(), "{bad}");
        }
        assert!(s.set("joinKey", &json!("has space")).is_err());
        s.set("advertiseRoutes", &json!([])).unwrap();
        s.set("joinKey", &json!("")).unwrap();
        s.set("advertiseDefault", &json!(false)).unwrap();
        assert!(s.request_meta().is_empty());
    }
}
