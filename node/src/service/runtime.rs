//! The running service: a dedicated thread drives the node with datagrams
//! and timer ticks (the packet path), tokio serves the control plane.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::core::address::Address;
use crate::core::constants::{IDENTITY_CHECKS_PER_SECOND, PACKET_MAX_LEN_BYTES, TIMER_TICK_MS};
use crate::core::local_socket::LocalSocket;
use crate::core::message::Versions;
use crate::core::network_id::{Mac, NetworkId};
use crate::core::node::NetworkStatus;
use crate::core::node::{Event, Node, NodeConfig, Outbox, Route};
use crate::core::world::WorldKind;
use crate::service::home::{Home, HomeError};
use crate::service::managed_routes::{
    KernelRoute, NetworkSettings, allowed_addresses, plan_pins, plan_routes, read_table,
    sync_routes,
};
use crate::service::netlink::{LinkSettings, Netlink};
use crate::service::port_mapping::{PortMappingState, run_port_mapper};
use crate::service::punch_sockets::PunchSockets;
use crate::service::tap::{TapDevice, device_name};
use crate::service::tcp_relay::{
    TcpRelayClient, TcpRelayClientHandler, TcpRelayConfig, TcpRelayHandler, TcpRelayServer,
    TcpRelayStats,
};

/// Default UDP and API port.
pub const DEFAULT_PORT: u16 = 9993;
/// How often the kernel's routes are brought back in line with the plan.
const ROUTE_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// How often interface addresses are re-read for PUSH_DIRECT_PATHS.
const LOCAL_ENDPOINTS_REFRESH: Duration = Duration::from_secs(60);

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The home directory or a file in it.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A socket could not be opened.
    #[error("{what} {addr}: {error}")]
    Bind {
        /// UDP or API.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// Anything else from the operating system.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Makes a network controller for the node at `address` with home `dir`:
/// the plugin the core asks, and the REST routes it adds to the local API.
pub type ControllerFactory = Box<
    dyn FnOnce(
            Address,
            &std::path::Path,
        ) -> Result<
            (
                Box<dyn crate::core::netconf::NetworkController>,
                axum::Router,
            ),
            String,
        > + Send,
>;

/// How to run the service.
pub struct ServiceOptions {
    /// Home directory.
    pub home: PathBuf,
    /// Port from the command line (else local.conf, else 9993).
    pub port: Option<u16>,
    /// Run as a network controller too (`vnet-controller`).
    pub controller: Option<ControllerFactory>,
}

/// Logs to stderr through `tracing`; `RUST_LOG` sets the level (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Wall-clock milliseconds, for what controllers stamp (certificates must
/// keep increasing across restarts, which a monotonic clock would not).
pub fn wall_clock_ms() -> u64 {
    crate::service::identity_file::now_ms()
}

/// The result of one ECHO.
#[derive(Debug, Clone)]
pub struct PingReply {
    /// Round-trip time.
    pub rtt_ms: u64,
    /// How the reply came.
    pub route: Route,
    /// Whether it came through our TCP relay connection.
    pub tcp: bool,
}

/// State shared by the packet thread and the control plane.
pub struct Shared {
    node: Mutex<Node>,
    sockets: Sockets,
    start: Instant,
    /// The home directory.
    pub home: Home,
    /// The API token.
    pub token: String,
    /// The port.
    pub port: u16,
    /// `portMappingEnabled` from local.conf.
    pub port_mapping_enabled: bool,
    /// `forceTcpRelay` from local.conf.
    pub force_tcp_relay: bool,
    /// `identityChecksPerSecond` from local.conf (or the default).
    pub identity_checks_per_second: u32,
    pings: Mutex<HashMap<u64, oneshot::Sender<PingReply>>>,
    next_ping: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    shutdown: AtomicBool,
    /// TAP devices of configured networks, with their reader thread's run flag.
    devices: Mutex<HashMap<NetworkId, (TapDevice, Arc<AtomicBool>)>>,
    /// A root's listener for nodes that relay over TCP.
    tcp_server: OnceLock<TcpRelayServer>,
    /// Our TCP relay connection to a root (made on first use, when UDP fails).
    tcp_client: OnceLock<TcpRelayClient>,
    /// The root the core relays through over TCP (set every tick): every
    /// datagram for TCP goes there, whatever root it is for.
    tcp_target: Mutex<Option<SocketAddr>>,
    /// The port mapper's latest state.
    port_mapping_state: Mutex<PortMappingState>,
    /// Netlink, once connected (TAP devices, addresses, routes).
    netlink: OnceLock<Arc<Netlink>>,
    /// Joined networks' local settings (allowManaged, ...).
    network_settings: Mutex<HashMap<NetworkId, NetworkSettings>>,
    /// Serializes route syncs (one netlink dump-and-fix at a time).
    route_sync: tokio::sync::Mutex<()>,
    /// Addresses we put on each network's device (only these are ever removed).
    managed_addresses: Mutex<HashMap<NetworkId, Vec<(std::net::IpAddr, u8)>>>,
}

impl Shared {
    /// Milliseconds on the service's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Locks the node. A poisoned lock means a panic on the packet path;
    /// the node's state is still consistent enough to report on.
    pub fn node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the node with an outbox, then sends what it queued.
    pub fn with_node<R>(&self, f: impl FnOnce(&mut Node, u64, &mut Outbox) -> R) -> R {
        let mut out = Outbox::new();
        let result = {
            let mut node = self.node();
            let now = self.now_ms();
            let r = f(&mut node, now, &mut out);
            while let Some(e) = node.poll_event() {
                let _ = self.events.send(e);
            }
            r
        };
        self.flush(&out);
        result
    }

    /// Handles a datagram that came over TCP (or any socket without its own thread).
    fn handle_datagram(&self, socket: LocalSocket, from: SocketAddr, bytes: &mut [u8]) {
        let mut out = Outbox::new();
        let mut node = self.node();
        node.handle_datagram(self.now_ms(), socket, from, bytes, &mut out);
        drain_events(&mut node, self);
        drop(node);
        self.flush(&out);
    }

    /// Sends the outbox's datagrams and writes its frames to their TAP devices.
    fn flush(&self, out: &Outbox) {
        self.sockets.send_all(out);
        for (socket, to, bytes) in out.iter() {
            match socket {
                LocalSocket::TcpToRoot => {
                    let target = *self.tcp_target.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(c) = self.tcp_client.get() {
                        c.send(target.unwrap_or(to), bytes);
                    }
                }
                LocalSocket::TcpFromNode(conn) => {
                    if let Some(s) = self.tcp_server.get() {
                        s.send(conn, bytes);
                    }
                }
                _ => {}
            }
        }
        if out.frames().next().is_none() {
            return;
        }
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        for (nwid, frame) in out.frames() {
            if let Some((tap, _)) = devices.get(&nwid)
                && let Err(e) = tap.write(frame)
            {
                debug!(%nwid, error = %e, "TAP write failed");
            }
        }
    }

    fn lock_network_settings(&self) -> MutexGuard<'_, HashMap<NetworkId, NetworkSettings>> {
        self.network_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A joined network's local settings.
    pub fn network_settings(&self, nwid: NetworkId) -> NetworkSettings {
        self.lock_network_settings()
            .get(&nwid)
            .copied()
            .unwrap_or_default()
    }

    /// Changes a network's local settings: saved, then applied at once.
    pub async fn set_network_settings(
        self: &Arc<Self>,
        nwid: NetworkId,
        settings: NetworkSettings,
    ) -> Result<(), HomeError> {
        self.home.save_network_settings(nwid, &settings)?;
        self.lock_network_settings().insert(nwid, settings);
        configure_network(self, nwid).await;
        Ok(())
    }

    /// Forgets a left network's settings.
    pub fn forget_network_settings(&self, nwid: NetworkId) {
        self.lock_network_settings().remove(&nwid);
    }

    /// The TCP relay's counters: a root's server, else the client (`GET /status`).
    pub fn tcp_relay_stats(&self) -> Option<TcpRelayStats> {
        match (self.tcp_server.get(), self.tcp_client.get()) {
            (Some(s), _) => Some(s.stats()),
            (None, Some(c)) => Some(c.stats()),
            (None, None) => None,
        }
    }

    /// The port mapper's state, as `GET /status` and `/netcheck` show it.
    pub fn port_mapping_json(&self) -> serde_json::Value {
        let state = self
            .port_mapping_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut v = serde_json::to_value(state).unwrap_or(serde_json::Value::Null);
        v["enabled"] = serde_json::json!(self.port_mapping_enabled);
        v
    }

    /// Sends one ECHO and waits for the reply.
    pub async fn ping(&self, addr: Address, timeout: Duration) -> Option<PingReply> {
        let id = self.next_ping.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        self.with_node(|node, now, out| node.ping(now, addr, id, out));
        let reply = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.pings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        reply
    }
}

/// The node's sockets: the primary UDP port (IPv4 on all interfaces, and
/// IPv6 v6-only on the same port where the system has IPv6), the port the
/// gateway maps, and the birthday-punch sockets.
struct Sockets {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    mapped: Option<UdpSocket>,
    punch: PunchSockets,
}

impl Sockets {
    fn bind(port: u16, mapped_port: Option<u16>) -> Result<Self, ServiceError> {
        let v4_addr = SocketAddr::from(([0, 0, 0, 0], port));
        let v4 = UdpSocket::bind(v4_addr).map_err(|error| ServiceError::Bind {
            what: "UDP",
            addr: v4_addr,
            error,
        })?;
        let v6_addr = SocketAddr::from(([0u16; 8], port));
        let v6 = (|| -> std::io::Result<UdpSocket> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            // v6-only, so it can share the port with the IPv4 socket.
            s.set_only_v6(true)?;
            s.bind(&v6_addr.into())?;
            Ok(s.into())
        })();
        let v6 = match v6 {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "no IPv6 socket; IPv4 only");
                None
            }
        };
        let mapped = mapped_port.and_then(|p| {
            // The preferred port may be taken; any port will do.
            let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], p)))
                .or_else(|_| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))));
            match s {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "no socket for port mapping");
                    None
                }
            }
        });
        Ok(Self {
            v4,
            v6,
            mapped,
            punch: PunchSockets::default(),
        })
    }

    fn send_all(&self, out: &Outbox) {
        for (socket, to, bytes) in out.iter() {
            let udp = match (socket, to, &self.v6, &self.mapped) {
                (LocalSocket::Primary, SocketAddr::V6(_), Some(v6), _) => v6,
                (LocalSocket::Primary, _, _, _) => &self.v4,
                (LocalSocket::Mapped, SocketAddr::V4(_), _, Some(m)) => m,
                (LocalSocket::Punch(id), _, _, _) => {
                    self.punch.send(id, to, bytes);
                    continue;
                }
                // Shared::flush hands these to the TCP relay.
                (LocalSocket::TcpToRoot | LocalSocket::TcpFromNode(_), _, _, _) => continue,
                (socket, _, _, _) => {
                    debug!(?socket, %to, "no such socket; datagram dropped");
                    continue;
                }
            };
            if let Err(e) = udp.send_to(bytes, to) {
                debug!(%to, error = %e, "send failed");
            }
        }
    }
}

