//! `member list|show|authorize|deauthorize|set`: the members of this node's
//! controller networks (the controller's REST API, docs/API.md).

use std::collections::BTreeMap;
use std::io::Write;

use serde::de::IgnoredAny;
use serde_json::{Value, json};
use vnet_node::service::api_types::ControllerMember;

use crate::Invocation;
use crate::args::MemberCommand;
use crate::client::Method;
use crate::controller_networks::network_path;
use crate::failure::Failure;
use crate::ids::{normalize_address, normalize_network_id};
use crate::output::{list_or_dash, one_line, or_dash, pretty, write_answer};
use crate::setting_args::member_settings;

/// A member command with its arguments checked.
#[derive(Debug)]
pub enum Action {
    /// `member list <nwid>`.
    List {
        /// 16 hex digits.
        nwid: String,
    },
    /// One request about one member, its answer printed as `shown` says.
    One {
        /// The member.
        member: MemberId,
        /// GET or POST.
        method: Method,
        /// The update, for a POST.
        body: Option<Value>,
        /// How the answer is printed.
        shown: Shown,
    },
    /// `member routes <nwid> <addr> [approve|unapprove ROUTE...|all]`.
    Routes {
        /// The member.
        member: MemberId,
        /// Approve (true) or withdraw (false) these routes, `all` for
        /// every advertised one; none: only list.
        change: Option<(bool, Vec<String>)>,
    },
}

/// A member of a network, both checked.
#[derive(Debug)]
pub struct MemberId {
    /// 16 hex digits.
    nwid: String,
    /// 10 hex digits.
    addr: String,
}

impl MemberId {
    fn new(nwid: &str, addr: &str) -> Result<Self, String> {
        Ok(MemberId {
            nwid: normalize_network_id(nwid)?,
            addr: normalize_address(addr)?,
        })
    }

    /// The controller API path of the member.
    fn path(&self) -> String {
        member_path(&self.nwid, &self.addr)
    }
}

/// How a member command prints its answer (without `-j`).
#[derive(Debug, Clone, Copy)]
pub enum Shown {
    /// `200 <command> <nwid> <addr>`, then the JSON.
    Json,
    /// `200 <command> <nwid> <addr> OK`
    Ok,
    /// `200 <command> <nwid> <addr> <ips>` (and why there is no IP, if the API says).
    Ips,
}

fn member_path(nwid: &str, addr: &str) -> String {
    format!("{}/member/{addr}", network_path(nwid))
}

/// A `member` command's arguments, checked.
pub fn check(command: &MemberCommand) -> Result<Action, String> {
    let one = |nwid: &str, addr: &str, method, body, shown| -> Result<Action, String> {
        Ok(Action::One {
            member: MemberId::new(nwid, addr)?,
            method,
            body,
            shown,
        })
    };
    match command {
        MemberCommand::List { nwid } => Ok(Action::List {
            nwid: normalize_network_id(nwid)?,
        }),
        MemberCommand::Show { nwid, addr } => one(nwid, addr, Method::Get, None, Shown::Json),
        MemberCommand::Authorize { nwid, addr } => one(
            nwid,
            addr,
            Method::Post,
            Some(json!({ "authorized": true })),
            Shown::Ips,
        ),
        MemberCommand::Deauthorize { nwid, addr } => one(
            nwid,
            addr,
            Method::Post,
            Some(json!({ "authorized": false })),
            Shown::Ok,
        ),
        MemberCommand::Delete { nwid, addr } => one(nwid, addr, Method::Delete, None, Shown::Ok),
        MemberCommand::Routes { nwid, addr, change } => {
            let member = MemberId::new(nwid, addr)?;
            let change = match change.split_first() {
                None => None,
                Some((verb, routes)) => {
                    let approve = match verb.as_str() {
                        "approve" => true,
                        "unapprove" => false,
                        other => {
                            return Err(format!(
                                "bad {other:?}: expected approve or unapprove, then routes or all"
                            ));
                        }
                    };
                    if routes.is_empty() {
                        return Err(format!("{verb}: name the routes (CIDR) or all"));
                    }
                    Some((approve, routes.to_vec()))
                }
            };
            Ok(Action::Routes { member, change })
        }
        MemberCommand::Set {
            nwid,
            addr,
            settings,
        } => {
            let member = MemberId::new(nwid, addr)?;
            let body = member_settings(settings)?;
            if body.is_empty() {
                return Err("nothing to set: give KEY=VALUE settings".into());
            }
            Ok(Action::One {
                member,
                method: Method::Post,
                body: Some(Value::Object(body)),
                shown: Shown::Ok,
            })
        }
    }
}

