//! `network create|list|show|set|delete|rules`: the networks of this node's
//! controller (the controller's REST API, docs/API.md).

use std::io::Write;

use serde_json::{Map, Value};
use vnet_node::core::rules::compiler::compile;
use vnet_node::service::api_types::{ControllerNetwork, Status};

use crate::Invocation;
use crate::args::NetworkCommand;
use crate::client::Method;
use crate::failure::Failure;
use crate::ids::{normalize_address, normalize_network_id};
use crate::output::{or_dash, pretty, write_answer};
use crate::setting_args::{network_settings, parse_bool, parse_pools, parse_routes};

/// A controller network command with its arguments checked.
#[derive(Debug)]
pub enum Action {
    /// `network create`: the fields to start with.
    Create {
        /// The creation body.
        body: Value,
    },
    /// `network list`.
    List,
    /// `network show <nwid>`.
    Show {
        /// 16 hex digits.
        nwid: String,
    },
    /// `network set <nwid> ...`.
    Set {
        /// 16 hex digits.
        nwid: String,
        /// The partial update.
        body: Value,
    },
    /// `network delete <nwid>`.
    Delete {
        /// 16 hex digits.
        nwid: String,
    },
    /// `network rules <nwid> <file>`: the compiled update.
    Rules {
        /// 16 hex digits.
        nwid: String,
        /// `rules`, `capabilities`, `tags` and `rulesSource`.
        body: Value,
        /// Print it instead of sending it.
        dry_run: bool,
    },
    /// `network key ...`.
    Key(crate::join_keys::Action),
}

/// The controller API path of a network.
pub fn network_path(nwid: &str) -> String {
    format!("/controller/network/{nwid}")
}

/// A `network` command's arguments, checked.
pub fn check(command: &NetworkCommand) -> Result<Action, String> {
    Ok(match command {
        NetworkCommand::Create {
            name,
            private,
            pools,
            routes,
        } => {
            let mut body = Map::new();
            if let Some(name) = name {
                body.insert("name".into(), Value::String(name.clone()));
            }
            if let Some(private) = private {
                body.insert(
                    "private".into(),
                    Value::Bool(parse_bool("--private", private)?),
                );
            }
            if !pools.is_empty() {
                body.insert("ipAssignmentPools".into(), parse_pools(pools)?);
            }
            if !routes.is_empty() {
                body.insert("routes".into(), parse_routes(routes)?);
            }
            Action::Create {
                body: Value::Object(body),
            }
        }
        NetworkCommand::List => Action::List,
        NetworkCommand::Show { nwid } => Action::Show {
            nwid: normalize_network_id(nwid)?,
        },
        NetworkCommand::Set {
            nwid,
            settings,
            pools,
            routes,
            clear_pools,
            clear_routes,
        } => {
            let nwid = normalize_network_id(nwid)?;
            let mut body = network_settings(settings)?;
            if !pools.is_empty() || *clear_pools {
                body.insert("ipAssignmentPools".into(), parse_pools(pools)?);
            }
            if !routes.is_empty() || *clear_routes {
                body.insert("routes".into(), parse_routes(routes)?);
            }
            if body.is_empty() {
                return Err("nothing to set: give KEY=VALUE settings, --pool, --route, \
                     --clear-pools or --clear-routes"
                    .into());
            }
            Action::Set {
                nwid,
                body: Value::Object(body),
            }
        }
        NetworkCommand::Delete { nwid } => Action::Delete {
            nwid: normalize_network_id(nwid)?,
        },
        NetworkCommand::Rules {
            nwid,
            file,
            dry_run,
        } => {
            let nwid = normalize_network_id(nwid)?;
            let source = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let compiled = compile(&source).map_err(|e| format!("{}: {e}", file.display()))?;
            Action::Rules {
                nwid,
                body: compiled.network_update(&source),
                dry_run: *dry_run,
            }
        }
        NetworkCommand::Key { command } => Action::Key(crate::join_keys::check(command)?),
    })
}

