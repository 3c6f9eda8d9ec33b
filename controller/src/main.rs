//! `vnet-controller`: a full vnet node that also serves the networks whose
//! id begins with its address, with ZeroTier's controller REST API; and
//! `vnet-controller copy-store`, which moves its state between stores.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use vnet_controller::node_plugin::open_store;
use vnet_controller::{Store, StoreSpec};
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Copies every network and member from one store to another, empty one
    /// (stop the controller first). A store is written as in local.conf's
    /// `controllerDbPath`: a `controller.d` directory, or
    /// `postgres:<connection string>`.
    CopyStore {
        /// The store to read.
        #[arg(long)]
        from: String,
        /// The store to write (must hold no network).
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    if let Some(code) = vnet_node::generated_docs::write_if_asked(Cli::command()) {
        return code;
    }
    let cli = Cli::parse();
    vnet_node::service::runtime::init_logging();
    if let Some(Command::CopyStore { from, to }) = &cli.command {
        return match copy_store(from, to) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vnet-controller copy-store: {e:#}");
                ExitCode::from(1)
            }
        };
    }
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

/// Copies `from` into `to` (which must be empty), then reads `to` back and
/// checks it holds exactly what `from` does.
fn copy_store(from: &str, to: &str) -> anyhow::Result<String> {
    let cwd = std::env::current_dir().context("the current directory")?;
    let from_spec = StoreSpec::parse(from, &cwd).map_err(anyhow::Error::msg)?;
    let to_spec = StoreSpec::parse(to, &cwd).map_err(anyhow::Error::msg)?;
    if from_spec == to_spec {
        bail!("--from and --to name the same store");
    }
    let source = open_store(&from_spec, None).context("opening --from")?;
    let target = open_store(&to_spec, None).context("opening --to")?;
    let loaded = source
        .load(None)
        .with_context(|| format!("reading {}", from_spec.describe()))?;
    let existing = target
        .load(None)
        .with_context(|| format!("reading {}", to_spec.describe()))?;
    if !existing.is_empty() {
        bail!(
            "{} already holds {} network(s): copy only into an empty store",
            to_spec.describe(),
            existing.len()
        );
    }
    let members =
        write_all(&target, &loaded).with_context(|| format!("writing {}", to_spec.describe()))?;
    let back = target
        .load(None)
        .with_context(|| format!("reading back {}", to_spec.describe()))?;
    if back != loaded {
        bail!(
            "{} does not read back as what was copied",
            to_spec.describe()
        );
    }
    Ok(format!(
        "copied {} network(s) and {members} member(s) from {} to {}",
        loaded.len(),
        from_spec.describe(),
        to_spec.describe()
    ))
}

fn write_all(target: &Store, loaded: &vnet_controller::store::Loaded) -> anyhow::Result<usize> {
    let mut count = 0;
    for (network, members) in loaded {
        target.save_network(network)?;
        for member in members {
            target.save_member(member)?;
            count += 1;
        }
    }
    Ok(count)
}
