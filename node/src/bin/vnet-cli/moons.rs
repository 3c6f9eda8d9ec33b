//! `listmoons`, `orbit` and `deorbit`: the moons this node orbits.

use std::io::Write;

use serde_json::Value;
use vnet_node::service::api_types::OrbitRequest;

use crate::Invocation;
use crate::client::{Method, body};
use crate::failure::Failure;
use crate::ids::{normalize_address, normalize_world_id};
use crate::output::{pretty, write_answer, write_ok};

/// A moon command with its arguments checked.
#[derive(Debug)]
pub enum Action {
    /// `listmoons`.
    List,
    /// `orbit <worldId> <seed>`.
    Orbit {
        /// 16 hex digits.
        world_id: String,
        /// 10 hex digits.
        seed: String,
    },
    /// `deorbit <worldId>`.
    Deorbit {
        /// 16 hex digits.
        world_id: String,
    },
}

/// `orbit`'s arguments, checked.
pub fn orbit(world_id: &str, seed: &str) -> Result<Action, String> {
    Ok(Action::Orbit {
        world_id: normalize_world_id(world_id)?,
        seed: normalize_address(seed)?,
    })
}

/// `deorbit`'s argument, checked.
pub fn deorbit(world_id: &str) -> Result<Action, String> {
    Ok(Action::Deorbit {
        world_id: normalize_world_id(world_id)?,
    })
}

/// Runs a moon command.
pub fn run(call: &Invocation, out: &mut dyn Write, action: Action) -> Result<(), Failure> {
    match action {
        Action::List => {
            let answer = call.request(Method::Get, "/moon", None)?;
            write_answer(out, call.json, &answer, || format_listmoons(&answer))?;
        }
        Action::Orbit { world_id, seed } => {
            let request = body(OrbitRequest { seed });
            let answer =
                call.request(Method::Post, &format!("/moon/{world_id}"), Some(&request))?;
            write_ok(out, call.name, call.json, &answer)?;
        }
        Action::Deorbit { world_id } => {
            let answer = call.request(Method::Delete, &format!("/moon/{world_id}"), None)?;
            write_ok(out, call.name, call.json, &answer)?;
        }
    }
    Ok(())
}

/// The JSON array of `GET /moon` alone, as zerotier-cli prints it (so
/// `| jq` works).
pub fn format_listmoons(moons: &Value) -> String {
    pretty(moons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{fake_server, http_response, line, run_args};
    use serde_json::json;

    #[test]
    fn listmoons_output() {
        let moons = json!([{"id": "000000deadbeef00", "waiting": true, "seed": "deadbeef00"}]);
        let text = format_listmoons(&moons);
        assert!(text.starts_with("[\n"), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), moons);
    }

    #[test]
    fn orbit_posts_the_seed_to_the_padded_id() {
        let (port, requests) = fake_server(vec![http_response(
            "200 OK",
            r#"{"id": "000000deadbeef00", "seed": "deadbeef00", "waiting": true}"#,
        )]);
        let port = port.to_string();
        let (result, out) =
            run_args(&["-T", "t", "-p", &port, "orbit", "DEADBEEF00", "deadbeef00"]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 orbit OK\n");
        let request = requests.recv().unwrap();
        assert!(
            request.starts_with("POST /moon/000000deadbeef00 HTTP/1.1\r\n"),
            "{request}"
        );
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            json!({"seed": "deadbeef00"})
        );
    }

    #[test]
    fn deorbit_of_an_unknown_moon() {
        let (port, requests) = fake_server(vec![http_response(
            "404 Not Found",
            r#"{"error": "not orbiting"}"#,
        )]);
        let port = port.to_string();
        let (result, _) = run_args(&["-T", "t", "-p", &port, "deorbit", "000000deadbeef00"]);
        assert_eq!(line(result), "404 deorbit not orbiting");
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("DELETE /moon/000000deadbeef00 ")
        );
    }
}
