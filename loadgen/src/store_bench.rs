//! `vnet-storebench`: the controller's store at N members, measured, to
//! choose the embedded store (issue 13: JSON files or SQLite). For each
//! store: N members saved one at a time, each durable before the next as an
//! API write is (latency median and p99), then a cold load of them all,
//! parsed into members (time), and the space used: vnet-controller's own
//! SQLite, JSON-file and PostgreSQL stores. One line per store. Run alone,
//! on a disk (not tmpfs): bench/store.sh.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use vnet_controller::file_store::FileStore;
use vnet_controller::model::{Member, Network};
use vnet_controller::pg_store::PgStore;
use vnet_controller::sqlite_store::SqliteStore;
use vnet_controller::update::member_update;
use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;

/// The controller's store at N members.
#[derive(Parser)]
#[command(name = "vnet-storebench", version, about)]
struct Args {
    /// Members in the network.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// An empty directory on a disk, for the file and SQLite stores.
    #[arg(long)]
    dir: PathBuf,
    /// Also measure this (empty) PostgreSQL database.
    #[arg(long)]
    postgres: Option<String>,
}

/// One store under test.
trait BenchStore {
    fn name(&self) -> &'static str;
    fn save_network(&mut self, network: &Network) -> anyhow::Result<()>;
    fn save_member(&mut self, member: &Member) -> anyhow::Result<()>;
    /// Loads every member, parsed.
    fn load(&mut self) -> anyhow::Result<usize>;
    /// Bytes used, if known.
    fn size_bytes(&self) -> Option<u64>;
}

struct Files {
    dir: PathBuf,
    store: FileStore,
}

impl BenchStore for Files {
    fn name(&self) -> &'static str {
        "files"
    }
    fn save_network(&mut self, network: &Network) -> anyhow::Result<()> {
        Ok(self.store.save_network(network)?)
    }
    fn save_member(&mut self, member: &Member) -> anyhow::Result<()> {
        Ok(self.store.save_member(member)?)
    }
    fn load(&mut self) -> anyhow::Result<usize> {
        let fresh = FileStore::at(&self.dir);
        Ok(fresh.load()?.iter().map(|(_, m)| m.len()).sum())
    }
    fn size_bytes(&self) -> Option<u64> {
        Some(disk_usage(&self.dir))
    }
}

struct Sqlite {
    store: SqliteStore,
}

impl BenchStore for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn save_network(&mut self, network: &Network) -> anyhow::Result<()> {
        Ok(self.store.save_network(network)?)
    }
    fn save_member(&mut self, member: &Member) -> anyhow::Result<()> {
        Ok(self.store.save_member(member)?)
    }
    fn load(&mut self) -> anyhow::Result<usize> {
        let fresh = SqliteStore::open(self.store.path())?;
        Ok(fresh.load(None)?.iter().map(|(_, m)| m.len()).sum())
    }
    fn size_bytes(&self) -> Option<u64> {
        let path = self.store.path();
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Some(len(path) + len(&wal))
    }
}

struct Postgres {
    store: PgStore,
}

impl BenchStore for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn save_network(&mut self, network: &Network) -> anyhow::Result<()> {
        Ok(self.store.save_network(network)?)
    }
    fn save_member(&mut self, member: &Member) -> anyhow::Result<()> {
        Ok(self.store.save_member(member)?)
    }
    fn load(&mut self) -> anyhow::Result<usize> {
        Ok(self.store.load(None)?.iter().map(|(_, m)| m.len()).sum())
    }
    fn size_bytes(&self) -> Option<u64> {
        None
    }
}

/// Bytes of the files under `dir`, rounded up to 4 KiB blocks each (what a
/// file costs on ext4).
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += 4096 + disk_usage(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len().div_ceil(4096) * 4096;
            }
        }
    }
    total
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

fn run(store: &mut dyn BenchStore, members: usize) -> anyhow::Result<String> {
    let controller: Address = "8056c2e21c".parse()?;
    let nwid = NetworkId::new(controller, 1);
    let network = Network::new(nwid, 1);
    store.save_network(&network)?;
    let mut latencies = Vec::with_capacity(members);
    let started = Instant::now();
    for i in 0..members {
        let addr = Address::from_u64(0x10_0000_0000 + i as u64)?;
        let ip = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        let member = member_update(
            &Member::new(nwid, addr, 2),
            &json!({"authorized": true, "ipAssignments": [ip]}),
            3,
        )?;
        let t = Instant::now();
        store.save_member(&member)?;
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    let t = Instant::now();
    let loaded = store.load()?;
    let load = t.elapsed();
    if loaded != members {
        bail!("{}: loaded {loaded} members of {members}", store.name());
    }
    Ok(format!(
        "store={} members={members} save_median_ms={:.2} save_p99_ms={:.2} saves_per_s={:.0} load_ms={:.0} size_kb={}",
        store.name(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        members as f64 / total.as_secs_f64(),
        load.as_secs_f64() * 1e3,
        store
            .size_bytes()
            .map_or("-".to_string(), |b| (b / 1024).to_string()),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    if std::fs::read_dir(&args.dir)?.next().is_some() {
        bail!("{} is not empty", args.dir.display());
    }
    let files_dir = args.dir.join("controller.d");
    let mut files = Files {
        store: FileStore::at(&files_dir),
        dir: files_dir,
    };
    println!("{}", run(&mut files, args.members)?);
    let mut sqlite = Sqlite {
        store: SqliteStore::open(&args.dir.join("controller.db"))?,
    };
    println!("{}", run(&mut sqlite, args.members)?);
    if let Some(conninfo) = &args.postgres {
        let mut pg = Postgres {
            store: PgStore::connect(conninfo)?,
        };
        println!("{}", run(&mut pg, args.members)?);
    }
    Ok(())
}
