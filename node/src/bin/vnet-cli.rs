//! `vnet-cli`: talk to a running vnet-node through its local HTTP API
//! (docs/API.md), with zerotier-cli's commands and output lines.
//!
//! Success lines go to stdout; failures are one line on stderr and exit
//! status 1: `<httpcode> <command> <message>` for an error the node (or a
//! local argument check) answered, `vnet-cli: cannot reach vnet-node at
//! 127.0.0.1:<port> (is it running?): <reason>` when nothing answers.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

const DEFAULT_HOME: &str = "/var/lib/vnet";
const DEFAULT_PORT: u16 = 9993;
const PORT_FILE: &str = "vnet.port";
const TOKEN_FILE: &str = "authtoken.secret";
const AUTH_HEADER: &str = "X-VNet-Auth";
/// How long to wait for the TCP connection to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole request (other than a ping) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node waits for each echo reply (the `timeoutMs` we send).
const PING_TIMEOUT_MS: u64 = 2000;
/// How long we wait for the node beyond its own ping timeout.
const PING_GRACE: Duration = Duration::from_secs(1);
const MAX_PING_INTERVAL_SECS: f64 = 3600.0;

/// Control a running vnet-node through its local API.
#[derive(Parser, Debug)]
#[command(name = "vnet-cli", version, about)]
struct Cli {
    /// The node's home directory (where vnet.port and authtoken.secret are).
    #[arg(short = 'D', long = "home", global = true, default_value = DEFAULT_HOME)]
    home: PathBuf,
    /// The API port [default: HOME/vnet.port, else 9993].
    #[arg(short = 'p', long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// The auth token [default: the content of HOME/authtoken.secret].
    #[arg(short = 'T', long, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of the usual lines.
    #[arg(short = 'j', long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show this node's address, version and whether it is online.
    Info,
    /// List peers, one line each (zerotier-cli listpeers format).
    Listpeers,
    /// Show peers as a table.
    Peers,
    /// List the moons this node orbits (or waits for).
    Listmoons,
    /// Start orbiting a moon, fetching it from a seed root.
    Orbit {
        /// The moon's world id (10 or 16 hex digits).
        world_id: String,
        /// The address of a root of that moon (10 hex digits).
        seed: String,
    },
    /// Stop orbiting a moon.
    Deorbit {
        /// The moon's world id (10 or 16 hex digits).
        world_id: String,
    },
    /// Send echoes to a peer and print each round trip.
    Ping {
        /// The peer's address (10 hex digits).
        addr: String,
        /// How many echoes to send.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
        /// Seconds between echoes (fractions allowed).
        #[arg(
            short = 'i',
            long,
            default_value_t = 1.0,
            allow_negative_numbers = true
        )]
        interval: f64,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Info => "info",
            Command::Listpeers => "listpeers",
            Command::Peers => "peers",
            Command::Listmoons => "listmoons",
            Command::Orbit { .. } => "orbit",
            Command::Deorbit { .. } => "deorbit",
            Command::Ping { .. } => "ping",
        }
    }
}

/// Why the command failed: the line for stderr (if any); exit status 1.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Line(String),
    /// Nothing more to say (e.g. a ping that got no reply: its lines said so).
    Silent,
}

impl Failure {
    fn http(code: u16, command: &str, message: &str) -> Self {
        Failure::Line(format!("{code} {command} {message}"))
    }

    fn bad_argument(command: &str, message: &str) -> Self {
        Failure::http(400, command, message)
    }

    fn unreachable(port: u16, reason: &str) -> Self {
        Failure::Line(format!(
            "vnet-cli: cannot reach vnet-node at 127.0.0.1:{port} (is it running?): {reason}"
        ))
    }

    fn local(message: impl fmt::Display) -> Self {
        Failure::Line(format!("vnet-cli: {message}"))
    }
}

