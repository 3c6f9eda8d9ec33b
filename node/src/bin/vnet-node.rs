//! `vnet-node`: the vnet daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use vnet_node::service::runtime::{ServiceOptions, run};

/// vnet node daemon.
#[derive(Parser)]
#[command(
    name = "vnet-node",
    version,
    about = "vnet node daemon: a member of vnet networks, one TAP device each (or the root of a moon)"
)]
struct Cli {
    /// Home directory (identity, planet, moons.d, authtoken.secret).
    #[arg(short = 'd', long, default_value = "/var/lib/vnet")]
    home: PathBuf,
    /// UDP port, and the local API's TCP port on 127.0.0.1.
    #[arg(short = 'p', long)]
    port: Option<u16>,
}

fn main() -> ExitCode {
    if let Some(code) = vnet_node::generated_docs::write_if_asked(Cli::command()) {
        return code;
    }
    let cli = Cli::parse();
    vnet_node::service::runtime::init_logging();
    match run(ServiceOptions {
        home: cli.home,
        port: cli.port,
        controller: None,
        root_server: false,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnet-node: {e}");
            ExitCode::from(1)
        }
    }
}