/// The port the mapped socket prefers: spread over 20000-59999 by address,
/// so nodes behind one gateway rarely ask for the same one.
fn mapped_port_for(address: Address) -> u16 {
    20_000 + (address.to_u64() % 40_000) as u16
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(options: ServiceOptions) -> Result<(), ServiceError> {
    let home = Home::open(&options.home)?;
    let conf = home.local_conf()?;
    let identity_checks_per_second = conf
        .settings
        .identity_checks_per_second
        .unwrap_or(IDENTITY_CHECKS_PER_SECOND);
    let port = options
        .port
        .or(conf.settings.primary_port)
        .unwrap_or(DEFAULT_PORT);
    let (identity, created) = home.load_or_create_identity()?;
    if created {
        info!(address = %identity.address(), "created a new identity");
    }
    let token = home.load_or_create_token()?;
    let planet = home.load_planet()?;
    let (moons, bad_moons) = home.load_moons();
    for e in bad_moons {
        error!("refused moon: {e}");
    }
    let mut rng_seed = [0u8; 32];
    getrandom::fill(&mut rng_seed).map_err(std::io::Error::other)?;
    let mut node = Node::new(NodeConfig {
        identity,
        planet,
        moons,
        versions: software_versions(),
        rng_seed,
    })
    .map_err(|e| HomeError::Invalid {
        path: home.path("identity.secret"),
        problem: e.to_string(),
    })?;
    node.set_clock_epoch_ms(wall_clock_ms());
    let controller_routes = match options.controller {
        Some(factory) => {
            let (plugin, routes) =
                factory(node.address(), home.dir()).map_err(|problem| HomeError::Invalid {
                    path: home.path("controller.d"),
                    problem,
                })?;
            node.set_controller(plugin);
            info!("serving networks {}______", node.address());
            Some(routes)
        }
        None => None,
    };
    let port_mapping = conf.settings.port_mapping_enabled.unwrap_or(true) && !node.is_root();
    node.set_force_tcp_relay(conf.settings.force_tcp_relay.unwrap_or(false));
    node.set_identity_checks_per_second(identity_checks_per_second);
    let sockets = Sockets::bind(port, port_mapping.then(|| mapped_port_for(node.address())))?;
    let with_v6 = sockets.v6.is_some();
    node.set_local_endpoints(local_endpoints(port, with_v6));
    info!(
        address = %node.address(),
        port,
        root = node.is_root(),
        "vnet node starting"
    );
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
        sockets,
        start: Instant::now(),
        home: home.clone(),
        token,
        port,
        port_mapping_enabled: port_mapping,
        force_tcp_relay: conf.settings.force_tcp_relay.unwrap_or(false),
        identity_checks_per_second,
        pings: Mutex::new(HashMap::new()),
        next_ping: AtomicU64::new(1),
        events: events_tx,
        shutdown: AtomicBool::new(false),
        devices: Mutex::new(HashMap::new()),
        tcp_server: OnceLock::new(),
        tcp_client: OnceLock::new(),
        tcp_target: Mutex::new(None),
        port_mapping_state: Mutex::new(PortMappingState::default()),
        netlink: OnceLock::new(),
        network_settings: Mutex::new(HashMap::new()),
        route_sync: tokio::sync::Mutex::new(()),
        managed_addresses: Mutex::new(HashMap::new()),
    });
    start_tcp_relay(&shared, with_v6);
    // Networks joined before the restart: join again, with their settings.
    for nwid in home.joined_networks() {
        info!(%nwid, "rejoining");
        match home.network_settings(nwid) {
            Ok(settings) => {
                shared.lock_network_settings().insert(nwid, settings);
            }
            Err(e) => error!("{e}; using the defaults"),
        }
        shared.with_node(|node, now, out| node.join(now, nwid, out));
    }

    let mut packet_threads = Vec::new();
    let mut spawn = |name: &str, kind: UdpThread| -> Result<(), ServiceError> {
        let shared = shared.clone();
        packet_threads.push(std::thread::Builder::new().name(name.into()).spawn(
            move || match kind {
                UdpThread::Punch => punch_loop(&shared),
                kind => packet_loop(&shared, kind),
            },
        )?);
        Ok(())
    };
    spawn("vnet-udp4", UdpThread::V4)?;
    if with_v6 {
        spawn("vnet-udp6", UdpThread::V6)?;
    }
    if shared.sockets.mapped.is_some() {
        spawn("vnet-mapped", UdpThread::Mapped)?;
    }
    spawn("vnet-punch", UdpThread::Punch)?;
    {
        let shared = shared.clone();
        packet_threads.push(
            std::thread::Builder::new()
                .name("vnet-idcheck".into())
                .spawn(move || identity_check_loop(&shared))?,
        );
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(control_plane(shared.clone(), events_rx, controller_routes));
    shared.shutdown.store(true, Ordering::Relaxed);
    for t in packet_threads {
        let _ = t.join();
    }
    info!("vnet node stopped");
    result
}

