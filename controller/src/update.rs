//! Partial updates from JSON, checked whole before anything changes.
//!
//! A body names only the fields it changes. Unknown field names are ignored
//! (as ZeroTier does); a known field with a wrong type or an impossible value
//! refuses the whole update with a [`FieldError`] naming the field, e.g.
//! `ipAssignmentPools[1].ipRangeEnd: 10.0.0.5 is before ipRangeStart 10.0.0.9`.
//! The functions here work on a copy and return it, so a refused update
//! leaves the original untouched.

use std::net::IpAddr;

use serde_json::{Map, Value};
use vnet_node::core::constants::{NETWORK_MTU_MAX_BYTES, NETWORK_MTU_MIN_BYTES};
use vnet_node::core::network_id::NetworkId;

use vnet_node::core::Identity;
use vnet_node::core::constants::DNS_DOMAIN_MAX_LEN_BYTES;
use vnet_node::core::constants::MAX_ADVERTISED_ROUTES;
use vnet_node::core::constants::{
    MAX_MEMBER_CAPABILITIES, MAX_MEMBER_TAGS, MAX_NETWORK_CAPABILITIES, MAX_NETWORK_TAGS,
};
use vnet_node::core::message::Versions;
use vnet_node::core::netconf::NetworkDns;
use vnet_node::core::netconf::capabilities_problem;
use vnet_node::core::rules::{Capability, RuleSet};

use crate::ip::{Cidr, is_assignable, to_u128};
use crate::join_keys::JoinKey;
use crate::model::{IpPool, ManagedRouteSpec, Member, Network, TagDefinition};
use vnet_node::core::address::Address;

/// Longest network name, in bytes.
pub const MAX_NAME_LEN: usize = 127;
/// Most address pools per network.
pub const MAX_POOLS: usize = 256;
/// Most managed routes per network (ZeroTier's `ZT_MAX_NETWORK_ROUTES`).
pub const MAX_ROUTES: usize = 64;
/// Most addresses per member (ZeroTier's `ZT_MAX_ZT_ASSIGNED_ADDRESSES`).
pub const MAX_MEMBER_IPS: usize = 32;

/// A refused update: the field (a JSON path such as `routes[0].target`) and
/// what is wrong with it. Displays as `field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `value` as short JSON text for a message.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(60).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn object<'a>(body: &'a Value, field: &str) -> Result<&'a Map<String, Value>, FieldError> {
    body.as_object().ok_or_else(|| {
        FieldError::new(
            field,
            format!("expected a JSON object, got {}", describe(body)),
        )
    })
}

/// A boolean as ZeroTier's controller reads one (`OSUtils::jsonBool`), so
/// its web UIs work unchanged: a JSON boolean; a number, true when above 0
/// (ZeroUI sends `"private": 0`); a string, true when it starts with `t`,
/// `T` or `1` (ztncui sends `"authorized": "true"`). Anything else is refused.
fn boolean(value: &Value, field: &str) -> Result<bool, FieldError> {
    match value {
        Value::Bool(b) => Ok(*b),
        // ZeroTier casts to an unsigned 64-bit integer: a negative number
        // wraps (true), a fraction truncates.
        Value::Number(n) => Ok(match n.as_u64() {
            Some(u) => u > 0,
            None => n.as_i64().is_some() || n.as_f64().is_some_and(|f| f >= 1.0),
        }),
        Value::String(s) => Ok(matches!(s.as_bytes().first(), Some(b't' | b'T' | b'1'))),
        _ => Err(FieldError::new(
            field,
            format!("expected true or false, got {}", describe(value)),
        )),
    }
}

/// An integer in `min..=max`: a JSON number, or a string of digits as
/// ZeroTier's controller also takes (`OSUtils::jsonInt`).
fn integer(value: &Value, field: &str, min: u64, max: u64) -> Result<u64, FieldError> {
    let n = value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(FieldError::new(
            field,
            format!(
                "expected an integer from {min} to {max}, got {}",
                describe(value)
            ),
        )),
    }
}

fn ip(value: &Value, field: &str) -> Result<IpAddr, FieldError> {
    let text = value.as_str().ok_or_else(|| {
        FieldError::new(
            field,
            format!("expected an IP address string, got {}", describe(value)),
        )
    })?;
    text.parse()
        .map_err(|_| FieldError::new(field, format!("{text:?} is not an IPv4 or IPv6 address")))
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Applies `body` to a copy of `network`; the copy, or why not.
pub fn network_update(network: &Network, body: &Value) -> Result<Network, FieldError> {
    let body = object(body, "body")?;
    let mut n = network.clone();
    for (key, value) in body {
        match key.as_str() {
            "name" => n.name = name(value)?,
            "private" => n.private = boolean(value, key)?,
            "mtu" => {
                n.mtu = integer(
                    value,
                    key,
                    NETWORK_MTU_MIN_BYTES.into(),
                    NETWORK_MTU_MAX_BYTES.into(),
                )? as u16
            }
            "multicastLimit" => n.multicast_limit = integer(value, key, 0, u32::MAX.into())? as u32,
            "enableBroadcast" => n.enable_broadcast = boolean(value, key)?,
            "v4AssignMode" => {
                let mode = object(value, key)?;
                if let Some(zt) = mode.get("zt") {
                    n.v4_assign_zt = boolean(zt, "v4AssignMode.zt")?;
                }
            }
            "ipAssignmentPools" => n.ip_assignment_pools = pools(value)?,
            "routes" => n.routes = routes(value)?,
            "rulesSource" => n.rules_source = text(value, key, MAX_RULES_SOURCE_LEN)?,
            "rules" => n.rules = rule_set(value)?,
            "capabilities" => n.capabilities = capabilities(value)?,
            "tags" => n.tags = tag_definitions(value)?,
            "authTokens" if !is_empty(value) => return Err(not_yet(key, "none")),
            "v6AssignMode" => {
                for (mode, on) in object(value, key)? {
                    let on = boolean(on, &format!("v6AssignMode.{mode}"))?;
                    match mode.as_str() {
                        "zt" => n.v6_assign.zt = on,
                        "rfc4193" => n.v6_assign.rfc4193 = on,
                        "6plane" => n.v6_assign.sixplane = on,
                        // ZeroTier ignores modes it does not know.
                        _ => {}
                    }
                }
            }
            // Made, listed and revoked through `.../<nwid>/key` only.
            "joinKeys" => {
                return Err(FieldError::new(
                    key,
                    "join keys are managed at /controller/network/<nwid>/key",
                ));
            }
            "dns" => n.dns = dns(value)?,
            _ => {}
        }
    }
    if let Some(problem) = capabilities_problem(Some(&n.rules), &n.capabilities) {
        return Err(FieldError::new("capabilities", problem));
    }
    Ok(n)
}

/// A list of definitions keyed by a unique `id` (a network's `tags` and
/// `capabilities`): ZeroTier's "none" is empty; at most `max`; `define`
/// reads one from its object, field path and id.
fn definitions<T>(
    value: &Value,
    field: &str,
    what: &str,
    max: usize,
    define: impl Fn(&Map<String, Value>, &str, u32) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    if is_empty(value) {
        return Ok(Vec::new());
    }
    let items = bounded_array(value, field, what, max, field)?;
    let mut ids: Vec<u32> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let obj = object(item, &path)?;
        let id_path = format!("{path}.id");
        let id = integer(
            obj.get("id").unwrap_or(&Value::Null),
            &id_path,
            0,
            u32::MAX.into(),
        )? as u32;
        if ids.contains(&id) {
            return Err(FieldError::new(
                id_path,
                format!("id {id} is defined twice"),
            ));
        }
        ids.push(id);
        out.push(define(obj, &path, id)?);
    }
    Ok(out)
}

