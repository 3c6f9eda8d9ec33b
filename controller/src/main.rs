//! `vnet-controller`: a full vnet node that also serves the networks whose
//! id begins with its address, with ZeroTier's controller REST API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vnet_node::service::runtime::{ServiceOptions, run};

/// vnet network controller (a node that also serves network configs).
#[derive(Parser)]
#[command(name = "vnet-controller", version, about)]
struct Cli {
    /// Home directory (identity, planet, controller.d, authtoken.secret).
    #[arg(short = 'd', long, default_value = "/var/lib/vnet")]
    home: PathBuf,
    /// UDP port, and the local API's TCP port on 127.0.0.1.
    #[arg(short = 'p', long)]
    port: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vnet_node::service::runtime::init_logging();
    match run(ServiceOptions {
        home: cli.home,
        port: cli.port,
        controller: Some(vnet_controller::factory()),
        root_server: false,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnet-controller: {e}");
            ExitCode::from(1)
        }
    }
}