async fn control_plane(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    extra_routes: Option<axum::Router>,
) -> Result<(), ServiceError> {
    let api_addr = SocketAddr::from(([127, 0, 0, 1], shared.port));
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|error| ServiceError::Bind {
            what: "API",
            addr: api_addr,
            error,
        })?;
    shared.home.write_port(shared.port)?;
    let app = crate::service::api::router(shared.clone(), extra_routes);
    let server = axum::serve(listener, app);

    // Netlink is needed only to configure TAP devices; a root running
    // unprivileged never joins a network.
    match Netlink::connect() {
        Ok(n) => {
            let _ = shared.netlink.set(Arc::new(n));
        }
        Err(e) => warn!("netlink unavailable, networks cannot be configured: {e}"),
    }
    let events_task = {
        let shared = shared.clone();
        async move {
            while let Some(event) = events.recv().await {
                if let Event::NetworkChanged(nwid) = event {
                    configure_network(&shared, nwid).await;
                } else {
                    handle_event(&shared, event);
                }
            }
        }
    };
    let refresh_task = {
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(LOCAL_ENDPOINTS_REFRESH);
            loop {
                tick.tick().await;
                let endpoints = local_endpoints(shared.port, shared.sockets.v6.is_some());
                shared.node().set_local_endpoints(endpoints);
            }
        }
    };
    // Routes follow new peers' addresses (an exit node pins them to the
    // physical network) and repair what someone removed by hand.
    let routes_task = {
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(ROUTE_SYNC_INTERVAL);
            loop {
                tick.tick().await;
                sync_all_routes(&shared).await;
            }
        }
    };
    // The gateway maps a port to our mapped socket; the core hears of it.
    let (mapper_stop, mapper_stopped) = tokio::sync::watch::channel(false);
    let mapper = shared
        .sockets
        .mapped
        .as_ref()
        .and_then(|s| s.local_addr().ok())
        .map(|local| {
            let (state_tx, mut state_rx) = tokio::sync::watch::channel(PortMappingState::default());
            let watcher = {
                let shared = shared.clone();
                async move {
                    while state_rx.changed().await.is_ok() {
                        let state = state_rx.borrow_and_update().clone();
                        let mapping = state.external_port.map(|p| (state.external_ip, p));
                        if let Some((ip, port)) = mapping {
                            info!(protocol = ?state.protocol, external_ip = ?ip, port, "gateway maps a port to us");
                        }
                        shared.node().set_port_mapping(mapping);
                        *shared
                            .port_mapping_state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = state;
                    }
                }
            };
            tokio::spawn(watcher);
            tokio::spawn(run_port_mapper(local.port(), state_tx, mapper_stopped))
        });
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = server => r.map_err(ServiceError::Io),
        _ = events_task => Ok(()),
        _ = refresh_task => Ok(()),
        _ = routes_task => Ok(()),
        _ = sigterm.recv() => { info!("SIGTERM: shutting down"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); Ok(()) }
    };
    // A clean stop removes the gateway's mapping (bounded: a dead gateway
    // must not hold the shutdown).
    if let Some(mapper) = mapper {
        let _ = mapper_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), mapper).await;
    }
    // Our routes go with us (the TAP devices' own routes vanish with them;
    // host routes pinned to the physical network would not).
    remove_all_routes(&shared).await;
    result
}