/// Runs a `network` command.
pub fn run(call: &Invocation, out: &mut dyn Write, action: Action) -> Result<(), Failure> {
    let name = call.name;
    match action {
        Action::Create { body } => {
            let controller = controller_address(call)?;
            let path = network_path(&format!("{controller}______"));
            let answer = call.request(Method::Post, &path, Some(&body))?;
            call.print(out, &answer, format_network_created)?;
        }
        Action::List => {
            let ids = call.request(Method::Get, "/controller/network", None)?;
            let text = if call.json {
                pretty(&ids)
            } else {
                let ids: Vec<String> = call.read(&ids)?;
                let mut networks = Vec::new();
                for id in ids {
                    let Ok(nwid) = normalize_network_id(&id) else {
                        continue;
                    };
                    if let Some(network) = call.api.get_unless_gone(name, &network_path(&nwid))? {
                        networks.push(call.read(&network)?);
                    }
                }
                format_network_list(&networks)
            };
            out.write_all(text.as_bytes())?;
        }
        Action::Show { nwid } => {
            let answer = call.request(Method::Get, &network_path(&nwid), None)?;
            write_answer(out, call.json, &answer, || {
                format!("200 {name} {nwid}\n{}", pretty(&answer))
            })?;
        }
        Action::Set { nwid, body } => {
            let answer = call.request(Method::Post, &network_path(&nwid), Some(&body))?;
            write_answer(out, call.json, &answer, || {
                format!("200 {name} {nwid} OK\n")
            })?;
        }
        Action::Delete { nwid } => {
            let answer = call.request(Method::Delete, &network_path(&nwid), None)?;
            write_answer(out, call.json, &answer, || {
                format!("200 {name} {nwid} OK\n")
            })?;
        }
        Action::Rules {
            nwid,
            body,
            dry_run,
        } => {
            if dry_run {
                out.write_all(pretty(&body).as_bytes())?;
                return Ok(());
            }
            let answer = call.request(Method::Post, &network_path(&nwid), Some(&body))?;
            let count = |field: &str| body[field].as_array().map_or(0, Vec::len);
            let (rules, caps, tags) = (count("rules"), count("capabilities"), count("tags"));
            write_answer(out, call.json, &answer, || {
                format!("200 {name} {nwid} OK {rules} rules, {caps} capabilities, {tags} tags\n")
            })?;
        }
        Action::Key(action) => crate::join_keys::run(call, out, action)?,
    }
    Ok(())
}

/// This node's address (`GET /status`): the first 10 digits of its networks' ids.
fn controller_address(call: &Invocation) -> Result<String, Failure> {
    let status = call.request(Method::Get, "/status", None)?;
    let status: Option<Status> = serde::Deserialize::deserialize(&status).ok();
    status
        .and_then(|s| s.address)
        .and_then(|a| normalize_address(&a).ok())
        .ok_or_else(|| {
            Failure::local(format_args!(
                "{}: vnet-node's /status has no valid \"address\"",
                call.name
            ))
        })
}

/// `200 network create <nwid>`
fn format_network_created(network: &ControllerNetwork) -> String {
    format!("200 network create {}\n", or_dash(network.id.as_deref()))
}

