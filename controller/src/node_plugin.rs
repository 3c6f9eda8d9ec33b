//! The controller as the node sees it: [`NetworkController`] for the core,
//! and [`plugin`] / [`factory`] for the service's `ServiceOptions::controller`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, Weak};

use vnet_node::core::address::Address;
use vnet_node::core::netconf::{ConfigDenied, NetworkConfigData, NetworkController};
use vnet_node::core::network_id::NetworkId;
use vnet_node::core::node::MemberAsked;

use vnet_node::service::runtime::{ControllerFactory, wall_clock_ms};

use crate::api;
use crate::controller::{Controller, Stats};
use crate::controller_lease::hold_lease;
pub use crate::controller_lock::{lock, try_lock};
use crate::file_store::FileStore;
use crate::member_report::MemberReport;
use crate::pg_store::PgStore;
use crate::sqlite_store::SqliteStore;
use crate::store::{Store, StoreError, StoreSpec};
use crate::store_import::import_file_store;
use vnet_node::service::home::Home;

/// Most deferred requests remembered, to be answered by a push once the
/// controller is free again (beyond it the member simply asks again).
const MAX_OWED_ANSWERS: usize = 4_096;
/// Saves made per lock of the controller by the saver thread, so config
/// requests (which never wait for the lock) are put off only briefly.
const SAVES_PER_LOCK: usize = 1;
/// How often idle ephemeral members are looked for.
const EPHEMERAL_SWEEP_INTERVAL_MS: u64 = 1_000;

/// A [`Controller`] shared with the REST API, with a clock, as the node's
/// [`NetworkController`]. It never waits for the controller's lock (held
/// by the API or the saver during disk writes): a request that finds it
/// busy gets [`ConfigDenied::Later`] and is answered by a push later.
pub struct NodeController {
    shared: Arc<Mutex<Controller>>,
    clock: Box<dyn Fn() -> u64 + Send>,
    seen: u64,
    /// Every member known when made, for [`NetworkController::known_members`].
    known: Vec<(NetworkId, Address)>,
    /// Requests put off because the controller was busy.
    owed: BTreeSet<(NetworkId, Address)>,
    stats: Arc<Stats>,
    /// When idle ephemeral members were last looked for.
    last_sweep_ms: u64,
}

impl NodeController {
    /// Wraps `shared`; `clock` gives the time in ms (stamped on configs and
    /// new members). The first [`NetworkController::take_changed`] reports
    /// changes made after this call.
    pub fn new(shared: Arc<Mutex<Controller>>, clock: impl Fn() -> u64 + Send + 'static) -> Self {
        let c = lock(&shared);
        let seen = c.sequence();
        let stats = c.stats();
        let known = c
            .network_ids()
            .into_iter()
            .flat_map(|nwid| {
                c.stored_members(nwid)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |m| (nwid, m.address))
            })
            .collect();
        drop(c);
        Self {
            shared,
            clock: Box::new(clock),
            seen,
            known,
            owed: BTreeSet::new(),
            stats,
            last_sweep_ms: 0,
        }
    }
}

impl NetworkController for NodeController {
    fn request(
        &mut self,
        network: NetworkId,
        member: Address,
        asked: Option<&MemberAsked>,
    ) -> Result<NetworkConfigData, ConfigDenied> {
        let now = (self.clock)();
        let Some(mut c) = try_lock(&self.shared) else {
            self.stats.count_busy();
            if self.owed.len() < MAX_OWED_ANSWERS {
                self.owed.insert((network, member));
            }
            return Err(ConfigDenied::Later);
        };
        // A push on behalf of a member no longer stored (deleted, an
        // ephemeral one gone) denies it without listing it as a requester:
        // only its own request does that.
        if asked.is_none()
            && c.network(network).is_some_and(|n| n.private)
            && !c.is_stored(network, member)
        {
            return Err(ConfigDenied::AccessDenied);
        }
        c.request_config(now, network, member, asked.map(MemberReport::from_asked))
            .map(Into::into)
    }

