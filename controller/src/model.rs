//! Networks and members as the controller keeps them, and their JSON form
//! (ZeroTier's controller field names).

use std::net::IpAddr;

use serde_json::{Value, json};
use vnet_node::core::address::Address;
use vnet_node::core::constants::NETWORK_MTU_DEFAULT_BYTES;
use vnet_node::core::message::Versions;
use vnet_node::core::netconf::NetworkDns;
use vnet_node::core::network_id::NetworkId;
use vnet_node::core::rules::{Capability, RuleSet};

use crate::ip::{Cidr, to_u128};
use crate::join_keys::JoinKey;

/// Default for `multicastLimit`.
pub const DEFAULT_MULTICAST_LIMIT: u32 = 32;

/// A range of addresses members get IPs from (`{ipRangeStart, ipRangeEnd}`),
/// both ends included, same family, start not after end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPool {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

impl IpPool {
    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &IpPool) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

/// A managed route (`{target, via}`): `via` none means the target is on the
/// network itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedRouteSpec {
    /// Destination network.
    pub target: Cidr,
    /// Gateway (same family as the target), or none.
    pub via: Option<IpAddr>,
}

/// `v6AssignMode`: which IPv6 addresses members are given, as ZeroTier's
/// controller gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V6AssignMode {
    /// `zt`: one address from the network's IPv6 pools.
    pub zt: bool,
    /// `rfc4193`: `fd` + network id + `9993` + member address, /88.
    pub rfc4193: bool,
    /// `6plane`: `fc` + folded network id + member address + `::1`, /40; the
    /// member owns the /80 it heads.
    pub sixplane: bool,
}

/// A network on this controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Controller address and number.
    pub id: NetworkId,
    /// Short name.
    pub name: String,
    /// Whether members need authorization.
    pub private: bool,
    /// When created (ms since the epoch).
    pub creation_time: u64,
    /// Grows by one with every change.
    pub revision: u64,
    /// Virtual MTU.
    pub mtu: u16,
    /// Most recipients of one multicast.
    pub multicast_limit: u32,
    /// Whether Ethernet broadcast is carried.
    pub enable_broadcast: bool,
    /// `v4AssignMode.zt`: whether IPv4 addresses are assigned from the pools.
    pub v4_assign_zt: bool,
    /// `v6AssignMode`.
    pub v6_assign: V6AssignMode,
    /// Address ranges for automatic assignment.
    pub ip_assignment_pools: Vec<IpPool>,
    /// Managed routes.
    pub routes: Vec<ManagedRouteSpec>,
    /// The rules' source text as a UI keeps it (ZeroTier's `rulesSource`;
    /// kept and shown, never compiled by the controller).
    pub rules_source: String,
    /// Its join keys, hashed (see [`crate::join_keys`]).
    pub join_keys: Vec<JoinKey>,
    /// Its DNS settings (ZeroTier's `dns`), pushed to members.
    pub dns: Option<NetworkDns>,
    /// Its flow rules (ZeroTier's `rules`), enforced by every member.
    pub rules: RuleSet,
    /// Its capabilities (ZeroTier's `capabilities`: id and rules), granted
    /// to members by id.
    pub capabilities: Vec<Capability>,
    /// Its tags (ZeroTier's `tags`: id and default value).
    pub tags: Vec<TagDefinition>,
}

/// A tag of a network: its id, and the value members without one of their
/// own get (none: they get none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagDefinition {
    /// The tag's id.
    pub id: u32,
    /// ZeroTier's `default`.
    pub default: Option<u32>,
}