/// Writing to stdout failed (e.g. a closed pipe): stop quietly.
impl From<io::Error> for Failure {
    fn from(_: io::Error) -> Self {
        Failure::Silent
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = run(cli, &mut out);
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Line(line)) => {
            eprintln!("{line}");
            ExitCode::from(1)
        }
        Err(Failure::Silent) => ExitCode::from(1),
    }
}

/// A command with its arguments checked and normalized.
enum Action {
    Get(&'static str),
    Orbit {
        world_id: String,
        seed: String,
    },
    Deorbit {
        world_id: String,
    },
    Ping {
        addr: String,
        count: u32,
        interval: Duration,
    },
}

fn check_arguments(command: &Command) -> Result<Action, Failure> {
    let name = command.name();
    let bad = |m: String| Failure::bad_argument(name, &m);
    Ok(match command {
        Command::Info => Action::Get("/status"),
        Command::Listpeers | Command::Peers => Action::Get("/peer"),
        Command::Listmoons => Action::Get("/moon"),
        Command::Orbit { world_id, seed } => Action::Orbit {
            world_id: normalize_world_id(world_id).map_err(bad)?,
            seed: normalize_address(seed).map_err(bad)?,
        },
        Command::Deorbit { world_id } => Action::Deorbit {
            world_id: normalize_world_id(world_id).map_err(bad)?,
        },
        Command::Ping {
            addr,
            count,
            interval,
        } => Action::Ping {
            addr: normalize_address(addr).map_err(bad)?,
            count: check_count(*count).map_err(bad)?,
            interval: check_interval(*interval).map_err(bad)?,
        },
    })
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let name = cli.command.name();
    let action = check_arguments(&cli.command)?;
    let port = resolve_port(cli.port, &cli.home)?;
    let token = resolve_token(cli.token.as_deref(), &cli.home)?;
    let api = Api::new(port, token);
    let json = cli.json;
    match action {
        Action::Get(path) => {
            let answer = api.call(name, Method::Get, path, None)?;
            let text = if json {
                pretty(&answer)
            } else {
                match &cli.command {
                    Command::Info => format_info(&answer),
                    Command::Listpeers => format_listpeers(&answer),
                    Command::Peers => format_peers(&answer),
                    _ => format_listmoons(&answer),
                }
            };
            out.write_all(text.as_bytes())?;
        }
        Action::Orbit { world_id, seed } => {
            let path = format!("/moon/{world_id}");
            let answer = api.call(name, Method::Post, &path, Some(&json!({ "seed": seed })))?;
            write_ok(out, name, json, &answer)?;
        }
        Action::Deorbit { world_id } => {
            let path = format!("/moon/{world_id}");
            let answer = api.call(name, Method::Delete, &path, None)?;
            write_ok(out, name, json, &answer)?;
        }
        Action::Ping {
            addr,
            count,
            interval,
        } => ping(&api, out, json, &addr, count, interval)?,
    }
    Ok(())
}

fn write_ok(out: &mut dyn Write, name: &str, json: bool, answer: &Value) -> io::Result<()> {
    if json {
        out.write_all(pretty(answer).as_bytes())
    } else {
        writeln!(out, "200 {name} OK")
    }
}

fn ping(
    api: &Api,
    out: &mut dyn Write,
    json: bool,
    addr: &str,
    count: u32,
    interval: Duration,
) -> Result<(), Failure> {
    let path = format!("/ping/{addr}");
    let body = json!({ "timeoutMs": PING_TIMEOUT_MS });
    let timeout = Duration::from_millis(PING_TIMEOUT_MS) + PING_GRACE;
    let mut replies = 0u32;
    for n in 1..=count {
        let started = Instant::now();
        let line = match api.send(Method::Post, &path, Some(&body), timeout) {
            Ok(reply) if (200..300).contains(&reply.status) => {
                let answer = parse_answer("ping", &reply.body)?;
                replies += 1;
                if json {
                    pretty(&answer)
                } else {
                    format_ping_reply(addr, n, &answer)
                }
            }
            Ok(reply) if reply.status == 504 => {
                if json {
                    pretty(
                        &serde_json::from_str(&reply.body).unwrap_or(json!({"error": "timeout"})),
                    )
                } else {
                    format_ping_timeout(addr, n)
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
                if json {
                    pretty(&json!({"error": "timeout"}))
                } else {
                    format_ping_timeout(addr, n)
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

// ---------------------------------------------------------------------------
// Arguments, port and token.

/// A node address: exactly 10 hex digits; returned in lower case.
fn normalize_address(text: &str) -> Result<String, String> {
    if text.len() == 10 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("bad address {text:?}: expected 10 hex digits"))
    }
}

/// A world id: 16 hex digits, or 10 (a moon named after its seed root's
/// address), which are zero-padded to 16; returned in lower case.
fn normalize_world_id(text: &str) -> Result<String, String> {
    if (text.len() == 10 || text.len() == 16) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("{:0>16}", text.to_ascii_lowercase()))
    } else {
        Err(format!(
            "bad world id {text:?}: expected 10 or 16 hex digits"
        ))
    }
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

/// The port from `-p`, else from `HOME/vnet.port`, else the default.
fn resolve_port(given: Option<u16>, home: &Path) -> Result<u16, Failure> {
    if let Some(port) = given {
        return Ok(port);
    }
    let file = home.join(PORT_FILE);
    match fs::read_to_string(&file) {
        Ok(text) => match text.trim().parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(Failure::local(format_args!(
                "bad port number in {}: {:?} (use -p PORT)",
                file.display(),
                text.trim()
            ))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DEFAULT_PORT),
        Err(e) => Err(Failure::local(format_args!(
            "cannot read the API port from {}: {e} (use -p PORT)",
            file.display()
        ))),
    }
}

/// The token from `-T`, else the content of `HOME/authtoken.secret`
/// (surrounding white space trimmed).
fn resolve_token(given: Option<&str>, home: &Path) -> Result<String, Failure> {
    let (token, source) = match given {
        Some(token) => (token.trim().to_string(), "given with -T".to_string()),
        None => {
            let file = home.join(TOKEN_FILE);
            let text = fs::read_to_string(&file).map_err(|e| {
                Failure::local(format_args!(
                    "cannot read the auth token from {}: {e} (use -T TOKEN, or -D for another home)",
                    file.display()
                ))
            })?;
            (text.trim().to_string(), format!("in {}", file.display()))
        }
    };
    if token.is_empty() {
        return Err(Failure::local(format_args!(
            "the auth token {source} is empty"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::local(format_args!(
            "the auth token {source} has characters other than printable ASCII"
        )));
    }
    Ok(token)
}

// ---------------------------------------------------------------------------
// Transport.

#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Post,
    Delete,
}

/// An HTTP answer, whatever its status.
struct Reply {
    status: u16,
    body: String,
}

/// No HTTP answer.
#[derive(Debug)]
enum Transport {
    /// Connected, but the answer did not come in time.
    Timeout(String),
    /// Could not connect, or the connection broke.
    Failed(String),
}

struct Api {
    agent: ureq::Agent,
    port: u16,
    token: String,
}

impl Api {
    fn new(port: u16, token: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The API is on loopback: never go through an HTTP proxy from the environment.
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("vnet-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Api { agent, port, token }
    }

    /// One request; any HTTP status is a `Reply`.
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, Transport> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let token = self.token.as_str();
        let result = match (method, body) {
            (Method::Get, _) => self
                .agent
                .get(&url)
                .header(AUTH_HEADER, token)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            (Method::Delete, _) => self
                .agent
                .delete(&url)
                .header(AUTH_HEADER, token)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            (Method::Post, body) => {
                let request = self
                    .agent
                    .post(&url)
                    .header(AUTH_HEADER, token)
                    .config()
                    .timeout_global(Some(timeout))
                    .build();
                match body {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body.to_string().as_str()),
                    None => request.send_empty(),
                }
            }
        };
        let mut response = result.map_err(transport_error)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(transport_error)?;
        Ok(Reply { status, body })
    }

    /// One request whose answer must be 2xx with a JSON body (or none).
    fn call(
        &self,
        command: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let reply = self
            .send(method, path, body, REQUEST_TIMEOUT)
            .map_err(|e| match e {
                Transport::Timeout(reason) | Transport::Failed(reason) => {
                    Failure::unreachable(self.port, &reason)
                }
            })?;
        if !(200..300).contains(&reply.status) {
            return Err(Failure::http(
                reply.status,
                command,
                &error_message(reply.status, &reply.body),
            ));
        }
        parse_answer(command, &reply.body)
    }
}

fn transport_error(e: ureq::Error) -> Transport {
    use ureq::Timeout as T;
    match e {
        ureq::Error::Timeout(T::Connect | T::Resolve) => Transport::Failed(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
        ureq::Error::Timeout(_) => Transport::Timeout("timed out waiting for the answer".into()),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            Transport::Timeout(format!("timed out waiting for the answer: {e}"))
        }
        ureq::Error::Io(e) => Transport::Failed(e.to_string()),
        other => Transport::Failed(other.to_string()),
    }
}

/// A 2xx body as JSON; an empty body is `null`.
fn parse_answer(command: &str, body: &str) -> Result<Value, Failure> {
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(body).map_err(|e| {
        Failure::local(format_args!(
            "{command}: vnet-node sent an answer that is not JSON: {e}"
        ))
    })
}

/// The message of an error answer: its JSON `error`, else its text, else
/// the status's reason phrase.
fn error_message(status: u16, body: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body)
        && let Some(Value::String(message)) = map.get("error")
    {
        return one_line(message);
    }
    let text = one_line(body);
    if !text.is_empty() {
        return text;
    }
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        500 => "internal server error",
        503 => "service unavailable",
        504 => "timeout",
        _ => "error",
    }
    .to_string()
}

/// Text squeezed onto one line of at most 200 characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 200 {
        let cut: String = joined.chars().take(200).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------
// Output. Each function returns whole lines (each ending in '\n').

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// A field as text: strings as they are, numbers and booleans printed,
/// missing, null or empty as `-`.
fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => number(n),
        Some(Value::Bool(b)) => b.to_string(),
        _ => "-".to_string(),
    }
}

