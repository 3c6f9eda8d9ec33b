//! `KEY=VALUE`, `--pool` and `--route` arguments, checked and turned into the
//! JSON update bodies the controller's API takes (docs/API.md).

use std::net::IpAddr;

use serde_json::{Value, json};

/// A yes or no for a flag or setting named `what`, read as zerotier-cli
/// reads one: true when it starts with `t`, `T` or `1` (`true`, `t`, `1`);
/// false when it starts with `f`, `F` or `0`. Anything else is refused
/// rather than taken as false, so a typo is not a silent "off".
pub fn parse_bool(what: &str, text: &str) -> Result<bool, String> {
    match text.as_bytes().first() {
        Some(b't' | b'T' | b'1') => Ok(true),
        Some(b'f' | b'F' | b'0') => Ok(false),
        _ => Err(format!(
            "bad {what} {text:?}: expected true or false (or 1 or 0)"
        )),
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// `--pool START-END`s as `ipAssignmentPools`.
pub fn parse_pools(pools: &[String]) -> Result<Value, String> {
    let mut out = Vec::with_capacity(pools.len());
    for pool in pools {
        let range = pool
            .split_once('-')
            .and_then(|(s, e)| Some((parse_ip(s)?, parse_ip(e)?)))
            .filter(|(s, e)| s.is_ipv4() == e.is_ipv4());
        let Some((start, end)) = range else {
            return Err(format!(
                "bad --pool {pool:?}: expected START-END, two addresses of one family \
                 (e.g. 10.0.0.10-10.0.0.250)"
            ));
        };
        out.push(json!({ "ipRangeStart": start.to_string(), "ipRangeEnd": end.to_string() }));
    }
    Ok(Value::Array(out))
}

/// `--route CIDR[,VIA]`s as `routes` (the node checks host bits and families).
pub fn parse_routes(routes: &[String]) -> Result<Value, String> {
    let mut out = Vec::with_capacity(routes.len());
    for route in routes {
        let (target, via) = match route.split_once(',') {
            Some((t, v)) => (t.trim(), Some(v)),
            None => (route.trim(), None),
        };
        let target_ok = target.split_once('/').is_some_and(|(a, len)| {
            parse_ip(a).is_some()
                && !len.is_empty()
                && len.len() <= 3
                && len.bytes().all(|b| b.is_ascii_digit())
        });
        let via = match via {
            None => Some(Value::Null),
            Some(v) => parse_ip(v).map(|ip| json!(ip.to_string())),
        };
        match via {
            Some(via) if target_ok => out.push(json!({ "target": target, "via": via })),
            _ => {
                return Err(format!(
                    "bad --route {route:?}: expected CIDR[,VIA] (e.g. 10.0.0.0/24 or \
                     0.0.0.0/0,10.0.0.1)"
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

/// `KEY=VALUE` split at the first `=`.
pub fn split_setting(setting: &str) -> Result<(&str, &str), String> {
    setting
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("bad setting {setting:?}: expected KEY=VALUE"))
}

fn whole_number(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("bad {key} {value:?}: expected a whole number"))
}

/// `v6AssignMode=rfc4193,6plane` (or `none`) as `{"zt": false, "rfc4193":
/// true, "6plane": true}`: the modes named are on, the others off.
fn assign_modes(key: &str, value: &str, modes: &[&str]) -> Result<Value, String> {
    let named: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "none")
        .collect();
    if let Some(bad) = named.iter().find(|m| !modes.contains(m)) {
        return Err(format!(
            "bad {key} {value:?}: {bad:?} is not one of {} (or none)",
            modes.join(", ")
        ));
    }
    Ok(Value::Object(
        modes
            .iter()
            .map(|m| (m.to_string(), json!(named.contains(m))))
            .collect(),
    ))
}

/// `dns=<domain>,<server>[,<server>...]` as ZeroTier's `dns` object
/// (`dns=` clears it); the controller checks the names and addresses.
fn dns_setting(value: &str) -> Result<Value, String> {
    let mut parts = value.split(',').map(str::trim).filter(|p| !p.is_empty());
    let domain = parts.next().unwrap_or_default();
    let mut servers = Vec::new();
    for s in parts {
        let ip = parse_ip(s).ok_or_else(|| {
            format!("bad dns {value:?}: {s:?} is not an IP address (dns=<domain>,<server>...)")
        })?;
        servers.push(ip.to_string());
    }
    Ok(json!({ "domain": domain, "servers": servers }))
}

/// `network set`'s KEY=VALUE settings as an update body.
pub fn network_settings(settings: &[String]) -> Result<serde_json::Map<String, Value>, String> {
    let mut body = serde_json::Map::new();
    for setting in settings {
        let (key, value) = split_setting(setting)?;
        let value = match key {
            "name" => json!(value),
            "private" | "enableBroadcast" => json!(parse_bool(key, value)?),
            "mtu" | "multicastLimit" => json!(whole_number(key, value)?),
            "v4AssignMode" => assign_modes(key, value, &["zt"])?,
            "dns" => dns_setting(value)?,
            "v6AssignMode" => assign_modes(key, value, &["zt", "rfc4193", "6plane"])?,
            _ => {
                return Err(format!(
                    "unknown setting {key:?}: expected name, private, mtu, multicastLimit, \
                     enableBroadcast, v4AssignMode, v6AssignMode or dns"
                ));
            }
        };
        body.insert(key.to_string(), value);
    }
    Ok(body)
}

/// `member set`'s KEY=VALUE settings as an update body.
pub fn member_settings(settings: &[String]) -> Result<serde_json::Map<String, Value>, String> {
    let mut body = serde_json::Map::new();
    for setting in settings {
        let (key, value) = split_setting(setting)?;
        let value = match key {
            "authorized" | "activeBridge" | "noAutoAssignIps" => json!(parse_bool(key, value)?),
            "name" => json!(value),
            "ipAssignments" => {
                let mut ips = Vec::new();
                for ip in value.split(',').filter(|i| !i.trim().is_empty()) {
                    let parsed = parse_ip(ip).ok_or_else(|| {
                        format!("bad ipAssignments {value:?}: {ip:?} is not an IP address")
                    })?;
                    ips.push(json!(parsed.to_string()));
                }
                Value::Array(ips)
            }
            // ZeroTier's `[[id, value], ...]`, written `ID:VALUE,...`.
            "tags" => {
                let mut tags = Vec::new();
                for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                    let parsed = pair.split_once(':').and_then(|(id, v)| {
                        Some((
                            id.trim().parse::<u32>().ok()?,
                            v.trim().parse::<u32>().ok()?,
                        ))
                    });
                    let (id, v) = parsed.ok_or_else(|| {
                        format!("bad tags {value:?}: {pair:?} is not ID:VALUE (two numbers)")
                    })?;
                    tags.push(json!([id, v]));
                }
                Value::Array(tags)
            }
            "capabilities" => {
                let mut ids = Vec::new();
                for id in value.split(',').filter(|i| !i.trim().is_empty()) {
                    let parsed = id.trim().parse::<u32>().map_err(|_| {
                        format!("bad capabilities {value:?}: {id:?} is not a capability id")
                    })?;
                    ids.push(json!(parsed));
                }
                Value::Array(ids)
            }
            _ => {
                return Err(format!(
                    "unknown setting {key:?}: expected authorized, activeBridge, \
                     noAutoAssignIps, ipAssignments, name, tags or capabilities"
                ));
            }
        };
        body.insert(key.to_string(), value);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_tags_and_capabilities() {
        let body = member_settings(&["tags=1000:100, 1001:5".into(), "capabilities=2000,7".into()])
            .unwrap();
        assert_eq!(body["tags"], json!([[1000, 100], [1001, 5]]));
        assert_eq!(body["capabilities"], json!([2000, 7]));
        let none = member_settings(&["tags=".into(), "capabilities=".into()]).unwrap();
        assert_eq!(
            (&none["tags"], &none["capabilities"]),
            (&json!([]), &json!([]))
        );
        assert_eq!(
            member_settings(&["tags=1000".into()]).unwrap_err(),
            "bad tags \"1000\": \"1000\" is not ID:VALUE (two numbers)"
        );
        assert_eq!(
            member_settings(&["capabilities=x".into()]).unwrap_err(),
            "bad capabilities \"x\": \"x\" is not a capability id"
        );
    }

    #[test]
    fn bools_pools_and_routes() {
        for (text, on) in [
            ("false", false),
            ("0", false),
            ("F", false),
            ("true", true),
            ("t", true),
            ("T", true),
            ("1", true),
        ] {
            assert_eq!(parse_bool("--private", text), Ok(on), "{text}");
        }
        for bad in ["no", "", "yes"] {
            assert_eq!(
                parse_bool("--private", bad).unwrap_err(),
                format!("bad --private {bad:?}: expected true or false (or 1 or 0)")
            );
        }
        assert_eq!(
            parse_pools(&["10.0.0.10-10.0.0.250".into(), "fd00::1-fd00::ff".into()]).unwrap(),
            json!([{"ipRangeStart": "10.0.0.10", "ipRangeEnd": "10.0.0.250"},
                   {"ipRangeStart": "fd00::1", "ipRangeEnd": "fd00::ff"}])
        );
        assert_eq!(parse_pools(&[]).unwrap(), json!([]));
        for bad in ["10.0.0.1", "10.0.0.1-", "10.0.0.1-fd00::1", "a-b"] {
            let e = parse_pools(&[bad.to_string()]).unwrap_err();
            assert!(e.starts_with(&format!("bad --pool {bad:?}: ")), "{e}");
        }
        assert_eq!(
            parse_routes(&["10.0.0.0/24".into(), "0.0.0.0/0,10.0.0.1".into()]).unwrap(),
            json!([{"target": "10.0.0.0/24", "via": null},
                   {"target": "0.0.0.0/0", "via": "10.0.0.1"}])
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/x",
            "10.0.0.0/24,gw",
            "nope/8",
            "10.0.0.0/24,",
        ] {
            let e = parse_routes(&[bad.to_string()]).unwrap_err();
            assert!(e.starts_with(&format!("bad --route {bad:?}: ")), "{e}");
        }
    }

    #[test]
    fn settings_become_typed_json() {
        let body = network_settings(&[
            "name=my net".into(),
            "private=false".into(),
            "mtu=1400".into(),
            "multicastLimit=0".into(),
            "enableBroadcast=true".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"name": "my net", "private": false, "mtu": 1400, "multicastLimit": 0,
                   "enableBroadcast": true})
        );
        assert_eq!(
            Value::Object(
                network_settings(&[
                    "v6AssignMode=rfc4193,6plane".into(),
                    "v4AssignMode=none".into()
                ])
                .unwrap()
            ),
            json!({"v6AssignMode": {"zt": false, "rfc4193": true, "6plane": true},
                   "v4AssignMode": {"zt": false}})
        );
        assert_eq!(
            network_settings(&["dns=vnet.lan,10.0.0.1, fd00::53".into()]).unwrap()["dns"],
            json!({"domain": "vnet.lan", "servers": ["10.0.0.1", "fd00::53"]})
        );
        assert_eq!(
            network_settings(&["dns=".into()]).unwrap()["dns"],
            json!({"domain": "", "servers": []})
        );
        assert!(network_settings(&["dns=lan,nope".into()]).is_err());
        assert!(
            network_settings(&["v6AssignMode=6plane,slaac".into()])
                .unwrap_err()
                .contains("\"slaac\" is not one of zt, rfc4193, 6plane")
        );
        assert_eq!(
            network_settings(&["name=a=b".into()]).unwrap()["name"],
            "a=b"
        );
        assert_eq!(
            network_settings(&["mtu=big".into()]).unwrap_err(),
            "bad mtu \"big\": expected a whole number"
        );
        assert!(
            network_settings(&["colour=red".into()])
                .unwrap_err()
                .starts_with("unknown setting \"colour\"")
        );
        assert_eq!(
            network_settings(&["name".into()]).unwrap_err(),
            "bad setting \"name\": expected KEY=VALUE"
        );
        let body = member_settings(&[
            "activeBridge=true".into(),
            "noAutoAssignIps=false".into(),
            "ipAssignments=10.0.0.5, fd00::5".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"activeBridge": true, "noAutoAssignIps": false,
                   "ipAssignments": ["10.0.0.5", "fd00::5"]})
        );
        assert_eq!(
            member_settings(&["ipAssignments=".into()]).unwrap()["ipAssignments"],
            json!([])
        );
        assert_eq!(
            member_settings(&["ipAssignments=10.0.0.5,x".into()]).unwrap_err(),
            "bad ipAssignments \"10.0.0.5,x\": \"x\" is not an IP address"
        );
        assert!(
            member_settings(&["mtu=1".into()])
                .unwrap_err()
                .starts_with("unknown setting \"mtu\"")
        );
    }
}
