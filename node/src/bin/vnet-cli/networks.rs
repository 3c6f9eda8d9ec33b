//! `join`, `leave`, `listnetworks`, `get` and `set`: the networks this node
//! is a member of.

use std::io::Write;

use serde::Deserialize;
use serde_json::{Map, Value};
use vnet_node::service::api_types::Network;

use crate::Invocation;
use crate::client::Method;
use crate::failure::Failure;
use crate::ids::normalize_network_id;
use crate::output::{list_or_dash, or_dash, pretty, write_ok};
use crate::setting_args::{parse_bool, split_setting};

/// The settings of a joined network that `set` may change (docs/API.md).
/// The yes/no settings `set` takes.
const LOCAL_FLAGS: [&str; 5] = [
    "allowManaged",
    "allowGlobal",
    "allowDefault",
    "allowDNS",
    "advertiseDefault",
];

/// A network command with its arguments checked.
#[derive(Debug)]
pub enum Action {
    /// `join <nwid>`.
    Join {
        /// `/network/<nwid>`.
        path: String,
        /// `{"joinKey": ...}` with `--key`.
        body: Option<Value>,
    },
    /// `leave <nwid>`.
    Leave {
        /// `/network/<nwid>`.
        path: String,
    },
    /// `listnetworks`.
    List,
    /// `get <nwid> <field>`.
    Get {
        /// `/network/<nwid>`.
        path: String,
        /// The field, as the API names it.
        field: String,
    },
    /// `set <nwid> <setting>=<value>`.
    Set {
        /// `/network/<nwid>`.
        path: String,
        /// `{"<setting>": true|false}`.
        body: Value,
    },
}

/// The API path of a joined network, the id checked.
fn network_path(nwid: &str) -> Result<String, String> {
    Ok(format!("/network/{}", normalize_network_id(nwid)?))
}

/// `join`'s argument, checked.
pub fn join(nwid: &str, key: Option<&str>, netns: Option<&str>) -> Result<Action, String> {
    let mut body = Map::new();
    match key {
        None => {}
        Some(k) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()) => {
            body.insert("joinKey".into(), Value::String(k.into()));
        }
        Some(k) => return Err(format!("bad --key {k:?}: a join key is printable ASCII")),
    }
    if let Some(n) = netns {
        body.insert("netns".into(), Value::String(n.into()));
    }
    let body = (!body.is_empty()).then_some(Value::Object(body));
    Ok(Action::Join {
        path: network_path(nwid)?,
        body,
    })
}

/// `leave`'s argument, checked.
pub fn leave(nwid: &str) -> Result<Action, String> {
    Ok(Action::Leave {
        path: network_path(nwid)?,
    })
}

/// `get`'s arguments, checked.
pub fn get(nwid: &str, field: &str) -> Result<Action, String> {
    Ok(Action::Get {
        path: network_path(nwid)?,
        field: field.to_string(),
    })
}

/// `set`'s arguments, checked.
pub fn set(nwid: &str, setting: &str) -> Result<Action, String> {
    Ok(Action::Set {
        path: network_path(nwid)?,
        body: network_local_setting(setting)?,
    })
}

