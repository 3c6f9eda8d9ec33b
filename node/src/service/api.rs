//! The local JSON API on 127.0.0.1 (docs/API.md), guarded by the auth token.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::core::address::Address;
use crate::core::endpoint::format_endpoint;
use crate::core::ip_prefix::Cidr;
use crate::core::network_id::NetworkId;
use crate::core::node::{NetworkView, PeerRoute, PeerStatus};
use crate::service::api_types::{
    DeorbitAnswer, ErrorAnswer, LeaveAnswer, LocalConfig, Moon, MoonRoot, NetcheckAnswer,
    NetworkAnswer, NetworkLocal, OrbitAnswer, OrbitRequest, PingAnswer, PingRequest, Settings,
    StatusAnswer,
};
use crate::service::control_plane::ControlPlane;
use crate::service::engine::EngineGone;

/// Longest a ping request waits.
const PING_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Default ping wait.
const PING_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

type AppState = Arc<ControlPlane>;

/// An API error: status and message, sent as `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorAnswer { error: self.1 })).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

impl From<EngineGone> for ApiError {
    fn from(e: EngineGone) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// The API's routes, plus `extra` (a controller's), all behind the token.
pub fn router(state: AppState, extra: Option<Router>) -> Router {
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/peer", get(peers))
        .route("/peer/{addr}", get(peer))
        .route("/moon", get(moons))
        .route("/moon/{id}", post(orbit).delete(deorbit))
        .route("/ping/{addr}", post(ping))
        .route("/netcheck", get(netcheck))
        .route("/network", get(networks))
        .route("/network/{nwid}", get(network).post(join).delete(leave))
        .with_state(state.clone());
    let app = match extra {
        Some(extra) => app.merge(extra),
        None => app,
    };
    guard(
        app.fallback(|| async { not_found("no such API endpoint") }),
        Arc::from(state.token.as_str()),
        Arc::from(state.allow_management_from.as_slice()),
    )
}

/// Puts `app` behind the two checks every request passes, outermost first:
/// the Host header must name this machine's loopback (a web page whose name
/// was re-bound to 127.0.0.1 sends its own name: 403), then the token must be
/// in the `X-VNet-Auth` header, ZeroTier's `X-ZT1-Auth` or
/// `Authorization: Bearer` (401). The token is never read from the URL,
/// where it would end up in logs and browser history.
fn guard(app: Router, token: Arc<str>, allowed: Arc<[Cidr]>) -> Router {
    app.layer(middleware::from_fn_with_state(token, require_token))
        .layer(middleware::from_fn(require_local_host))
        .layer(middleware::from_fn_with_state(
            allowed,
            require_allowed_client,
        ))
}

/// Where a request comes from: loopback (or in-process, with no address),
/// or a client network local.conf's `allowManagementFrom` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Loopback,
    Allowed,
}

/// Refuses (403) a client neither on loopback nor in an allowed network;
/// marks the request with which it is.
async fn require_allowed_client(
    State(allowed): State<Arc<[Cidr]>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let client = match peer {
        None => Client::Loopback,
        Some(ip) if ip.is_loopback() => Client::Loopback,
        Some(ip) if allowed.iter().any(|c| c.contains(ip)) => Client::Allowed,
        Some(ip) => {
            return ApiError(
                StatusCode::FORBIDDEN,
                format!("{ip} is not in local.conf's allowManagementFrom"),
            )
            .into_response();
        }
    };
    request.extensions_mut().insert(client);
    next.run(request).await
}

/// Host names the API answers to (with or without a port): the loopback it
/// listens on. Anything else is a browser sent here under another name.
const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Whether a Host header value names the loopback, with an optional port.
fn is_local_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // A bracketed IPv6 literal without a port ends in ']'.
        Some((name, port)) if !port.ends_with(']') => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            name
        }
        _ => host,
    };
    LOCAL_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

