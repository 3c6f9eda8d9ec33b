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
use std::net::IpAddr;
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
    /// Show where this node stands behind its NAT: reflected addresses per
    /// root, mapping kind, UDP blocked or not, port mapping, root latency.
    Netcheck,
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
    /// Join a network.
    Join {
        /// The network id (16 hex digits).
        nwid: String,
    },
    /// Leave a network.
    Leave {
        /// The network id (16 hex digits).
        nwid: String,
    },
    /// List joined networks, one line each (zerotier-cli format).
    Listnetworks,
    /// Print one field of a joined network (e.g. status, name, mac, assignedAddresses).
    Get {
        /// The network id (16 hex digits).
        nwid: String,
        /// The field, as in `GET /network/<nwid>`.
        field: String,
    },
    /// Change a joined network's local setting: allowManaged, allowGlobal,
    /// allowDefault or allowDNS, to 1/0 (or true/false). Applies at once and
    /// survives restarts.
    Set {
        /// The network id (16 hex digits).
        nwid: String,
        /// `<setting>=<value>`, e.g. `allowDefault=1`.
        setting: String,
    },
    /// Manage the networks of this node's controller.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Manage the members of this node's controller networks.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Create a network on this node's controller; prints its id.
    Create {
        /// The network's name.
        #[arg(long)]
        name: Option<String>,
        /// Whether members need authorization [default: true].
        #[arg(long, value_name = "true|false")]
        private: Option<String>,
        /// An address pool for automatic assignment (repeatable).
        #[arg(long = "pool", value_name = "START-END")]
        pools: Vec<String>,
        /// A managed route, with an optional gateway (repeatable).
        #[arg(long = "route", value_name = "CIDR[,VIA]")]
        routes: Vec<String>,
    },
    /// List the controller's networks.
    List,
    /// Show a network as JSON.
    Show {
        /// The network id (16 hex digits).
        nwid: String,
    },
    /// Change a network's settings.
    Set {
        /// The network id (16 hex digits).
        nwid: String,
        /// key=value with key one of name, private, mtu, multicastLimit, enableBroadcast.
        #[arg(value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Replace the address pools with these (repeatable).
        #[arg(long = "pool", value_name = "START-END")]
        pools: Vec<String>,
        /// Replace the routes with these (repeatable).
        #[arg(long = "route", value_name = "CIDR[,VIA]")]
        routes: Vec<String>,
        /// Remove every address pool.
        #[arg(long, conflicts_with = "pools")]
        clear_pools: bool,
        /// Remove every route.
        #[arg(long, conflicts_with = "routes")]
        clear_routes: bool,
    },
    /// Delete a network and its members.
    Delete {
        /// The network id (16 hex digits).
        nwid: String,
    },
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// List a network's members, one line each.
    List {
        /// The network id (16 hex digits).
        nwid: String,
    },
    /// Show a member as JSON.
    Show {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
    },
    /// Authorize a member (it gets an address from the pools if due one).
    Authorize {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
    },
    /// Deauthorize a member.
    Deauthorize {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
    },
    /// Change a member's settings.
    Set {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
        /// key=value with key one of authorized, activeBridge, noAutoAssignIps,
        /// ipAssignments (comma-separated addresses, empty for none).
        #[arg(value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Info => "info",
            Command::Listpeers => "listpeers",
            Command::Peers => "peers",
            Command::Netcheck => "netcheck",
            Command::Listmoons => "listmoons",
            Command::Orbit { .. } => "orbit",
            Command::Deorbit { .. } => "deorbit",
            Command::Ping { .. } => "ping",
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Listnetworks => "listnetworks",
            Command::Get { .. } => "get",
            Command::Set { .. } => "set",
            Command::Network { command } => match command {
                NetworkCommand::Create { .. } => "network create",
                NetworkCommand::List => "network list",
                NetworkCommand::Show { .. } => "network show",
                NetworkCommand::Set { .. } => "network set",
                NetworkCommand::Delete { .. } => "network delete",
            },
            Command::Member { command } => match command {
                MemberCommand::List { .. } => "member list",
                MemberCommand::Show { .. } => "member show",
                MemberCommand::Authorize { .. } => "member authorize",
                MemberCommand::Deauthorize { .. } => "member deauthorize",
                MemberCommand::Set { .. } => "member set",
            },
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
    /// `network create`: the controller's address from `/status`, then the POST.
    NetworkCreate {
        body: Value,
    },
    /// `join` / `leave`: one request, `200 <command> OK`.
    Membership {
        method: Method,
        path: String,
    },
    /// `get <nwid> <field>`.
    GetField {
        path: String,
        field: String,
    },
    /// `set <nwid> <setting>=<value>`: a POST with the setting, `200 set OK`.
    SetField {
        path: String,
        body: Value,
    },
    /// `network list`: the ids, then each network.
    NetworkList,
    /// `member list`: the addresses, then each member.
    MemberList {
        nwid: String,
    },
    /// One request to the controller API, its answer printed as `shown` says.
    Controller {
        method: Method,
        path: String,
        body: Option<Value>,
        shown: Shown,
    },
}