/// Runs a network command.
pub fn run(call: &Invocation, out: &mut dyn Write, action: Action) -> Result<(), Failure> {
    match action {
        Action::Join { path, body } => {
            let answer = call.request(Method::Post, &path, body.as_ref())?;
            write_ok(out, call.name, call.json, &answer)?;
        }
        Action::Leave { path } => {
            let answer = call.request(Method::Delete, &path, None)?;
            write_ok(out, call.name, call.json, &answer)?;
        }
        Action::List => {
            let answer = call.request(Method::Get, "/network", None)?;
            call.print(out, &answer, |networks: &Vec<Network>| {
                for n in networks {
                    warn_gateway_without_forwarding(n);
                }
                format_listnetworks(networks)
            })?;
        }
        Action::Get { path, field } => {
            // Any field, as the API names it: read untyped.
            let answer = call.request(Method::Get, &path, None)?;
            if let Some(family) = AddressFamily::of_field(&field) {
                for ip in assigned_ips(&answer, family) {
                    writeln!(out, "{ip}")?;
                }
                return Ok(());
            }
            let value = answer.get(&field).ok_or_else(|| {
                Failure::bad_argument(call.name, &format!("no field {field:?} in the network"))
            })?;
            writeln!(out, "{}", field_text(value))?;
        }
        Action::Set { path, body } => {
            // The network's JSON after the change, as zerotier-cli prints it.
            let answer = call.request(Method::Post, &path, Some(&body))?;
            out.write_all(pretty(&answer).as_bytes())?;
            if !call.json {
                // Only a warning: an answer it cannot read changes nothing.
                if let Ok(network) = Network::deserialize(&answer) {
                    warn_gateway_without_forwarding(&network);
                }
            }
        }
    }
    Ok(())
}

/// Which assigned addresses `get <nwid> ip|ip4|ip6` prints (zerotier-cli's
/// pseudo-fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressFamily {
    Any,
    V4,
    V6,
}

impl AddressFamily {
    fn of_field(field: &str) -> Option<Self> {
        match field {
            "ip" => Some(Self::Any),
            "ip4" => Some(Self::V4),
            "ip6" => Some(Self::V6),
            _ => None,
        }
    }
}

/// The network's assigned addresses of `family`, without their prefix
/// length, as zerotier-cli prints them (one per line, for scripts).
fn assigned_ips(network: &Value, family: AddressFamily) -> Vec<String> {
    let Some(all) = network.get("assignedAddresses").and_then(Value::as_array) else {
        return Vec::new();
    };
    all.iter()
        .filter_map(Value::as_str)
        .map(|a| a.split('/').next().unwrap_or(a))
        .filter(|ip| match family {
            AddressFamily::Any => true,
            AddressFamily::V4 => ip.contains('.'),
            AddressFamily::V6 => ip.contains(':'),
        })
        .map(str::to_string)
        .collect()
}

/// A field's value for `get`: strings as they are, arrays joined by `,`,
/// anything else as JSON.
fn field_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// `allowDefault=1` → `{"allowDefault": true}`; `advertiseRoutes=a,b` →
/// `{"advertiseRoutes": ["a", "b"]}` (empty: none); the node checks the routes.
pub fn network_local_setting(setting: &str) -> Result<Value, String> {
    let (key, value) = split_setting(setting)?;
    let value = if LOCAL_FLAGS.contains(&key) {
        Value::Bool(parse_bool(key, value)?)
    } else if key == "advertiseRoutes" {
        value
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| Value::String(r.to_string()))
            .collect()
    } else {
        return Err(format!(
            "unknown setting {key:?} ({}, advertiseRoutes)",
            LOCAL_FLAGS.join(", ")
        ));
    };
    let mut body = Map::new();
    body.insert(key.to_string(), value);
    Ok(Value::Object(body))
}

/// On stderr: a member that is the gateway of a managed route must forward.
fn warn_gateway_without_forwarding(network: &Network) {
    if !network.gateway_for.is_empty() && network.local.ip_forwarding == Some(false) {
        eprintln!(
            "warning: {}: this member is the gateway for {} but IP forwarding is off on this host \
             (sysctl -w net.ipv4.ip_forward=1; see docs/gateway.md)",
            or_dash(network.id.as_deref()),
            network.gateway_for.join(", ")
        );
    }
}