async fn require_local_host(request: Request, next: Next) -> Response {
    // A client from an allowed network names this host as it knows it
    // (ztnet in a container: `zerotier:9993`); its token is still required.
    if request.extensions().get::<Client>() == Some(&Client::Allowed) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    if !host.is_some_and(is_local_host) {
        return ApiError(
            StatusCode::FORBIDDEN,
            "the Host header must be localhost, 127.0.0.1 or [::1] (DNS rebinding guard)".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// The token a request carries: in `X-VNet-Auth`, in ZeroTier's
/// `X-ZT1-Auth` (what ZeroTier's web UIs send), or as
/// `Authorization: Bearer <token>`; each header that is present must hold
/// it (a request naming two different tokens is refused).
fn given_tokens(headers: &axum::http::HeaderMap) -> Vec<&[u8]> {
    let mut given: Vec<&[u8]> = ["x-vnet-auth", "x-zt1-auth"]
        .iter()
        .flat_map(|name| headers.get_all(*name))
        .map(|v| v.as_bytes())
        .collect();
    for v in headers.get_all(axum::http::header::AUTHORIZATION) {
        let bytes = v.as_bytes();
        match bytes.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                given.push(bytes[7..].trim_ascii())
            }
            // Another scheme: no token of ours, and not one to ignore.
            _ => given.push(b""),
        }
    }
    given
}

/// Where a web UI's static files are served (a controller's): fetched
/// without the token (the sign-in page must load; they hold no secret),
/// every request they make carries it.
pub const WEB_UI_PREFIX: &str = "/ui";

fn is_web_ui_asset(request: &Request) -> bool {
    let path = request.uri().path();
    let method = request.method();
    (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && (path == WEB_UI_PREFIX
            || path
                .strip_prefix(WEB_UI_PREFIX)
                .is_some_and(|rest| rest.starts_with('/')))
}

async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if is_web_ui_asset(&request) {
        return next.run(request).await;
    }
    let given = given_tokens(request.headers());
    let ok = !given.is_empty() && given.iter().all(|t| constant_time_eq(t, token.as_bytes()));
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong auth token (X-VNet-Auth, X-ZT1-Auth or Authorization: Bearer; \
             see authtoken.secret)"
                .into(),
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse()
        .map_err(|e| bad_request(format!("bad address {text:?}: {e}")))
}

fn parse_world_id(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_request(format!(
            "bad world id {text:?}: 10 or 16 hex digits"
        )));
    }
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|&id| id != 0)
        .ok_or_else(|| bad_request(format!("bad world id {text:?}")))
}

/// Prometheus scrapes here (token required, as every route).
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let (counters, tables, peers) = s
        .engine
        .call(|node, now, _| {
            (
                node.counters().clone(),
                node.table_sizes(),
                node.peer_statuses(now),
            )
        })
        .await?;
    let snapshot = crate::service::metrics::MetricsSnapshot {
        counters,
        tables,
        peers,
        controller: s.controller_counters(),
        port_mapped: !s.port_mapping_json()["protocol"].is_null(),
    };
    let text = crate::service::metrics::render(&snapshot).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {e}"),
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::service::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

async fn status(State(s): State<AppState>) -> Result<Json<StatusAnswer>, ApiError> {
    let (node, counters, tables) = s
        .engine
        .call(|node, now, _| {
            (
                node.status(now),
                node.counters().clone(),
                node.table_sizes(),
            )
        })
        .await?;
    let controller_counters = s.controller_counters();
    Ok(Json(StatusAnswer {
        node,
        version: env!("CARGO_PKG_VERSION").to_string(),
        counters,
        tables,
        controller_counters: controller_counters.map(|c| c.into_iter().collect()),
        config: LocalConfig {
            settings: Settings {
                primary_port: s.port,
                port_mapping_enabled: s.port_mapping_enabled,
                force_tcp_relay: s.force_tcp_relay,
                identity_checks_per_second: s.identity_checks_per_second,
                relay_threads: s.relay_threads,
                flush_threads: s.flush_threads,
                busy_poll_micros: s.busy_poll_micros,
            },
        },
        port_mapping: s.port_mapping_json(),
        tcp_relay_stats: s.tcp_relay_stats(),
    }))
}

async fn netcheck(State(s): State<AppState>) -> Result<Json<NetcheckAnswer>, ApiError> {
    let report = s.engine.call(|node, now, _| node.netcheck(now)).await?;
    Ok(Json(NetcheckAnswer {
        report,
        port_mapping: s.port_mapping_json(),
    }))
}

