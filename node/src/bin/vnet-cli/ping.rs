//! `ping`: echoes to a peer, one line per reply or loss.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use vnet_node::service::api_types::{PingAnswer, PingRequest};

use crate::Invocation;
use crate::client::{Method, Transport, body, error_message, parse_answer, read};
use crate::failure::Failure;
use crate::ids::normalize_address;
use crate::output::{or_dash, pretty};

/// How long the node waits for each echo reply (the `timeoutMs` we send).
const PING_TIMEOUT_MS: u64 = 2000;
/// How long we wait for the node beyond its own ping timeout.
const PING_GRACE: Duration = Duration::from_secs(1);
/// The longest interval between echoes.
const MAX_PING_INTERVAL_SECS: f64 = 3600.0;

/// A ping with its arguments checked.
#[derive(Debug)]
pub struct Plan {
    /// The peer, 10 hex digits.
    addr: String,
    /// Echoes to send, at least 1.
    count: u32,
    /// Time from one echo's start to the next.
    interval: Duration,
}

/// `ping`'s arguments, checked.
pub fn plan(addr: &str, count: u32, interval: f64) -> Result<Plan, String> {
    Ok(Plan {
        addr: normalize_address(addr)?,
        count: check_count(count)?,
        interval: check_interval(interval)?,
    })
}

fn check_count(count: u32) -> Result<u32, String> {
    if count >= 1 {
        Ok(count)
    } else {
        Err(format!("bad count {count}: expected at least 1"))
    }
}

fn check_interval(seconds: f64) -> Result<Duration, String> {
    if seconds.is_finite() && (0.0..=MAX_PING_INTERVAL_SECS).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!(
            "bad interval {seconds}: expected 0 to {MAX_PING_INTERVAL_SECS} seconds"
        ))
    }
}