/// How a controller command prints its answer (without `-j`); each holds the
/// subject after the command name (`<nwid>` or `<nwid> <addr>`).
enum Shown {
    /// `200 <command> <subject>`, then the JSON.
    Json(String),
    /// `200 <command> <subject> OK`
    Ok(String),
    /// `200 <command> <subject> <ips>` (and why there is no IP, if the API says).
    Ips(String),
}

fn check_arguments(command: &Command) -> Result<Action, Failure> {
    let name = command.name();
    let bad = |m: String| Failure::bad_argument(name, &m);
    Ok(match command {
        Command::Info => Action::Get("/status"),
        Command::Listpeers | Command::Peers => Action::Get("/peer"),
        Command::Listmoons => Action::Get("/moon"),
        Command::Netcheck => Action::Get("/netcheck"),
        Command::Listnetworks => Action::Get("/network"),
        Command::Join { nwid } => Action::Membership {
            method: Method::Post,
            path: format!("/network/{}", normalize_network_id(nwid).map_err(bad)?),
        },
        Command::Leave { nwid } => Action::Membership {
            method: Method::Delete,
            path: format!("/network/{}", normalize_network_id(nwid).map_err(bad)?),
        },
        Command::Set { nwid, setting } => Action::SetField {
            path: format!("/network/{}", normalize_network_id(nwid).map_err(bad)?),
            body: network_local_setting(setting).map_err(bad)?,
        },
        Command::Get { nwid, field } => Action::GetField {
            path: format!("/network/{}", normalize_network_id(nwid).map_err(bad)?),
            field: field.clone(),
        },
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
        Command::Network { command } => check_network_arguments(command).map_err(bad)?,
        Command::Member { command } => check_member_arguments(command).map_err(bad)?,
    })
}

fn network_path(nwid: &str) -> String {
    format!("/controller/network/{nwid}")
}

fn member_path(nwid: &str, addr: &str) -> String {
    format!("/controller/network/{nwid}/member/{addr}")
}

fn check_network_arguments(command: &NetworkCommand) -> Result<Action, String> {
    Ok(match command {
        NetworkCommand::Create {
            name,
            private,
            pools,
            routes,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            if let Some(private) = private {
                body.insert("private".into(), json!(parse_bool("--private", private)?));
            }
            if !pools.is_empty() {
                body.insert("ipAssignmentPools".into(), parse_pools(pools)?);
            }
            if !routes.is_empty() {
                body.insert("routes".into(), parse_routes(routes)?);
            }
            Action::NetworkCreate {
                body: Value::Object(body),
            }
        }
        NetworkCommand::List => Action::NetworkList,
        NetworkCommand::Show { nwid } => {
            let nwid = normalize_network_id(nwid)?;
            Action::Controller {
                method: Method::Get,
                path: network_path(&nwid),
                body: None,
                shown: Shown::Json(nwid),
            }
        }
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
            Action::Controller {
                method: Method::Post,
                path: network_path(&nwid),
                body: Some(Value::Object(body)),
                shown: Shown::Ok(nwid),
            }
        }
        NetworkCommand::Delete { nwid } => {
            let nwid = normalize_network_id(nwid)?;
            Action::Controller {
                method: Method::Delete,
                path: network_path(&nwid),
                body: None,
                shown: Shown::Ok(nwid),
            }
        }
    })
}

