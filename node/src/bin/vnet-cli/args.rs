//! The command line: global flags, commands and their arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::discovery::DEFAULT_HOME;
/// Control a running vnet-node through its local API.
#[derive(Parser, Debug)]
#[command(
    name = "vnet-cli",
    version,
    about = "Control a running vnet-node or vnet-controller: networks, peers, moons, and the controller's networks, members and join keys (zerotier-cli's commands)",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version (`-v`, as zerotier-cli, or `-V`).
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    version: (),
    /// The node's home directory (where vnet.port and authtoken.secret are).
    #[arg(short = 'D', long = "home", global = true, default_value = DEFAULT_HOME)]
    pub home: PathBuf,
    /// The API port [default: HOME/vnet.port, else 9993].
    #[arg(short = 'p', long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The auth token [default: the content of HOME/authtoken.secret].
    #[arg(short = 'T', long, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of the usual lines.
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show this node's address, version and whether it is online.
    #[command(visible_alias = "status")]
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
        /// A join key from the network's admin (`network key create`): the
        /// controller authorizes this node on first contact.
        #[arg(long, alias = "authkey")]
        key: Option<String>,
        /// Put the network's device into this network namespace (an `ip
        /// netns` name or a path such as /proc/<pid>/ns/net: a container
        /// started with --network none); the daemon stays where it is.
        #[arg(long, value_name = "NAME|PATH")]
        netns: Option<String>,
    },
    /// Leave a network.
    Leave {
        /// The network id (16 hex digits).
        nwid: String,
    },
    /// List joined networks, one line each (zerotier-cli format).
    Listnetworks,
    /// Print one field of a joined network (e.g. status, name, mac,
    /// assignedAddresses), or its addresses one per line: ip, ip4 or ip6.
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
pub enum NetworkCommand {
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
        /// key=value with key one of name, private, mtu, multicastLimit, enableBroadcast,
        /// v4AssignMode (zt or none), v6AssignMode (a list of zt, rfc4193, 6plane, or none),
        /// dns (domain,server,...; empty to clear).
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
    /// Compile a rules file (ZeroTier's rules language) and set it as the
    /// network's flow rules (`rules`, `capabilities`, `tags`, `rulesSource`).
    Rules {
        /// The network id (16 hex digits).
        nwid: String,
        /// The rules file (ZeroTier's `.ztrules` language; docs/rules.md).
        file: std::path::PathBuf,
        /// Print the compiled JSON instead of sending it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Join keys: a node that joins with one (`join <nwid> --key`) is
    /// authorized at first contact.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// `network key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a join key; prints it (shown this once).
    Create {
        /// The network id (16 hex digits).
        nwid: String,
        /// Any number of nodes may use it (else one).
        #[arg(long)]
        reusable: bool,
        /// Nodes it authorizes are removed once offline for a while.
        #[arg(long)]
        ephemeral: bool,
        /// It stops working after this long (e.g. 3600, 90m, 24h, 7d).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List a network's join keys (ids and state, never the secrets).
    List {
        /// The network id (16 hex digits).
        nwid: String,
    },
    /// Revoke a join key (it stays listed as revoked).
    Revoke {
        /// The network id (16 hex digits).
        nwid: String,
        /// The key's id (8 hex digits, as `network key list` shows).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
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
    /// Delete a member: it is forgotten (and deauthorized, if it was).
    Delete {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
    },
    /// List the routes a member advertises and which are approved; or
    /// approve or withdraw approval of some (then they are, or stop being,
    /// managed routes via that member).
    Routes {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
        /// `approve` or `unapprove`, then the routes (CIDR), or `all` for
        /// every route it advertises.
        #[arg(value_name = "approve|unapprove ROUTE...")]
        change: Vec<String>,
    },
    /// Change a member's settings.
    Set {
        /// The network id (16 hex digits).
        nwid: String,
        /// The member's address (10 hex digits).
        addr: String,
        /// key=value with key one of authorized, activeBridge, noAutoAssignIps,
        /// ipAssignments (comma-separated addresses, empty for none), name,
        /// tags (ID:VALUE,... for the flow rules' tag matches), capabilities
        /// (comma-separated ids); empty for none.
        #[arg(value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

impl Command {
    /// The command's name as it starts its output lines (`network create`).
    pub fn name(&self) -> &'static str {
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
                NetworkCommand::Rules { .. } => "network rules",
                NetworkCommand::Key { command } => match command {
                    KeyCommand::Create { .. } => "network key create",
                    KeyCommand::List { .. } => "network key list",
                    KeyCommand::Revoke { .. } => "network key revoke",
                },
            },
            Command::Member { command } => match command {
                MemberCommand::List { .. } => "member list",
                MemberCommand::Show { .. } => "member show",
                MemberCommand::Authorize { .. } => "member authorize",
                MemberCommand::Deauthorize { .. } => "member deauthorize",
                MemberCommand::Delete { .. } => "member delete",
                MemberCommand::Set { .. } => "member set",
                MemberCommand::Routes { .. } => "member routes",
            },
        }
    }
}
