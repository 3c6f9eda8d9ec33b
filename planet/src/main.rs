//! `vnet-planet`: the roots' side. `initplanet` starts a planet JSON,
//! `mkworld` signs it into a planet file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{CommandFactory, Parser, Subcommand};
use vnet_node::core::world::WorldKind;
use vnet_node::core::world_spec::{WorldJson, WorldSpecError};
use vnet_node::service::identity_file::{now_ms, read_identity_arg, write_world_file};

/// vnet root server tool.
#[derive(Parser)]
#[command(name = "vnet-planet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a root server: answers WHOIS, relays and introduces the nodes of its
    /// worlds. Needs no TAP and no root privileges.
    Serve {
        /// Home directory (identity, planet, moons.d, authtoken.secret).
        #[arg(short = 'd', long, default_value = "/var/lib/vnet-planet")]
        home: PathBuf,
        /// UDP port, and the local API's TCP port on 127.0.0.1.
        #[arg(short = 'p', long)]
        port: Option<u16>,
    },
    /// Print a new planet JSON for these roots, with a new signing key.
    Initplanet {
        /// Public identities (literals or files) of the roots, at most 4.
        #[arg(required = true)]
        identities: Vec<String>,
        /// World id in hex (default: random).
        #[arg(long)]
        id: Option<String>,
    },
    /// Sign a planet JSON into a planet file.
    Mkworld {
        /// The planet JSON (worldType "planet", with id and timestamp).
        json: PathBuf,
        /// Where to write the planet file.
        #[arg(short = 'o', long, default_value = "planet")]
        output: PathBuf,
        /// Write even if nodes holding the existing file would refuse the new one.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    if let Some(code) = vnet_node::generated_docs::write_if_asked(Cli::command()) {
        return code;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { home, port } => serve(home, port),
        Command::Initplanet { identities, id } => initplanet(&identities, id.as_deref()),
        Command::Mkworld {
            json,
            output,
            force,
        } => mkworld(&json, &output, force),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("E: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve(home: PathBuf, port: Option<u16>) -> anyhow::Result<()> {
    vnet_node::service::runtime::init_logging();
    vnet_node::service::runtime::run(vnet_node::service::runtime::ServiceOptions {
        home,
        port,
        controller: None,
        root_server: true,
    })?;
    Ok(())
}

fn initplanet(identities: &[String], id: Option<&str>) -> anyhow::Result<()> {
    let roots = identities
        .iter()
        .map(|arg| read_identity_arg(arg).map(|id| id.to_public()))
        .collect::<Result<Vec<_>, _>>()?;
    let id = match id {
        Some(text) => u64::from_str_radix(text, 16)
            .ok()
            .filter(|&id| id != 0)
            .ok_or_else(|| anyhow!("--id {text:?} must be 1 to 16 hex digits, not zero"))?,
        None => loop {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).context("random source")?;
            let id = u64::from_be_bytes(bytes);
            if id != 0 {
                break id;
            }
        },
    };
    println!(
        "{}",
        WorldJson::new_planet(id, now_ms(), &roots, &mut vnet_node::service::os_rng()).to_json()
    );
    Ok(())
}

fn mkworld(json_path: &Path, output: &Path, force: bool) -> anyhow::Result<()> {
    let name = json_path.display();
    let text = fs::read_to_string(json_path).with_context(|| format!("cannot read {name}"))?;
    let spec = WorldJson::from_json(&text)
        .and_then(|json| json.to_spec())
        .map_err(|e: WorldSpecError| anyhow!("{name}: {e}"))?;
    if spec.kind != WorldKind::Planet {
        bail!("{name}: worldType: must be \"planet\" (make moons with vnet-idtool genmoon)");
    }
    let Some(timestamp) = spec.timestamp_ms else {
        bail!(
            "{name}: timestamp: missing; a planet carries an explicit timestamp (ms since the epoch), raised for every update"
        );
    };
    let world = spec.sign(timestamp).map_err(|e| anyhow!("{name}: {e}"))?;
    write_world_file(output, &world, force)?;
    println!(
        "wrote {} (signed world {:016x} with timestamp {timestamp})",
        output.display(),
        world.id()
    );
    Ok(())
}