/// Runs a `member` command.
pub fn run(call: &Invocation, out: &mut dyn Write, action: Action) -> Result<(), Failure> {
    let name = call.name;
    match action {
        Action::List { nwid } => {
            let path = format!("{}/member", network_path(&nwid));
            let list = call.request(Method::Get, &path, None)?;
            let text = if call.json {
                pretty(&list)
            } else {
                // `{"<addr>": revision, ...}`: only the addresses matter here.
                let listed: BTreeMap<String, IgnoredAny> = call.read(&list)?;
                let mut addrs: Vec<String> = listed
                    .keys()
                    .filter_map(|a| normalize_address(a).ok())
                    .collect();
                addrs.sort();
                let mut members = Vec::new();
                for addr in addrs {
                    if let Some(member) =
                        call.api.get_unless_gone(name, &member_path(&nwid, &addr))?
                    {
                        members.push(call.read(&member)?);
                    }
                }
                format_member_list(&nwid, &members)
            };
            out.write_all(text.as_bytes())?;
        }
        Action::One {
            member,
            method,
            body,
            shown,
        } => {
            let answer = call.request(method, &member.path(), body.as_ref())?;
            let subject = format!("{} {}", member.nwid, member.addr);
            match shown {
                Shown::Json => write_answer(out, call.json, &answer, || {
                    format!("200 {name} {subject}\n{}", pretty(&answer))
                })?,
                Shown::Ok => write_answer(out, call.json, &answer, || {
                    format!("200 {name} {subject} OK\n")
                })?,
                Shown::Ips => call.print(out, &answer, |m: &ControllerMember| {
                    format_member_ips(name, &subject, m)
                })?,
            }
        }
        Action::Routes { member, change } => {
            let mut answer = call.request(Method::Get, &member.path(), None)?;
            if let Some((approve, routes)) = change {
                let m: ControllerMember = call.read(&answer)?;
                let approved = approved_after(&m, approve, &routes);
                let body = json!({ "approvedRoutes": approved });
                answer = call.request(Method::Post, &member.path(), Some(&body))?;
            }
            let subject = format!("{} {}", member.nwid, member.addr);
            call.print(out, &answer, |m: &ControllerMember| {
                format_member_routes(name, &subject, m)
            })?;
        }
    }
    Ok(())
}

/// The approved routes after approving (or withdrawing) `routes`; `all`
/// stands for every advertised route. Routes are compared as written back
/// by the controller (canonical CIDR); the controller checks them.
fn approved_after(m: &ControllerMember, approve: bool, routes: &[String]) -> Vec<String> {
    let named: Vec<String> = if routes.iter().any(|r| r == "all") {
        m.advertised_routes.clone()
    } else {
        routes.to_vec()
    };
    let mut approved = m.approved_routes.clone();
    if approve {
        for r in named {
            if !approved.contains(&r) {
                approved.push(r);
            }
        }
    } else {
        approved.retain(|r| !named.contains(r));
    }
    approved
}

/// `200 member routes <nwid> <addr> <route> APPROVED|PENDING` per
/// advertised route (`APPROVED (not advertised)` for an approval the member
/// no longer uses); `-` when it advertises none.
fn format_member_routes(command: &str, subject: &str, m: &ControllerMember) -> String {
    let mut out = String::new();
    for r in &m.advertised_routes {
        let state = if m.approved_routes.contains(r) {
            "APPROVED"
        } else {
            "PENDING"
        };
        out.push_str(&format!("200 {command} {subject} {r} {state}\n"));
    }
    for r in m
        .approved_routes
        .iter()
        .filter(|r| !m.advertised_routes.contains(r))
    {
        out.push_str(&format!(
            "200 {command} {subject} {r} APPROVED (not advertised)\n"
        ));
    }
    if out.is_empty() {
        out = format!("200 {command} {subject} -\n");
    }
    out
}