/// A network's `capabilities` (ZeroTier's `[{id, rules}, ...]`; other
/// fields, such as the rules compiler's `default`, are ignored).
fn capabilities(value: &Value) -> Result<Vec<Capability>, FieldError> {
    const WHAT: &str = "{id, rules}";
    definitions(
        value,
        "capabilities",
        WHAT,
        MAX_NETWORK_CAPABILITIES,
        |obj, path, id| {
            let bad_rules = |e: String| FieldError::new(format!("{path}.rules"), e);
            let rules = match obj.get("rules") {
                None | Some(Value::Null) => RuleSet::default(),
                Some(r) => RuleSet::from_zerotier_json(r).map_err(|e| bad_rules(e.to_string()))?,
            };
            Capability::new(id, rules).map_err(|e| bad_rules(e.to_string()))
        },
    )
}

/// A network's `tags` (ZeroTier's `[{id, default}, ...]`; `default` may be
/// null or absent).
fn tag_definitions(value: &Value) -> Result<Vec<TagDefinition>, FieldError> {
    definitions(
        value,
        "tags",
        "{id, default}",
        MAX_NETWORK_TAGS,
        |obj, path, id| {
            let default = match obj.get("default") {
                None | Some(Value::Null) => None,
                Some(d) => Some(integer(d, &format!("{path}.default"), 0, u32::MAX.into())? as u32),
            };
            Ok(TagDefinition { id, default })
        },
    )
}

/// A member's `tags` (ZeroTier's `[[id, value], ...]`), sorted by id; a tag
/// given twice is refused.
fn member_tags(value: &Value) -> Result<Vec<(u32, u32)>, FieldError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let items = bounded_array(value, "tags", "[id, value] pairs", MAX_MEMBER_TAGS, "tags")?;
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("tags[{i}]");
        let pair = match item.as_array().map(Vec::as_slice) {
            Some([id, value]) => (
                integer(id, &format!("{field}[0]"), 0, u32::MAX.into())? as u32,
                integer(value, &format!("{field}[1]"), 0, u32::MAX.into())? as u32,
            ),
            _ => {
                return Err(FieldError::new(
                    field,
                    format!("expected [id, value], got {}", describe(item)),
                ));
            }
        };
        if out.iter().any(|&(id, _)| id == pair.0) {
            return Err(FieldError::new(
                field,
                format!("tag id {} is given twice", pair.0),
            ));
        }
        out.push(pair);
    }
    out.sort_unstable();
    Ok(out)
}

/// A member's `capabilities` (ZeroTier's `[id, ...]`), ascending, each once.
fn member_capabilities(value: &Value) -> Result<Vec<u32>, FieldError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let items = bounded_array(
        value,
        "capabilities",
        "capability ids",
        MAX_MEMBER_CAPABILITIES,
        "capabilities",
    )?;
    let mut out = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            integer(v, &format!("capabilities[{i}]"), 0, u32::MAX.into()).map(|n| n as u32)
        })
        .collect::<Result<Vec<u32>, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Longest `rulesSource` kept, in bytes.
pub const MAX_RULES_SOURCE_LEN: usize = 65_536;

/// A field ZeroTier has that this controller cannot honour yet: refused
/// (never taken and dropped), saying what it takes for now.
fn not_yet(field: &str, takes: &str) -> FieldError {
    FieldError::new(field, format!("not supported yet; only {takes} is taken"))
}

/// A network's `rules` (ZeroTier's JSON).
fn rule_set(value: &Value) -> Result<RuleSet, FieldError> {
    RuleSet::from_zerotier_json(value).map_err(|e| FieldError::new("rules", e.to_string()))
}

/// Whether `value` holds nothing: null, `[]`, `{}`, or ZeroTier's `[{}]`.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items
            .iter()
            .all(|i| i.as_object().is_some_and(Map::is_empty)),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// ZeroTier's `dns` (`{"domain": "...", "servers": ["ip", ...]}`): none when