impl Network {
    /// A network with the defaults, created at `now_ms`, revision 0 (the
    /// first save makes it 1).
    pub fn new(id: NetworkId, now_ms: u64) -> Self {
        Self {
            id,
            name: String::new(),
            private: true,
            creation_time: now_ms,
            revision: 0,
            mtu: NETWORK_MTU_DEFAULT_BYTES,
            multicast_limit: DEFAULT_MULTICAST_LIMIT,
            enable_broadcast: true,
            v4_assign_zt: true,
            v6_assign: V6AssignMode::default(),
            ip_assignment_pools: Vec::new(),
            routes: Vec::new(),
            rules_source: String::new(),
            join_keys: Vec::new(),
            dns: None,
            rules: RuleSet::accept_all(),
            capabilities: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// The JSON a store writes: the API's, plus the join keys (hashed).
    pub fn to_stored_json(&self) -> Value {
        let mut j = self.to_json();
        if let Some(o) = j.as_object_mut() {
            o.insert(
                "joinKeys".into(),
                self.join_keys.iter().map(JoinKey::to_json).collect(),
            );
        }
        j
    }

    /// The JSON form, as the API returns it (the store adds the join keys:
    /// [`Network::to_stored_json`]).
    pub fn to_json(&self) -> Value {
        let id = self.id.to_string();
        json!({
            "id": id,
            "nwid": id,
            "objtype": "network",
            "name": self.name,
            "private": self.private,
            "creationTime": self.creation_time,
            "revision": self.revision,
            "mtu": self.mtu,
            "multicastLimit": self.multicast_limit,
            "enableBroadcast": self.enable_broadcast,
            "v4AssignMode": { "zt": self.v4_assign_zt },
            "ipAssignmentPools": self.ip_assignment_pools.iter().map(|p| json!({
                "ipRangeStart": p.start.to_string(),
                "ipRangeEnd": p.end.to_string(),
            })).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(|r| json!({
                "target": r.target.to_string(),
                "via": r.via.map(|v| v.to_string()),
            })).collect::<Vec<_>>(),
            "v6AssignMode": {
                "zt": self.v6_assign.zt,
                "rfc4193": self.v6_assign.rfc4193,
                "6plane": self.v6_assign.sixplane,
            },
            "rules": self.rules.to_zerotier_json(),
            "rulesSource": self.rules_source,
            "capabilities": self.capabilities.iter().map(|c| json!({
                "id": c.id,
                "rules": c.rules.to_zerotier_json(),
            })).collect::<Vec<_>>(),
            "tags": self.tags.iter().map(|t| json!({
                "id": t.id,
                "default": t.default,
            })).collect::<Vec<_>>(),
            "dns": self.dns.as_ref().map_or_else(
                || json!({"domain": "", "servers": []}),
                |d| json!({"domain": d.domain, "servers": d.servers}),
            ),
        })
    }

    /// The prefix length a member holding `ip` is given: that of the most
    /// specific managed route (no `via`) containing it, else 24 for IPv4 and
    /// 64 for IPv6.
    pub fn prefix_len_for(&self, ip: IpAddr) -> u8 {
        self.managed_route_for(ip)
            .map(|c| c.prefix_len())
            .unwrap_or(if ip.is_ipv4() { 24 } else { 64 })
    }

    /// The most specific managed route (no `via`) containing `ip`.
    pub fn managed_route_for(&self, ip: IpAddr) -> Option<Cidr> {
        self.routes
            .iter()
            .filter(|r| r.via.is_none() && r.target.contains(ip))
            .map(|r| r.target)
            .max_by_key(|c| c.prefix_len())
    }
}

/// A member of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's node address.
    pub address: Address,
    /// Its network.
    pub network_id: NetworkId,
    /// Whether it may join a private network.
    pub authorized: bool,
    /// Whether it may bridge other MACs onto the network.
    pub active_bridge: bool,
    /// Its IP addresses (unique in the network).
    pub ip_assignments: Vec<IpAddr>,
    /// Whether automatic assignment skips it.
    pub no_auto_assign_ips: bool,
    /// When first recorded (ms since the epoch).
    pub creation_time: u64,
    /// Grows by one with every change.
    pub revision: u64,
    /// When last authorized (0: never).
    pub last_authorized_time: u64,
    /// When last deauthorized (0: never).
    pub last_deauthorized_time: u64,
    /// A name an admin gave it (ZeroTier's member `name`).
    pub name: String,
    /// Its public identity (`<address>:0:<public key hex>`), pinned when it
    /// first asks: a different key claiming this address is refused.
    pub identity: Option<String>,
    /// Its versions as its last request told them.
    pub versions: Option<Versions>,
    /// Networks behind it that it offers to route (`advertiseRoutes`).
    pub advertised_routes: Vec<Cidr>,
    /// Of the routes it advertises, those an admin approved: managed
    /// routes via this member while it advertises them.
    pub approved_routes: Vec<Cidr>,
    /// Authorized by an ephemeral join key: removed once offline for the
    /// controller's `ephemeralMemberTimeoutSeconds`.
    pub ephemeral: bool,
    /// Its tags (ZeroTier's `[[id, value], ...]`), by id.
    pub tags: Vec<(u32, u32)>,
    /// The ids of the capabilities it holds, ascending.
    pub capabilities: Vec<u32>,
}

impl Member {
    /// A member with the defaults (not authorized, no IPs), revision 0 (the
    /// first save makes it 1).
    pub fn new(network_id: NetworkId, address: Address, now_ms: u64) -> Self {
        Self {
            address,
            network_id,
            authorized: false,
            active_bridge: false,
            ip_assignments: Vec::new(),
            no_auto_assign_ips: false,
            creation_time: now_ms,
            revision: 0,
            last_authorized_time: 0,
            last_deauthorized_time: 0,
            name: String::new(),
            identity: None,
            versions: None,
            advertised_routes: Vec::new(),
            approved_routes: Vec::new(),
            ephemeral: false,
            tags: Vec::new(),
            capabilities: Vec::new(),
        }
    }

    /// The routes via this member its network carries: those it
    /// advertises that an admin approved.
    pub fn routes_in_use(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.approved_routes
            .iter()
            .copied()
            .filter(|r| self.advertised_routes.contains(r))
    }

    /// Authorizes or deauthorizes, stamping the time when it changes.
    pub fn set_authorized(&mut self, authorized: bool, now_ms: u64) {
        if authorized != self.authorized {
            self.authorized = authorized;
            if authorized {
                self.last_authorized_time = now_ms;
            } else {
                self.last_deauthorized_time = now_ms;
            }
        }
    }