/// zerotier-cli's listnetworks lines, header first.
pub fn format_listnetworks(networks: &[Network]) -> String {
    let mut out = String::from(
        "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>\n",
    );
    // A field the node left out is `-`, one it sent empty stays empty, as zerotier-cli.
    let s = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
    for n in networks {
        let device = if n.local.port_device_name.is_empty() {
            "-".to_string()
        } else {
            n.local.port_device_name.clone()
        };
        out.push_str(&format!(
            "200 listnetworks {} {} {} {} {} {} {}\n",
            s(&n.id),
            or_dash(n.name.as_deref()),
            s(&n.mac),
            s(&n.status),
            s(&n.r#type),
            device,
            list_or_dash(&n.assigned_addresses)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listnetworks_lines_are_zerotier_cli_s() {
        let answer = json!([{
            "id": "5b51b6c335000001", "name": "office", "mac": "32:0f:2a:e4:54:40",
            "status": "OK", "type": "PRIVATE", "portDeviceName": "vnc335000001",
            "assignedAddresses": ["10.147.17.5/24"]
        }, {
            "id": "5b51b6c335000002", "name": null, "mac": "32:0f:2a:e4:54:41",
            "status": "ACCESS_DENIED", "type": null, "portDeviceName": "vnc335000002",
            "assignedAddresses": []
        }]);
        let networks: Vec<Network> = serde_json::from_value(answer).unwrap();
        assert_eq!(
            format_listnetworks(&networks),
            "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>\n\
             200 listnetworks 5b51b6c335000001 office 32:0f:2a:e4:54:40 OK PRIVATE vnc335000001 10.147.17.5/24\n\
             200 listnetworks 5b51b6c335000002 - 32:0f:2a:e4:54:41 ACCESS_DENIED - vnc335000002 -\n"
        );
    }

    #[test]
    fn local_settings_parse() {
        assert_eq!(
            network_local_setting("allowDefault=1").unwrap(),
            json!({ "allowDefault": true })
        );
        assert_eq!(
            network_local_setting("allowManaged=false").unwrap(),
            json!({ "allowManaged": false })
        );
        assert_eq!(
            network_local_setting("advertiseRoutes=192.168.31.0/24, 10.9.0.0/16").unwrap(),
            json!({ "advertiseRoutes": ["192.168.31.0/24", "10.9.0.0/16"] })
        );
        assert_eq!(
            network_local_setting("advertiseRoutes=").unwrap(),
            json!({ "advertiseRoutes": [] })
        );
        assert_eq!(
            network_local_setting("advertiseDefault=1").unwrap(),
            json!({ "advertiseDefault": true })
        );
        // zerotier-cli's habit: `t` and `T` are true too.
        assert_eq!(
            network_local_setting("allowDNS=t").unwrap(),
            json!({ "allowDNS": true })
        );
        assert!(
            network_local_setting("allowDefault=yes")
                .unwrap_err()
                .contains("expected true or false (or 1 or 0)")
        );
        assert!(
            network_local_setting("mtu=1500")
                .unwrap_err()
                .contains("unknown setting")
        );
        assert!(network_local_setting("allowDefault").is_err());
    }

    #[test]
    fn get_ip_prints_assigned_addresses_of_a_family_one_per_line() {
        let n = json!({"assignedAddresses": ["10.147.17.5/24", "fd80::1/88", "10.9.0.2/16"]});
        assert_eq!(
            assigned_ips(&n, AddressFamily::Any),
            ["10.147.17.5", "fd80::1", "10.9.0.2"]
        );
        assert_eq!(
            assigned_ips(&n, AddressFamily::V4),
            ["10.147.17.5", "10.9.0.2"]
        );
        assert_eq!(assigned_ips(&n, AddressFamily::V6), ["fd80::1"]);
        assert!(assigned_ips(&json!({}), AddressFamily::Any).is_empty());
        assert_eq!(AddressFamily::of_field("ip4"), Some(AddressFamily::V4));
        assert_eq!(AddressFamily::of_field("status"), None);
    }

    #[test]
    fn get_prints_strings_lists_and_json() {
        assert_eq!(field_text(&json!("OK")), "OK");
        assert_eq!(field_text(&json!(["10.0.0.1/24", 5])), "10.0.0.1/24,5");
        assert_eq!(field_text(&json!(2800)), "2800");
        assert_eq!(field_text(&json!(null)), "null");
    }
}