/// null or both empty; the domain lowercased, a trailing dot dropped; a
/// domain needs servers and servers a domain.
fn dns(value: &Value) -> Result<Option<NetworkDns>, FieldError> {
    if value.is_null() {
        return Ok(None);
    }
    let obj = object(value, "dns")?;
    let domain = match obj.get("domain") {
        None | Some(Value::Null) => String::new(),
        Some(v) => text(v, "dns.domain", DNS_DOMAIN_MAX_LEN_BYTES + 1)?
            .trim_end_matches('.')
            .to_ascii_lowercase(),
    };
    let servers = match obj.get("servers") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => array(v, "dns.servers", "IP address strings")?
            .iter()
            .enumerate()
            .map(|(i, s)| ip(s, &format!("dns.servers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if domain.is_empty() && servers.is_empty() {
        return Ok(None);
    }
    let dns = NetworkDns { domain, servers };
    match dns.problem() {
        None => Ok(Some(dns)),
        Some(p) if p.starts_with("domain") => Err(FieldError::new("dns.domain", p)),
        Some(p) => Err(FieldError::new("dns.servers", p)),
    }
}

/// A string of at most `max` bytes.
fn text(value: &Value, field: &str, max: usize) -> Result<String, FieldError> {
    let text = value.as_str().ok_or_else(|| {
        FieldError::new(field, format!("expected a string, got {}", describe(value)))
    })?;
    if text.len() > max {
        return Err(FieldError::new(field, format!("longer than {max} bytes")));
    }
    Ok(text.to_string())
}

fn name(value: &Value) -> Result<String, FieldError> {
    text(value, "name", MAX_NAME_LEN)
}

fn array<'a>(value: &'a Value, field: &str, what: &str) -> Result<&'a Vec<Value>, FieldError> {
    value.as_array().ok_or_else(|| {
        FieldError::new(
            field,
            format!("expected an array of {what}, got {}", describe(value)),
        )
    })
}

/// [`array`], refused past `max` items ("at most `max` `noun`").
fn bounded_array<'a>(
    value: &'a Value,
    field: &str,
    what: &str,
    max: usize,
    noun: &str,
) -> Result<&'a Vec<Value>, FieldError> {
    let items = array(value, field, what)?;
    if items.len() > max {
        return Err(FieldError::new(field, format!("at most {max} {noun}")));
    }
    Ok(items)
}

fn pools(value: &Value) -> Result<Vec<IpPool>, FieldError> {
    const WHAT: &str = "{ipRangeStart, ipRangeEnd}";
    let items = bounded_array(value, "ipAssignmentPools", WHAT, MAX_POOLS, "pools")?;
    let mut out: Vec<IpPool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("ipAssignmentPools[{i}]");
        let obj = item.as_object().ok_or_else(|| {
            FieldError::new(
                &field,
                format!("expected an object {WHAT}, got {}", describe(item)),
            )
        })?;
        let end_of = |key: &str| -> Result<IpAddr, FieldError> {
            let f = format!("{field}.{key}");
            let v = obj.get(key).ok_or_else(|| FieldError::new(&f, "missing"))?;
            ip(v, &f)
        };
        let start = end_of("ipRangeStart")?;
        let end = end_of("ipRangeEnd")?;
        let end_field = format!("{field}.ipRangeEnd");
        if start.is_ipv4() != end.is_ipv4() {
            return Err(FieldError::new(
                end_field,
                format!(
                    "{end} is {} but ipRangeStart {start} is {}",
                    family(end),
                    family(start)
                ),
            ));
        }
        if to_u128(end) < to_u128(start) {
            return Err(FieldError::new(
                end_field,
                format!("{end} is before ipRangeStart {start}"),
            ));
        }
        let pool = IpPool { start, end };
        if let Some(j) = out.iter().position(|p| p.overlaps(&pool)) {
            let other = out[j];
            return Err(FieldError::new(
                field,
                format!(
                    "{start}-{end} overlaps ipAssignmentPools[{j}] ({}-{})",
                    other.start, other.end
                ),
            ));
        }
        out.push(pool);
    }
    Ok(out)
}

fn routes(value: &Value) -> Result<Vec<ManagedRouteSpec>, FieldError> {
    const WHAT: &str = "{target, via}";
    let items = bounded_array(value, "routes", WHAT, MAX_ROUTES, "routes")?;
    let mut out: Vec<ManagedRouteSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("routes[{i}]");
        let obj = item.as_object().ok_or_else(|| {
            FieldError::new(
                &field,
                format!("expected an object {WHAT}, got {}", describe(item)),
            )
        })?;
        let target_field = format!("{field}.target");
        let target = obj
            .get("target")
            .ok_or_else(|| FieldError::new(&target_field, "missing"))?;
        let target: Cidr = target
            .as_str()
            .ok_or_else(|| {
                FieldError::new(
                    &target_field,
                    format!(
                        "expected a string like \"10.0.0.0/24\", got {}",
                        describe(target)
                    ),
                )
            })?
            .parse()
            .map_err(|e: crate::ip::CidrError| FieldError::new(&target_field, e.to_string()))?;
        let via_field = format!("{field}.via");
        let via = match obj
            .get("via")
            .and_then(Value::as_str)
            .map(str::parse::<IpAddr>)
        {
            // As ZeroTier: a via that is no address (null, absent, or ztnet's
            // "") means none.
            None | Some(Err(_)) => None,
            Some(Ok(via)) => {
                if via.is_ipv4() != target.addr().is_ipv4() {
                    return Err(FieldError::new(
                        via_field,
                        format!(
                            "{via} is {} but target {target} is {}",
                            family(via),
                            family(target.addr())
                        ),
                    ));
                }
                Some(via)
            }
        };
        let route = ManagedRouteSpec { target, via };
        if let Some(j) = out.iter().position(|r| *r == route) {
            return Err(FieldError::new(field, format!("duplicates routes[{j}]")));
        }
        out.push(route);
    }
    Ok(out)
}