fn check_member_arguments(command: &MemberCommand) -> Result<Action, String> {
    // The member's API path and the subject of the output line.
    let ids = |nwid: &str, addr: &str| -> Result<(String, String), String> {
        let nwid = normalize_network_id(nwid)?;
        let addr = normalize_address(addr)?;
        Ok((member_path(&nwid, &addr), format!("{nwid} {addr}")))
    };
    Ok(match command {
        MemberCommand::List { nwid } => Action::MemberList {
            nwid: normalize_network_id(nwid)?,
        },
        MemberCommand::Show { nwid, addr } => {
            let (path, subject) = ids(nwid, addr)?;
            Action::Controller {
                method: Method::Get,
                path,
                body: None,
                shown: Shown::Json(subject),
            }
        }
        MemberCommand::Authorize { nwid, addr } => {
            let (path, subject) = ids(nwid, addr)?;
            Action::Controller {
                method: Method::Post,
                path,
                body: Some(json!({ "authorized": true })),
                shown: Shown::Ips(subject),
            }
        }
        MemberCommand::Deauthorize { nwid, addr } => {
            let (path, subject) = ids(nwid, addr)?;
            Action::Controller {
                method: Method::Post,
                path,
                body: Some(json!({ "authorized": false })),
                shown: Shown::Ok(subject),
            }
        }
        MemberCommand::Set {
            nwid,
            addr,
            settings,
        } => {
            let (path, subject) = ids(nwid, addr)?;
            let body = member_settings(settings)?;
            if body.is_empty() {
                return Err("nothing to set: give KEY=VALUE settings".into());
            }
            Action::Controller {
                method: Method::Post,
                path,
                body: Some(Value::Object(body)),
                shown: Shown::Ok(subject),
            }
        }
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
                    Command::Netcheck => format_netcheck(&answer),
                    Command::Listnetworks => {
                        for n in items(&answer) {
                            warn_gateway_without_forwarding(n);
                        }
                        format_listnetworks(&answer)
                    }
                    _ => format_listmoons(&answer),
                }
            };
            out.write_all(text.as_bytes())?;
        }
        Action::Membership { method, path } => {
            let answer = api.call(name, method, &path, None)?;
            write_ok(out, name, json, &answer)?;
        }
        Action::SetField { path, body } => {
            let answer = api.call(name, Method::Post, &path, Some(&body))?;
            write_ok(out, name, json, &answer)?;
            if !json {
                warn_gateway_without_forwarding(&answer);
            }
        }
        Action::GetField { path, field } => {
            let answer = api.call(name, Method::Get, &path, None)?;
            let value = answer.get(&field).ok_or_else(|| {
                Failure::bad_argument(name, &format!("no field {field:?} in the network"))
            })?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            writeln!(out, "{text}")?;
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
        Action::NetworkCreate { body } => {
            let status = api.call(name, Method::Get, "/status", None)?;
            let controller = status
                .get("address")
                .and_then(Value::as_str)
                .and_then(|a| normalize_address(a).ok())
                .ok_or_else(|| {
                    Failure::local(format_args!(
                        "{name}: vnet-node's /status has no valid \"address\""
                    ))
                })?;
            let path = network_path(&format!("{controller}______"));
            let answer = api.call(name, Method::Post, &path, Some(&body))?;
            let text = if json {
                pretty(&answer)
            } else {
                format_network_created(&answer)
            };
            out.write_all(text.as_bytes())?;
        }
        Action::NetworkList => {
            let ids = api.call(name, Method::Get, "/controller/network", None)?;
            let text = if json {
                pretty(&ids)
            } else {
                let mut networks = Vec::new();
                for id in items(&ids) {
                    let Some(nwid) = id.as_str().and_then(|i| normalize_network_id(i).ok()) else {
                        continue;
                    };
                    if let Some(network) = api.get_unless_gone(name, &network_path(&nwid))? {
                        networks.push(network);
                    }
                }
                format_network_list(&networks)
            };
            out.write_all(text.as_bytes())?;
        }
        Action::MemberList { nwid } => {
            let path = format!("{}/member", network_path(&nwid));
            let list = api.call(name, Method::Get, &path, None)?;
            let text = if json {
                pretty(&list)
            } else {
                let mut addrs: Vec<String> = list
                    .as_object()
                    .map(|m| m.keys().filter_map(|a| normalize_address(a).ok()).collect())
                    .unwrap_or_default();
                addrs.sort();
                let mut members = Vec::new();
                for addr in addrs {
                    if let Some(member) = api.get_unless_gone(name, &member_path(&nwid, &addr))? {
                        members.push(member);
                    }
                }
                format_member_list(&nwid, &members)
            };
            out.write_all(text.as_bytes())?;
        }
        Action::Controller {
            method,
            path,
            body,
            shown,
        } => {
            let answer = api.call(name, method, &path, body.as_ref())?;
            let text = if json {
                pretty(&answer)
            } else {
                match shown {
                    Shown::Json(subject) => format!("200 {name} {subject}\n{}", pretty(&answer)),
                    Shown::Ok(subject) => format!("200 {name} {subject} OK\n"),
                    Shown::Ips(subject) => format_member_ips(name, &subject, &answer),
                }
            };
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

/// zerotier-cli's listnetworks lines, header first.
/// `allowDefault=1` → `{"allowDefault": true}`; only the four local settings.
fn network_local_setting(setting: &str) -> Result<Value, String> {
    let (key, value) = split_setting(setting)?;
    if !["allowManaged", "allowGlobal", "allowDefault", "allowDNS"].contains(&key) {
        return Err(format!(
            "unknown setting {key:?} (allowManaged, allowGlobal, allowDefault, allowDNS)"
        ));
    }
    let on = match value {
        "1" | "true" => true,
        "0" | "false" => false,
        other => return Err(format!("{key}={other}: expected 1 or 0")),
    };
    Ok(json!({ key: on }))
}

/// On stderr: a member that is the gateway of a managed route must forward.
fn warn_gateway_without_forwarding(network: &Value) {
    let gateway_for: Vec<&str> = network
        .get("gatewayFor")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !gateway_for.is_empty() && network.get("ipForwarding") == Some(&Value::Bool(false)) {
        eprintln!(
            "warning: {}: this member is the gateway for {} but IP forwarding is off on this host \
             (sysctl -w net.ipv4.ip_forward=1; see docs/gateway.md)",
            text(network, "id"),
            gateway_for.join(", ")
        );
    }
}

fn format_listnetworks(answer: &Value) -> String {
    let mut out = String::from(
        "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>\n",
    );
    for n in answer.as_array().into_iter().flatten() {
        let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let ips: Vec<String> = n
            .get("assignedAddresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let name = n
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("-");
        out.push_str(&format!(
            "200 listnetworks {} {} {} {} {} {} {}\n",
            s("id"),
            name,
            s("mac"),
            s("status"),
            s("type"),
            s("portDeviceName"),
            if ips.is_empty() {
                "-".to_string()
            } else {
                ips.join(",")
            }
        ));
    }
    out
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

/// A network id: exactly 16 hex digits; returned in lower case.
fn normalize_network_id(text: &str) -> Result<String, String> {
    if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("bad network id {text:?}: expected 16 hex digits"))
    }
}

fn parse_bool(what: &str, text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("bad {what} {text:?}: expected true or false")),
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// `--pool START-END`s as `ipAssignmentPools`.
fn parse_pools(pools: &[String]) -> Result<Value, String> {
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
fn parse_routes(routes: &[String]) -> Result<Value, String> {
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
fn split_setting(setting: &str) -> Result<(&str, &str), String> {
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

/// `network set`'s KEY=VALUE settings as an update body.
fn network_settings(settings: &[String]) -> Result<serde_json::Map<String, Value>, String> {
    let mut body = serde_json::Map::new();
    for setting in settings {
        let (key, value) = split_setting(setting)?;
        let value = match key {
            "name" => json!(value),
            "private" | "enableBroadcast" => json!(parse_bool(key, value)?),
            "mtu" | "multicastLimit" => json!(whole_number(key, value)?),
            _ => {
                return Err(format!(
                    "unknown setting {key:?}: expected name, private, mtu, multicastLimit or \
                     enableBroadcast"
                ));
            }
        };
        body.insert(key.to_string(), value);
    }
    Ok(body)
}

/// `member set`'s KEY=VALUE settings as an update body.
fn member_settings(settings: &[String]) -> Result<serde_json::Map<String, Value>, String> {
    let mut body = serde_json::Map::new();
    for setting in settings {
        let (key, value) = split_setting(setting)?;
        let value = match key {
            "authorized" | "activeBridge" | "noAutoAssignIps" => json!(parse_bool(key, value)?),
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
            _ => {
                return Err(format!(
                    "unknown setting {key:?}: expected authorized, activeBridge, \
                     noAutoAssignIps or ipAssignments"
                ));
            }
        };
        body.insert(key.to_string(), value);
    }
    Ok(body)
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

    /// A GET whose 404 means "gone meanwhile" (None); other errors fail.
    fn get_unless_gone(&self, command: &str, path: &str) -> Result<Option<Value>, Failure> {
        match self.call(command, Method::Get, path, None) {
            Err(Failure::Line(line)) if line.starts_with(&format!("404 {command} ")) => Ok(None),
            other => other.map(Some),
        }
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
        let link = match peer.get("route").and_then(Value::as_str) {
            Some("DIRECT") => "DIRECT",
            Some("TCP_RELAY") => "TCP_RELAY",
            _ => "RELAY",
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

/// `200 netcheck`, then one `key: value` line per finding and one line per root.
fn format_netcheck(report: &Value) -> String {
    let mapping = match report.get("mapping").and_then(Value::as_str) {
        Some("none") => "none (no NAT: the roots see an interface address)",
        Some("endpointIndependent") => "endpoint-independent (easy NAT: hole punching works)",
        Some("endpointDependent") => {
            "endpoint-dependent (hard NAT: a new port per destination; birthday punch or relay)"
        }
        _ => "unknown (fewer than two roots answered over UDP)",
    };
    let udp = if flag(report, "udp") {
        "works"
    } else if flag(report, "forceTcpRelay") {
        "not used (forceTcpRelay)"
    } else if flag(report, "udpBlocked") {
        "BLOCKED (no root answers over UDP)"
    } else {
        "no answer yet"
    };
    let relay = if flag(report, "tcpRelay") {
        "TCP (packets go through a root over TCP)"
    } else {
        "UDP"
    };
    let pm = report.get("portMapping").unwrap_or(&Value::Null);
    let mapping_line = if !flag(pm, "enabled") {
        "off (portMappingEnabled=false)".to_string()
    } else {
        match pm.get("protocol").and_then(Value::as_str) {
            Some(protocol) => format!(
                "{} {} (advertised as {})",
                protocol.to_uppercase(),
                match (
                    pm.get("externalIp").and_then(Value::as_str),
                    pm.get("externalPort")
                ) {
                    (Some(ip), Some(Value::Number(p))) => format!("{ip}/{p}"),
                    (None, Some(Value::Number(p))) => format!("?/{p}"),
                    _ => "-".to_string(),
                },
                report
                    .get("mappedEndpoint")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
            ),
            None => match pm.get("error").and_then(Value::as_str) {
                Some(e) => format!("none ({e})"),
                None => "searching".to_string(),
            },
        }
    };
    let mut out = format!(
        "200 netcheck
udp: {udp}
mapping: {mapping}
relay: {relay}
portmap: {mapping_line}
"
    );
    for root in items(report.get("roots").unwrap_or(&Value::Null)) {
        let latency = match root.get("latency") {
            Some(Value::Number(n)) => format!("{} ms", number(n)),
            _ => "-".to_string(),
        };
        let via = match (flag(root, "udp"), flag(root, "tcp")) {
            (true, _) => "udp",
            (false, true) => "tcp",
            _ => "unreachable",
        };
        out.push_str(&format!(
            "root {} {} reflected={} latency={} via={}\n",
            text(root, "address"),
            text(root, "role"),
            root.get("reflected").and_then(Value::as_str).unwrap_or("-"),
            latency,
            via
        ));
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
    let how = match reply.get("route").and_then(Value::as_str) {
        Some("RELAY") => format!("RELAY via {}", text(reply, "root")),
        Some("TCP_RELAY") if reply.get("root").is_some_and(|r| !r.is_null()) => {
            format!("TCP_RELAY via {}", text(reply, "root"))
        }
        Some("TCP_RELAY") => format!("TCP_RELAY {}", text(reply, "path")),
        _ => format!("DIRECT {}", text(reply, "path")),
    };
    format!(
        "200 ping {peer} seq={seq} time={} ms {how}\n",
        text(reply, "rttMs")
    )
}

/// `200 network create <nwid>`
fn format_network_created(network: &Value) -> String {
    format!("200 network create {}\n", text(network, "id"))
}

/// `200 network list <nwid> <name> PRIVATE|PUBLIC` per network (`-` for no name).
fn format_network_list(networks: &[Value]) -> String {
    let mut out = String::new();
    for n in networks {
        let private = n.get("private").and_then(Value::as_bool).unwrap_or(true);
        out.push_str(&format!(
            "200 network list {} {} {}\n",
            text(n, "id"),
            text(n, "name"),
            if private { "PRIVATE" } else { "PUBLIC" }
        ));
    }
    out
}

/// A member's addresses joined by `,`, or `-`.
fn member_ips(member: &Value) -> String {
    let ips: Vec<&str> = member
        .get("ipAssignments")
        .map(items)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if ips.is_empty() {
        "-".to_string()
    } else {
        ips.join(",")
    }
}

/// `200 member list <nwid> <addr> AUTHORIZED|UNAUTHORIZED <ips>` per member,
/// with ` BRIDGE` after active bridges.
fn format_member_list(nwid: &str, members: &[Value]) -> String {
    let mut out = String::new();
    for m in members {
        let auth = if flag(m, "authorized") {
            "AUTHORIZED"
        } else {
            "UNAUTHORIZED"
        };
        let bridge = if flag(m, "activeBridge") {
            " BRIDGE"
        } else {
            ""
        };
        out.push_str(&format!(
            "200 member list {nwid} {} {auth} {}{bridge}\n",
            text(m, "address"),
            member_ips(m)
        ));
    }
    out
}

/// `200 <command> <subject> <ips>`, then ` (<why no IP>)` if the API says.
fn format_member_ips(command: &str, subject: &str, member: &Value) -> String {
    let why = match member.get("ipAssignmentError") {
        Some(Value::String(e)) if !e.is_empty() => format!(" ({})", one_line(e)),
        _ => String::new(),
    };
    format!("200 {command} {subject} {}{why}\n", member_ips(member))
}

/// `ping <addr> seq=<n> timeout`
fn format_ping_timeout(addr: &str, n: u32) -> String {
    format!("ping {addr} seq={n} timeout\n")
}

#[cfg(test)]
mod tests {

    #[test]
    fn listnetworks_lines_are_zerotier_cli_s() {
        let answer = serde_json::json!([{
            "id": "5b51b6c335000001", "name": "office", "mac": "32:0f:2a:e4:54:40",
            "status": "OK", "type": "PRIVATE", "portDeviceName": "vnc335000001",
            "assignedAddresses": ["10.147.17.5/24"]
        }, {
            "id": "5b51b6c335000002", "name": null, "mac": "32:0f:2a:e4:54:41",
            "status": "ACCESS_DENIED", "type": null, "portDeviceName": "vnc335000002",
            "assignedAddresses": []
        }]);
        assert_eq!(
            format_listnetworks(&answer),
            "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>\n\
             200 listnetworks 5b51b6c335000001 office 32:0f:2a:e4:54:40 OK PRIVATE vnc335000001 10.147.17.5/24\n\
             200 listnetworks 5b51b6c335000002 - 32:0f:2a:e4:54:41 ACCESS_DENIED - vnc335000002 -\n"
        );
    }

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
    fn netcheck_lines() {
        let report = json!({
            "mapping": "endpointDependent",
            "udp": true,
            "udpBlocked": false,
            "tcpRelay": false,
            "forceTcpRelay": false,
            "mappedEndpoint": "198.51.100.7/20100",
            "portMapping": { "enabled": true, "protocol": "upnp", "externalIp": null, "externalPort": 20100 },
            "roots": [
                { "address": "1111111111", "role": "PLANET", "reflected": "198.51.100.7/41000", "latency": 3, "udp": true, "tcp": false },
                { "address": "2222222222", "role": "MOON", "reflected": null, "latency": null, "udp": false, "tcp": true }
            ]
        });
        let text = format_netcheck(&report);
        assert_eq!(
            text,
            "200 netcheck\n\
             udp: works\n\
             mapping: endpoint-dependent (hard NAT: a new port per destination; birthday punch or relay)\n\
             relay: UDP\n\
             portmap: UPNP ?/20100 (advertised as 198.51.100.7/20100)\n\
             root 1111111111 PLANET reflected=198.51.100.7/41000 latency=3 ms via=udp\n\
             root 2222222222 MOON reflected=- latency=- via=tcp\n"
        );
        let blocked = json!({ "udp": false, "udpBlocked": true, "tcpRelay": true, "portMapping": { "enabled": false } });
        let text = format_netcheck(&blocked);
        assert!(text.contains("udp: BLOCKED"), "{text}");
        assert!(text.contains("relay: TCP"), "{text}");
        assert!(text.contains("portmap: off"), "{text}");
        let tcp_ping = json!({ "peer": "1111111111", "rttMs": 4, "route": "TCP_RELAY", "root": "2222222222", "path": "198.51.100.1/9993" });
        assert_eq!(
            format_ping_reply("1111111111", 1, &tcp_ping),
            "200 ping 1111111111 seq=1 time=4 ms TCP_RELAY via 2222222222\n"
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
        assert!(
            network_local_setting("allowDefault=yes")
                .unwrap_err()
                .contains("expected 1 or 0")
        );
        assert!(
            network_local_setting("mtu=1500")
                .unwrap_err()
                .contains("unknown setting")
        );
        assert!(network_local_setting("allowDefault").is_err());
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

    // -----------------------------------------------------------------------
    // Controller commands.

    const NWID: &str = "8056c2e21c000001";

    fn request_body(request: &str) -> Value {
        serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }

    #[test]
    fn network_ids_bools_pools_and_routes() {
        assert_eq!(normalize_network_id("8056C2E21C000001").unwrap(), NWID);
        assert!(normalize_network_id("8056c2e21c00000").is_err());
        assert!(normalize_network_id("8056c2e21c00000g").is_err());
        assert_eq!(parse_bool("--private", "false"), Ok(false));
        assert_eq!(
            parse_bool("--private", "no").unwrap_err(),
            "bad --private \"no\": expected true or false"
        );
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

    #[test]
    fn controller_output_lines() {
        assert_eq!(
            format_network_created(&json!({"id": NWID})),
            "200 network create 8056c2e21c000001\n"
        );
        let nets = [
            json!({"id": NWID, "name": "office", "private": true}),
            json!({"id": "8056c2e21c000002", "name": "", "private": false}),
        ];
        assert_eq!(
            format_network_list(&nets),
            "200 network list 8056c2e21c000001 office PRIVATE\n\
             200 network list 8056c2e21c000002 - PUBLIC\n"
        );
        let members = [
            json!({"address": "a1b2c3d4e5", "authorized": true, "activeBridge": true,
                   "ipAssignments": ["10.0.0.1", "fd00::1"]}),
            json!({"address": "0102030405", "authorized": false, "ipAssignments": []}),
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
                &json!({"ipAssignments": ["10.0.0.1"], "ipAssignmentError": null})
            ),
            "200 member authorize n a 10.0.0.1\n"
        );
        assert_eq!(
            format_member_ips(
                "member authorize",
                "n a",
                &json!({"ipAssignments": [], "ipAssignmentError": "pools used up"})
            ),
            "200 member authorize n a - (pools used up)\n"
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

    #[test]
    fn controller_arguments_are_checked_before_any_request() {
        let cases: [(&[&str], &str); 8] = [
            (
                &["network", "show", "123"],
                "400 network show bad network id \"123\": expected 16 hex digits",
            ),
            (
                &["network", "create", "--private", "maybe"],
                "400 network create bad --private \"maybe\": expected true or false",
            ),
            (
                &["network", "create", "--pool", "10.0.0.1"],
                "400 network create bad --pool \"10.0.0.1\": ",
            ),
            (
                &["network", "set", NWID],
                "400 network set nothing to set: ",
            ),
            (
                &["network", "set", NWID, "speed=9"],
                "400 network set unknown setting \"speed\"",
            ),
            (
                &["member", "authorize", NWID, "xyz"],
                "400 member authorize bad address \"xyz\": expected 10 hex digits",
            ),
            (
                &["member", "set", NWID, "a1b2c3d4e5"],
                "400 member set nothing to set: give KEY=VALUE settings",
            ),
            (
                &["member", "set", NWID, "a1b2c3d4e5", "authorized=yes"],
                "400 member set bad authorized \"yes\": expected true or false",
            ),
        ];
        for (rest, expected) in cases {
            let mut args = vec!["-T", "t", "-p", "1"];
            args.extend_from_slice(rest);
            let (r, _) = run_args(&args);
            let got = line(r);
            assert!(
                got.starts_with(expected),
                "{got:?} should start with {expected:?}"
            );
        }
        assert!(
            Cli::try_parse_from([
                "vnet-cli",
                "network",
                "set",
                NWID,
                "--pool",
                "a-b",
                "--clear-pools"
            ])
            .is_err()
        );
    }
}
