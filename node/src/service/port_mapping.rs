//! Port mapping: ask the LAN's gateway (UPnP IGD, else NAT-PMP) to forward an external UDP port
//! to the node's secondary socket, keep the lease alive, and remove it on shutdown.
//!
//! A mapped port lets peers behind hard NATs reach this node directly. The gateway's reported
//! external IP is only advisory: behind double NAT (or with a gateway that reports a private,
//! empty or placeholder address) it is wrong, which is why the protocol core pairs the mapped
//! port with the address the roots observe. This module only reports what the gateway said.
//!
//! Everything here is async and bounded by timeouts: a node without a gateway must learn so
//! within a few seconds and never have its (current_thread) runtime blocked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use igd_next::aio::Gateway as IgdGateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{AddAnyPortError, AddPortError, PortMappingProtocol, SearchOptions};
use natpmp::{NatpmpAsync, Response};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

/// The lease asked for. An hour keeps a stale mapping (after a crash) from living long, while
/// renewing at half of it costs one request per half hour.
pub const REQUESTED_LEASE: u32 = 3600;
/// How long SSDP discovery may take: long enough for a LAN round trip and the device
/// description fetch, short enough not to delay a node that has no gateway.
pub const UPNP_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one SOAP call to the gateway (igd-next's own default is 10 s).
pub const UPNP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First NAT-PMP retransmission timeout (RFC 6886 §3.1), doubled per attempt.
pub const NATPMP_FIRST_TIMEOUT: Duration = Duration::from_millis(250);
/// NAT-PMP attempts: 250 + 500 + 1000 ms, so a silent gateway is given up on in under 2 s
/// instead of the RFC's full 64 s schedule.
pub const NATPMP_ATTEMPTS: u32 = 3;
/// First retry delay after a failure; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(30);
/// Longest delay between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(600);
/// How often a permanent (0-lease) mapping is re-asserted, in case the gateway rebooted.
pub const PERMANENT_REFRESH: Duration = Duration::from_secs(1800);
/// Bound on the removal at shutdown: shutdown must not hang on an unresponsive gateway.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Shown in the gateway's mapping table.
const DESCRIPTION: &str = "vnet";
/// The NAT-PMP server port (RFC 6886).
const NATPMP_PORT: u16 = 5351;

/// Which protocol produced the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingProtocol {
    /// UPnP Internet Gateway Device (WANIPConnection / WANPPPConnection).
    Upnp,
    /// NAT Port Mapping Protocol (RFC 6886).
    Natpmp,
}

/// What the port mapper knows now (shown in GET /status as "portMapping").
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingState {
    /// Whether the port mapper is running.
    pub enabled: bool,
    /// The protocol of the current mapping, if any.
    pub protocol: Option<MappingProtocol>,
    /// The gateway holding the current mapping, if any.
    pub gateway: Option<IpAddr>,
    /// External IP the gateway reports (None if empty/unknown).
    pub external_ip: Option<IpAddr>,
    /// The mapped external UDP port, if mapped.
    pub external_port: Option<u16>,
    /// Where the gateway forwards to: our address toward the gateway and the internal port.
    pub internal: Option<SocketAddr>,
    /// Lease granted by the gateway, in seconds (0: permanent).
    pub lease_seconds: Option<u32>,
    /// Renewals of the current mapping so far.
    pub renewals: u32,
    /// Last failure, human-readable (e.g. "no UPnP or NAT-PMP gateway found").
    pub error: Option<String>,
}

/// Why mapping failed.
#[derive(Debug, thiserror::Error)]
enum MapError {
    #[error("no UPnP or NAT-PMP gateway found (UPnP: {upnp}; NAT-PMP: {natpmp})")]
    NoGateway { upnp: String, natpmp: String },
    /// SSDP found no gateway: nothing there, as opposed to a gateway that refused.
    #[error("UPnP: {0}")]
    UpnpNotFound(String),
    #[error("UPnP: {0}")]
    Upnp(String),
    /// The default gateway did not answer NAT-PMP (or there is none).
    #[error("NAT-PMP: {0}")]
    NatpmpNotFound(String),
    #[error("NAT-PMP: {0}")]
    Natpmp(String),
    #[error("local address toward the gateway: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
}