/// `200 network list <nwid> <name> PRIVATE|PUBLIC` per network (`-` for no name).
fn format_network_list(networks: &[ControllerNetwork]) -> String {
    let mut out = String::new();
    for n in networks {
        let private = n.private.unwrap_or(true);
        out.push_str(&format!(
            "200 network list {} {} {}\n",
            or_dash(n.id.as_deref()),
            or_dash(n.name.as_deref()),
            if private { "PRIVATE" } else { "PUBLIC" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{NWID, fake_server, http_response, line, request_body, run_args};
    use serde_json::json;

    #[test]
    fn controller_network_lines() {
        let created: ControllerNetwork = serde_json::from_value(json!({"id": NWID})).unwrap();
        assert_eq!(
            format_network_created(&created),
            "200 network create 8056c2e21c000001\n"
        );
        let nets: Vec<ControllerNetwork> = serde_json::from_value(json!([
            {"id": NWID, "name": "office", "private": true},
            {"id": "8056c2e21c000002", "name": "", "private": false},
        ]))
        .unwrap();
        assert_eq!(
            format_network_list(&nets),
            "200 network list 8056c2e21c000001 office PRIVATE\n\
             200 network list 8056c2e21c000002 - PUBLIC\n"
        );
    }

    #[test]
    fn network_create_asks_for_the_address_then_posts() {
        let (port, requests) = fake_server(vec![
            http_response("200 OK", r#"{"address": "8056c2e21c", "online": true}"#),
            http_response("200 OK", &json!({"id": NWID, "name": "lab"}).to_string()),
        ]);
        let port = port.to_string();
        let (result, out) = run_args(&[
            "-T",
            "t",
            "-p",
            &port,
            "network",
            "create",
            "--name",
            "lab",
            "--private",
            "false",
            "--pool",
            "10.0.0.10-10.0.0.20",
            "--route",
            "10.0.0.0/24",
            "--route",
            "0.0.0.0/0,10.0.0.1",
        ]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 network create 8056c2e21c000001\n");
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /status HTTP/1.1\r\n")
        );
        let post = requests.recv().unwrap();
        assert!(
            post.starts_with("POST /controller/network/8056c2e21c______ HTTP/1.1\r\n"),
            "{post}"
        );
        assert!(post.to_ascii_lowercase().contains("\r\nx-vnet-auth: t\r\n"));
        assert_eq!(
            request_body(&post),
            json!({"name": "lab", "private": false,
                   "ipAssignmentPools": [{"ipRangeStart": "10.0.0.10", "ipRangeEnd": "10.0.0.20"}],
                   "routes": [{"target": "10.0.0.0/24", "via": null},
                              {"target": "0.0.0.0/0", "via": "10.0.0.1"}]})
        );
    }

    #[test]
    fn network_create_with_json_and_without_options() {
        let answer = json!({"id": NWID, "private": true});
        let (port, requests) = fake_server(vec![
            http_response("200 OK", r#"{"address": "8056c2e21c"}"#),
            http_response("200 OK", &answer.to_string()),
        ]);
        let port = port.to_string();
        let (result, out) = run_args(&["-j", "-T", "t", "-p", &port, "network", "create"]);
        assert_eq!(result, Ok(()));
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), answer);
        requests.recv().unwrap();
        assert_eq!(request_body(&requests.recv().unwrap()), json!({}));
    }

    #[test]
    fn network_list_shows_each_network_and_skips_vanished_ones() {
        let (port, requests) = fake_server(vec![
            http_response("200 OK", r#"["8056c2e21c000001", "8056c2e21c000002"]"#),
            http_response(
                "200 OK",
                r#"{"id": "8056c2e21c000001", "name": "a b", "private": false}"#,
            ),
            http_response(
                "404 Not Found",
                r#"{"error": "network 8056c2e21c000002 not found"}"#,
            ),
        ]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "t", "-p", &port, "network", "list"]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 network list 8056c2e21c000001 a b PUBLIC\n");
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /controller/network HTTP/1.1")
        );
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /controller/network/8056c2e21c000001 HTTP/1.1")
        );
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /controller/network/8056c2e21c000002 HTTP/1.1")
        );
    }

    #[test]
    fn network_show_set_delete() {
        let net = json!({"id": NWID, "name": "lab", "mtu": 2800});
        let (port, requests) = fake_server(vec![
            http_response("200 OK", &net.to_string()),
            http_response("200 OK", &net.to_string()),
            http_response(
                "400 Bad Request",
                r#"{"error": "mtu: expected an integer from 1280 to 10000, got 99"}"#,
            ),
            http_response("200 OK", &net.to_string()),
        ]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "t", "-p", &port, "network", "show", NWID]);
        assert_eq!(result, Ok(()));
        let json_part = out
            .strip_prefix("200 network show 8056c2e21c000001\n")
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(json_part).unwrap(), net);
        requests.recv().unwrap();

        let (result, out) = run_args(&[
            "-T",
            "t",
            "-p",
            &port,
            "network",
            "set",
            "8056C2E21C000001",
            "name=new",
            "mtu=1400",
            "--clear-pools",
            "--route",
            "10.1.0.0/16",
        ]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 network set 8056c2e21c000001 OK\n");
        let post = requests.recv().unwrap();
        assert!(
            post.starts_with("POST /controller/network/8056c2e21c000001 HTTP/1.1"),
            "{post}"
        );
        assert_eq!(
            request_body(&post),
            json!({"name": "new", "mtu": 1400, "ipAssignmentPools": [],
                   "routes": [{"target": "10.1.0.0/16", "via": null}]})
        );

        let (result, _) = run_args(&["-T", "t", "-p", &port, "network", "set", NWID, "mtu=99"]);
        assert_eq!(
            line(result),
            "400 network set mtu: expected an integer from 1280 to 10000, got 99"
        );
        requests.recv().unwrap();

        let (result, out) = run_args(&["-T", "t", "-p", &port, "network", "delete", NWID]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 network delete 8056c2e21c000001 OK\n");
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("DELETE /controller/network/8056c2e21c000001 HTTP/1.1")
        );
    }
}