/// Applies `body` to a copy of `member` at `now_ms`; the copy, or why not.
/// Whether its addresses are free in the network is the controller's check.
pub fn member_update(member: &Member, body: &Value, now_ms: u64) -> Result<Member, FieldError> {
    let body = object(body, "body")?;
    let mut m = member.clone();
    for (key, value) in body {
        match key.as_str() {
            "authorized" => m.set_authorized(boolean(value, key)?, now_ms),
            "activeBridge" => m.active_bridge = boolean(value, key)?,
            "noAutoAssignIps" => m.no_auto_assign_ips = boolean(value, key)?,
            "ipAssignments" => m.ip_assignments = member_ips(value)?,
            "name" => m.name = name(value)?,
            "identity" if !value.is_null() => m.identity = Some(posted_identity(&m, value)?),
            "approvedRoutes" => m.approved_routes = cidrs(value, key, MAX_ROUTES)?,
            "ephemeral" => m.ephemeral = boolean(value, key)?,
            "tags" => m.tags = member_tags(value)?,
            "capabilities" => m.capabilities = member_capabilities(value)?,
            _ => {}
        }
    }
    Ok(m)
}

/// A member's `identity` as an admin posts it (ZeroTier takes one only
/// while none is known): checked in full (the key hashes to the member's
/// address); refused if another one is pinned.
fn posted_identity(m: &Member, value: &Value) -> Result<String, FieldError> {
    const FIELD: &str = "identity";
    let text = value.as_str().ok_or_else(|| {
        FieldError::new(
            FIELD,
            format!("expected an identity string, got {}", describe(value)),
        )
    })?;
    let identity: Identity = text
        .parse()
        .map_err(|e| FieldError::new(FIELD, format!("not a valid identity: {e}")))?;
    if identity.address() != m.address {
        return Err(FieldError::new(
            FIELD,
            format!(
                "is the identity of {}, not of {}",
                identity.address(),
                m.address
            ),
        ));
    }
    let public = identity.to_text(false);
    match &m.identity {
        Some(pinned) if *pinned != public => Err(FieldError::new(
            FIELD,
            format!("{} is pinned to another key ({pinned})", m.address),
        )),
        _ => Ok(public),
    }
}