/// `200 member list <nwid> <addr> AUTHORIZED|UNAUTHORIZED <ips>` per member,
/// with ` BRIDGE` after active bridges.
fn format_member_list(nwid: &str, members: &[ControllerMember]) -> String {
    let mut out = String::new();
    for m in members {
        let auth = if m.authorized {
            "AUTHORIZED"
        } else {
            "UNAUTHORIZED"
        };
        let bridge = if m.active_bridge { " BRIDGE" } else { "" };
        out.push_str(&format!(
            "200 member list {nwid} {} {auth} {}{bridge}\n",
            or_dash(m.address.as_deref()),
            list_or_dash(&m.ip_assignments)
        ));
    }
    out
}

/// `200 <command> <subject> <ips>`, then ` (<why no IP>)` if the API says.
fn format_member_ips(command: &str, subject: &str, member: &ControllerMember) -> String {
    let why = match member.ip_assignment_error.as_deref() {
        Some(e) if !e.is_empty() => format!(" ({})", one_line(e)),
        _ => String::new(),
    };
    format!(
        "200 {command} {subject} {}{why}\n",
        list_or_dash(&member.ip_assignments)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{NWID, fake_server, http_response, line, request_body, run_args};

    fn member(v: Value) -> ControllerMember {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn member_lines() {
        let members = [
            member(
                json!({"address": "a1b2c3d4e5", "authorized": true, "activeBridge": true,
                   "ipAssignments": ["10.0.0.1", "fd00::1"]}),
            ),
            member(json!({"address": "0102030405", "authorized": false, "ipAssignments": []})),
        ];
        assert_eq!(
            format_member_list(NWID, &members),
            "200 member list 8056c2e21c000001 a1b2c3d4e5 AUTHORIZED 10.0.0.1,fd00::1 BRIDGE\n\
             200 member list 8056c2e21c000001 0102030405 UNAUTHORIZED -\n"
        );
        assert_eq!(
            format_member_ips(
                "member authorize",
                "n a",
                &member(json!({"ipAssignments": ["10.0.0.1"], "ipAssignmentError": null}))
            ),
            "200 member authorize n a 10.0.0.1\n"
        );
        assert_eq!(
            format_member_ips(
                "member authorize",
                "n a",
                &member(json!({"ipAssignments": [], "ipAssignmentError": "pools used up"}))
            ),
            "200 member authorize n a - (pools used up)\n"
        );
    }

    #[test]
    fn route_lines_and_approvals() {
        let m = member(json!({"advertisedRoutes": ["192.168.31.0/24", "0.0.0.0/0"],
                              "approvedRoutes": ["192.168.31.0/24", "10.9.0.0/16"]}));
        assert_eq!(
            format_member_routes("member routes", "n a", &m),
            "200 member routes n a 192.168.31.0/24 APPROVED\n\
             200 member routes n a 0.0.0.0/0 PENDING\n\
             200 member routes n a 10.9.0.0/16 APPROVED (not advertised)\n"
        );
        assert_eq!(
            approved_after(&m, true, &["all".into()]),
            vec!["192.168.31.0/24", "10.9.0.0/16", "0.0.0.0/0"]
        );
        assert_eq!(
            approved_after(&m, false, &["10.9.0.0/16".into()]),
            vec!["192.168.31.0/24"]
        );
        assert_eq!(
            format_member_routes("member routes", "n a", &member(json!({}))),
            "200 member routes n a -\n"
        );
    }

    #[test]
    fn member_delete_sends_delete_and_says_ok() {
        let m = json!({"address": "a1b2c3d4e5", "authorized": false});
        let (port, requests) = fake_server(vec![http_response("200 OK", &m.to_string())]);
        let port = port.to_string();
        let (result, out) = run_args(&[
            "-T",
            "t",
            "-p",
            port.as_str(),
            "member",
            "delete",
            NWID,
            "A1B2C3D4E5",
        ]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 member delete 8056c2e21c000001 a1b2c3d4e5 OK\n");
        assert!(
            requests.recv().unwrap().starts_with(
                "DELETE /controller/network/8056c2e21c000001/member/a1b2c3d4e5 HTTP/1.1"
            )
        );
    }

    #[test]
    fn member_list_show_authorize_deauthorize_set() {
        let m = json!({"address": "a1b2c3d4e5", "authorized": true, "ipAssignments": ["10.0.0.1"],
                       "ipAssignmentError": null});
        let (port, requests) = fake_server(vec![
            http_response("200 OK", r#"{"a1b2c3d4e5": 2}"#),
            http_response("200 OK", &m.to_string()),
            http_response("200 OK", &m.to_string()),
            http_response("200 OK", &m.to_string()),
            http_response("200 OK", &m.to_string()),
            http_response("200 OK", &m.to_string()),
            http_response("200 OK", r#"{"a1b2c3d4e5": 2}"#),
            http_response(
                "404 Not Found",
                r#"{"error": "network 8056c2e21c000001 not found"}"#,
            ),
        ]);
        let port = port.to_string();
        let base = ["-T", "t", "-p", port.as_str(), "member"];
        fn join<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
            a.iter().chain(b).copied().collect()
        }

        let (result, out) = run_args(&join(&base, &["list", NWID]));
        assert_eq!(result, Ok(()));
        assert_eq!(
            out,
            "200 member list 8056c2e21c000001 a1b2c3d4e5 AUTHORIZED 10.0.0.1\n"
        );
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /controller/network/8056c2e21c000001/member HTTP/1.1")
        );
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /controller/network/8056c2e21c000001/member/a1b2c3d4e5 HTTP/1.1")
        );

        let (result, out) = run_args(&join(&base, &["show", NWID, "A1B2C3D4E5"]));
        assert_eq!(result, Ok(()));
        assert!(
            out.starts_with("200 member show 8056c2e21c000001 a1b2c3d4e5\n{\n"),
            "{out}"
        );
        requests.recv().unwrap();

        let (result, out) = run_args(&join(&base, &["authorize", NWID, "a1b2c3d4e5"]));
        assert_eq!(result, Ok(()));
        assert_eq!(
            out,
            "200 member authorize 8056c2e21c000001 a1b2c3d4e5 10.0.0.1\n"
        );
        let post = requests.recv().unwrap();
        assert!(
            post.starts_with(
                "POST /controller/network/8056c2e21c000001/member/a1b2c3d4e5 HTTP/1.1"
            )
        );
        assert_eq!(request_body(&post), json!({"authorized": true}));

        let (result, out) = run_args(&join(&base, &["deauthorize", NWID, "a1b2c3d4e5"]));
        assert_eq!(result, Ok(()));
        assert_eq!(
            out,
            "200 member deauthorize 8056c2e21c000001 a1b2c3d4e5 OK\n"
        );
        assert_eq!(
            request_body(&requests.recv().unwrap()),
            json!({"authorized": false})
        );

        let (result, out) = run_args(&join(
            &base,
            &[
                "set",
                NWID,
                "a1b2c3d4e5",
                "activeBridge=true",
                "ipAssignments=10.0.0.9",
            ],
        ));
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 member set 8056c2e21c000001 a1b2c3d4e5 OK\n");
        assert_eq!(
            request_body(&requests.recv().unwrap()),
            json!({"activeBridge": true, "ipAssignments": ["10.0.0.9"]})
        );

        let (result, out) = run_args(&["-j", "-T", "t", "-p", &port, "member", "list", NWID]);
        assert_eq!(result, Ok(()));
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!({"a1b2c3d4e5": 2}),
            "-j prints the list's JSON"
        );
        requests.recv().unwrap();

        let (result, _) = run_args(&join(&base, &["list", NWID]));
        assert_eq!(
            line(result),
            "404 member list network 8056c2e21c000001 not found"
        );
    }
}