/// Integers as they are; fractions with three decimals.
fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        n.to_string()
    } else {
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            Some(f) => format!("{f:.3}"),
            None => n.to_string(),
        }
    }
}

fn flag(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn paths(peer: &Value) -> &[Value] {
    peer.get("paths").map(items).unwrap_or(&[])
}

fn usable(path: &Value) -> bool {
    flag(path, "active") && !flag(path, "expired")
}

/// `200 info <addr> <version> ONLINE|OFFLINE`
fn format_info(status: &Value) -> String {
    let online = if flag(status, "online") {
        "ONLINE"
    } else {
        "OFFLINE"
    };
    format!(
        "200 info {} {} {online}\n",
        text(status, "address"),
        text(status, "version")
    )
}

/// `200 listpeers <addr> <paths> <latency> <version> <role>` per peer, where
/// paths are the active ones as `ip/port;msSinceLastSend;msSinceLastRecv`
/// joined by `,`, or `-`.
fn format_listpeers(peers: &Value) -> String {
    let mut out = String::new();
    for peer in items(peers) {
        let active: Vec<String> = paths(peer)
            .iter()
            .filter(|p| usable(p))
            .map(|p| {
                format!(
                    "{};{};{}",
                    text(p, "address"),
                    text(p, "lastSend"),
                    text(p, "lastReceive")
                )
            })
            .collect();
        let active = if active.is_empty() {
            "-".to_string()
        } else {
            active.join(",")
        };
        out.push_str(&format!(
            "200 listpeers {} {active} {} {} {}\n",
            text(peer, "address"),
            text(peer, "latency"),
            text(peer, "version"),
            text(peer, "role")
        ));
    }
    out
}

/// The path a peer's traffic goes over: the preferred active one, else the
/// first active one.
fn best_path(peer: &Value) -> Option<&Value> {
    let paths = paths(peer);
    paths
        .iter()
        .find(|p| usable(p) && flag(p, "preferred"))
        .or_else(|| paths.iter().find(|p| usable(p)))
}

/// `200 peers`, then an aligned table
/// `<address> <ver> <role> <lat> <link> <lastTX> <lastRX> <path>`.
fn format_peers(peers: &Value) -> String {
    const HEADER: [&str; 8] = [
        "<address>",
        "<ver>",
        "<role>",
        "<lat>",
        "<link>",
        "<lastTX>",
        "<lastRX>",
        "<path>",
    ];
    // Right-aligned: the numeric columns.
    const RIGHT: [bool; 8] = [false, false, false, true, false, true, true, false];
    let mut rows: Vec<[String; 8]> = vec![HEADER.map(String::from)];
    for peer in items(peers) {
        let link = if peer.get("route").and_then(Value::as_str) == Some("DIRECT") {
            "DIRECT"
        } else {
            "RELAY"
        };
        let (tx, rx, path) = match best_path(peer) {
            Some(p) => (
                text(p, "lastSend"),
                text(p, "lastReceive"),
                text(p, "address"),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        rows.push([
            text(peer, "address"),
            text(peer, "version"),
            text(peer, "role"),
            text(peer, "latency"),
            link.to_string(),
            tx,
            rx,
            path,
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::from("200 peers\n");
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            if i == 7 {
                line.push_str(cell);
            } else if RIGHT[i] {
                line.push_str(&format!("{cell:>w$}", w = widths[i]));
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `200 listmoons`, then the JSON array of `GET /moon`.
fn format_listmoons(moons: &Value) -> String {
    format!("200 listmoons\n{}", pretty(moons))
}

/// `200 ping <addr> seq=<n> time=<ms> ms DIRECT <ip/port>` or
/// `... RELAY via <root>`. `seq` is the node's, else the echo's number here.
fn format_ping_reply(addr: &str, n: u32, reply: &Value) -> String {
    let peer = match reply.get("peer").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => p,
        _ => addr,
    };
    let seq = match reply.get("seq") {
        Some(Value::Number(s)) => number(s),
        _ => n.to_string(),
    };
    let how = if reply.get("route").and_then(Value::as_str) == Some("RELAY") {
        format!("RELAY via {}", text(reply, "root"))
    } else {
        format!("DIRECT {}", text(reply, "path"))
    };
    format!(
        "200 ping {peer} seq={seq} time={} ms {how}\n",
        text(reply, "rttMs")
    )
}

/// `ping <addr> seq=<n> timeout`
fn format_ping_timeout(addr: &str, n: u32) -> String {
    format!("ping {addr} seq={n} timeout\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn sample_peers() -> Value {
        json!([
            {
                "address": "8056c2e21c", "latency": 12, "role": "PLANET", "version": "0.1.0",
                "route": "DIRECT", "relay": null, "session": true, "sessionAge": 5000,
                "upgradedAgo": null,
                "paths": [
                    {"address": "10.0.0.9/9993", "lastSend": 900, "lastReceive": 1000,
                     "active": false, "expired": true, "preferred": false, "latency": -1},
                    {"address": "203.0.113.5/9993", "lastSend": 120, "lastReceive": 130,
                     "active": true, "expired": false, "preferred": true, "latency": 12},
                    {"address": "[2001:db8::1]/9993", "lastSend": 4000, "lastReceive": null,
                     "active": true, "expired": false, "preferred": false, "latency": 15}
                ]
            },
            {
                "address": "a1b2c3d4e5", "latency": -1, "role": "LEAF", "version": null,
                "route": "RELAY", "relay": "8056c2e21c", "session": false, "sessionAge": null,
                "upgradedAgo": null, "paths": []
            }
        ])
    }

    #[test]
    fn info_line() {
        let status = json!({"address": "8056c2e21c", "version": "0.1.0", "online": true,
            "publicIdentity": "x", "root": false});
        assert_eq!(format_info(&status), "200 info 8056c2e21c 0.1.0 ONLINE\n");
        let offline = json!({"address": "8056c2e21c", "version": "0.1.0", "online": false});
        assert_eq!(format_info(&offline), "200 info 8056c2e21c 0.1.0 OFFLINE\n");
        assert_eq!(format_info(&json!({})), "200 info - - OFFLINE\n");
    }

    #[test]
    fn listpeers_lines() {
        assert_eq!(
            format_listpeers(&sample_peers()),
            "200 listpeers 8056c2e21c 203.0.113.5/9993;120;130,[2001:db8::1]/9993;4000;- 12 0.1.0 PLANET\n\
             200 listpeers a1b2c3d4e5 - -1 - LEAF\n"
        );
        assert_eq!(format_listpeers(&json!([])), "");
    }

    #[test]
    fn peers_table() {
        let table = format_peers(&sample_peers());
        let expected = "200 peers\n\
            <address>  <ver> <role> <lat> <link> <lastTX> <lastRX> <path>\n\
            8056c2e21c 0.1.0 PLANET    12 DIRECT      120      130 203.0.113.5/9993\n\
            a1b2c3d4e5 -     LEAF      -1 RELAY         -        - -\n";
        assert_eq!(table, expected);
        assert_eq!(
            format_peers(&json!([])),
            "200 peers\n<address> <ver> <role> <lat> <link> <lastTX> <lastRX> <path>\n"
        );
    }

    #[test]
    fn peers_table_falls_back_to_an_unpreferred_active_path() {
        let peers = json!([{"address": "0123456789", "latency": 3, "role": "LEAF",
            "version": "0.1.0", "route": "DIRECT", "paths": [
                {"address": "192.0.2.1/9993", "lastSend": 1, "lastReceive": 2, "active": true,
                 "expired": false, "preferred": false}]}]);
        let table = format_peers(&peers);
        assert!(
            table
                .lines()
                .nth(2)
                .unwrap()
                .ends_with(" 1        2 192.0.2.1/9993"),
            "{table}"
        );
    }

    #[test]
    fn listmoons_output() {
        let moons = json!([{"id": "000000deadbeef00", "waiting": true, "seed": "deadbeef00"}]);
        let text = format_listmoons(&moons);
        assert!(text.starts_with("200 listmoons\n[\n"));
        let json_part = text.strip_prefix("200 listmoons\n").unwrap();
        assert_eq!(serde_json::from_str::<Value>(json_part).unwrap(), moons);
    }

    #[test]
    fn ping_lines() {
        let direct = json!({"peer": "a1b2c3d4e5", "seq": 3, "rttMs": 12, "route": "DIRECT",
            "path": "203.0.113.5/9993", "root": null});
        assert_eq!(
            format_ping_reply("a1b2c3d4e5", 1, &direct),
            "200 ping a1b2c3d4e5 seq=3 time=12 ms DIRECT 203.0.113.5/9993\n"
        );
        let relay = json!({"peer": "a1b2c3d4e5", "seq": 4, "rttMs": 1.5, "route": "RELAY",
            "path": "198.51.100.1/9993", "root": "8056c2e21c"});
        assert_eq!(
            format_ping_reply("a1b2c3d4e5", 2, &relay),
            "200 ping a1b2c3d4e5 seq=4 time=1.500 ms RELAY via 8056c2e21c\n"
        );
        let bare = json!({"rttMs": 7, "route": "DIRECT", "path": "192.0.2.1/1"});
        assert_eq!(
            format_ping_reply("a1b2c3d4e5", 2, &bare),
            "200 ping a1b2c3d4e5 seq=2 time=7 ms DIRECT 192.0.2.1/1\n"
        );
        assert_eq!(
            format_ping_timeout("a1b2c3d4e5", 2),
            "ping a1b2c3d4e5 seq=2 timeout\n"
        );
    }

    #[test]
    fn addresses_and_world_ids() {
        assert_eq!(normalize_address("A1B2C3D4E5").unwrap(), "a1b2c3d4e5");
        assert!(normalize_address("a1b2c3d4e").is_err());
        assert!(normalize_address("a1b2c3d4e5f").is_err());
        assert!(normalize_address("g1b2c3d4e5").is_err());
        assert!(normalize_address("").is_err());
        assert!(normalize_address("a1b2c3d4é").is_err());
        assert_eq!(
            normalize_world_id("DEADBEEF00").unwrap(),
            "000000deadbeef00"
        );
        assert_eq!(
            normalize_world_id("000000deadbeef00").unwrap(),
            "000000deadbeef00"
        );
        assert!(normalize_world_id("deadbeef0").is_err());
        assert!(normalize_world_id("000000deadbeef0").is_err());
        assert!(normalize_world_id("000000deadbeef00x").is_err());
        assert_eq!(
            normalize_world_id("xyz").unwrap_err(),
            "bad world id \"xyz\": expected 10 or 16 hex digits"
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
    fn error_messages() {
        assert_eq!(error_message(401, r#"{"error": "bad token"}"#), "bad token");
        assert_eq!(error_message(404, "no such\npeer "), "no such peer");
        assert_eq!(error_message(404, ""), "not found");
        assert_eq!(error_message(418, r#"{"nope": 1}"#), r#"{"nope": 1}"#);
    }

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["vnet-cli"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("arguments parse")
    }

    fn run_args(args: &[&str]) -> (Result<(), Failure>, String) {
        let mut out = Vec::new();
        let result = run(cli(args), &mut out);
        (result, String::from_utf8(out).expect("utf-8 output"))
    }

    fn line(result: Result<(), Failure>) -> String {
        match result {
            Err(Failure::Line(line)) => line,
            other => panic!("expected a failure line, got {other:?}"),
        }
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// A server on 127.0.0.1 that answers one canned response per connection,
    /// in order, and reports each request's text.
    fn fake_server(responses: Vec<String>) -> (u16, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for response in responses {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                loop {
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes());
                let _ = tx.send(String::from_utf8_lossy(&request).to_string());
            }
        });
        (port, rx)
    }

    fn unused_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").port()
    }

    #[test]
    fn info_against_a_fake_node() {
        let body = r#"{"address": "8056c2e21c", "version": "0.1.0", "online": true}"#;
        let (port, requests) = fake_server(vec![http_response("200 OK", body)]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "sekrit", "-p", &port, "info"]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 info 8056c2e21c 0.1.0 ONLINE\n");
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /status http/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nx-vnet-auth: sekrit\r\n"), "{request}");
    }

    #[test]
    fn json_flag_prints_the_api_json() {
        let body = r#"{"address":"8056c2e21c","online":false}"#;
        let (port, _requests) = fake_server(vec![http_response("200 OK", body)]);
        let port = port.to_string();
        let (result, out) = run_args(&["-j", "-T", "t", "-p", &port, "info"]);
        assert_eq!(result, Ok(()));
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            serde_json::from_str::<Value>(body).unwrap()
        );
        assert!(out.contains("\n  \"address\""), "pretty: {out}");
    }

    #[test]
    fn unauthorized_prints_the_error_field() {
        let (port, _requests) = fake_server(vec![http_response(
            "401 Unauthorized",
            r#"{"error": "missing or wrong auth token"}"#,
        )]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "wrong", "-p", &port, "info"]);
        assert_eq!(line(result), "401 info missing or wrong auth token");
        assert_eq!(out, "");
    }

    #[test]
    fn nothing_listening_is_cannot_reach() {
        let port = unused_port().to_string();
        let (result, _) = run_args(&["-T", "t", "-p", &port, "info"]);
        let line = line(result);
        let prefix =
            format!("vnet-cli: cannot reach vnet-node at 127.0.0.1:{port} (is it running?): ");
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.len() > prefix.len(), "{line}");
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

    #[test]
    fn bad_arguments_fail_before_any_request() {
        // Port 1: nothing should try to connect anyway.
        let (r, _) = run_args(&["-T", "t", "-p", "1", "orbit", "xyz", "deadbeef00"]);
        assert_eq!(
            line(r),
            "400 orbit bad world id \"xyz\": expected 10 or 16 hex digits"
        );
        let (r, _) = run_args(&["-T", "t", "-p", "1", "orbit", "deadbeef00", "dead"]);
        assert_eq!(
            line(r),
            "400 orbit bad address \"dead\": expected 10 hex digits"
        );
        let (r, _) = run_args(&["-T", "t", "-p", "1", "ping", "nothex!!!!"]);
        assert_eq!(
            line(r),
            "400 ping bad address \"nothex!!!!\": expected 10 hex digits"
        );
        let (r, _) = run_args(&["-T", "t", "-p", "1", "ping", "a1b2c3d4e5", "-c", "0"]);
        assert_eq!(line(r), "400 ping bad count 0: expected at least 1");
        let (r, _) = run_args(&["-T", "t", "-p", "1", "ping", "a1b2c3d4e5", "-i", "-2"]);
        assert!(line(r).starts_with("400 ping bad interval -2"));
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

    #[test]
    fn port_and_token_from_home() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path();
        assert_eq!(resolve_port(None, dir).unwrap(), DEFAULT_PORT);
        assert_eq!(resolve_port(Some(7), dir).unwrap(), 7);
        fs::write(dir.join(PORT_FILE), "12345\n").unwrap();
        assert_eq!(resolve_port(None, dir).unwrap(), 12345);
        fs::write(dir.join(PORT_FILE), "zap").unwrap();
        assert!(line(resolve_port(None, dir).map(|_| ())).contains("vnet.port"));

        let missing = line(resolve_token(None, dir).map(|_| ()));
        assert!(
            missing.starts_with(&format!(
                "vnet-cli: cannot read the auth token from {}",
                dir.join(TOKEN_FILE).display()
            )),
            "{missing}"
        );
        fs::write(dir.join(TOKEN_FILE), "  abcDEF123\n").unwrap();
        assert_eq!(resolve_token(None, dir).unwrap(), "abcDEF123");
        assert_eq!(resolve_token(Some("given"), dir).unwrap(), "given");
        fs::write(dir.join(TOKEN_FILE), "\n").unwrap();
        assert!(line(resolve_token(None, dir).map(|_| ())).contains("is empty"));
        assert!(line(resolve_token(Some("a b"), dir).map(|_| ())).contains("printable ASCII"));
    }

    #[test]
    fn missing_token_file_is_reported_before_connecting() {
        let home = tempfile::tempdir().unwrap();
        let home = home.path().to_str().unwrap().to_string();
        let (result, _) = run_args(&["-D", &home, "-p", "1", "info"]);
        assert!(line(result).contains("authtoken.secret"));
    }

    #[test]
    fn global_flags_may_follow_the_command() {
        let cli = cli(&["info", "-j", "-p", "5", "-T", "x"]);
        assert!(cli.json);
        assert_eq!(cli.port, Some(5));
        assert_eq!(cli.token.as_deref(), Some("x"));
        assert!(Cli::try_parse_from(["vnet-cli", "-p", "0", "info"]).is_err());
    }
}
