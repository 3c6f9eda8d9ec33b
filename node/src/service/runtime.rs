//! The running service: the engine thread owns the node and its sockets
//! and TAP devices ([`crate::service::engine`]); tokio runs the control
//! plane (local API, port mapping, netlink, routes), which talks to the
//! engine by commands and hears from it by events.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::core::address::Address;
use crate::core::constants::{
    FLUSH_THREADS_MAX_DEFAULT, IDENTITY_CHECKS_PER_SECOND, RELAY_THREADS_MAX_DEFAULT,
    ROOT_REPLAY_WINDOW_PACKETS,
};
use crate::core::local_socket::LocalSocket;
use crate::core::message::Versions;
use crate::core::node::{Event, Node, NodeConfig};
use crate::service::control_plane::{ControlPlane, handle_event, lock, report_config_changes};
use crate::service::engine::{
    Command, Engine, EngineHandle, EngineParts, TcpRelay, WorkerThreads, spawn_supervised,
};
use crate::service::home::{Home, HomeError};
use crate::service::netlink::Netlink;
use crate::service::network_devices::{configure_network, remove_all_routes, sync_all_routes};
use crate::service::port_mapping::{PortMappingState, run_port_mapper};
use crate::service::relay_threads::RelayThreads;
use crate::service::tcp_relay::{
    TcpRelayClient, TcpRelayClientHandler, TcpRelayConfig, TcpRelayHandler, TcpRelayServer,
};
use crate::service::udp_sockets::UdpSockets;
use crate::service::verified_identities::VERIFIED_IDENTITIES_SAVE_INTERVAL;

/// Default UDP and API port.
pub const DEFAULT_PORT: u16 = 9993;
/// How often the kernel's routes are brought back in line with the plan.
const ROUTE_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// How often the controller is asked which members' configs changed.
const CONTROLLER_CHANGES_POLL: Duration = Duration::from_millis(250);
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
    /// The engine thread stopped (a panic or a failed poll).
    #[error("the engine stopped: {0}")]
    EngineStopped(String),
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
    /// A root server without TAP (`vnet-planet serve`): it seals only control
    /// packets, so `aesGcm` defaults to off (no AES-GCM keys, about a
    /// kilobyte, per peer) and its replay windows span
    /// `ROOT_REPLAY_WINDOW_PACKETS`.
    pub root_server: bool,
}

