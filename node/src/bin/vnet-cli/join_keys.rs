//! `network key create|list|revoke`: join keys of this node's controller
//! networks (`/controller/network/<nwid>/key`, docs/API.md).

use std::io::Write;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Invocation;
use crate::args::KeyCommand;
use crate::client::Method;
use crate::controller_networks::network_path;
use crate::failure::Failure;
use crate::ids::normalize_network_id;
use crate::output::{or_dash, write_answer};

/// A key command with its arguments checked.
#[derive(Debug)]
pub enum Action {
    /// `network key create`: the request body.
    Create {
        /// 16 hex digits.
        nwid: String,
        /// `{"reusable", "ephemeral", "expiresIn"}`.
        body: Value,
    },
    /// `network key list`.
    List {
        /// 16 hex digits.
        nwid: String,
    },
    /// `network key revoke`.
    Revoke {
        /// 16 hex digits.
        nwid: String,
        /// 8 hex digits.
        id: String,
    },
}

/// A key as the API shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Key {
    id: Option<String>,
    key: Option<String>,
    state: Option<String>,
    reusable: bool,
    ephemeral: bool,
    expires_at: Option<u64>,
    used_by: Vec<String>,
}

/// A `network key` command's arguments, checked.
pub fn check(command: &KeyCommand) -> Result<Action, String> {
    Ok(match command {
        KeyCommand::Create {
            nwid,
            reusable,
            ephemeral,
            expires,
        } => {
            let mut body = json!({ "reusable": reusable, "ephemeral": ephemeral });
            if let Some(e) = expires {
                body["expiresIn"] = json!(e);
            }
            Action::Create {
                nwid: normalize_network_id(nwid)?,
                body,
            }
        }
        KeyCommand::List { nwid } => Action::List {
            nwid: normalize_network_id(nwid)?,
        },
        KeyCommand::Revoke { nwid, id } => {
            if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad key id {id:?}: expected 8 hex digits"));
            }
            Action::Revoke {
                nwid: normalize_network_id(nwid)?,
                id: id.to_ascii_lowercase(),
            }
        }
    })
}

/// Runs a `network key` command.
pub fn run(call: &Invocation, out: &mut dyn Write, action: Action) -> Result<(), Failure> {
    let name = call.name;
    match action {
        Action::Create { nwid, body } => {
            let path = format!("{}/key", network_path(&nwid));
            let answer = call.request(Method::Post, &path, Some(&body))?;
            call.print(out, &answer, |k: &Key| {
                format!(
                    "200 {name} {nwid} {}\n{}",
                    key_line(k),
                    or_dash(k.key.as_deref())
                ) + "\n"
            })?;
        }
        Action::List { nwid } => {
            let path = format!("{}/key", network_path(&nwid));
            let answer = call.request(Method::Get, &path, None)?;
            call.print(out, &answer, |keys: &Vec<Key>| {
                keys.iter()
                    .map(|k| format!("200 {name} {nwid} {}\n", key_line(k)))
                    .collect()
            })?;
        }
        Action::Revoke { nwid, id } => {
            let path = format!("{}/key/{id}", network_path(&nwid));
            let answer = call.request(Method::Delete, &path, None)?;
            write_answer(out, call.json, &answer, || {
                format!("200 {name} {nwid} {id} OK\n")
            })?;
        }
    }
    Ok(())
}

/// `<id> <state> reusable|single-use [ephemeral] expires=<ms>|never used=<n>`.
fn key_line(k: &Key) -> String {
    format!(
        "{} {} {}{} expires={} used={}",
        or_dash(k.id.as_deref()),
        or_dash(k.state.as_deref()),
        if k.reusable { "reusable" } else { "single-use" },
        if k.ephemeral { " ephemeral" } else { "" },
        k.expires_at.map_or("never".into(), |t| t.to_string()),
        k.used_by.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines() {
        let k: Key = serde_json::from_value(json!({"id": "0a0b0c0d", "state": "valid",
            "reusable": false, "ephemeral": true, "expiresAt": null, "usedBy": ["a1b2c3d4e5"]}))
        .unwrap();
        assert_eq!(
            key_line(&k),
            "0a0b0c0d valid single-use ephemeral expires=never used=1"
        );
        assert!(
            check(&KeyCommand::Revoke {
                nwid: "8056c2e21c000001".into(),
                id: "xyz".into()
            })
            .is_err()
        );
    }
}