/// A stored identity: `<address>:0:<128 hex digits>` for this member (its
/// key was checked when it was pinned; not hashed again at every start).
fn stored_identity(address: Address, value: &Value) -> Result<String, FieldError> {
    let text = value.as_str().unwrap_or_default();
    let well_formed = text.split_once(":0:").is_some_and(|(a, key)| {
        a == address.to_string() && key.len() == 128 && key.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if !well_formed {
        return Err(FieldError::new(
            "identity",
            format!(
                "{} is not the public identity of {address}",
                describe(value)
            ),
        ));
    }
    Ok(text.to_string())
}

/// A list of CIDR networks (at most `max`, none twice).
fn cidrs(value: &Value, field: &str, max: usize) -> Result<Vec<Cidr>, FieldError> {
    let items = bounded_array(value, field, "CIDR strings", max, "routes")?;
    let mut out: Vec<Cidr> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let text = item.as_str().ok_or_else(|| {
            FieldError::new(
                &f,
                format!("expected a CIDR string, got {}", describe(item)),
            )
        })?;
        let cidr: Cidr = text
            .parse()
            .map_err(|e: crate::ip::CidrError| FieldError::new(&f, e.to_string()))?;
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    Ok(out)
}

/// A stored version number: -1 (unknown) or `0..=max`.
fn stored_version(
    body: &Map<String, Value>,
    key: &str,
    max: u64,
) -> Result<Option<u64>, FieldError> {
    match body.get(key) {
        None => Ok(None),
        Some(v) if v.as_i64() == Some(-1) => Ok(None),
        Some(v) => integer(v, key, 0, max).map(Some),
    }
}

fn member_ips(value: &Value) -> Result<Vec<IpAddr>, FieldError> {
    let items = array(value, "ipAssignments", "IP address strings")?;
    if items.len() > MAX_MEMBER_IPS {
        return Err(FieldError::new(
            "ipAssignments",
            format!("at most {MAX_MEMBER_IPS} addresses"),
        ));
    }
    let mut out: Vec<IpAddr> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("ipAssignments[{i}]");
        let addr = ip(item, &field)?;
        if !is_assignable(addr) {
            return Err(FieldError::new(
                field,
                format!("{addr} is not a unicast address a member can hold"),
            ));
        }
        if let Some(j) = out.iter().position(|&a| a == addr) {
            return Err(FieldError::new(
                field,
                format!("{addr} is listed twice (also ipAssignments[{j}])"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

fn stored_u64(body: &Map<String, Value>, key: &str) -> Result<u64, FieldError> {
    match body.get(key) {
        None => Ok(0),
        Some(v) => integer(v, key, 0, u64::MAX),
    }
}

fn check_id(body: &Map<String, Value>, keys: &[&str], expected: &str) -> Result<(), FieldError> {
    for &key in keys {
        if let Some(v) = body.get(key)
            && v.as_str() != Some(expected)
        {
            return Err(FieldError::new(
                key,
                format!("is {} but the file is for {expected}", describe(v)),
            ));
        }
    }
    Ok(())
}

/// A network from its stored JSON (the file for `id`): every field checked
/// as in an update, plus `creationTime` and `revision`.
pub fn network_from_stored(id: NetworkId, body: &Value) -> Result<Network, FieldError> {
    let obj = object(body, "file")?;
    check_id(obj, &["id", "nwid"], &id.to_string())?;
    let mut updatable = obj.clone();
    let keys = updatable.remove("joinKeys");
    let mut n = network_update(&Network::new(id, 0), &Value::Object(updatable))?;
    if let Some(keys) = keys {
        let items = array(&keys, "joinKeys", "join keys")?;
        for (i, k) in items.iter().enumerate() {
            let key =
                JoinKey::from_json(k).map_err(|e| FieldError::new(format!("joinKeys[{i}]"), e))?;
            n.join_keys.push(key);
        }
    }
    n.creation_time = stored_u64(obj, "creationTime")?;
    n.revision = stored_u64(obj, "revision")?;
    Ok(n)
}

/// A member from its stored JSON (the file for `address` on `nwid`).
pub fn member_from_stored(
    nwid: NetworkId,
    address: Address,
    body: &Value,
) -> Result<Member, FieldError> {
    let obj = object(body, "file")?;
    check_id(obj, &["id", "address"], &address.to_string())?;
    check_id(obj, &["nwid"], &nwid.to_string())?;
    // The stored identity is not hashed again (see stored_identity).
    let mut updatable = obj.clone();
    updatable.remove("identity");
    let mut m = member_update(&Member::new(nwid, address, 0), &Value::Object(updatable), 0)?;
    m.identity = match obj.get("identity") {
        None | Some(Value::Null) => None,
        Some(v) => Some(stored_identity(address, v)?),
    };
    let versions = (
        stored_version(obj, "vProto", u8::MAX.into())?,
        stored_version(obj, "vMajor", u8::MAX.into())?,
        stored_version(obj, "vMinor", u8::MAX.into())?,
        stored_version(obj, "vRev", u16::MAX.into())?,
    );
    if let (Some(protocol), Some(major), Some(minor), Some(revision)) = versions {
        m.versions = Some(Versions {
            protocol: protocol as u8,
            major: major as u8,
            minor: minor as u8,
            revision: revision as u16,
        });
    }
    if let Some(routes) = obj.get("advertisedRoutes") {
        m.advertised_routes = cidrs(routes, "advertisedRoutes", MAX_ADVERTISED_ROUTES)?;
    }
    m.creation_time = stored_u64(obj, "creationTime")?;
    m.revision = stored_u64(obj, "revision")?;
    m.last_authorized_time = stored_u64(obj, "lastAuthorizedTime")?;
    m.last_deauthorized_time = stored_u64(obj, "lastDeauthorizedTime")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network() -> Network {
        Network::new("8056c2e21c000001".parse().unwrap(), 1)
    }

    fn member() -> Member {
        Member::new(
            "8056c2e21c000001".parse().unwrap(),
            "a1b2c3d4e5".parse().unwrap(),
            1,
        )
    }

    fn refused(body: Value) -> String {
        let before = network();
        let e = network_update(&before, &body).expect_err("refused");
        e.to_string()
    }

    #[test]
    fn network_fields_apply() {
        let n = network_update(
            &network(),
            &json!({
                "name": "office", "private": false, "mtu": 1400, "multicastLimit": 0,
                "enableBroadcast": false, "v4AssignMode": {"zt": false},
                "ipAssignmentPools": [
                    {"ipRangeStart": "10.0.0.10", "ipRangeEnd": "10.0.0.20"},
                    {"ipRangeStart": "2001:db8::1", "ipRangeEnd": "2001:db8::ff"}
                ],
                "routes": [{"target": "10.0.0.0/24", "via": null},
                           {"target": "0.0.0.0/0", "via": "10.0.0.1"},
                           {"target": "2001:db8::/64"}],
                "unknownField": [1, 2, 3], "id": "ignored", "revision": 99, "creationTime": 7,
            }),
        )
        .unwrap();
        assert_eq!(n.name, "office");
        assert!(!n.private && !n.enable_broadcast && !n.v4_assign_zt);
        assert_eq!((n.mtu, n.multicast_limit), (1400, 0));
        assert_eq!(n.ip_assignment_pools.len(), 2);
        assert_eq!(n.routes.len(), 3);
        assert_eq!(n.routes[1].via, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(n.routes[2].via, None);
        // Read-only fields are not taken from an update.
        assert_eq!((n.revision, n.creation_time), (0, 1));
        // An empty update and v4AssignMode without zt change nothing.
        assert_eq!(network_update(&n, &json!({})).unwrap(), n);
        assert_eq!(network_update(&n, &json!({"v4AssignMode": {}})).unwrap(), n);
    }

    #[test]
    fn every_refusal_names_its_field() {
        let cases = [
            (json!([]), "body: expected a JSON object, got []"),
            (json!({"name": 5}), "name: expected a string, got 5"),
            (
                json!({"name": "x".repeat(128)}),
                "name: longer than 127 bytes",
            ),
            (
                json!({"private": null}),
                "private: expected true or false, got null",
            ),
            (
                json!({"mtu": 1279}),
                "mtu: expected an integer from 1280 to 10000, got 1279",
            ),
            (
                json!({"mtu": 10001}),
                "mtu: expected an integer from 1280 to 10000, got 10001",
            ),
            (
                json!({"mtu": 1500.5}),
                "mtu: expected an integer from 1280 to 10000, got 1500.5",
            ),
            (
                json!({"multicastLimit": -1}),
                "multicastLimit: expected an integer from 0 to 4294967295, got -1",
            ),
            (
                json!({"v4AssignMode": true}),
                "v4AssignMode: expected a JSON object, got true",
            ),
            (
                json!({"ipAssignmentPools": {}}),
                "ipAssignmentPools: expected an array of {ipRangeStart, ipRangeEnd}, got {}",
            ),
            (
                json!({"ipAssignmentPools": ["10.0.0.1"]}),
                "ipAssignmentPools[0]: expected an object {ipRangeStart, ipRangeEnd}, got \"10.0.0.1\"",
            ),
            (
                json!({"ipAssignmentPools": [{"ipRangeEnd": "10.0.0.1"}]}),
                "ipAssignmentPools[0].ipRangeStart: missing",
            ),
            (
                json!({"ipAssignmentPools": [{"ipRangeStart": "10.0.0.1"}]}),
                "ipAssignmentPools[0].ipRangeEnd: missing",
            ),
            (
                json!({"ipAssignmentPools": [{"ipRangeStart": "10.0.0", "ipRangeEnd": "10.0.0.1"}]}),
                "ipAssignmentPools[0].ipRangeStart: \"10.0.0\" is not an IPv4 or IPv6 address",
            ),
            (
                json!({"ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": 7}]}),
                "ipAssignmentPools[0].ipRangeEnd: expected an IP address string, got 7",
            ),
            (
                json!({"ipAssignmentPools": [
                {"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.2"},
                {"ipRangeStart": "10.0.0.9", "ipRangeEnd": "10.0.0.5"}]}),
                "ipAssignmentPools[1].ipRangeEnd: 10.0.0.5 is before ipRangeStart 10.0.0.9",
            ),
            (
                json!({"ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "::1"}]}),
                "ipAssignmentPools[0].ipRangeEnd: ::1 is IPv6 but ipRangeStart 10.0.0.1 is IPv4",
            ),
            (
                json!({"ipAssignmentPools": [
                {"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.9"},
                {"ipRangeStart": "10.0.1.0", "ipRangeEnd": "10.0.1.9"},
                {"ipRangeStart": "10.0.0.5", "ipRangeEnd": "10.0.0.20"}]}),
                "ipAssignmentPools[2]: 10.0.0.5-10.0.0.20 overlaps ipAssignmentPools[0] (10.0.0.1-10.0.0.9)",
            ),
            (
                json!({"routes": "10.0.0.0/24"}),
                "routes: expected an array of {target, via}, got \"10.0.0.0/24\"",
            ),
            (
                json!({"routes": [5]}),
                "routes[0]: expected an object {target, via}, got 5",
            ),
            (
                json!({"routes": [{"via": null}]}),
                "routes[0].target: missing",
            ),
            (
                json!({"routes": [{"target": 10}]}),
                "routes[0].target: expected a string like \"10.0.0.0/24\", got 10",
            ),
            (
                json!({"routes": [{"target": "10.0.0.1/24"}]}),
                "routes[0].target: 10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)",
            ),
            (
                json!({"routes": [{"target": "10.0.0.0/33"}]}),
                "routes[0].target: prefix length \"33\" is not 0 to 32",
            ),
            (
                json!({"routes": [{"target": "10.0.0.0"}]}),
                "routes[0].target: \"10.0.0.0\" is not in CIDR form ADDRESS/PREFIXLEN",
            ),
            (
                json!({"routes": [{"target": "10.0.0.0/8", "via": "fe80::1"}]}),
                "routes[0].via: fe80::1 is IPv6 but target 10.0.0.0/8 is IPv4",
            ),
            (
                json!({"routes": [{"target": "10.0.0.0/8"}, {"target": "10.0.0.0/8", "via": null}]}),
                "routes[1]: duplicates routes[0]",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(refused(body.clone()), expected, "{body}");
        }
        let many: Vec<Value> = (0..65)
            .map(|i| json!({"target": format!("10.{i}.0.0/16")}))
            .collect();
        assert_eq!(
            refused(json!({"routes": many})),
            "routes: at most 64 routes"
        );
    }

    /// What ZeroTier's web UIs post, read as ZeroTier's controller reads it
    /// (`OSUtils::jsonBool`, `jsonInt`, a via that is no address).
    #[test]
    fn values_from_zerotier_uis_are_read_as_zerotier_reads_them() {
        let n = network_update(
            &network(),
            &json!({"private": 0, "enableBroadcast": "true", "mtu": "1500",
                    "multicastLimit": "64", "v4AssignMode": {"zt": "1"},
                    "routes": [{"target": "10.0.0.0/8", "via": ""},
                               {"target": "10.1.0.0/16", "via": "gw"},
                               {"target": "10.2.0.0/16", "via": false}]}),
        )
        .unwrap();
        assert!(!n.private && n.enable_broadcast && n.v4_assign_zt);
        assert_eq!((n.mtu, n.multicast_limit), (1500, 64));
        assert!(n.routes.iter().all(|r| r.via.is_none()));
        for (given, want) in [
            (json!(true), true),
            (json!(false), false),
            (json!(1), true),
            (json!(0), false),
            (json!(-1), true),
            (json!(0.5), false),
            (json!("true"), true),
            (json!("True"), true),
            (json!("1"), true),
            (json!("yes"), false),
            (json!("false"), false),
            (json!(""), false),
        ] {
            let m = member_update(&member(), &json!({ "authorized": given }), 5).unwrap();
            assert_eq!(m.authorized, want, "{given}");
        }
        for refused in [json!(null), json!([true]), json!({"v": true})] {
            let e = member_update(&member(), &json!({ "authorized": refused }), 5).unwrap_err();
            assert_eq!(e.field, "authorized");
        }
    }

    #[test]
    fn v6_assign_modes_are_kept_one_by_one_as_zerotier_reads_them() {
        let n = network_update(
            &network(),
            &json!({"v6AssignMode": {"rfc4193": "true", "6plane": 1, "bogus": true}}),
        )
        .unwrap();
        assert!(n.v6_assign.rfc4193 && n.v6_assign.sixplane && !n.v6_assign.zt);
        // A body naming one mode leaves the others as they were.
        let n =
            network_update(&n, &json!({"v6AssignMode": {"zt": true, "6plane": false}})).unwrap();
        assert!(n.v6_assign.rfc4193 && !n.v6_assign.sixplane && n.v6_assign.zt);
        assert_eq!(
            n.to_json()["v6AssignMode"],
            json!({"zt": true, "rfc4193": true, "6plane": false})
        );
        // What the store writes reads back the same.
        assert_eq!(
            network_update(&network(), &n.to_json()).unwrap().v6_assign,
            n.v6_assign
        );
    }

    #[test]
    fn dns_is_kept_checked_and_cleared_as_zerotier_uis_send_it() {
        let n = network_update(
            &network(),
            &json!({"dns": {"domain": "Home.ARPA.", "servers": ["10.121.16.53", "fd00::53"]}}),
        )
        .unwrap();
        assert_eq!(
            n.to_json()["dns"],
            json!({"domain": "home.arpa", "servers": ["10.121.16.53", "fd00::53"]})
        );
        // ztnet's clearDns.
        let cleared = network_update(&n, &json!({"dns": {"domain": "", "servers": []}})).unwrap();
        assert_eq!(cleared.dns, None);
        assert_eq!(
            cleared.to_json()["dns"],
            json!({"domain": "", "servers": []})
        );
        for (body, field) in [
            (
                json!({"dns": {"domain": "bad domain", "servers": ["10.0.0.1"]}}),
                "dns.domain",
            ),
            (
                json!({"dns": {"domain": "lan", "servers": []}}),
                "dns.servers",
            ),
            (
                json!({"dns": {"domain": "", "servers": ["10.0.0.1"]}}),
                "dns.domain",
            ),
            (
                json!({"dns": {"domain": "lan", "servers": ["nope"]}}),
                "dns.servers[0]",
            ),
            (
                json!({"dns": {"domain": "lan", "servers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]}}),
                "dns.servers",
            ),
            (json!({"dns": "lan"}), "dns"),
        ] {
            assert_eq!(
                network_update(&n, &body).unwrap_err().field,
                field,
                "{body}"
            );
        }
    }

    /// Every field ZeroTier's network and member objects have is returned;
    /// one posted is kept (names, `rulesSource`) or, while vnet cannot honour
    /// it, taken only at its default and otherwise refused naming it.
    #[test]
    fn zerotier_fields_are_kept_or_refused_never_dropped() {
        let n = network_update(
            &network(),
            &json!({"rules": [{"type": "ACTION_ACCEPT", "not": false, "or": false}],
                    "rulesSource": "accept;", "capabilities": [], "tags": [],
                    "authTokens": [{}], "dns": {"domain": "", "servers": []},
                    "v6AssignMode": {"rfc4193": false, "zt": false, "6plane": false}}),
        )
        .unwrap();
        assert_eq!(n.rules_source, "accept;");
        let j = n.to_json();
        for field in [
            "rules",
            "rulesSource",
            "capabilities",
            "tags",
            "v6AssignMode",
            "dns",
        ] {
            assert!(j.get(field).is_some(), "{field}");
        }
        let refused = [
            (json!({"rules": [{"type": "MATCH_NOPE"}]}), "rules"),
            (json!({"rules": {"type": "ACTION_DROP"}}), "rules"),
            (
                json!({"rules": [{"type": "ACTION_TEE", "address": "0"}]}),
                "rules",
            ),
            (
                json!({"capabilities": [{"id": 1, "rules": [{"type": "MATCH_NOPE"}]}]}),
                "capabilities[0].rules",
            ),
            (
                json!({"capabilities": [{"id": 1}, {"id": 1}]}),
                "capabilities[1].id",
            ),
            (
                json!({"capabilities": [{"rules": []}]}),
                "capabilities[0].id",
            ),
            (
                json!({"tags": [{"id": 1000, "default": -1}]}),
                "tags[0].default",
            ),
            (json!({"tags": [{"id": 7}, {"id": 7}]}), "tags[1].id"),
            (json!({"authTokens": {"abc": 0}}), "authTokens"),
            (
                json!({"v6AssignMode": {"rfc4193": [true]}}),
                "v6AssignMode.rfc4193",
            ),
            (json!({"v6AssignMode": true}), "v6AssignMode"),
            (json!({"rulesSource": 5}), "rulesSource"),
        ];
        // Rules are kept as given (ZeroTier's JSON back) and an empty list
        // is ZeroTier's "drop everything".
        let no_ssh = json!([
            {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6, "not": false, "or": false},
            {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22, "not": false, "or": false},
            {"type": "ACTION_DROP", "not": false, "or": false},
            {"type": "ACTION_ACCEPT", "not": false, "or": false}
        ]);
        let n = network_update(&network(), &json!({"rules": no_ssh})).unwrap();
        assert_eq!(n.to_json()["rules"], no_ssh);
        let n = network_update(&network(), &json!({"rules": []})).unwrap();
        assert_eq!(n.to_json()["rules"], json!([]));
        for (body, field) in refused {
            let e = network_update(&network(), &body).unwrap_err();
            assert_eq!(e.field, field, "{body}");
        }
        let m = member_update(
            &member(),
            &json!({"name": "laptop", "tags": [], "capabilities": []}),
            5,
        )
        .unwrap();
        assert_eq!(m.name, "laptop");
        let j = m.to_json();
        assert_eq!(j["name"], "laptop");
        for field in ["capabilities", "tags", "vMajor", "vMinor", "vRev", "vProto"] {
            assert!(j.get(field).is_some(), "{field}");
        }
        for (body, field) in [
            (json!({"tags": [[1000]]}), "tags[0]"),
            (json!({"tags": [[1000, 1], [1000, 2]]}), "tags[1]"),
            (json!({"tags": [[1000, "x"]]}), "tags[0][1]"),
            (json!({"capabilities": [-1]}), "capabilities[0]"),
            (json!({"capabilities": 1}), "capabilities"),
            (json!({"name": "x".repeat(128)}), "name"),
        ] {
            assert_eq!(member_update(&member(), &body, 5).unwrap_err().field, field);
        }
    }

    /// Tags and capabilities as ZeroTier's controller and its UIs write
    /// them: kept, given back in the same shape, and bounded.
    #[test]
    fn tags_and_capabilities_are_kept_in_zerotier_shape() {
        let accept_ssh = json!([
            {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22, "not": false, "or": false},
            {"type": "ACTION_ACCEPT", "not": false, "or": false}
        ]);
        let n = network_update(
            &network(),
            &json!({"capabilities": [{"id": 1000, "default": false, "rules": accept_ssh}],
                    "tags": [{"id": 2000, "default": 100}, {"id": 2001, "default": null}],
                    "rules": [{"type": "MATCH_TAGS_DIFFERENCE", "id": 2000, "value": 0,
                               "not": false, "or": false},
                              {"type": "ACTION_ACCEPT", "not": false, "or": false}]}),
        )
        .unwrap();
        let j = n.to_json();
        assert_eq!(
            j["capabilities"],
            json!([{"id": 1000, "rules": accept_ssh}])
        );
        assert_eq!(
            j["tags"],
            json!([{"id": 2000, "default": 100}, {"id": 2001, "default": null}])
        );
        assert_eq!(network_update(&network(), &j).unwrap(), n);
        // ZeroTier's "none" (`[{}]`) empties them.
        let cleared = network_update(&n, &json!({"capabilities": [{}], "tags": null})).unwrap();
        assert!(cleared.capabilities.is_empty() && cleared.tags.is_empty());

        let m = member_update(
            &member(),
            &json!({"tags": [[2001, "7"], [2000, 200]], "capabilities": [1000, 5, 1000]}),
            5,
        )
        .unwrap();
        assert_eq!(m.tags, [(2000, 200), (2001, 7)]);
        assert_eq!(m.capabilities, [5, 1000]);
        let j = m.to_json();
        assert_eq!(j["tags"], json!([[2000, 200], [2001, 7]]));
        assert_eq!(j["capabilities"], json!([5, 1000]));

        // Bounds: 128 tags, 128 capabilities, 64 rules in one capability,
        // and 1,024 rules with the network's own.
        let many_tags: Vec<Value> = (0..129).map(|i| json!([i, 0])).collect();
        let e = member_update(&member(), &json!({ "tags": many_tags }), 5).unwrap_err();
        assert_eq!(e.to_string(), "tags: at most 128 tags");
        let caps: Vec<Value> = (0..129).map(|i| json!({"id": i})).collect();
        let e = network_update(&network(), &json!({ "capabilities": caps })).unwrap_err();
        assert_eq!(e.to_string(), "capabilities: at most 128 capabilities");
        let drop = json!({"type": "ACTION_DROP"});
        let long = vec![drop.clone(); 65];
        let e = network_update(
            &network(),
            &json!({"capabilities": [{"id": 1, "rules": long}]}),
        )
        .unwrap_err();
        assert_eq!(e.field, "capabilities[0].rules");
        let caps: Vec<Value> = (0..16)
            .map(|i| json!({"id": i, "rules": vec![drop.clone(); 64]}))
            .collect();
        let e = network_update(&network(), &json!({ "capabilities": caps })).unwrap_err();
        assert_eq!(
            e.to_string(),
            "capabilities: the rules and the capabilities' rules together exceed 1024"
        );
    }

    #[test]
    fn a_refused_update_changes_nothing() {
        let before = network();
        // Valid fields before and after the bad one: none of them is applied.
        let body = json!({"name": "changed", "mtu": 99999, "private": false});
        let e = network_update(&before, &body).unwrap_err();
        assert_eq!(e.field, "mtu");
        assert_eq!(before, network());
    }

    #[test]
    fn member_fields_apply_and_refusals_name_fields() {
        let m = member_update(
            &member(),
            &json!({"authorized": true, "activeBridge": true, "noAutoAssignIps": true,
                    "ipAssignments": ["10.0.0.7", "2001:db8::7"], "address": "ignored"}),
            50,
        )
        .unwrap();
        assert!(m.authorized && m.active_bridge && m.no_auto_assign_ips);
        assert_eq!(m.last_authorized_time, 50);
        assert_eq!(m.ip_assignments.len(), 2);
        let cases = [
            (
                json!({"noAutoAssignIps": null}),
                "noAutoAssignIps: expected true or false, got null",
            ),
            (
                json!({"ipAssignments": "10.0.0.1"}),
                "ipAssignments: expected an array of IP address strings, got \"10.0.0.1\"",
            ),
            (
                json!({"ipAssignments": ["10.0.0.300"]}),
                "ipAssignments[0]: \"10.0.0.300\" is not an IPv4 or IPv6 address",
            ),
            (
                json!({"ipAssignments": ["10.0.0.1", "10.0.0.1"]}),
                "ipAssignments[1]: 10.0.0.1 is listed twice (also ipAssignments[0])",
            ),
            (
                json!({"ipAssignments": ["224.0.0.1"]}),
                "ipAssignments[0]: 224.0.0.1 is not a unicast address a member can hold",
            ),
        ];
        for (body, expected) in cases {
            let e = member_update(&member(), &body, 1).unwrap_err();
            assert_eq!(e.to_string(), expected, "{body}");
        }
    }

    #[test]
    fn stored_forms_round_trip_and_must_match_their_file() {
        let mut n = network_update(
            &network(),
            &json!({"name": "x", "routes": [{"target": "10.0.0.0/24"}],
                    "ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.9"}]}),
        )
        .unwrap();
        n.revision = 7;
        assert_eq!(network_from_stored(n.id, &n.to_json()).unwrap(), n);
        let other: NetworkId = "8056c2e21c000002".parse().unwrap();
        assert_eq!(
            network_from_stored(other, &n.to_json()).unwrap_err().field,
            "id"
        );
        let mut m = member_update(
            &member(),
            &json!({"authorized": true, "ipAssignments": ["10.0.0.1"]}),
            9,
        )
        .unwrap();
        m.revision = 3;
        m.last_deauthorized_time = 4;
        assert_eq!(
            member_from_stored(m.network_id, m.address, &m.to_json()).unwrap(),
            m
        );
        let e = member_from_stored(m.network_id, "0102030405".parse().unwrap(), &m.to_json())
            .unwrap_err();
        assert_eq!(e.field, "id");
        let e = member_from_stored(other, m.address, &m.to_json()).unwrap_err();
        assert_eq!(e.field, "nwid");
        let e = network_from_stored(n.id, &json!({"revision": "x"})).unwrap_err();
        assert_eq!(e.field, "revision");
    }
}
