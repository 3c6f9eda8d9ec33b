//! The kernel side of joined networks: each network's TAP device (made
//! here, handed to the engine), its addresses over netlink, and the managed
//! routes of all of them.

use std::sync::Arc;

use tracing::{debug, error, info, warn};

use crate::core::network_id::{Mac, NetworkId};
use crate::core::node::NetworkStatus;
use crate::service::control_plane::{ControlPlane, lock};
use crate::service::engine::Command;
use crate::service::home::HomeError;
use crate::service::managed_routes::{
    KernelRoute, NetworkSettings, allowed_addresses, plan_pins, plan_routes, read_table,
    sync_routes,
};
use crate::service::netlink::LinkSettings;
use crate::service::tap::{TapDevice, device_name};

/// Changes a network's local settings: saved, then applied at once.
pub async fn set_network_settings(
    shared: &Arc<ControlPlane>,
    nwid: NetworkId,
    settings: NetworkSettings,
) -> Result<(), HomeError> {
    shared.home.save_network_settings(nwid, &settings)?;
    let meta = settings.request_meta();
    lock(&shared.network_settings).insert(nwid, settings);
    // The controller hears of advertised routes or a join key at once.
    let _ = shared.engine.cast(move |node, now, out| {
        node.set_request_meta(now, nwid, meta, out);
    });
    configure_network(shared, nwid).await;
    Ok(())
}

/// Brings a network's TAP device in line with its status and config:
/// created and configured (MAC, MTU, addresses) when OK, removed otherwise.
pub async fn configure_network(shared: &Arc<ControlPlane>, nwid: NetworkId) {
    let netlink = shared.netlink.get().map(|n| n.as_ref());
    let local = shared.network_settings(nwid);
    let allow_dns = local.allow_dns;
    let netns = local.netns.clone();
    let snapshot = shared
        .engine
        .call(move |node, _, _| {
            let status = node.network(nwid).map(|v| v.status);
            let settings = node.network_config(nwid).map(|c| LinkSettings {
                device: device_name(nwid),
                mac: Mac::for_member(node.address(), nwid),
                mtu: u32::from(c.data.mtu),
                addresses: allowed_addresses(&c.data, &local),
            });
            let dns = node.network_config(nwid).and_then(|c| c.data.dns.clone());
            (status, settings, dns)
        })
        .await;
    let Ok((status, settings, dns)) = snapshot else {
        return;
    };
    let ok = status == Some(NetworkStatus::Ok) && settings.is_some();
    // A device in another namespace (a container) has that namespace's
    // resolver, not this host's.
    let on_this_host = netns.is_none();
    configure_dns(
        shared,
        nwid,
        dns.filter(|_| ok && allow_dns && on_this_host),
    );
    match (status, settings) {
        (Some(NetworkStatus::Ok), Some(settings)) => {
            let new = lock(&shared.devices).insert(nwid);
            if new {
                let added =
                    TapDevice::create(&settings.device, shared.tap_offload).and_then(|tap| {
                        shared
                            .engine
                            .send(Command::AddDevice(nwid, tap))
                            .map_err(std::io::Error::other)
                    });
                if let Err(e) = added {
                    lock(&shared.devices).remove(&nwid);
                    error!(%nwid, device = settings.device, "cannot create TAP device: {e}");
                    return;
                }
                if let Some(ns) = &netns
                    && let Err(e) = move_to_netns(shared, nwid, &settings.device, ns).await
                {
                    lock(&shared.devices).remove(&nwid);
                    let _ = shared.engine.send(Command::RemoveDevice(nwid));
                    error!(%nwid, device = settings.device, netns = ns, "cannot move the device: {e}");
                    return;
                }
            }
            let inside = lock(&shared.netns_links).get(&nwid).cloned();
            let netlink = match &netns {
                None => netlink,
                Some(_) => inside.as_deref(),
            };
            let before = lock(&shared.managed_addresses)
                .get(&nwid)
                .cloned()
                .unwrap_or_default();
            match netlink {
                Some(n) => match n.apply(&settings, &before).await {
                    Ok(()) => {
                        lock(&shared.managed_addresses).insert(nwid, settings.addresses.clone());
                        info!(%nwid, device = settings.device, addresses = ?settings.addresses, "network configured")
                    }
                    Err(e) => error!(%nwid, "cannot configure {}: {e}", settings.device),
                },
                None => error!(%nwid, "no netlink: {} left unconfigured", settings.device),
            }
            sync_all_routes(shared).await;
        }
        (status, _) => {
            if lock(&shared.devices).remove(&nwid) {
                // The engine drops the last handle, which removes the device
                // (in another namespace too).
                let _ = shared.engine.send(Command::RemoveDevice(nwid));
                lock(&shared.managed_addresses).remove(&nwid);
                lock(&shared.netns_links).remove(&nwid);
                info!(%nwid, ?status, "network device removed");
            }
            sync_all_routes(shared).await;
        }
    }
}

/// Moves network `nwid`'s new device into namespace `ns` and opens a
/// netlink connection there, through which it is configured from then on.
async fn move_to_netns(
    shared: &Arc<ControlPlane>,
    nwid: NetworkId,
    device: &str,
    ns: &str,
) -> Result<(), String> {
    let path = crate::service::managed_routes::netns_path(ns)?;
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let host = shared.netlink.get().ok_or("no netlink")?;
    host.move_to_netns(device, &file)
        .await
        .map_err(|e| e.to_string())?;
    let inside = crate::service::netlink::Netlink::connect_in(path)
        .await
        .map_err(|e| e.to_string())?;
    lock(&shared.netns_links).insert(nwid, Arc::new(inside));
    info!(%nwid, device, netns = ns, "network device moved into another namespace");
    Ok(())
}