/// Brings a network's TAP device in line with its status and config:
/// created and configured (MAC, MTU, addresses) when OK, removed otherwise.
pub async fn configure_network(shared: &Arc<Shared>, nwid: NetworkId) {
    let netlink = shared.netlink.get().map(|n| n.as_ref());
    let local = shared.network_settings(nwid);
    let (status, settings) = {
        let node = shared.node();
        let status = node.network(nwid).map(|v| v.status);
        let settings = node.network_config(nwid).map(|c| LinkSettings {
            device: device_name(nwid),
            mac: Mac::for_member(node.address(), nwid),
            mtu: u32::from(c.data.mtu),
            addresses: allowed_addresses(&c.data, &local),
        });
        (status, settings)
    };
    let lock_devices = || shared.devices.lock().unwrap_or_else(|p| p.into_inner());
    match (status, settings) {
        (Some(NetworkStatus::Ok), Some(settings)) => {
            let created = match lock_devices().entry(nwid) {
                std::collections::hash_map::Entry::Occupied(_) => Ok(None),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    TapDevice::create(&settings.device).map(|tap| {
                        let run = Arc::new(AtomicBool::new(true));
                        slot.insert((tap.clone(), run.clone()));
                        Some((tap, run))
                    })
                }
            };
            let created = match created {
                Ok(Some((tap, run))) => {
                    let reader = Arc::clone(shared);
                    std::thread::Builder::new()
                        .name(format!("vnet-tap-{}", settings.device))
                        .spawn(move || tap_loop(&reader, nwid, &tap, &run))
                        .map(|_| ())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = created {
                error!(%nwid, device = settings.device, "cannot create TAP device: {e}");
                return;
            }
            let before = shared
                .managed_addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&nwid)
                .cloned()
                .unwrap_or_default();
            match netlink {
                Some(n) => match n.apply(&settings, &before).await {
                    Ok(()) => {
                        shared
                            .managed_addresses
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(nwid, settings.addresses.clone());
                        info!(%nwid, device = settings.device, addresses = ?settings.addresses, "network configured")
                    }
                    Err(e) => error!(%nwid, "cannot configure {}: {e}", settings.device),
                },
                None => error!(%nwid, "no netlink: {} left unconfigured", settings.device),
            }
            sync_all_routes(shared).await;
        }
        (status, _) => {
            if let Some((_, run)) = lock_devices().remove(&nwid) {
                // The reader thread stops within a poll interval and drops the
                // last handle, which removes the device.
                run.store(false, Ordering::Relaxed);
                shared
                    .managed_addresses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&nwid);
                info!(%nwid, ?status, "network device removed");
            }
            sync_all_routes(shared).await;
        }
    }
}