    fn still_admitted(&mut self, members: &[(NetworkId, Address)]) -> Option<Vec<bool>> {
        let c = try_lock(&self.shared)?;
        Some(members.iter().map(|(n, a)| c.admits(*n, *a)).collect())
    }

    fn known_members(&self) -> Vec<(NetworkId, Address)> {
        self.known.clone()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.stats.snapshot().named()
    }

    fn take_changed(&mut self) -> Vec<(NetworkId, Address)> {
        let now = (self.clock)();
        let Some(mut c) = try_lock(&self.shared) else {
            return Vec::new();
        };
        if now.saturating_sub(self.last_sweep_ms) >= EPHEMERAL_SWEEP_INTERVAL_MS {
            self.last_sweep_ms = now;
            c.remove_idle_ephemeral(now);
        }
        let mut changed = c.changes_since(self.seen);
        self.seen = c.sequence();
        drop(c);
        changed.extend(std::mem::take(&mut self.owed));
        changed.sort();
        changed.dedup();
        changed
    }
}

/// Starts the thread that makes the saves config requests queue (see
/// [`Controller::save_requested`]); it ends when the controller is dropped.
pub fn spawn_saver(
    shared: &Arc<Mutex<Controller>>,
    clock: impl Fn() -> u64 + Send + 'static,
) -> std::io::Result<()> {
    let (wake, woken) = sync_channel(1);
    lock(shared).set_saver(wake);
    let weak = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("vnet-ctl-saver".into())
        .spawn(move || saver_loop(&weak, &woken, &clock))?;
    Ok(())
}

fn saver_loop(shared: &Weak<Mutex<Controller>>, woken: &Receiver<()>, clock: &dyn Fn() -> u64) {
    while woken.recv().is_ok() {
        loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let left = lock(&shared).save_requested(clock(), SAVES_PER_LOCK);
            if left == 0 {
                break;
            }
        }
    }
}

/// The controller of the node at `address` with home `home`, its state
/// where `local.conf`'s `controllerDbPath` says (default
/// `home/controller.db`, into which an older home's `controller.d` files
/// are moved first): the core's plugin (on the wall clock) and the REST
/// routes, sharing one [`Controller`], and its saver thread. With the
/// PostgreSQL store this first waits, as a standby, for the controller's
/// lease ([`hold_lease`]), and ends the process if the lease is lost. The
/// error names a malformed file, row or setting.
pub fn plugin(
    address: Address,
    home: &Path,
) -> Result<(Box<dyn NetworkController>, axum::Router), String> {
    let conf = Home::open(home)
        .and_then(|h| h.local_conf())
        .map_err(|e| e.to_string())?;
    let spec = match &conf.settings.controller_db_path {
        Some(text) => StoreSpec::parse(text, home)?,
        None => {
            if let Some(done) = import_file_store(home).map_err(|e| e.to_string())? {
                tracing::info!(
                    networks = done.networks,
                    members = done.members,
                    files_kept_at = %done.kept_at.display(),
                    "moved the controller's files into its SQLite database"
                );
            }
            StoreSpec::default_for(home)
        }
    };
    let store = open_store(&spec, Some(address)).map_err(|e| e.to_string())?;
    let mut controller = Controller::open_store(address, store).map_err(|e| e.to_string())?;
    if let Some(seconds) = conf.settings.ephemeral_member_timeout_seconds {
        controller.set_ephemeral_timeout_s(seconds);
    }
    tracing::info!(store = %spec.describe(), "controller state loaded");
    let shared = Arc::new(Mutex::new(controller));
    spawn_saver(&shared, wall_clock_ms).map_err(|e| format!("cannot start the saver: {e}"))?;
    crate::name_server::spawn(&shared)
        .map_err(|e| format!("cannot start the member-name DNS responder: {e}"))?;
    let routes = api::router(shared.clone());
    let node = NodeController::new(shared, wall_clock_ms);
    Ok((Box::new(node), routes))
}