async fn peers(State(s): State<AppState>) -> Result<Json<Vec<PeerStatus>>, ApiError> {
    let peers = s
        .engine
        .call(|node, now, _| node.peer_statuses(now))
        .await?;
    Ok(Json(peers))
}

async fn peer(
    State(s): State<AppState>,
    Path(addr): Path<String>,
) -> Result<Json<PeerStatus>, ApiError> {
    let addr = parse_address(&addr)?;
    let status = s
        .engine
        .call(move |node, now, _| node.peer_status(now, addr))
        .await?
        .ok_or_else(|| not_found(format!("peer {addr} not known")))?;
    Ok(Json(status))
}

async fn moons(State(s): State<AppState>) -> Result<Json<Vec<Moon>>, ApiError> {
    let moons = s
        .engine
        .call(|node, _, _| {
            let mut out: Vec<Moon> = node
                .moons()
                .iter()
                .map(|m| Moon {
                    id: format!("{:016x}", m.id()),
                    timestamp: m.timestamp_ms(),
                    waiting: false,
                    seed: None,
                    roots: m
                        .roots()
                        .iter()
                        .map(|r| MoonRoot {
                            identity: r.identity.to_text(false),
                            stable_endpoints: r.endpoints.iter().map(format_endpoint).collect(),
                        })
                        .collect(),
                })
                .collect();
            for (id, seed) in node.wanted_moons() {
                out.push(Moon {
                    id: format!("{id:016x}"),
                    timestamp: 0,
                    waiting: true,
                    seed: Some(seed.to_string()),
                    roots: Vec::new(),
                });
            }
            out
        })
        .await?;
    Ok(Json(moons))
}

async fn orbit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<OrbitRequest>>,
) -> Result<Json<OrbitAnswer>, ApiError> {
    let id = parse_world_id(&id)?;
    let Some(Json(body)) = body else {
        return Err(bad_request("body must be JSON {\"seed\": \"<address>\"}"));
    };
    let seed = parse_address(&body.seed)?;
    s.engine
        .call(move |node, now, out| node.orbit(now, id, seed, out))
        .await?;
    Ok(Json(OrbitAnswer {
        id: format!("{id:016x}"),
        seed: seed.to_string(),
        waiting: true,
    }))
}

async fn deorbit(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeorbitAnswer>, ApiError> {
    let id = parse_world_id(&id)?;
    let was = s.engine.call(move |node, _, _| node.deorbit(id)).await?;
    let removed = s
        .home
        .remove_moon(id)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if !was && !removed {
        return Err(not_found(format!("not orbiting {id:016x}")));
    }
    Ok(Json(DeorbitAnswer {
        id: format!("{id:016x}"),
        deorbited: true,
    }))
}

fn parse_network_id(text: &str) -> Result<NetworkId, ApiError> {
    text.parse()
        .map_err(|e| bad_request(format!("bad network id {text:?}: {e}")))
}

async fn networks(State(s): State<AppState>) -> Result<Json<Vec<NetworkAnswer>>, ApiError> {
    let views = s.engine.call(|node, _, _| node.networks()).await?;
    Ok(Json(
        views.into_iter().map(|v| network_answer(&s, v)).collect(),
    ))
}

async fn network(
    State(s): State<AppState>,
    Path(nwid): Path<String>,
) -> Result<Json<NetworkAnswer>, ApiError> {
    let nwid = parse_network_id(&nwid)?;
    let view = s
        .engine
        .call(move |node, _, _| node.network(nwid))
        .await?
        .ok_or_else(|| not_found(format!("not a member of {nwid}")))?;
    Ok(Json(network_answer(&s, view)))
}

/// A network answer: the core's view and this host's additions.
fn network_answer(s: &AppState, view: NetworkView) -> NetworkAnswer {
    let nwid: NetworkId = view.id.parse().expect("a network id we formatted");
    let settings = s.network_settings(nwid);
    NetworkAnswer {
        local: NetworkLocal {
            // ZeroTier's field names for what tools read most.
            nwid: view.id.clone(),
            port_device_name: crate::service::tap::device_name(nwid),
            allow_managed: settings.allow_managed,
            allow_global: settings.allow_global,
            allow_default: settings.allow_default,
            allow_dns: settings.allow_dns,
            // A gateway member must forward; say whether this host does.
            ip_forwarding: ip_forwarding(),
        },
        view,
    }
}

/// Whether the host forwards IPv4 (`/proc/sys/net/ipv4/ip_forward`).
fn ip_forwarding() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .ok()
        .map(|t| t.trim() == "1")
}