/// Brings the kernel's routes in line with every configured network's
/// managed routes (as its settings allow) and pins the tunnel's own
/// physical addresses to their current route wherever a managed route
/// would capture them.
pub async fn sync_all_routes(shared: &Arc<Shared>) {
    let Some(netlink) = shared.netlink.get() else {
        return;
    };
    let _one_at_a_time = shared.route_sync.lock().await;
    let networks: Vec<NetworkId> = shared
        .devices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .collect();
    let (planned, protected) = {
        let node = shared.node();
        let mut planned: Vec<KernelRoute> = Vec::new();
        for nwid in &networks {
            if let Some(c) = node.network_config(*nwid) {
                let local = shared.network_settings(*nwid);
                planned.extend(plan_routes(&device_name(*nwid), &c.data, &local));
            }
        }
        (planned, node.physical_addresses())
    };
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

/// Removes every route vnet installed (on shutdown).
async fn remove_all_routes(shared: &Arc<Shared>) {
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

/// A TAP device's reader: frames from the kernel into the node.
fn tap_loop(shared: &Shared, nwid: NetworkId, tap: &TapDevice, run: &AtomicBool) {
    let mut buf = vec![0u8; PACKET_MAX_LEN_BYTES];
    let mut out = Outbox::new();
    while run.load(Ordering::Relaxed) && !shared.shutdown.load(Ordering::Relaxed) {
        match tap.wait_readable(Duration::from_millis(TIMER_TICK_MS)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(%nwid, error = %e, "TAP poll failed");
                return;
            }
        }
        match tap.read(&mut buf) {
            Ok(len) => {
                let mut node = shared.node();
                node.handle_tap_frame(shared.now_ms(), nwid, &buf[..len], &mut out);
                drain_events(&mut node, shared);
                drop(node);
                shared.flush(&out);
                out.clear();
            }
            Err(e) => {
                warn!(%nwid, error = %e, "TAP read failed");
                return;
            }
        }
    }
}

fn handle_event(shared: &Shared, event: Event) {
    match event {
        Event::EchoReply {
            id,
            rtt_ms,
            route,
            tcp,
            ..
        } => {
            let waiter = shared
                .pings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            if let Some(tx) = waiter {
                let _ = tx.send(PingReply { rtt_ms, route, tcp });
            }
        }
        Event::PathUpgraded { peer, path } => info!(%peer, %path, "direct path up"),
        Event::PathLost { peer } => info!(%peer, "direct path lost; relaying"),
        Event::WorldUpdated(world) => {
            let saved = match world.kind() {
                WorldKind::Planet => shared.home.save_planet(&world),
                WorldKind::Moon => shared.home.save_moon(&world),
            };
            match saved {
                Ok(()) => info!(
                    id = format!("{:016x}", world.id()),
                    ts = world.timestamp_ms(),
                    kind = world.kind().name(),
                    "world saved"
                ),
                Err(e) => error!("cannot save world: {e}"),
            }
        }
        Event::WhoisFailed(addr) => debug!(%addr, "no root knows this address"),
        Event::NetworkChanged(nwid) => info!(%nwid, "network changed"),
    }
}

/// Datagrams from the TCP relay into the node. Holds the service weakly:
/// the relay's threads must not keep it alive.
struct RelayInbound(Weak<Shared>);

impl TcpRelayHandler for RelayInbound {
    fn datagram(&self, conn: u32, from: SocketAddr, bytes: &mut [u8]) {
        if let Some(shared) = self.0.upgrade() {
            shared.handle_datagram(LocalSocket::TcpFromNode(conn), from, bytes);
        }
    }

    fn closed(&self, conn: u32) {
        if let Some(shared) = self.0.upgrade() {
            shared.node().socket_closed(LocalSocket::TcpFromNode(conn));
        }
    }
}

impl TcpRelayClientHandler for RelayInbound {
    fn datagram(&self, from: SocketAddr, bytes: &mut [u8]) {
        if let Some(shared) = self.0.upgrade() {
            shared.handle_datagram(LocalSocket::TcpToRoot, from, bytes);
        }
    }

    fn disconnected(&self, from: SocketAddr) {
        if let Some(shared) = self.0.upgrade() {
            info!(%from, "TCP relay connection closed");
            shared.node().socket_closed(LocalSocket::TcpToRoot);
        }
    }
}

/// A root listens for TCP relay connections on its interface addresses and
/// port; every other node gets a client, connected when UDP fails.
fn start_tcp_relay(shared: &Arc<Shared>, with_v6: bool) {
    let handler = Arc::new(RelayInbound(Arc::downgrade(shared)));
    if shared.node().is_root() {
        let addrs = local_endpoints(shared.port, with_v6);
        match TcpRelayServer::start_on(&addrs, TcpRelayConfig::default(), handler) {
            Ok(server) => {
                info!(port = shared.port, "accepting TCP relay connections");
                let _ = shared.tcp_server.set(server);
            }
            Err(e) => {
                warn!(error = %e, "no TCP relay listener; nodes behind UDP-blocking firewalls cannot use this root")
            }
        }
    } else {
        let _ = shared.tcp_client.set(TcpRelayClient::new(handler));
    }
}

/// Which socket a packet thread reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UdpThread {
    /// The primary IPv4 socket; this thread also ticks the timer.
    V4,
    /// The primary IPv6 socket.
    V6,
    /// The socket the gateway maps.
    Mapped,
    /// The birthday-punch sockets.
    Punch,
}