    /// Whether it holds an IPv4 address.
    pub fn has_ipv4(&self) -> bool {
        self.ip_assignments.iter().any(IpAddr::is_ipv4)
    }

    /// Whether it holds an IPv6 address.
    pub fn has_ipv6(&self) -> bool {
        self.ip_assignments.iter().any(IpAddr::is_ipv6)
    }

    /// The JSON form, as the store writes it (the API adds `ipAssignmentError`).
    pub fn to_json(&self) -> Value {
        let address = self.address.to_string();
        json!({
            "id": address,
            "address": address,
            "nwid": self.network_id.to_string(),
            "objtype": "member",
            "authorized": self.authorized,
            "activeBridge": self.active_bridge,
            "ipAssignments": self.ip_assignments.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "noAutoAssignIps": self.no_auto_assign_ips,
            "creationTime": self.creation_time,
            "revision": self.revision,
            "lastAuthorizedTime": self.last_authorized_time,
            "lastDeauthorizedTime": self.last_deauthorized_time,
            "name": self.name,
            "identity": self.identity,
            "capabilities": self.capabilities,
            "tags": self.tags.iter().map(|&(id, value)| json!([id, value])).collect::<Vec<_>>(),
            // ZeroTier's fields, at its values for "unknown".
            "vMajor": self.versions.map_or(-1, |v| i64::from(v.major)),
            "vMinor": self.versions.map_or(-1, |v| i64::from(v.minor)),
            "vRev": self.versions.map_or(-1, |v| i64::from(v.revision)),
            "vProto": self.versions.map_or(-1, |v| i64::from(v.protocol)),
            "advertisedRoutes": self.advertised_routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "approvedRoutes": self.approved_routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ephemeral": self.ephemeral,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nwid() -> NetworkId {
        "8056c2e21c000001".parse().unwrap()
    }

    #[test]
    fn network_defaults_and_json_names() {
        let n = Network::new(nwid(), 1234);
        let j = n.to_json();
        assert_eq!(j["id"], "8056c2e21c000001");
        assert_eq!(j["nwid"], "8056c2e21c000001");
        assert_eq!(j["private"], true);
        assert_eq!(j["mtu"], 2800);
        assert_eq!(j["multicastLimit"], 32);
        assert_eq!(j["enableBroadcast"], true);
        assert_eq!(j["v4AssignMode"], json!({"zt": true}));
        assert_eq!(j["creationTime"], 1234);
        assert_eq!(j["ipAssignmentPools"], json!([]));
        assert_eq!(j["routes"], json!([]));
    }

    #[test]
    fn member_defaults_and_json_names() {
        let addr: Address = "a1b2c3d4e5".parse().unwrap();
        let mut m = Member::new(nwid(), addr, 5);
        let j = m.to_json();
        for key in ["id", "address"] {
            assert_eq!(j[key], "a1b2c3d4e5");
        }
        assert_eq!(j["nwid"], "8056c2e21c000001");
        assert_eq!(j["authorized"], false);
        assert_eq!(j["activeBridge"], false);
        assert_eq!(j["noAutoAssignIps"], false);
        assert_eq!(j["ipAssignments"], json!([]));
        m.set_authorized(true, 10);
        m.set_authorized(true, 20);
        assert_eq!(m.last_authorized_time, 10);
        m.set_authorized(false, 30);
        assert_eq!(m.last_deauthorized_time, 30);
    }

    #[test]
    fn prefix_len_from_the_most_specific_managed_route() {
        let mut n = Network::new(nwid(), 0);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(n.prefix_len_for(ip), 24);
        assert_eq!(n.prefix_len_for("2001:db8::1".parse().unwrap()), 64);
        n.routes = vec![
            ManagedRouteSpec {
                target: "10.0.0.0/8".parse().unwrap(),
                via: None,
            },
            ManagedRouteSpec {
                target: "10.1.0.0/16".parse().unwrap(),
                via: None,
            },
            ManagedRouteSpec {
                target: "10.1.2.0/24".parse().unwrap(),
                via: Some("10.0.0.1".parse().unwrap()),
            },
        ];
        assert_eq!(n.prefix_len_for(ip), 16);
        assert_eq!(n.prefix_len_for("10.9.9.9".parse().unwrap()), 8);
    }

    #[test]
    fn pools_overlap() {
        let p = |a: &str, b: &str| IpPool {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        };
        assert!(p("10.0.0.1", "10.0.0.9").overlaps(&p("10.0.0.9", "10.0.0.20")));
        assert!(!p("10.0.0.1", "10.0.0.9").overlaps(&p("10.0.0.10", "10.0.0.20")));
        assert!(!p("0.0.0.1", "0.0.0.9").overlaps(&p("::1", "::9")));
        assert!(p("10.0.0.1", "10.0.0.9").contains("10.0.0.9".parse().unwrap()));
        assert!(!p("10.0.0.1", "10.0.0.9").contains("::a00:5".parse().unwrap()));
    }
}
