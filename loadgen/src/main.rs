//! `vnet-loadgen`: simulates many vnet nodes against a real root and prints
//! one line of figures, so runs can be compared (bench/scale.sh).
//!
//! The root scenario: N nodes (real identities, cached) say HELLO to the
//! planet's root from N loopback addresses and keep alive; the root's memory
//! and CPU are read from `/proc` before, while they all live, and, with
//! `--restart-cmd`, how long the restarted root takes to have them all back.

mod identity_cache;
mod join_scenario;
mod local_api;
mod process_stats;
mod swarm;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use vnet_node::core::world::World;

use crate::local_api::LocalApi;
use crate::swarm::Swarm;

/// Simulated vnet nodes against a real root.
#[derive(Parser)]
#[command(name = "vnet-loadgen", version, about)]
struct Args {
    /// Nodes to simulate.
    #[arg(long, default_value_t = 1_000)]
    peers: usize,
    /// The planet file (its first root is the one measured).
    #[arg(long)]
    planet: PathBuf,
    /// The root's process id (its memory and CPU are read from /proc).
    #[arg(long)]
    root_pid: u32,
    /// The root's home (for its API token) and its port (UDP and API).
    #[arg(long)]
    root_home: PathBuf,
    /// The root's port.
    #[arg(long, default_value_t = 9993)]
    root_port: u16,
    /// Where identities are cached.
    #[arg(long, default_value = "target/loadgen/identities")]
    identities: PathBuf,
    /// Give up when not every node is admitted within this many seconds.
    #[arg(long, default_value_t = 600)]
    admit_timeout_s: u64,
    /// Seconds over which keepalive CPU is measured, all nodes admitted.
    #[arg(long, default_value_t = 30)]
    window_s: u64,
    /// A shell command that restarts the root (same home, same port); the
    /// time until the restarted root holds every node again is measured.
    #[arg(long)]
    restart_cmd: Option<String>,
    /// `root` (keepalive and restart figures of the root) or `join` (every
    /// node joins one network on a real controller).
    #[arg(long, default_value = "root")]
    scenario: String,
    /// join: the network (its controller must be running).
    #[arg(long)]
    network: Option<String>,
    /// join: the controller's process id.
    #[arg(long)]
    controller_pid: Option<u32>,
    /// join: the controller's home (for its API token).
    #[arg(long)]
    controller_home: Option<PathBuf>,
    /// join: the controller's port (UDP and API).
    #[arg(long)]
    controller_port: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_files_limit(args.peers + 64)?;
    let planet_bytes =
        std::fs::read(&args.planet).with_context(|| format!("{}", args.planet.display()))?;
    let planet = World::decode(&planet_bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.planet.display()))?;
    let identities = identity_cache::load_or_make(&args.identities, args.peers)?;
    let root = LocalApi::new(&args.root_home, args.root_port)?;

    let idle_rss_kb = process_stats::rss_kb(args.root_pid)?;
    let mut swarm = Swarm::new(identities, &planet)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.admit_timeout_s);
    while swarm.online() < swarm.len() {
        if Instant::now() > deadline {
            bail!(
                "{} of {} nodes admitted after {} s",
                swarm.online(),
                swarm.len(),
                args.admit_timeout_s
            );
        }
        swarm.run_for(Duration::from_millis(500))?;
    }
    let admitted_s = started.elapsed().as_secs_f64();
    eprintln!("all {} nodes admitted in {admitted_s:.1} s", swarm.len());
    swarm.run_for(Duration::from_secs(5))?;
    if args.scenario == "join" {
        let controller = join_scenario::Controller::from_args(
            args.network.as_deref(),
            args.controller_pid,
            args.controller_home.as_deref(),
            args.controller_port,
        )?;
        return join_scenario::run(&mut swarm, &controller, &root, args.window_s);
    }
    if args.scenario != "root" {
        bail!("unknown scenario {:?} (root or join)", args.scenario);
    }
    let cpu_before = process_stats::cpu_seconds(args.root_pid)?;
    let window = Instant::now();
    swarm.run_for(Duration::from_secs(args.window_s))?;
    let cpu_s = process_stats::cpu_seconds(args.root_pid)? - cpu_before;
    let cpu_pct = 100.0 * cpu_s / window.elapsed().as_secs_f64();
    let rss_kb = process_stats::rss_kb(args.root_pid)?;
    let root_peers = root.peers()?;
    let per_peer_b = (rss_kb.saturating_sub(idle_rss_kb) * 1024) / args.peers.max(1) as u64;
    let per_1k = cpu_pct * 1_000.0 / args.peers.max(1) as f64;

    let readmit = match &args.restart_cmd {
        None => "-".to_string(),
        Some(cmd) => format!(
            "{:.1}",
            restart_and_readmit(cmd, &root, &mut swarm, args.peers)?
        ),
    };
    println!(
        "peers={} admitted_s={admitted_s:.1} root_peers={root_peers} root_idle_rss_kb={idle_rss_kb} \
         root_rss_kb={rss_kb} root_rss_per_peer_b={per_peer_b} root_cpu_pct={cpu_pct:.2} \
         root_cpu_pct_per_1k_peers={per_1k:.2} restart_readmit_s={readmit}",
        args.peers
    );
    Ok(())
}

/// Runs `cmd` (which restarts the root) and returns the seconds from its
/// end until the root has heard from `want` peers again, the swarm running
/// all along.
fn restart_and_readmit(
    cmd: &str,
    root: &LocalApi,
    swarm: &mut Swarm,
    want: usize,
) -> anyhow::Result<f64> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .with_context(|| format!("restart command {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "restart command {cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let restarted = Instant::now();
    loop {
        swarm.run_for(Duration::from_millis(200))?;
        if root.peers_heard_from().is_ok_and(|n| n >= want) {
            return Ok(restarted.elapsed().as_secs_f64());
        }
        if restarted.elapsed() > Duration::from_secs(120) {
            bail!("the restarted root did not readmit {want} peers within 120 s");
        }
    }
}

/// Raises the soft limit of open files to `want` (within the hard limit):
/// one socket per simulated node.
fn raise_open_files_limit(want: usize) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur as usize >= want {
            return Ok(());
        }
        if (limit.rlim_max as usize) < want {
            bail!(
                "{want} open files needed, the hard limit is {} (ulimit -Hn)",
                limit.rlim_max
            );
        }
        limit.rlim_cur = want as libc::rlim_t;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