/// The packet path: receive, hand to the node, send what it queued; the
/// IPv4 thread also ticks the timer.
fn packet_loop(shared: &Shared, kind: UdpThread) {
    let (socket, local) = match (kind, &shared.sockets.v6, &shared.sockets.mapped) {
        (UdpThread::V6, Some(s), _) => (s, LocalSocket::Primary),
        (UdpThread::Mapped, _, Some(s)) => (s, LocalSocket::Mapped),
        _ => (&shared.sockets.v4, LocalSocket::Primary),
    };
    let v6 = kind != UdpThread::V4;
    let mut buf = vec![0u8; PACKET_MAX_LEN_BYTES];
    let mut out = Outbox::new();
    let tick = Duration::from_millis(TIMER_TICK_MS);
    let mut next_tick = Instant::now();
    while !shared.shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        if !v6 && now >= next_tick {
            let mut node = shared.node();
            node.handle_timeout(shared.now_ms(), &mut out);
            // Punch sockets the core no longer needs are closed.
            if !shared.sockets.punch.is_empty() {
                for id in shared.sockets.punch.retain(&node.live_punch_sockets()) {
                    node.socket_closed(LocalSocket::Punch(id));
                }
            }
            let now_ms = shared.now_ms();
            *shared.tcp_target.lock().unwrap_or_else(|p| p.into_inner()) =
                node.tcp_relay_target(now_ms);
            // Back on UDP: the TCP relay connection goes.
            if let Some(client) = shared.tcp_client.get()
                && client.connected_to().is_some()
                && !node.tcp_relay_wanted(now_ms)
            {
                info!("UDP works again; leaving the TCP relay");
                client.close();
            }
            drain_events(&mut node, shared);
            drop(node);
            shared.flush(&out);
            out.clear();
            next_tick = now + tick;
        }
        let wait = if v6 {
            tick
        } else {
            next_tick
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        if let Err(e) = socket.set_read_timeout(Some(wait)) {
            warn!(error = %e, "set_read_timeout");
        }
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let mut node = shared.node();
                node.handle_datagram(shared.now_ms(), local, from, &mut buf[..len], &mut out);
                drain_events(&mut node, shared);
                drop(node);
                shared.flush(&out);
                out.clear();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => debug!(error = %e, "recv failed"),
        }
    }
}