/// Puts network `nwid`'s DNS settings in force on this host, or takes ours
/// away (`None`), when that changes.
fn configure_dns(
    shared: &ControlPlane,
    nwid: NetworkId,
    dns: Option<crate::core::netconf::NetworkDns>,
) {
    let mut applied = lock(&shared.dns_applied);
    if applied.get(&nwid) == dns.as_ref() {
        return;
    }
    let device = device_name(nwid);
    match shared.resolver.apply(nwid, &device, dns.as_ref()) {
        Ok(()) => {
            match &dns {
                Some(d) => {
                    info!(%nwid, domain = d.domain, servers = ?d.servers, resolver = ?shared.resolver, "network DNS in force")
                }
                None => info!(%nwid, "network DNS taken away"),
            }
            match dns {
                Some(d) => applied.insert(nwid, d),
                None => applied.remove(&nwid),
            };
        }
        Err(e) => error!(%nwid, "cannot set the network's DNS: {e}"),
    }
}

/// Brings the kernel's routes in line with every configured network's
/// managed routes (as its settings allow) and pins the tunnel's own
/// physical addresses to their current route wherever a managed route
/// would capture them.
pub async fn sync_all_routes(shared: &Arc<ControlPlane>) {
    let Some(netlink) = shared.netlink.get() else {
        return;
    };
    let _one_at_a_time = shared.route_sync.lock().await;
    let all: Vec<(NetworkId, NetworkSettings)> = lock(&shared.devices)
        .iter()
        .map(|nwid| (*nwid, shared.network_settings(*nwid)))
        .collect();
    // Devices in other namespaces get their routes there, apart.
    let (elsewhere, networks): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(_, s)| s.netns.is_some());
    for (nwid, local) in elsewhere {
        sync_netns_routes(shared, nwid, local).await;
    }
    let planning = networks.clone();
    let plan = shared
        .engine
        .call(move |node, _, _| {
            let mut planned: Vec<KernelRoute> = Vec::new();
            for (nwid, local) in &planning {
                if let Some(c) = node.network_config(*nwid) {
                    planned.extend(plan_routes(&device_name(*nwid), &c.data, local));
                }
            }
            (planned, node.physical_addresses())
        })
        .await;
    let Ok((planned, protected)) = plan else {
        return;
    };
    let networks: Vec<NetworkId> = networks.into_iter().map(|(n, _)| n).collect();
    let links = match netlink.links().await {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot read links: {e}");
            return;
        }
    };
    let table = match read_table(netlink.handle()).await {
        Ok(t) => t,
        Err(e) => {
            warn!("cannot read routes: {e}");
            return;
        }
    };
    let vnet_devices: std::collections::HashSet<u32> = links
        .iter()
        .filter(|(_, name)| networks.iter().any(|n| device_name(*n) == *name))
        .map(|(i, _)| *i)
        .collect();
    let name_of = |i: u32| links.iter().find(|(x, _)| *x == i).map(|(_, n)| n.clone());
    let mut desired = planned.clone();
    desired.extend(plan_pins(
        &planned,
        &protected,
        &table,
        &vnet_devices,
        name_of,
    ));
    let index_of = |name: &str| links.iter().find(|(_, n)| n == name).map(|(i, _)| *i);
    let metric = u32::from(shared.port);
    for e in sync_routes(netlink.handle(), &table, &desired, metric, index_of).await {
        warn!("route: {e}");
    }
}

/// Brings the routes of namespace-moved network `nwid` in line with its
/// managed routes, in that namespace (no pins: the tunnel's own traffic
/// stays in the daemon's namespace).
async fn sync_netns_routes(shared: &Arc<ControlPlane>, nwid: NetworkId, local: NetworkSettings) {
    let Some(netlink) = lock(&shared.netns_links).get(&nwid).cloned() else {
        return;
    };
    let planned = shared
        .engine
        .call(move |node, _, _| {
            node.network_config(nwid)
                .map(|c| plan_routes(&device_name(nwid), &c.data, &local))
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
    let (links, table) = match (netlink.links().await, read_table(netlink.handle()).await) {
        (Ok(l), Ok(t)) => (l, t),
        _ => {
            warn!(%nwid, "cannot read the other namespace's links or routes");
            return;
        }
    };
    let index_of = |name: &str| links.iter().find(|(_, n)| n == name).map(|(i, _)| *i);
    let metric = u32::from(shared.port);
    for e in sync_routes(netlink.handle(), &table, &planned, metric, index_of).await {
        warn!(%nwid, "route in the other namespace: {e}");
    }
}

/// Removes every route vnet installed (on shutdown).
pub(crate) async fn remove_all_routes(shared: &Arc<ControlPlane>) {
    let Some(netlink) = shared.netlink.get() else {
        return;
    };
    let _one_at_a_time = shared.route_sync.lock().await;
    if let Ok(table) = read_table(netlink.handle()).await {
        let metric = u32::from(shared.port);
        for e in sync_routes(netlink.handle(), &table, &[], metric, |_| None).await {
            debug!("route cleanup: {e}");
        }
    }
}