/// Sends the echoes one by one; fails silently when none came back (the
/// lines said so).
pub fn run(call: &Invocation, out: &mut dyn Write, plan: Plan) -> Result<(), Failure> {
    let Plan {
        addr,
        count,
        interval,
    } = plan;
    let api = call.api;
    let path = format!("/ping/{addr}");
    let request = body(PingRequest {
        timeout_ms: Some(PING_TIMEOUT_MS),
    });
    let timeout = Duration::from_millis(PING_TIMEOUT_MS) + PING_GRACE;
    let mut replies = 0u32;
    for n in 1..=count {
        let started = Instant::now();
        let line = match api.send(Method::Post, &path, Some(&request), timeout) {
            Ok(reply) if (200..300).contains(&reply.status) => {
                let answer = parse_answer("ping", &reply.body)?;
                replies += 1;
                if call.json {
                    pretty(&answer)
                } else {
                    format_ping_reply(&addr, n, &read::<PingAnswer>("ping", &answer)?)
                }
            }
            Ok(reply) if reply.status == 504 => {
                if call.json {
                    pretty(
                        &serde_json::from_str(&reply.body).unwrap_or(json!({"error": "timeout"})),
                    )
                } else {
                    format_ping_timeout(&addr, n)
                }
            }
            Ok(reply) => {
                return Err(Failure::http(
                    reply.status,
                    "ping",
                    &error_message(reply.status, &reply.body),
                ));
            }
            Err(Transport::Timeout(_)) => {
                if call.json {
                    pretty(&json!({"error": "timeout"}))
                } else {
                    format_ping_timeout(&addr, n)
                }
            }
            Err(Transport::Failed(reason)) => return Err(Failure::unreachable(api.port, &reason)),
        };
        out.write_all(line.as_bytes())?;
        out.flush()?;
        if n < count {
            thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    }
    if replies == 0 {
        Err(Failure::Silent)
    } else {
        Ok(())
    }
}

/// `200 ping <addr> seq=<n> time=<ms> ms DIRECT <ip/port>` or
/// `... RELAY via <root>`. `seq` is the node's, else the echo's number here.
pub fn format_ping_reply(addr: &str, n: u32, reply: &PingAnswer) -> String {
    let peer = if reply.peer.is_empty() {
        addr
    } else {
        &reply.peer
    };
    let seq = reply.seq.map_or_else(|| n.to_string(), |s| s.to_string());
    let root = or_dash(reply.root.as_deref());
    let path = or_dash(Some(&reply.path));
    let how = match reply.route.as_str() {
        "RELAY" => format!("RELAY via {root}"),
        "TCP_RELAY" if reply.root.is_some() => format!("TCP_RELAY via {root}"),
        "TCP_RELAY" => format!("TCP_RELAY {path}"),
        _ => format!("DIRECT {path}"),
    };
    format!("200 ping {peer} seq={seq} time={} ms {how}\n", reply.rtt_ms)
}

/// `ping <addr> seq=<n> timeout`
pub fn format_ping_timeout(addr: &str, n: u32) -> String {
    format!("ping {addr} seq={n} timeout\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;
    use crate::fake_node::{fake_server, http_response, line, run_args};
    use serde_json::Value;

    fn reply(v: Value) -> PingAnswer {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ping_lines() {
        let direct = reply(
            json!({"peer": "a1b2c3d4e5", "seq": 3, "rttMs": 12, "route": "DIRECT",
            "path": "203.0.113.5/9993", "root": null}),
        );
        assert_eq!(
            format_ping_reply("a1b2c3d4e5", 1, &direct),
            "200 ping a1b2c3d4e5 seq=3 time=12 ms DIRECT 203.0.113.5/9993\n"
        );
        let relay = reply(
            json!({"peer": "a1b2c3d4e5", "seq": 4, "rttMs": 15, "route": "RELAY",
            "path": "198.51.100.1/9993", "root": "8056c2e21c"}),
        );
        assert_eq!(
            format_ping_reply("a1b2c3d4e5", 2, &relay),
            "200 ping a1b2c3d4e5 seq=4 time=15 ms RELAY via 8056c2e21c\n"
        );
        let bare = reply(json!({"rttMs": 7, "route": "DIRECT", "path": "192.0.2.1/1"}));
        assert_eq!(
            format_ping_reply("a1b2c3d4e5", 2, &bare),
            "200 ping a1b2c3d4e5 seq=2 time=7 ms DIRECT 192.0.2.1/1\n"
        );
        let tcp = reply(
            json!({ "peer": "1111111111", "rttMs": 4, "route": "TCP_RELAY",
            "root": "2222222222", "path": "198.51.100.1/9993" }),
        );
        assert_eq!(
            format_ping_reply("1111111111", 1, &tcp),
            "200 ping 1111111111 seq=1 time=4 ms TCP_RELAY via 2222222222\n"
        );
        let tcp_direct = reply(
            json!({ "peer": "1111111111", "rttMs": 4, "route": "TCP_RELAY",
            "root": null, "path": "198.51.100.1/9993" }),
        );
        assert_eq!(
            format_ping_reply("1111111111", 1, &tcp_direct),
            "200 ping 1111111111 seq=1 time=4 ms TCP_RELAY 198.51.100.1/9993\n"
        );
        assert_eq!(
            format_ping_timeout("a1b2c3d4e5", 2),
            "ping a1b2c3d4e5 seq=2 timeout\n"
        );
    }

    #[test]
    fn count_and_interval() {
        assert!(check_count(0).is_err());
        assert_eq!(check_count(1).unwrap(), 1);
        assert_eq!(check_interval(0.25).unwrap(), Duration::from_millis(250));
        assert_eq!(check_interval(0.0).unwrap(), Duration::ZERO);
        assert!(check_interval(-1.0).is_err());
        assert!(check_interval(f64::NAN).is_err());
        assert!(check_interval(f64::INFINITY).is_err());
    }

    #[test]
    fn ping_prints_replies_and_losses() {
        let reply = r#"{"peer": "a1b2c3d4e5", "seq": 1, "rttMs": 5, "route": "RELAY",
            "path": "198.51.100.1/9993", "root": "8056c2e21c"}"#;
        let (port, requests) = fake_server(vec![
            http_response("504 Gateway Timeout", r#"{"error": "timeout"}"#),
            http_response("200 OK", reply),
        ]);
        let port = port.to_string();
        let (result, out) = run_args(&[
            "-T",
            "t",
            "-p",
            &port,
            "ping",
            "A1B2C3D4E5",
            "-c",
            "2",
            "-i",
            "0",
        ]);
        assert_eq!(result, Ok(()));
        assert_eq!(
            out,
            "ping a1b2c3d4e5 seq=1 timeout\n\
             200 ping a1b2c3d4e5 seq=1 time=5 ms RELAY via 8056c2e21c\n"
        );
        let request = requests.recv().unwrap();
        assert!(
            request.starts_with("POST /ping/a1b2c3d4e5 HTTP/1.1\r\n"),
            "{request}"
        );
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            json!({"timeoutMs": PING_TIMEOUT_MS})
        );
    }

    #[test]
    fn ping_with_no_reply_fails() {
        let (port, _requests) = fake_server(vec![http_response(
            "504 Gateway Timeout",
            r#"{"error": "timeout"}"#,
        )]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "t", "-p", &port, "ping", "a1b2c3d4e5", "-c", "1"]);
        assert_eq!(result, Err(Failure::Silent));
        assert_eq!(out, "ping a1b2c3d4e5 seq=1 timeout\n");
    }

    #[test]
    fn ping_error_stops_with_the_error_line() {
        let (port, _requests) = fake_server(vec![http_response(
            "404 Not Found",
            r#"{"error": "unknown peer"}"#,
        )]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "t", "-p", &port, "ping", "a1b2c3d4e5", "-c", "3"]);
        assert_eq!(line(result), "404 ping unknown peer");
        assert_eq!(out, "");
    }
}