/// Runs the node's identity checks (the memory-hard hash, ~17 ms each)
/// without holding the node: packets never wait for them.
fn identity_check_loop(shared: &Shared) {
    let mut scratch = crate::core::identity_hash::IdentityHashScratch::new();
    let mut out = Outbox::new();
    while !shared.shutdown.load(Ordering::Relaxed) {
        let job = shared.node().next_identity_check(shared.now_ms());
        let Some(job) = job else {
            std::thread::sleep(IDENTITY_CHECK_POLL);
            continue;
        };
        let result = job.run(&mut scratch);
        let mut node = shared.node();
        node.identity_check_done(shared.now_ms(), result, &mut out);
        drain_events(&mut node, shared);
        drop(node);
        shared.flush(&out);
        out.clear();
    }
}

/// How often the identity checker looks for work when it has none.
const IDENTITY_CHECK_POLL: Duration = Duration::from_millis(20);

/// The birthday-punch sockets' reader.
fn punch_loop(shared: &Shared) {
    let mut buf = vec![0u8; PACKET_MAX_LEN_BYTES];
    let mut out = Outbox::new();
    while !shared.shutdown.load(Ordering::Relaxed) {
        shared.sockets.punch.poll_once(
            Duration::from_millis(TIMER_TICK_MS),
            &mut buf,
            |id, from, bytes| {
                let mut node = shared.node();
                node.handle_datagram(
                    shared.now_ms(),
                    LocalSocket::Punch(id),
                    from,
                    bytes,
                    &mut out,
                );
                drain_events(&mut node, shared);
                drop(node);
                shared.flush(&out);
                out.clear();
            },
        );
    }
}

