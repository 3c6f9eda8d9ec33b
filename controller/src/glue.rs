//! The controller as the node sees it: [`NetworkController`] for the core,
//! and [`plugin`] / [`factory`] for the service's `ServiceOptions::controller`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use vnet_node::core::address::Address;
use vnet_node::core::netconf::{ConfigDenied, NetworkConfigData, NetworkController};
use vnet_node::core::network_id::NetworkId;

use vnet_node::service::runtime::{ControllerFactory, wall_clock_ms};

use crate::api;
use crate::controller::Controller;

/// Locks the shared controller, even after a panic elsewhere (every change
/// is committed in memory in one step after it is saved, so the state is
/// never half-changed).
pub fn lock(shared: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Controller`] shared with the REST API, with a clock, as the node's
/// [`NetworkController`].
pub struct NodeController {
    shared: Arc<Mutex<Controller>>,
    clock: Box<dyn Fn() -> u64 + Send>,
    seen: u64,
}

impl NodeController {
    /// Wraps `shared`; `clock` gives the time in ms (stamped on configs and
    /// new members). The first [`NetworkController::take_changed`] reports
    /// changes made after this call.
    pub fn new(shared: Arc<Mutex<Controller>>, clock: impl Fn() -> u64 + Send + 'static) -> Self {
        let seen = lock(&shared).sequence();
        Self {
            shared,
            clock: Box::new(clock),
            seen,
        }
    }
}

impl NetworkController for NodeController {
    fn request(
        &mut self,
        network: NetworkId,
        member: Address,
    ) -> Result<NetworkConfigData, ConfigDenied> {
        let now = (self.clock)();
        lock(&self.shared)
            .request_config(now, network, member)
            .map(Into::into)
    }

    fn known_members(&self) -> Vec<(NetworkId, Address)> {
        let c = lock(&self.shared);
        c.network_ids()
            .into_iter()
            .flat_map(|nwid| {
                c.members(nwid)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |m| (nwid, m.address))
            })
            .collect()
    }

    fn take_changed(&mut self) -> Vec<(NetworkId, Address)> {
        let c = lock(&self.shared);
        let changed = c.changes_since(self.seen);
        self.seen = c.sequence();
        changed
    }
}

/// The controller of the node at `address` with home `home` (loading
/// `home/controller.d`): the core's plugin (on the wall clock) and the REST
/// routes, sharing one [`Controller`]. The error names a malformed file.
pub fn plugin(
    address: Address,
    home: &Path,
) -> Result<(Box<dyn NetworkController>, axum::Router), String> {
    let controller = Controller::open(address, home).map_err(|e| e.to_string())?;
    let shared = Arc::new(Mutex::new(controller));
    let routes = api::router(shared.clone());
    Ok((Box::new(NodeController::new(shared, wall_clock_ms)), routes))
}

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
        assert_eq!(node.request(nwid, member), Err(ConfigDenied::AccessDenied));
        lock(&shared)
            .update_member(5, nwid, member, &json!({"authorized": true}))
            .unwrap();
        assert_eq!(node.take_changed(), vec![(nwid, member)]);
        assert!(node.take_changed().is_empty());
        let data = node.request(nwid, member).unwrap();
        assert_eq!((data.name.as_str(), data.timestamp_ms), ("n", 42));
        let other = NetworkId::new(address, 99);
        assert_eq!(node.request(other, member), Err(ConfigDenied::NotFound));
        lock(&shared).delete_network(nwid).unwrap();
        assert_eq!(node.take_changed(), vec![(nwid, member)]);
    }

    #[test]
    fn plugin_loads_the_home_and_refuses_a_malformed_file() {
        let home = tempfile::tempdir().unwrap();
        let address: Address = "8056c2e21c".parse().unwrap();
        let (mut node, _routes) = plugin(address, home.path()).unwrap();
        let nwid = NetworkId::new(address, 1);
        assert_eq!(node.request(nwid, address), Err(ConfigDenied::NotFound));
        let dir = home.path().join("controller.d/network");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{nwid}.json")), b"{").unwrap();
        let e = factory()(address, home.path()).err().unwrap();
        assert!(e.contains(&format!("{nwid}.json")), "{e}");
    }
}
