//! `vnet-cli`: talk to a running vnet-node through its local HTTP API
//! (docs/API.md), with zerotier-cli's commands and output lines.
//!
//! Success lines go to stdout; failures are one line on stderr and exit
//! status 1: `<httpcode> <command> <message>` for an error the node (or a
//! local argument check) answered, `vnet-cli: cannot reach vnet-node at
//! 127.0.0.1:<port> (is it running?): <reason>` when nothing answers.
//!
//! Each command is checked in full before anything is read or sent (a bad
//! argument is reported as the node would, with 400), then run against the
//! API; the answers are read as the typed bodies of
//! `vnet_node::service::api_types`, and `-j` prints them as the node sent them.

mod args;
mod client;
mod controller_members;
mod controller_networks;
mod discovery;
mod failure;
mod ids;
mod info;
mod join_keys;
mod moons;
mod netcheck;
mod networks;
mod output;
mod peers;
mod ping;
mod setting_args;

#[cfg(test)]
mod fake_node;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::args::{Cli, Command};
use crate::client::{Api, Method};
use crate::discovery::{resolve_port, resolve_token};
use crate::failure::Failure;
use crate::output::pretty;

fn main() -> ExitCode {
    if let Some(code) = vnet_node::generated_docs::write_if_asked(Cli::command()) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 2, as clap's and every vnet binary's.
            return if e.use_stderr() {
                ExitCode::from(2)
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

/// A command with its arguments checked, by command group.
enum Action {
    Info,
    Peers(peers::Layout),
    Netcheck,
    Moons(moons::Action),
    Ping(ping::Plan),
    Networks(networks::Action),
    ControllerNetworks(controller_networks::Action),
    ControllerMembers(controller_members::Action),
}

/// The command's arguments checked and normalized; the message says what is wrong.
fn check_arguments(command: &Command) -> Result<Action, String> {
    Ok(match command {
        Command::Info => Action::Info,
        Command::Listpeers => Action::Peers(peers::Layout::Lines),
        Command::Peers => Action::Peers(peers::Layout::Table),
        Command::Netcheck => Action::Netcheck,
        Command::Listmoons => Action::Moons(moons::Action::List),
        Command::Orbit { world_id, seed } => Action::Moons(moons::orbit(world_id, seed)?),
        Command::Deorbit { world_id } => Action::Moons(moons::deorbit(world_id)?),
        Command::Ping {
            addr,
            count,
            interval,
        } => Action::Ping(ping::plan(addr, *count, *interval)?),
        Command::Join { nwid, key, netns } => {
            Action::Networks(networks::join(nwid, key.as_deref(), netns.as_deref())?)
        }
        Command::Leave { nwid } => Action::Networks(networks::leave(nwid)?),
        Command::Listnetworks => Action::Networks(networks::Action::List),
        Command::Get { nwid, field } => Action::Networks(networks::get(nwid, field)?),
        Command::Set { nwid, setting } => Action::Networks(networks::set(nwid, setting)?),
        Command::Network { command } => {
            Action::ControllerNetworks(controller_networks::check(command)?)
        }
        Command::Member { command } => {
            Action::ControllerMembers(controller_members::check(command)?)
        }
    })
}

/// Checks the arguments, finds the API and its token, and runs the command.
fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let name = cli.command.name();
    let action = check_arguments(&cli.command).map_err(|m| Failure::bad_argument(name, &m))?;
    let port = resolve_port(cli.port, &cli.home)?;
    let token = resolve_token(cli.token.as_deref(), &cli.home)?;
    let api = Api::new(port, token);
    let call = Invocation {
        name,
        json: cli.json,
        api: &api,
    };
    match action {
        Action::Info => info::run(&call, out),
        Action::Peers(layout) => peers::run(&call, out, layout),
        Action::Netcheck => netcheck::run(&call, out),
        Action::Moons(action) => moons::run(&call, out, action),
        Action::Ping(plan) => ping::run(&call, out, plan),
        Action::Networks(action) => networks::run(&call, out, action),
        Action::ControllerNetworks(action) => controller_networks::run(&call, out, action),
        Action::ControllerMembers(action) => controller_members::run(&call, out, action),
    }
}

/// The command being run: its name (the second word of its lines), whether
/// `-j` was given, and the API it talks to.
pub struct Invocation<'a> {
    /// The command's name, e.g. `network create`.
    pub name: &'static str,
    /// Print the API's JSON instead of the usual lines.
    pub json: bool,
    /// The node's API.
    pub api: &'a Api,
}

impl Invocation<'_> {
    /// One request whose answer must be 2xx with a JSON body (or none).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        self.api.call(self.name, method, path, body)
    }

    /// An answer read as the typed body the API documents.
    pub fn read<T: DeserializeOwned>(&self, answer: &Value) -> Result<T, Failure> {
        client::read(self.name, answer)
    }

    /// Prints an answer: its JSON with `-j`, else `human`'s lines for it read
    /// as `T` (with `-j` it is not read, so any JSON prints).
    pub fn print<T: DeserializeOwned>(
        &self,
        out: &mut dyn Write,
        answer: &Value,
        human: impl FnOnce(&T) -> String,
    ) -> Result<(), Failure> {
        let text = if self.json {
            pretty(answer)
        } else {
            human(&self.read(answer)?)
        };
        out.write_all(text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_node::{NWID, cli, fake_server, http_response, line, run_args, unused_port};

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
    fn status_is_info_as_in_zerotier_cli() {
        let body = r#"{"address": "8056c2e21c", "version": "0.1.0", "online": true}"#;
        let (port, requests) = fake_server(vec![http_response("200 OK", body)]);
        let port = port.to_string();
        let (result, out) = run_args(&["-T", "t", "-p", &port, "status"]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, "200 info 8056c2e21c 0.1.0 ONLINE\n");
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /status http/1.1\r\n"), "{request}");
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
