//! The controller's REST API (ZeroTier's `/controller` paths). It has no
//! authentication of its own: the node merges it under its token check.
//!
//! | request | answer |
//! |---|---|
//! | `GET /controller` | `{"controller": true, "apiVersion": 4, "clock": ms, "unauthorizedRequesters": n, "queuedSaves": n, "counters": {...}}` |
//! | `GET /controller/network` | `["<nwid>", ...]` |
//! | `POST /controller/network` or `/controller/network/<controller addr>______` | creates a network with a random free number; body: initial fields |
//! | `GET /unstable/controller/network` | `{"data": [network + "meta": {"totalMemberCount", "authorizedMemberCount"}, ...], "meta": {"networkCount": n}}` |
//! | `GET /unstable/controller/network/<nwid>/member` | `{"data": [member, ...], "meta": {"totalCount", "authorizedCount"}}` |
//! | `GET`, `POST`, `DELETE /controller/network/<nwid>` | the network; `POST` updates (or creates that id); `PUT` is `POST`, as in ZeroTier |
//! | `GET /controller/network/<nwid>/member` | `{"<addr>": revision, ...}` (unauthorized requesters too) |
//! | `GET`, `POST`, `DELETE /controller/network/<nwid>/member/<addr>` | the member; `POST` updates (or records it) |
//!
//! Unauthorized requesters of a private network (members that asked and
//! are not stored) are listed and shown like members (`authorized: false`,
//! revision 0) but live in memory only, in a bounded list; any `POST` to
//! one stores it, `DELETE` forgets it.
//!
//! Errors are `{"error": "..."}`: 400 for a bad id or field (the message
//! names the field), 404 for an unknown network or member, 405 for an
//! unsupported method, 409 for creating an existing id, 500 when a change
//! cannot be saved (nothing changed then).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;

use crate::controller::{Controller, ControllerError};
use crate::controller_lock::lock;
use crate::join_keys::{KeyOptions, parse_duration_s};
use crate::model::Member;

/// The version `GET /controller` reports (ZeroTier's controller API version).
pub const API_VERSION: u32 = 4;
/// The suffix of a network id that asks for a new random number.
const NEW_NETWORK_SUFFIX: &str = "______";

type Shared = Arc<Mutex<Controller>>;

/// An error answer: status and `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        let status = match &e {
            ControllerError::Invalid(_) | ControllerError::ForeignNetwork { .. } => {
                StatusCode::BAD_REQUEST
            }
            ControllerError::NetworkNotFound(_)
            | ControllerError::MemberNotFound(..)
            | ControllerError::KeyNotFound(..) => StatusCode::NOT_FOUND,
            ControllerError::NetworkExists(_) => StatusCode::CONFLICT,
            ControllerError::NoFreeNetworkNumber | ControllerError::Store(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// The controller's routes, with their state applied; the result fits any
/// router state, so the node can merge it into its own router before its
/// token check is layered on.
pub fn router<S>(state: Shared) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/controller", get(status))
        .route(
            "/controller/network",
            get(list_networks)
                .post(create_random_network)
                .put(create_random_network),
        )
        .route("/unstable/controller/network", get(list_networks_in_full))
        .route(
            "/unstable/controller/network/{nwid}/member",
            get(list_members_in_full),
        )
        .route(
            "/controller/network/{nwid}",
            get(show_network)
                .post(post_network)
                .put(post_network)
                .delete(delete_network),
        )
        .route("/controller/network/{nwid}/member", get(list_members))
        .route(
            "/controller/network/{nwid}/key",
            get(list_keys).post(create_key).put(create_key),
        )
        .route(
            "/controller/network/{nwid}/key/{id}",
            axum::routing::delete(revoke_key),
        )
        .route(
            "/controller/network/{nwid}/member/{addr}",
            get(show_member)
                .post(post_member)
                .put(post_member)
                .delete(delete_member),
        )
        .merge(crate::web_ui::router())
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        })
        .with_state(state)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_nwid(text: &str) -> Result<NetworkId, ApiError> {
    text.parse()
        .map_err(|e| bad_request(format!("bad network id {text:?}: {e}")))
}

fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse()
        .map_err(|e| bad_request(format!("bad member address {text:?}: {e}")))
}

/// A request body as JSON; an empty body is `{}`.
fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("body is not JSON: {e}")))
}

fn member_json(c: &Controller, member: &Member) -> Value {
    let mut j = member.to_json();
    j["ipAssignmentError"] = match c.ip_assignment_problem(member.network_id, member.address) {
        Some(problem) => json!(problem.to_string()),
        None => Value::Null,
    };
    j
}

async fn status(State(s): State<Shared>) -> Json<Value> {
    let c = lock(&s);
    let k = c.counters();
    Json(json!({
        "controller": true,
        "apiVersion": API_VERSION,
        "clock": now_ms(),
        "unauthorizedRequesters": c.requester_count(),
        "queuedSaves": c.queued_saves(),
        "counters": k
            .named()
            .into_iter()
            .map(|(name, n)| (name.to_string(), json!(n)))
            .collect::<Map<String, Value>>(),
    }))
}

async fn list_networks(State(s): State<Shared>) -> Json<Value> {
    let ids: Vec<String> = lock(&s)
        .network_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    Json(json!(ids))
}

/// Every network in full, each with its member counts (ZeroTier's
/// `/unstable` list, which ZeroUI and ztnet read instead of one request
/// per network).
async fn list_networks_in_full(State(s): State<Shared>) -> Json<Value> {
    let c = lock(&s);
    let data: Vec<Value> = c
        .network_ids()
        .iter()
        .filter_map(|nwid| {
            let mut j = c.network(*nwid)?.to_json();
            let members = c.members(*nwid).unwrap_or_default();
            let authorized = members.iter().filter(|m| m.authorized).count();
            j["meta"] = json!({
                "totalMemberCount": members.len(),
                "authorizedMemberCount": authorized,
            });
            Some(j)
        })
        .collect();
    Json(json!({"data": data, "meta": {"networkCount": data.len()}}))
}

/// A new network with a random free number (ZeroTier's newer path).
async fn create_random_network(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    let mut c = lock(&s);
    Ok(Json(c.create_network(now_ms(), &body)?.to_json()))
}

async fn show_network(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let c = lock(&s);
    let network = c
        .network(nwid)
        .ok_or(ControllerError::NetworkNotFound(nwid))?;
    Ok(Json(network.to_json()))
}

async fn post_network(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    let now = now_ms();
    let mut c = lock(&s);
    if let Some(controller) = nwid.strip_suffix(NEW_NETWORK_SUFFIX)
        && nwid.len() == 16
    {
        let controller = controller.parse::<Address>().map_err(|e| {
            bad_request(format!(
                "bad network id {nwid:?}: its first 10 digits are not a controller address: {e}"
            ))
        })?;
        if controller != c.address() {
            return Err(bad_request(format!(
                "cannot create networks for controller {controller}: this one is {}",
                c.address()
            )));
        }
        return Ok(Json(c.create_network(now, &body)?.to_json()));
    }
    let nwid = parse_nwid(&nwid)?;
    let network = if c.network(nwid).is_some() {
        c.update_network(nwid, &body)?
    } else {
        c.create_network_with_id(now, nwid, &body)?
    };
    Ok(Json(network.to_json()))
}

async fn delete_network(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let network = lock(&s).delete_network(nwid)?;
    Ok(Json(network.to_json()))
}

/// A network's members (requesters included), or 404.
fn members_of(c: &Controller, nwid: NetworkId) -> Result<Vec<&Member>, ApiError> {
    Ok(c.members(nwid)
        .ok_or(ControllerError::NetworkNotFound(nwid))?)
}

async fn list_members(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let c = lock(&s);
    let members = members_of(&c, nwid)?;
    let map: Map<String, Value> = members
        .iter()
        .map(|m| (m.address.to_string(), json!(m.revision)))
        .collect();
    Ok(Json(Value::Object(map)))
}