fn drain_events(node: &mut Node, shared: &Shared) {
    while let Some(e) = node.poll_event() {
        let _ = shared.events.send(e);
    }
}

/// Interface addresses (not loopback, not IPv6 link-local; IPv6 only with
/// an IPv6 socket) with our port.
fn local_endpoints(port: u16, with_v6: bool) -> Vec<SocketAddr> {
    let Ok(ifaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    ifaces
        .into_iter()
        .filter(|i| !i.is_loopback())
        // Our own TAP devices: a path there runs the tunnel through itself.
        .filter(|i| !crate::service::tap::is_vnet_device(&i.name))
        .map(|i| i.ip())
        .filter(|ip| match ip {
            std::net::IpAddr::V4(_) => true,
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .filter(|ip| ip.is_ipv4() || with_v6)
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// This build's versions, as announced to peers.
pub fn software_versions() -> Versions {
    let v = |s: &str| s.parse::<u16>().unwrap_or(0);
    Versions {
        protocol: crate::core::constants::PROTOCOL_VERSION,
        major: v(env!("CARGO_PKG_VERSION_MAJOR")) as u8,
        minor: v(env!("CARGO_PKG_VERSION_MINOR")) as u8,
        revision: v(env!("CARGO_PKG_VERSION_PATCH")),
    }
}