/// `POST /network/<nwid>`: joins, and sets any of `allowManaged`,
/// `allowGlobal`, `allowDefault`, `allowDNS` given (booleans or 0/1), as
/// ZeroTier's API does.
async fn join(
    State(s): State<AppState>,
    Path(nwid): Path<String>,
    body: Option<Json<Value>>,
) -> Result<Json<NetworkAnswer>, ApiError> {
    let nwid = parse_network_id(&nwid)?;
    let mut settings = s.network_settings(nwid);
    let mut changed = false;
    if let Some(Json(body)) = body {
        let Some(fields) = body.as_object() else {
            return Err(bad_request("body must be a JSON object"));
        };
        for (key, value) in fields {
            settings.set(key, value).map_err(bad_request)?;
            changed = true;
        }
    }
    s.home
        .save_network(nwid)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let meta = settings.request_meta();
    s.engine
        .call(move |node, now, out| node.join_with_meta(now, nwid, meta, out))
        .await?;
    if changed {
        crate::service::network_devices::set_network_settings(&s, nwid, settings)
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let view = s
        .engine
        .call(move |node, _, _| node.network(nwid))
        .await?
        .ok_or_else(|| not_found(format!("left {nwid} meanwhile")))?;
    Ok(Json(network_answer(&s, view)))
}

async fn leave(
    State(s): State<AppState>,
    Path(nwid): Path<String>,
) -> Result<Json<LeaveAnswer>, ApiError> {
    let nwid = parse_network_id(&nwid)?;
    let was = s.engine.call(move |node, _, _| node.leave(nwid)).await?;
    let recorded = s
        .home
        .remove_network(nwid)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if !was && !recorded {
        return Err(not_found(format!("not a member of {nwid}")));
    }
    s.forget_network_settings(nwid);
    crate::service::network_devices::configure_network(&s, nwid).await;
    Ok(Json(LeaveAnswer {
        id: nwid.to_string(),
        left: true,
    }))
}

async fn ping(
    State(s): State<AppState>,
    Path(addr): Path<String>,
    body: Option<Json<PingRequest>>,
) -> Result<Json<PingAnswer>, ApiError> {
    let addr = parse_address(&addr)?;
    let timeout = body
        .and_then(|Json(b)| b.timeout_ms)
        .map(Duration::from_millis)
        .unwrap_or(PING_TIMEOUT_DEFAULT)
        .min(PING_TIMEOUT_MAX);
    match s.ping(addr, timeout).await {
        Some(reply) => {
            let (route, path, root) = match reply.route {
                PeerRoute::Direct(p) if reply.tcp => ("TCP_RELAY", format_endpoint(&p), None),
                PeerRoute::Direct(p) => ("DIRECT", format_endpoint(&p), None),
                PeerRoute::Relayed { root, via } if reply.tcp => {
                    ("TCP_RELAY", format_endpoint(&via), Some(root.to_string()))
                }
                PeerRoute::Relayed { root, via } => {
                    ("RELAY", format_endpoint(&via), Some(root.to_string()))
                }
            };
            Ok(Json(PingAnswer {
                peer: addr.to_string(),
                seq: None,
                rtt_ms: reply.rtt_ms,
                route: route.to_string(),
                path,
                root,
            }))
        }
        None => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, "timeout".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn local_host_names() {
        for ok in [
            "localhost",
            "LOCALHOST:9993",
            "127.0.0.1",
            "127.0.0.1:9993",
            "[::1]",
            "[::1]:9993",
        ] {
            assert!(is_local_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9993",
            "127.0.0.1.evil.example",
            "localhost.evil.example:9993",
            "127.0.0.2",
            "[::2]:9993",
            "127.0.0.1:",
            "127.0.0.1:99x",
            "",
            "::1",
        ] {
            assert!(!is_local_host(bad), "{bad}");
        }
    }

    /// Serves a guarded app on a loopback port; sends each raw request head
    /// and returns each status line.
    fn statuses(requests: &[String]) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let app = guard(
                Router::new()
                    .route("/status", get(|| async { "ok" }))
                    .route("/ui/", get(|| async { "page" }).post(|| async { "posted" }))
                    .route("/uinfo", get(|| async { "not the ui" })),
                Arc::from("sekrit"),
                Arc::from(Vec::new()),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            let requests = requests.to_vec();
            tokio::task::spawn_blocking(move || {
                requests
                    .iter()
                    .map(|head| {
                        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                        s.write_all(head.as_bytes()).unwrap();
                        let mut answer = String::new();
                        s.read_to_string(&mut answer).unwrap();
                        answer.lines().next().unwrap_or_default().to_string()
                    })
                    .collect()
            })
            .await
            .unwrap()
        })
    }

    fn get_request(path: &str, headers: &[&str]) -> String {
        let mut head = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head + "\r\n"
    }

    #[test]
    fn requests_must_name_the_loopback_and_carry_the_token_in_a_header() {
        let got = statuses(&[
            get_request("/status", &["Host: 127.0.0.1:9993", "X-VNet-Auth: sekrit"]),
            get_request("/status", &["Host: localhost", "X-VNet-Auth: sekrit"]),
            get_request("/status", &["Host: [::1]:9993", "X-VNet-Auth: sekrit"]),
            // DNS rebinding: the attacker's name, the right token (a browser
            // would not have it, but the Host alone must refuse).
            get_request(
                "/status",
                &["Host: evil.example:9993", "X-VNet-Auth: sekrit"],
            ),
            get_request("/status", &["Host: evil.example"]),
            // The token in the URL is not accepted (it ends up in logs).
            get_request("/status?auth=sekrit", &["Host: 127.0.0.1:9993"]),
            get_request("/status", &["Host: 127.0.0.1:9993", "X-VNet-Auth: wrong"]),
            get_request("/status", &["Host: 127.0.0.1:9993"]),
            // No Host at all (HTTP/1.0): refused as well.
            "GET /status HTTP/1.0\r\nX-VNet-Auth: sekrit\r\n\r\n".to_string(),
            // ZeroTier's header (every ZeroTier web UI sends it) and a bearer token.
            get_request("/status", &["Host: 127.0.0.1:9993", "X-ZT1-Auth: sekrit"]),
            get_request(
                "/status",
                &["Host: localhost", "Authorization: Bearer sekrit"],
            ),
            get_request(
                "/status",
                &["Host: localhost", "authorization: bearer sekrit"],
            ),
            get_request("/status", &["Host: localhost", "X-ZT1-Auth: wrong"]),
            get_request(
                "/status",
                &["Host: localhost", "Authorization: Basic c2Vrcml0"],
            ),
            // Two headers naming different tokens: refused.
            get_request(
                "/status",
                &[
                    "Host: localhost",
                    "X-VNet-Auth: sekrit",
                    "X-ZT1-Auth: wrong",
                ],
            ),
        ]);
        let codes: Vec<&str> = got
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(
            codes,
            [
                "200", "200", "200", "403", "403", "401", "401", "401", "403", "200", "200", "200",
                "401", "401", "401"
            ],
            "{got:?}"
        );
    }

    #[test]
    fn only_the_web_ui_files_load_without_the_token_and_never_under_another_host() {
        let got = statuses(&[
            get_request("/ui/", &["Host: 127.0.0.1:9993"]),
            "HEAD /ui/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_string(),
            get_request("/ui/", &["Host: evil.example"]),
            "POST /ui/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                .to_string(),
            get_request("/uinfo", &["Host: localhost"]),
        ]);
        let codes: Vec<&str> = got
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(codes, ["200", "200", "403", "401", "401"], "{got:?}");
    }
}