/// Every member of a network in full, with counts (ZeroTier's `/unstable`
/// list).
async fn list_members_in_full(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let c = lock(&s);
    let members = members_of(&c, nwid)?;
    let authorized = members.iter().filter(|m| m.authorized).count();
    let data: Vec<Value> = members.iter().map(|m| member_json(&c, m)).collect();
    Ok(Json(json!({
        "data": data,
        "meta": {"totalCount": members.len(), "authorizedCount": authorized},
    })))
}

async fn show_member(
    State(s): State<Shared>,
    Path((nwid, addr)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let addr = parse_address(&addr)?;
    let c = lock(&s);
    if c.network(nwid).is_none() {
        return Err(ControllerError::NetworkNotFound(nwid).into());
    }
    let member = c
        .member(nwid, addr)
        .ok_or(ControllerError::MemberNotFound(nwid, addr))?;
    Ok(Json(member_json(&c, member)))
}

async fn post_member(
    State(s): State<Shared>,
    Path((nwid, addr)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let addr = parse_address(&addr)?;
    let body = parse_body(&body)?;
    let mut c = lock(&s);
    let member = c.update_member(now_ms(), nwid, addr, &body)?.clone();
    Ok(Json(member_json(&c, &member)))
}

/// `POST /controller/network/<nwid>/key` `{"reusable", "ephemeral",
/// "expiresIn": "24h"|seconds}` (all optional): a new join key; the answer
/// holds the key text (`"key"`), shown this once.
async fn create_key(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let body = parse_body(&body)?;
    let now = now_ms();
    let options = key_options(&body, now)?;
    let mut random = [0u8; 20];
    getrandom::fill(&mut random).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness: {e}"),
        )
    })?;
    let (text, key) = lock(&s).create_key(now, nwid, options, random)?;
    let mut j = key.to_api_json(now);
    if let Some(o) = j.as_object_mut() {
        o.insert("key".into(), Value::String(text));
    }
    Ok(Json(j))
}

/// A key request's options; a field of the wrong type is refused by name.
fn key_options(body: &Value, now_ms: u64) -> Result<KeyOptions, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(bad_request("body: expected a JSON object".into()));
    };
    let flag = |k: &str| match obj.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad_request(format!(
            "{k}: expected true or false, got {other}"
        ))),
    };
    let expires_at_ms = match obj.get("expiresIn") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let seconds = v
                .as_u64()
                .or_else(|| v.as_str().and_then(parse_duration_s))
                .filter(|&s| s > 0)
                .ok_or_else(|| {
                    bad_request(format!(
                        "expiresIn: expected a duration such as 3600, \"90m\", \"24h\" or \"7d\", got {v}"
                    ))
                })?;
            Some(now_ms.saturating_add(seconds.saturating_mul(1000)))
        }
    };
    Ok(KeyOptions {
        reusable: flag("reusable")?,
        ephemeral: flag("ephemeral")?,
        expires_at_ms,
    })
}

/// `GET /controller/network/<nwid>/key`: the keys, without secrets or hashes.
async fn list_keys(
    State(s): State<Shared>,
    Path(nwid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let now = now_ms();
    let c = lock(&s);
    let keys = c
        .join_keys(nwid)
        .ok_or(ControllerError::NetworkNotFound(nwid))?;
    Ok(Json(keys.iter().map(|k| k.to_api_json(now)).collect()))
}

/// `DELETE /controller/network/<nwid>/key/<id>`: revokes the key (it stays
/// listed, as revoked); answers it.
async fn revoke_key(
    State(s): State<Shared>,
    Path((nwid, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let key = lock(&s).revoke_key(nwid, &id)?;
    Ok(Json(key.to_api_json(now_ms())))
}

async fn delete_member(
    State(s): State<Shared>,
    Path((nwid, addr)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let nwid = parse_nwid(&nwid)?;
    let addr = parse_address(&addr)?;
    let member = lock(&s).delete_member(nwid, addr)?;
    Ok(Json(member.to_json()))
}