/// Opens the store `spec` names. For PostgreSQL with `lease_for` set, this
/// returns once this process holds that controller's lease; losing it
/// later ends the process (exit code [`LEASE_LOST_EXIT_CODE`]) so that a
/// standby takes over and a supervisor restarts this one as a standby.
pub fn open_store(spec: &StoreSpec, lease_for: Option<Address>) -> Result<Store, StoreError> {
    match spec {
        StoreSpec::Sqlite(file) => Ok(Store::Sqlite(SqliteStore::open(file)?)),
        StoreSpec::Files(dir) => Ok(Store::Files(FileStore::at(dir))),
        StoreSpec::Postgres(conninfo) => {
            let store = PgStore::connect(conninfo)?;
            if let Some(address) = lease_for {
                hold_lease(
                    conninfo,
                    address,
                    Arc::new(|why: String| {
                        tracing::error!("lost the controller lease ({why}): stopping");
                        std::process::exit(LEASE_LOST_EXIT_CODE);
                    }),
                )?;
            }
            Ok(Store::Postgres(store))
        }
    }
}

/// The exit code of a controller that lost its lease.
pub const LEASE_LOST_EXIT_CODE: i32 = 3;

/// [`plugin`] as the service's `ServiceOptions::controller`.
pub fn factory() -> ControllerFactory {
    Box::new(|address: Address, home: &Path| plugin(address, home))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serves_configs_and_reports_changes_once() {
        let address: Address = "8056c2e21c".parse().unwrap();
        let shared = Arc::new(Mutex::new(Controller::in_memory(address)));
        let nwid = lock(&shared)
            .create_network(1, &json!({"name": "n"}))
            .unwrap()
            .id;
        let member: Address = "a1b2c3d4e5".parse().unwrap();
        let mut node = NodeController::new(shared.clone(), || 42);
        assert!(node.take_changed().is_empty(), "only changes after new()");
        assert_eq!(
            node.request(nwid, member, None),
            Err(ConfigDenied::AccessDenied)
        );
        lock(&shared)
            .update_member(5, nwid, member, &json!({"authorized": true}))
            .unwrap();
        assert_eq!(node.take_changed(), vec![(nwid, member)]);
        assert!(node.take_changed().is_empty());
        let data = node.request(nwid, member, None).unwrap();
        assert_eq!((data.name.as_str(), data.timestamp_ms), ("n", 42));
        let other = NetworkId::new(address, 99);
        assert_eq!(
            node.request(other, member, None),
            Err(ConfigDenied::NotFound)
        );
        lock(&shared).delete_network(nwid).unwrap();
        assert_eq!(node.take_changed(), vec![(nwid, member)]);
    }

    #[test]
    fn plugin_loads_the_home_and_refuses_a_malformed_file() {
        let home = tempfile::tempdir().unwrap();
        let address: Address = "8056c2e21c".parse().unwrap();
        let (mut node, _routes) = plugin(address, home.path()).unwrap();
        let nwid = NetworkId::new(address, 1);
        assert_eq!(
            node.request(nwid, address, None),
            Err(ConfigDenied::NotFound)
        );
        assert!(
            home.path().join("controller.db").exists(),
            "the default store"
        );
        // An older home's files are imported first; a malformed one is refused by name.
        let old_home = tempfile::tempdir().unwrap();
        let dir = old_home.path().join("controller.d/network");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{nwid}.json")), b"{").unwrap();
        let e = factory()(address, old_home.path()).err().unwrap();
        assert!(e.contains(&format!("{nwid}.json")), "{e}");
        // A setting that does not parse is refused by name.
        std::fs::write(
            home.path().join("local.conf"),
            r#"{"settings": {"controllerDbPath": "postgres:port=x"}}"#,
        )
        .unwrap();
        let e = factory()(address, home.path()).err().unwrap();
        assert!(e.starts_with("controllerDbPath: "), "{e}");
    }
}