impl MapError {
    /// The message without its protocol prefix, for nesting in another message.
    fn detail(&self) -> String {
        match self {
            MapError::UpnpNotFound(s)
            | MapError::Upnp(s)
            | MapError::NatpmpNotFound(s)
            | MapError::Natpmp(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A live mapping at a gateway.
struct Mapping {
    gateway: GatewayClient,
    internal: SocketAddrV4,
    external_ip: Option<IpAddr>,
    external_port: u16,
    lease: u32,
    /// The lease asked for (again at each NAT-PMP renewal).
    requested_lease: u32,
    renewals: u32,
}

/// The gateway a mapping was made with.
enum GatewayClient {
    Upnp(IgdGateway<Tokio>),
    Natpmp(NatpmpAsync<UdpSocket>, Ipv4Addr),
}

impl Mapping {
    fn state(&self) -> PortMappingState {
        let (protocol, gateway) = match &self.gateway {
            GatewayClient::Upnp(g) => (MappingProtocol::Upnp, g.addr.ip()),
            GatewayClient::Natpmp(_, ip) => (MappingProtocol::Natpmp, IpAddr::V4(*ip)),
        };
        PortMappingState {
            enabled: true,
            protocol: Some(protocol),
            gateway: Some(gateway),
            external_ip: self.external_ip,
            external_port: Some(self.external_port),
            internal: Some(SocketAddr::V4(self.internal)),
            lease_seconds: Some(self.lease),
            renewals: self.renewals,
            error: None,
        }
    }

    /// When to renew: at half the lease, as the gateway may count from its own clock.
    fn renew_after(&self) -> Duration {
        if self.lease == 0 {
            PERMANENT_REFRESH
        } else {
            Duration::from_secs(u64::from(self.lease / 2).max(1))
        }
    }

    /// Extends the lease, keeping the external port.
    async fn renew(&mut self) -> Result<(), MapError> {
        match &mut self.gateway {
            GatewayClient::Upnp(g) => {
                // AddPortMapping for our own existing mapping refreshes it (UPnP IGD v1 §2.4.16).
                upnp_call(g.add_port(
                    PortMappingProtocol::UDP,
                    self.external_port,
                    SocketAddr::V4(self.internal),
                    self.lease,
                    DESCRIPTION,
                ))
                .await?
                .map_err(|e| MapError::Upnp(format!("renewing: {e}")))?;
            }
            GatewayClient::Natpmp(client, _) => {
                let (port, lease) = natpmp_map(
                    client,
                    self.internal.port(),
                    self.external_port,
                    self.requested_lease,
                )
                .await?;
                // The gateway may have rebooted and handed out another port: report it.
                self.external_port = port;
                self.lease = lease;
            }
        }
        self.renewals += 1;
        Ok(())
    }

    /// Deletes the mapping at the gateway.
    async fn remove(&mut self) -> Result<(), MapError> {
        match &mut self.gateway {
            GatewayClient::Upnp(g) => {
                upnp_call(g.remove_port(PortMappingProtocol::UDP, self.external_port))
                    .await?
                    .map_err(|e| MapError::Upnp(format!("removing: {e}")))
            }
            GatewayClient::Natpmp(client, _) => {
                // RFC 6886 §3.4: lifetime 0 and suggested external port 0 delete the mapping.
                natpmp_map(client, self.internal.port(), 0, 0)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// Runs until `shutdown` turns true: discover a gateway (UPnP first, then NAT-PMP), map
/// `internal_port` (UDP) — external port = internal port if free, else another — renew at half
/// the lease, retry with backoff (e.g. 30 s doubling to 10 min) when nothing is found or a call
/// fails, publish every change on `state`, and remove the mapping before returning.
///
/// A dropped `shutdown` sender counts as shutdown. On return `state` holds `enabled: false`.
pub async fn run_port_mapper(
    internal_port: u16,
    state: watch::Sender<PortMappingState>,
    shutdown: watch::Receiver<bool>,
) {
    run_port_mapper_with_lease(internal_port, REQUESTED_LEASE, state, shutdown).await;
}

/// [`run_port_mapper`] asking for `lease` seconds (tests renew in seconds).
pub async fn run_port_mapper_with_lease(
    internal_port: u16,
    lease: u32,
    state: watch::Sender<PortMappingState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let idle = PortMappingState {
        enabled: true,
        ..PortMappingState::default()
    };
    state.send_replace(idle.clone());
    let mut backoff = RETRY_MIN;
    loop {
        let attempt = tokio::select! {
            r = map_port(internal_port, lease) => r,
            // Dropping the attempt may leave a just-made mapping behind; its lease ends it.
            () = shutdown_requested(&mut shutdown) => break,
        };
        match attempt {
            Ok(mut mapping) => {
                tracing::info!(
                    external_port = mapping.external_port,
                    internal = %mapping.internal,
                    lease = mapping.lease,
                    "port mapped"
                );
                state.send_replace(mapping.state());
                backoff = RETRY_MIN;
                // Hold the mapping until a renewal fails (then start over) or shutdown.
                loop {
                    tokio::select! {
                        () = sleep(mapping.renew_after()) => {}
                        () = shutdown_requested(&mut shutdown) => {
                            match mapping.remove().await {
                                Ok(()) => tracing::info!(external_port = mapping.external_port, "port mapping removed"),
                                Err(e) => tracing::warn!("removing port mapping: {e}"),
                            }
                            state.send_replace(PortMappingState::default());
                            return;
                        }
                    }
                    match mapping.renew().await {
                        Ok(()) => {
                            tracing::info!(
                                external_port = mapping.external_port,
                                renewals = mapping.renewals,
                                "port mapping renewed"
                            );
                            state.send_if_modified(|s| {
                                let new = mapping.state();
                                let changed = *s != new;
                                *s = new;
                                changed
                            });
                        }
                        Err(e) => {
                            // Start over right away: the gateway may have been replaced, and
                            // discovery finds the new one; failures from then on back off.
                            tracing::warn!("renewing port mapping: {e}");
                            publish_error(&state, &e);
                            break;
                        }
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::info!("port mapping failed, retrying in {backoff:?}: {e}");
                publish_error(&state, &e);
            }
        }
        tokio::select! {
            () = sleep(backoff) => {}
            () = shutdown_requested(&mut shutdown) => break,
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
    state.send_replace(PortMappingState::default());
}

/// Resolves once `shutdown` holds true or its sender is gone.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

fn publish_error(state: &watch::Sender<PortMappingState>, e: &MapError) {
    state.send_replace(PortMappingState {
        enabled: true,
        error: Some(e.to_string()),
        ..PortMappingState::default()
    });
}

/// One full attempt: UPnP, then NAT-PMP.
async fn map_port(internal_port: u16, lease: u32) -> Result<Mapping, MapError> {
    let upnp_err = match map_upnp(internal_port, lease).await {
        Ok(m) => return Ok(m),
        // Even a UPnP gateway that refused may take NAT-PMP (some routers differ by protocol).
        Err(e) => e,
    };
    tracing::debug!("{upnp_err}");
    let natpmp_err = match map_natpmp(internal_port, lease).await {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    tracing::debug!("{natpmp_err}");
    // Report what a gateway that was found said; "not found" only if neither was.
    match (upnp_err, natpmp_err) {
        (MapError::UpnpNotFound(upnp), MapError::NatpmpNotFound(natpmp)) => {
            Err(MapError::NoGateway { upnp, natpmp })
        }
        (MapError::UpnpNotFound(_), e) | (e, _) => Err(e),
    }
}

/// Bounds a SOAP call: igd-next's own timeout is 10 s.
async fn upnp_call<T>(call: impl Future<Output = T>) -> Result<T, MapError> {
    timeout(UPNP_REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| MapError::Timeout("UPnP request"))
}

async fn map_upnp(internal_port: u16, requested_lease: u32) -> Result<Mapping, MapError> {
    // SearchOptions is non-exhaustive: start from Default.
    let mut options = SearchOptions::default();
    options.timeout = Some(UPNP_DISCOVERY_TIMEOUT);
    options.single_search_timeout = Some(UPNP_DISCOVERY_TIMEOUT);
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|e| MapError::UpnpNotFound(format!("discovery: {e}")))?;
    let IpAddr::V4(gateway_ip) = gateway.addr.ip() else {
        return Err(MapError::Upnp(format!(
            "gateway {} is not IPv4",
            gateway.addr
        )));
    };
    let internal = SocketAddrV4::new(local_ip_toward(gateway_ip).await?, internal_port);
    tracing::debug!(gateway = %gateway.addr, %internal, "UPnP gateway found");
    let (external_port, lease) = upnp_add(&gateway, internal, requested_lease).await?;
    // Advisory only (see the module docs); an empty or unspecified answer means unknown.
    let external_ip = match upnp_call(gateway.get_external_ip()).await {
        Ok(Ok(ip)) if !ip.is_unspecified() => Some(ip),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            tracing::debug!("UPnP GetExternalIPAddress: {e}");
            None
        }
        Err(e) => {
            tracing::debug!("UPnP GetExternalIPAddress: {e}");
            None
        }
    };
    Ok(Mapping {
        gateway: GatewayClient::Upnp(gateway),
        internal,
        external_ip,
        external_port,
        lease,
        requested_lease,
        renewals: 0,
    })
}

/// Maps external port = internal port if the gateway allows, else any port; falls back to a
/// permanent lease for gateways that only take those. Returns (external port, lease).
async fn upnp_add(
    gateway: &IgdGateway<Tokio>,
    internal: SocketAddrV4,
    requested_lease: u32,
) -> Result<(u16, u32), MapError> {
    let local = SocketAddr::V4(internal);
    let udp = PortMappingProtocol::UDP;
    let mut lease = requested_lease;
    for _ in 0..2 {
        let same =
            upnp_call(gateway.add_port(udp, internal.port(), local, lease, DESCRIPTION)).await?;
        match same {
            Ok(()) => return Ok((internal.port(), lease)),
            Err(AddPortError::OnlyPermanentLeasesSupported) if lease != 0 => {
                lease = 0;
                continue;
            }
            Err(AddPortError::PortInUse) => {}
            Err(e) => return Err(MapError::Upnp(format!("AddPortMapping: {e}"))),
        }
        // Taken by another host: let the gateway (or igd-next, by random tries) pick a port.
        match upnp_call(gateway.add_any_port(udp, local, lease, DESCRIPTION)).await? {
            Ok(port) => return Ok((port, lease)),
            Err(AddAnyPortError::OnlyPermanentLeasesSupported) if lease != 0 => lease = 0,
            Err(e) => return Err(MapError::Upnp(format!("AddAnyPortMapping: {e}"))),
        }
    }
    Err(MapError::Upnp("gateway rejects every lease".into()))
}

async fn map_natpmp(internal_port: u16, requested_lease: u32) -> Result<Mapping, MapError> {
    // NAT-PMP has no discovery: the server is the default gateway (RFC 6886 §3).
    let gateway_ip = default_gateway()
        .await?
        .ok_or_else(|| MapError::NatpmpNotFound("no default IPv4 route".into()))?;
    let internal = SocketAddrV4::new(local_ip_toward(gateway_ip).await?, internal_port);
    let mut client = natpmp::new_tokio_natpmp_with(gateway_ip)
        .await
        .map_err(|e| MapError::Natpmp(format!("socket: {e}")))?;
    // The public address request doubles as the probe for NAT-PMP support.
    let external_ip = natpmp_public_address(&mut client).await.map_err(|e| {
        MapError::NatpmpNotFound(format!("no answer from {gateway_ip}: {}", e.detail()))
    })?;
    let (external_port, lease) =
        natpmp_map(&mut client, internal_port, internal_port, requested_lease).await?;
    tracing::debug!(gateway = %gateway_ip, %internal, "NAT-PMP gateway found");
    Ok(Mapping {
        gateway: GatewayClient::Natpmp(client, gateway_ip),
        internal,
        external_ip: (!external_ip.is_unspecified()).then_some(IpAddr::V4(external_ip)),
        external_port,
        lease,
        requested_lease,
        renewals: 0,
    })
}

/// What the NAT-PMP client sent last, to pick its answer out of late replies to earlier sends.
#[derive(Clone, Copy)]
enum NatpmpRequest {
    PublicAddress,
    Map {
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
}

/// Sends `req`, retransmitting with doubling timeouts, and returns the matching response.
async fn natpmp_exchange(
    client: &mut NatpmpAsync<UdpSocket>,
    req: NatpmpRequest,
) -> Result<Response, MapError> {
    let mut wait = NATPMP_FIRST_TIMEOUT;
    for _ in 0..NATPMP_ATTEMPTS {
        let sent = match req {
            NatpmpRequest::PublicAddress => client.send_public_address_request().await,
            NatpmpRequest::Map {
                internal_port,
                external_port,
                lifetime,
            } => {
                client
                    .send_port_mapping_request(
                        natpmp::Protocol::UDP,
                        internal_port,
                        external_port,
                        lifetime,
                    )
                    .await
            }
        };
        sent.map_err(|e| MapError::Natpmp(format!("send: {e}")))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // natpmp's read never resends: the timeout here is the retransmission timer.
            let read = tokio::time::timeout_at(deadline, client.read_response_or_retry()).await;
            match read {
                Err(_) => break,
                Ok(Err(e)) => return Err(MapError::Natpmp(e.to_string())),
                Ok(Ok(resp)) => {
                    let matches = match (&resp, req) {
                        (Response::Gateway(_), NatpmpRequest::PublicAddress) => true,
                        (Response::UDP(m), NatpmpRequest::Map { internal_port, .. }) => {
                            m.private_port() == internal_port
                        }
                        _ => false,
                    };
                    if matches {
                        return Ok(resp);
                    }
                }
            }
        }
        wait *= 2;
    }
    Err(MapError::Timeout("NAT-PMP request"))
}

async fn natpmp_public_address(client: &mut NatpmpAsync<UdpSocket>) -> Result<Ipv4Addr, MapError> {
    match natpmp_exchange(client, NatpmpRequest::PublicAddress).await? {
        Response::Gateway(g) => Ok(*g.public_address()),
        _ => Err(MapError::Natpmp("unexpected response".into())),
    }
}

/// Requests (or with `lifetime` 0 deletes) a UDP mapping; returns (external port, lease).
async fn natpmp_map(
    client: &mut NatpmpAsync<UdpSocket>,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
) -> Result<(u16, u32), MapError> {
    let req = NatpmpRequest::Map {
        internal_port,
        external_port,
        lifetime,
    };
    match natpmp_exchange(client, req).await? {
        Response::UDP(m) => {
            let lease = u32::try_from(m.lifetime().as_secs()).unwrap_or(u32::MAX);
            if lifetime != 0 && (lease == 0 || m.public_port() == 0) {
                return Err(MapError::Natpmp("gateway granted no mapping".into()));
            }
            Ok((m.public_port(), lease))
        }
        _ => Err(MapError::Natpmp("unexpected response".into())),
    }
}

/// The local address the kernel picks to reach `gateway`: the address to forward to.
async fn local_ip_toward(gateway: Ipv4Addr) -> Result<Ipv4Addr, MapError> {
    // connect() on UDP sends nothing; it only makes the kernel choose the route and source.
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(MapError::LocalAddr)?;
    sock.connect((gateway, NATPMP_PORT))
        .await
        .map_err(MapError::LocalAddr)?;
    match sock.local_addr().map_err(MapError::LocalAddr)? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(a) => Err(MapError::LocalAddr(std::io::Error::other(format!(
            "unexpected IPv6 source {a}"
        )))),
    }
}

/// The IPv4 default gateway from `/proc/net/route` (None without a default route).
async fn default_gateway() -> Result<Option<Ipv4Addr>, MapError> {
    // procfs reads are quick, but file I/O is still kept off the runtime thread.
    let text = tokio::task::spawn_blocking(|| std::fs::read_to_string("/proc/net/route"))
        .await
        .map_err(|e| MapError::Natpmp(format!("reading routes: {e}")))?
        .map_err(|e| MapError::Natpmp(format!("reading /proc/net/route: {e}")))?;
    Ok(parse_default_gateway(&text))
}

/// Parses `/proc/net/route`: the gateway of the first up default route with a gateway.
fn parse_default_gateway(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
            return None;
        }
        let flags = u32::from_str_radix(f[3], 16).ok()?;
        if flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY {
            return None;
        }
        // The kernel prints the network-order address as a native-endian hex word.
        let raw = u32::from_str_radix(f[2], 16).ok()?;
        Some(Ipv4Addr::from(raw.to_ne_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_default_gateway() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateway(text),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(parse_default_gateway("Iface\n"), None);
    }

    #[test]
    fn state_serializes_camel_case() {
        let s = PortMappingState {
            enabled: true,
            protocol: Some(MappingProtocol::Natpmp),
            external_port: Some(9993),
            ..PortMappingState::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["protocol"], "natpmp");
        assert_eq!(v["externalPort"], 9993);
        assert!(v["leaseSeconds"].is_null());
    }
}