/// Logs to stderr through `tracing`; `RUST_LOG` sets the level (default
/// `info`). Colours only on a terminal: journald and log files get plain text.
pub fn init_logging() {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Wall-clock milliseconds, for what controllers stamp (certificates must
/// keep increasing across restarts, which a monotonic clock would not).
pub fn wall_clock_ms() -> u64 {
    crate::service::identity_file::now_ms()
}

/// The port the mapped socket prefers: spread over 20000-59999 by address,
/// so nodes behind one gateway rarely ask for the same one.
fn mapped_port_for(address: Address) -> u16 {
    20_000 + (address.to_u64() % 40_000) as u16
}

/// Keeps glibc's allocator lean. One arena for every thread: by default
/// each thread that allocates gets its own (the engine, the control plane,
/// the identity checker, the TCP relay, the relay threads), each holding its
/// own free memory: half a megabyte to a megabyte more resident for nothing,
/// since the packet path allocates nothing once warm and the other threads
/// allocate little. And a fixed mmap threshold: glibc raises it as large
/// blocks are freed, after which the large receive buffers (768 KiB each)
/// come from the heap, where a block once written stays resident; mapped on
/// their own, only the pages the kernel writes to are (about 1 MB less per
/// daemon after setup, measured with bench/speed.sh).
fn lean_malloc() {
    // SAFETY: mallopt only sets allocator parameters; called before the
    // service starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// Blocks at least this large are mapped on their own (glibc's default
/// start, kept from moving).
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Writes `verified-identities` if identities were added since the node's
/// count was `saved` (always with `None`); returns the count written.
async fn save_verified_identities(shared: &Arc<ControlPlane>, saved: Option<u64>) -> u64 {
    let answer = shared
        .engine
        .call(move |node, now, _| {
            let added = node.verified_identities_added();
            (
                added,
                (Some(added) != saved).then(|| node.verified_identities(now)),
            )
        })
        .await;
    let unchanged = saved.unwrap_or(0);
    let Ok((added, Some(list))) = answer else {
        return unchanged;
    };
    let home = shared.home.clone();
    match tokio::task::spawn_blocking(move || home.save_verified_identities(&list)).await {
        Ok(Ok(())) => added,
        Ok(Err(e)) => {
            warn!("{e}");
            unchanged
        }
        Err(_) => unchanged,
    }
}

/// Relay threads of a root whose local.conf does not say: one per core
/// beyond the first (the engine's), at most `RELAY_THREADS_MAX_DEFAULT`.
fn default_relay_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .min(RELAY_THREADS_MAX_DEFAULT)
}

/// Flush threads of a member whose local.conf does not say: one per core
/// beyond two, at most `FLUSH_THREADS_MAX_DEFAULT`. With two cores the
/// engine, the kernel and the applications already fill both, and the hand
/// over costs more than it frees (bench/lab.sh on 2 cores: about 10 % less
/// throughput with one thread).
fn default_flush_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(2)
        .min(FLUSH_THREADS_MAX_DEFAULT)
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(options: ServiceOptions) -> Result<(), ServiceError> {
    lean_malloc();
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
    // Identities verified before the restart are not hashed again.
    match home.load_verified_identities() {
        Ok(list) if list.is_empty() => {}
        Ok(list) => {
            info!(identities = list.len(), "verified identities restored");
            node.restore_verified_identities(list);
        }
        Err(e) => error!("{e}; starting without verified identities"),
    }
    let controller_routes = match options.controller {
        Some(factory) => {
            let (plugin, routes) =
                factory(node.address(), home.dir()).map_err(|problem| HomeError::Invalid {
                    path: home.path("controller.d"),
                    problem,
                })?;
            node.serve_networks();
            node.remember_members(0, &plugin.known_members());
            info!("serving networks {}______", node.address());
            Some((plugin, routes))
        }
        None => None,
    };
    let (controller, controller_routes) = match controller_routes {
        Some((plugin, routes)) => (Some(Mutex::new(plugin)), Some(routes)),
        None => (None, None),
    };
    let port_mapping = conf.settings.port_mapping_enabled.unwrap_or(true) && !node.is_root();
    node.set_force_tcp_relay(conf.settings.force_tcp_relay.unwrap_or(false));
    node.set_offload_frames(conf.settings.offload_frames.unwrap_or(true));
    node.set_aes_gcm(conf.settings.aes_gcm.unwrap_or(!options.root_server));
    if options.root_server {
        node.set_replay_window_packets(ROOT_REPLAY_WINDOW_PACKETS);
    }
    node.set_identity_checks_per_second(identity_checks_per_second);
    let relay_threads = if node.is_root() {
        conf.settings
            .relay_threads
            .unwrap_or_else(default_relay_threads)
    } else {
        0
    };
    let flush_threads = if node.is_root() {
        0
    } else {
        conf.settings
            .flush_threads
            .unwrap_or_else(default_flush_threads)
    };
    let busy_poll_micros = if node.is_root() {
        0
    } else {
        conf.settings.busy_poll_micros.unwrap_or(0)
    };
    let (udp, relay_sockets) = UdpSockets::bind(
        port,
        port_mapping.then(|| mapped_port_for(node.address())),
        relay_threads,
    )
    .map_err(|e| ServiceError::Bind {
        what: "UDP",
        addr: e.addr,
        error: e.error,
    })?;
    let with_v6 = udp.v6.is_some();
    let mapped_local = udp.mapped.as_ref().and_then(|s| s.socket.local_addr().ok());
    node.set_local_endpoints(local_endpoints(port, with_v6));
    info!(
        address = %node.address(),
        port,
        root = node.is_root(),
        "vnet node starting"
    );
    let parts = EngineParts::new()?;
    let engine = parts.handle();
    let tcp = start_tcp_relay(node.is_root(), port, with_v6, &engine);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(ControlPlane {
        engine: engine.clone(),
        home: home.clone(),
        token,
        port,
        port_mapping_enabled: port_mapping,
        force_tcp_relay: conf.settings.force_tcp_relay.unwrap_or(false),
        tap_offload: conf.settings.tap_offload.unwrap_or(true),
        identity_checks_per_second,
        relay_threads,
        flush_threads,
        busy_poll_micros,
        with_v6,
        pings: Mutex::new(HashMap::new()),
        next_ping: AtomicU64::new(1),
        devices: Mutex::new(HashSet::new()),
        tcp: tcp.clone(),
        controller,
        port_mapping_state: Mutex::new(PortMappingState::default()),
        netlink: std::sync::OnceLock::new(),
        network_settings: Mutex::new(HashMap::new()),
        route_sync: tokio::sync::Mutex::new(()),
        managed_addresses: Mutex::new(HashMap::new()),
        resolver: crate::service::dns_config::Resolver::detect(
            conf.settings
                .resolv_conf_path
                .clone()
                .unwrap_or_else(|| "/etc/resolv.conf".into()),
        ),
        dns_applied: Mutex::new(HashMap::new()),
        netns_links: Mutex::new(HashMap::new()),
        allow_management_from: conf
            .settings
            .allow_management_from
            .clone()
            .unwrap_or_default(),
    });
    // Networks joined before the restart: join again, with their settings.
    for nwid in home.joined_networks() {
        info!(%nwid, "rejoining");
        let meta = match home.network_settings(nwid) {
            Ok(settings) => {
                let meta = settings.request_meta();
                lock(&shared.network_settings).insert(nwid, settings);
                meta
            }
            Err(e) => {
                error!("{e}; using the defaults");
                Default::default()
            }
        };
        let _ = engine.cast(move |node, now, out| node.join_with_meta(now, nwid, meta, out));
    }

    let start = Instant::now();
    let relay = if relay_sockets.is_empty() {
        None
    } else {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        let threads = RelayThreads::start(relay_sockets, &engine, start, seed)?;
        info!(threads = threads.len(), "relay threads running");
        Some(threads)
    };
    let engine_loop = Engine::new(
        parts,
        node,
        udp,
        tcp,
        WorkerThreads {
            relay,
            flush: flush_threads,
        },
        events_tx,
        start,
    )?
    .with_busy_poll(Duration::from_micros(busy_poll_micros));
    // A stopped engine ends the daemon (systemd restarts it); never a
    // silently dead packet path.
    let (engine_thread, engine_stopped) =
        spawn_supervised("vnet-engine", move || engine_loop.run())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(control_plane(
        shared.clone(),
        events_rx,
        controller_routes,
        mapped_local,
        engine_stopped,
    ));
    let _ = shared.engine.send(Command::Stop);
    let _ = engine_thread.join();
    info!("vnet node stopped");
    result
}

/// The API's listening socket: dual-stack when on `[::]` (IPv4 clients
/// as mapped addresses).
fn api_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(std::net::TcpListener::from(socket))
}

async fn control_plane(
    shared: Arc<ControlPlane>,
    mut events: mpsc::UnboundedReceiver<Event>,
    extra_routes: Option<axum::Router>,
    mapped_local: Option<SocketAddr>,
    engine_stopped: oneshot::Receiver<String>,
) -> Result<(), ServiceError> {
    // Loopback only, unless local.conf allows management from elsewhere.
    let remote = !shared.allow_management_from.is_empty();
    let api_addr = if remote {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, shared.port))
    } else {
        SocketAddr::from(([127, 0, 0, 1], shared.port))
    };
    let listener = api_listener(api_addr).map_err(|error| ServiceError::Bind {
        what: "API",
        addr: api_addr,
        error,
    })?;
    if remote {
        info!(allowed = ?shared.allow_management_from, port = shared.port, "API answers these client networks too");
    }
    shared.home.write_port(shared.port)?;
    let app = crate::service::api::router(shared.clone(), extra_routes);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    );

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
                match event {
                    Event::NetworkChanged(nwid) => configure_network(&shared, nwid).await,
                    event => handle_event(&shared, event),
                }
            }
        }
    };
    // Members whose config the controller changed get it pushed.
    let changes_task = {
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(CONTROLLER_CHANGES_POLL);
            loop {
                tick.tick().await;
                report_config_changes(&shared);
            }
        }
    };
    let refresh_task = {
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(LOCAL_ENDPOINTS_REFRESH);
            loop {
                tick.tick().await;
                let endpoints = local_endpoints(shared.port, shared.with_v6);
                let _ = shared
                    .engine
                    .cast(move |node, _, _| node.set_local_endpoints(endpoints));
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
    // Identities verified since the last write go to disk now and then.
    let identities_task = {
        let shared = shared.clone();
        async move {
            let mut saved = shared
                .engine
                .call(|node, _, _| node.verified_identities_added())
                .await
                .unwrap_or(0);
            let mut tick = tokio::time::interval(VERIFIED_IDENTITIES_SAVE_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                saved = save_verified_identities(&shared, Some(saved)).await;
            }
        }
    };
    // The gateway maps a port to our mapped socket; the core hears of it.
    let (mapper_stop, mapper_stopped) = tokio::sync::watch::channel(false);
    let mapper = mapped_local.map(|local| {
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
                        let _ = shared
                            .engine
                            .cast(move |node, _, _| node.set_port_mapping(mapping));
                        *lock(&shared.port_mapping_state) = state;
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
        _ = changes_task => Ok(()),
        _ = routes_task => Ok(()),
        _ = identities_task => Ok(()),
        why = engine_stopped => Err(ServiceError::EngineStopped(
            why.unwrap_or_else(|_| "it ended".into()),
        )),
        _ = sigterm.recv() => { info!("SIGTERM: shutting down"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); Ok(()) }
    };
    // A clean stop keeps what was verified, HELLO timestamps included.
    save_verified_identities(&shared, None).await;
    // A clean stop removes the gateway's mapping (bounded: a dead gateway
    // must not hold the shutdown).
    if let Some(mapper) = mapper {
        let _ = mapper_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), mapper).await;
    }
    // Our routes go with us (the TAP devices' own routes vanish with them;
    // host routes pinned to the physical network would not).
    remove_all_routes(&shared).await;
    // So do the networks' DNS settings (their servers are unreachable now).
    let applied: Vec<crate::core::network_id::NetworkId> =
        lock(&shared.dns_applied).keys().copied().collect();
    for nwid in applied {
        if let Err(e) = shared
            .resolver
            .apply(nwid, &crate::service::tap::device_name(nwid), None)
        {
            error!(%nwid, "cannot take the network's DNS away: {e}");
        }
    }
    result
}

/// Datagrams from the TCP relay into the engine.
struct RelayInbound(EngineHandle);

impl TcpRelayHandler for RelayInbound {
    fn datagram(&self, conn: u32, from: SocketAddr, bytes: &mut [u8]) {
        self.0
            .relayed_datagram(LocalSocket::TcpFromNode(conn), from, bytes);
    }

    fn closed(&self, conn: u32) {
        let _ = self
            .0
            .send(Command::SocketClosed(LocalSocket::TcpFromNode(conn)));
    }
}

impl TcpRelayClientHandler for RelayInbound {
    fn datagram(&self, from: SocketAddr, bytes: &mut [u8]) {
        self.0.relayed_datagram(LocalSocket::TcpToRoot, from, bytes);
    }

    fn disconnected(&self, from: SocketAddr) {
        info!(%from, "TCP relay connection closed");
        let _ = self.0.send(Command::SocketClosed(LocalSocket::TcpToRoot));
    }
}

/// A root listens for TCP relay connections on its interface addresses and
/// port; every other node gets a client, connected when UDP fails.
fn start_tcp_relay(is_root: bool, port: u16, with_v6: bool, engine: &EngineHandle) -> TcpRelay {
    let handler = Arc::new(RelayInbound(engine.clone()));
    if is_root {
        let addrs = local_endpoints(port, with_v6);
        match TcpRelayServer::start_on(&addrs, TcpRelayConfig::default(), handler) {
            Ok(server) => {
                info!(port, "accepting TCP relay connections");
                TcpRelay {
                    server: Some(Arc::new(server)),
                    client: None,
                }
            }
            Err(e) => {
                warn!(error = %e, "no TCP relay listener; nodes behind UDP-blocking firewalls cannot use this root");
                TcpRelay::default()
            }
        }
    } else {
        TcpRelay {
            server: None,
            client: Some(Arc::new(TcpRelayClient::new(handler))),
        }
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
