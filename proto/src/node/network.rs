//! Network membership (PROTOCOL.md §4.4): joining, asking the controller for
//! a config, assembling and checking signed config chunks; and, on a
//! controller node, passing requests to the driver
//! ([`Event::ConfigRequested`]) and signing and sending the controller's
//! answers ([`Node::answer_config`]).

use serde::Serialize;

use super::membership::{Assembly, Membership, NetworkStatus};

use super::{Event, MemberAsked, Node, Outbox};
use crate::address::Address;
use crate::constants::{
    CERTIFICATE_MAX_DELTA_MS, CERTIFICATE_REFRESH_INTERVAL_MS, ERROR_NETWORK_ACCESS_DENIED,
    ERROR_OBJECT_NOT_FOUND, MAX_PENDING_CONFIG_REQUESTS, NETWORK_CONFIG_PULL_INTERVAL_MS,
    NETWORK_CONFIG_PULL_MIN_INTERVAL_MS, NETWORK_CONFIG_REQUEST_INTERVAL_MS, PEER_IDLE_TIMEOUT_MS,
    STARTUP_PUSHES_PER_TICK,
};
use crate::hash_state::{HashMap, HashState};
use crate::identity::SharedIdentity;
use crate::message::{InRe, encode_in_re};
use crate::netconf::{ConfigDenied, NetworkConfig, NetworkConfigData, decode_chunk, encode_chunks};
use crate::network_id::{Mac, NetworkId};
use crate::network_message::{ConfigRequest, RequestMeta, decode_network_id, encode_network_id};
use crate::rules::Grants;
use crate::verb::Verb;

/// A joined network's state for the API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    /// 16 hex digits.
    pub id: String,
    /// Status.
    pub status: NetworkStatus,
    /// Our MAC on it.
    pub mac: String,
    /// Name, once configured.
    pub name: Option<String>,
    /// PRIVATE or PUBLIC, once configured.
    pub r#type: Option<&'static str>,
    /// Assigned addresses as `ip/prefix`.
    pub assigned_addresses: Vec<String>,
    /// Virtual MTU, once configured.
    pub mtu: Option<u16>,
    /// Config revision, once configured.
    pub revision: Option<u64>,
    /// Whether the controller made this member an active bridge (ZeroTier's
    /// `bridge`), once configured.
    pub bridge: Option<bool>,
    /// The virtual switch's frame counters, drops by reason included.
    pub counters: Option<crate::switch::SwitchCounters>,
    /// Managed routes as `{"target": "ip/prefix", "via": ip|null}` (ZeroTier's form).
    pub routes: Vec<serde_json::Value>,
    /// Targets of the managed routes whose gateway is this member (`ip/prefix`):
    /// it must forward for them.
    pub gateway_for: Vec<String>,
    /// The network's DNS settings (ZeroTier's `dns`: `{"domain": "",
    /// "servers": []}` when it has none).
    pub dns: crate::netconf::NetworkDns,
    /// The tags our certificate grants us (`[[id, value], ...]`).
    pub tags: Vec<(u32, u32)>,
    /// The capability ids our certificate grants us.
    pub capabilities: Vec<u32>,
}

/// What a controller keeps about members that asked.
pub(crate) struct ControllerState {
    /// Whether this node serves configs for its networks (the driver
    /// answers [`Event::ConfigRequested`]).
    pub serving: bool,
    /// Members the controller answered with a config (so bounded by the
    /// members it admits; a refused request leaves nothing here).
    pub members: HashMap<(NetworkId, Address), AdmittedMember>,
    /// Revocations still in force, per network, oldest first (repeated with
    /// certificate refreshes).
    pub revocations: HashMap<NetworkId, Vec<crate::netconf::Revocation>>,
    /// Requests passed to the driver and not answered yet.
    pub pending: HashMap<(NetworkId, Address), PendingRequest>,
    /// Remembered members still to be pushed their config after a restart.
    pub startup_pushes: std::collections::VecDeque<(NetworkId, Address)>,
    /// When certificates were last refreshed (none yet: at the first tick,
    /// so a restarted controller tells its remembered members at once).
    pub last_refresh_ms: Option<u64>,
    pub next_update_id: u64,
}

/// A member the controller admitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdmittedMember {
    /// When it last asked for its config.
    pub asked_ms: u64,
    /// The timestamp of the newest certificate issued to it.
    pub certified_ms: u64,
    /// What its newest certificate grants (refreshes grant the same).
    pub grants: Grants,
}

/// A config request the driver has not answered yet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PendingRequest {
    /// The member's request counter (none for pushes and refreshes).
    pub counter: Option<u64>,
    /// The config changed after the driver was asked: its answer may be
    /// older than the change, so ask once more after serving it.
    pub changed_since: bool,
}

impl ControllerState {
    /// Not serving, no members.
    pub fn new(hasher: HashState) -> Self {
        Self {
            serving: false,
            members: HashMap::with_hasher(hasher.clone()),
            revocations: HashMap::with_hasher(hasher.clone()),
            pending: HashMap::with_hasher(hasher),
            startup_pushes: std::collections::VecDeque::new(),
            last_refresh_ms: None,
            next_update_id: 0,
        }
    }
}

impl Node {
    /// Serves configs for the networks whose id begins with this node's
    /// address: requests become [`Event::ConfigRequested`], answered by the
    /// driver with [`Node::answer_config`].
    pub fn serve_networks(&mut self) {
        self.controller.serving = true;
    }

    /// Members the controller knows from before (its store), so a
    /// restarted controller pushes configs and denials without waiting to
    /// be asked (what changed while it was down, or was acknowledged but not
    /// pushed before a crash, arrives at once), `STARTUP_PUSHES_PER_TICK`
    /// a tick.
    pub fn remember_members(&mut self, now_ms: u64, members: &[(NetworkId, Address)]) {
        self.controller
            .startup_pushes
            .extend(members.iter().copied());
        for key in members {
            self.controller
                .members
                .entry(*key)
                .or_insert(AdmittedMember {
                    asked_ms: now_ms,
                    certified_ms: 0,
                    grants: Grants::default(),
                });
        }
    }

    /// The controller says a member's config changed (authorized,
    /// deauthorized, edited): a member that asked lately, or this node
    /// itself, is asked about again so it gets the change pushed.
    pub fn config_changed(&mut self, network: NetworkId, member: Address) {
        let key = (network, member);
        if let Some(waiting) = self.controller.pending.get_mut(&key) {
            // An answer is on its way, perhaps from before the change.
            waiting.changed_since = true;
        } else if member == self.address || self.controller.members.contains_key(&key) {
            self.ask_controller(network, member, None, None);
        }
    }

    /// Passes a request to the driver once; false if too many wait.
    fn ask_controller(
        &mut self,
        network: NetworkId,
        member: Address,
        counter: Option<u64>,
        asked: Option<Box<MemberAsked>>,
    ) -> bool {
        let key = (network, member);
        if let Some(waiting) = self.controller.pending.get_mut(&key) {
            // Answer the newest request of the member's.
            if counter.is_some() {
                waiting.counter = counter;
            }
            return true;
        }
        if self.controller.pending.len() >= MAX_PENDING_CONFIG_REQUESTS {
            self.counters.dropped_config_requests_busy += 1;
            return false;
        }
        self.controller.pending.insert(
            key,
            PendingRequest {
                counter,
                changed_since: false,
            },
        );
        self.events.push_back(Event::ConfigRequested {
            network,
            member,
            asked,
        });
        true
    }

    /// The controller's answer to an [`Event::ConfigRequested`]: the config
    /// is signed and sent (or installed, for this node's own membership), a
    /// refusal sent as ERROR(NETWORK_CONFIG_REQUEST); `Later` sends nothing
    /// (the member asks again, or is pushed to). An answer nobody asked for
    /// is ignored.
    pub fn answer_config(
        &mut self,
        now_ms: u64,
        network: NetworkId,
        member: Address,
        answer: Result<NetworkConfigData, ConfigDenied>,
        out: &mut Outbox,
    ) {
        let Some(request) = self.controller.pending.remove(&(network, member)) else {
            return;
        };
        if member == self.address {
            self.install_own_answer(now_ms, network, answer);
        } else {
            self.serve_config(now_ms, network, member, request.counter, answer, out);
        }
        if request.changed_since {
            self.config_changed(network, member);
        }
    }

    /// Joins a network (asks its controller for a config at once).
    pub fn join(&mut self, now_ms: u64, nwid: NetworkId, out: &mut Outbox) {
        self.join_with_meta(now_ms, nwid, RequestMeta::default(), out);
    }

    /// Joins a network, telling its controller `meta` (a join key,
    /// advertised routes) from the first request on.
    pub fn join_with_meta(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        meta: RequestMeta,
        out: &mut Outbox,
    ) {
        let hasher = &self.hash_state;
        self.networks
            .entry(nwid)
            .or_insert_with(|| Membership::new(hasher.clone()))
            .request_meta = meta;
        self.request_config(now_ms, nwid, out);
    }

    /// What our config requests for `nwid` tell its controller from now
    /// on (a join key, advertised routes); asks again at once when it
    /// changed, so the controller hears it. False if `nwid` is not joined.
    pub fn set_request_meta(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        meta: RequestMeta,
        out: &mut Outbox,
    ) -> bool {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return false;
        };
        if m.request_meta != meta {
            m.request_meta = meta;
            self.request_config(now_ms, nwid, out);
        }
        true
    }

    /// Leaves a network; true if it was joined.
    pub fn leave(&mut self, nwid: NetworkId) -> bool {
        self.networks.remove(&nwid).is_some()
    }

    /// The joined networks.
    pub fn networks(&self) -> Vec<NetworkView> {
        let mut ids: Vec<NetworkId> = self.networks.keys().copied().collect();
        ids.sort();
        ids.into_iter().filter_map(|n| self.network(n)).collect()
    }

    /// One joined network.
    pub fn network(&self, nwid: NetworkId) -> Option<NetworkView> {
        let m = self.networks.get(&nwid)?;
        let data = m.config.as_ref().map(|c| &c.data);
        Some(NetworkView {
            id: nwid.to_string(),
            status: m.status,
            mac: Mac::for_member(self.address, nwid).to_string(),
            name: data.map(|d| d.name.clone()),
            r#type: data.map(|d| if d.private { "PRIVATE" } else { "PUBLIC" }),
            assigned_addresses: data
                .map(|d| {
                    d.assigned
                        .iter()
                        .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                        .collect()
                })
                .unwrap_or_default(),
            mtu: data.map(|d| d.mtu),
            bridge: data.map(|d| d.active_bridge),
            revision: data.map(|d| d.revision),
            counters: m.switch.as_ref().map(|s| s.counters().clone()),
            routes: data
                .map(|d| {
                    d.routes
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "target": format!("{}/{}", r.target, r.prefix_len),
                                "via": r.via.map(|v| v.to_string()),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            gateway_for: data
                .map(|d| {
                    d.routes
                        .iter()
                        .filter(|r| r.via.is_some_and(|v| d.assigned.iter().any(|a| a.ip == v)))
                        .map(|r| format!("{}/{}", r.target, r.prefix_len))
                        .collect()
                })
                .unwrap_or_default(),
            dns: data
                .and_then(|d| d.dns.clone())
                .unwrap_or(crate::netconf::NetworkDns {
                    domain: String::new(),
                    servers: Vec::new(),
                }),
            tags: m
                .config
                .as_ref()
                .map(|c| c.certificate.grants.tags().to_vec())
                .unwrap_or_default(),
            capabilities: m
                .config
                .as_ref()
                .map(|c| c.certificate.grants.capabilities().to_vec())
                .unwrap_or_default(),
        })
    }

    /// Whether `ip` lies inside one of our virtual networks (an assigned
    /// subnet, or a managed route's target other than the default route):
    /// a path there would run the tunnel through itself.
    pub(crate) fn in_virtual_network(&self, ip: std::net::IpAddr) -> bool {
        use crate::ip_prefix::contains;
        self.networks
            .values()
            .filter_map(|m| m.config.as_ref())
            .any(|c| {
                c.data
                    .assigned
                    .iter()
                    .any(|a| contains(a.ip, a.prefix_len, ip))
                    || c.data
                        .routes
                        .iter()
                        .any(|r| r.prefix_len > 0 && contains(r.target, r.prefix_len, ip))
            })
    }

    /// The config of a joined network, once received.
    pub fn network_config(&self, nwid: NetworkId) -> Option<&NetworkConfig> {
        self.networks.get(&nwid)?.config.as_ref()
    }

    fn request_config(&mut self, now_ms: u64, nwid: NetworkId, out: &mut Outbox) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        m.last_request_ms = Some(now_ms);
        let revision = m.config.as_ref().map_or(0, |c| c.data.revision);
        let meta = m.request_meta.clone();
        let mut payload = Vec::with_capacity(16);
        let controller = nwid.controller();
        if controller == self.address {
            // We are the controller: ask it without the network.
            if self.controller.serving {
                let asked = MemberAsked {
                    identity: SharedIdentity::new(self.identity.to_public()),
                    versions: Some(self.versions),
                    meta,
                };
                self.ask_controller(nwid, self.address, None, Some(Box::new(asked)));
            } else {
                self.set_status(nwid, NetworkStatus::NotFound);
            }
            return;
        }
        ConfigRequest {
            network: nwid,
            revision,
            meta,
        }
        .encode(&mut payload);
        self.send(
            now_ms,
            controller,
            Verb::NetworkConfigRequest,
            &payload,
            out,
        );
    }

    /// Asks again, at once, for every network not yet configured.
    pub(crate) fn request_unconfigured(&mut self, now_ms: u64, out: &mut Outbox) {
        let waiting: Vec<NetworkId> = self
            .networks
            .iter()
            .filter(|(_, m)| m.status != NetworkStatus::Ok)
            .map(|(n, _)| *n)
            .collect();
        for nwid in waiting {
            self.request_config(now_ms, nwid, out);
        }
    }

    /// Periodic work for networks: re-requests while unconfigured or when
    /// the certificate grows old; on a controller, certificate refreshes.
    pub(crate) fn tick_networks(&mut self, now_ms: u64, out: &mut Outbox) {
        let since = |t: Option<u64>| t.map_or(u64::MAX, |t| now_ms.saturating_sub(t));
        let due: Vec<NetworkId> = self
            .networks
            .iter()
            .filter(|(_, m)| {
                let waited = since(m.last_request_ms) >= NETWORK_CONFIG_REQUEST_INTERVAL_MS;
                match m.status {
                    // Ask every 2 s until the controller answers (ACCESS_DENIED
                    // keeps asking too: authorization may come any moment).
                    NetworkStatus::Ok => {
                        // The controller pushes fresh certificates every 5 s;
                        // pull if they stopped, and now and then regardless so
                        // the controller keeps us on its list.
                        let pull = m
                            .config
                            .as_ref()
                            .and_then(|c| c.data.pull_interval_ms)
                            .map_or(NETWORK_CONFIG_PULL_INTERVAL_MS, |p| {
                                p.clamp(
                                    NETWORK_CONFIG_PULL_MIN_INTERVAL_MS,
                                    NETWORK_CONFIG_PULL_INTERVAL_MS,
                                )
                            });
                        (since(m.received_ms) >= CERTIFICATE_MAX_DELTA_MS / 2 && waited)
                            || since(m.last_request_ms) >= pull
                    }
                    _ => waited,
                }
            })
            .map(|(n, _)| *n)
            .collect();
        for nwid in due {
            self.request_config(now_ms, nwid, out);
        }
        for m in self.networks.values_mut() {
            if let Some(switch) = m.switch.as_mut() {
                switch.expire(now_ms);
            }
        }
        self.expire_awaiting_credentials(now_ms);
        // A restarted controller's pushes, a few a tick.
        for _ in 0..STARTUP_PUSHES_PER_TICK {
            if self.controller.pending.len() >= MAX_PENDING_CONFIG_REQUESTS / 2 {
                break;
            }
            let Some((nwid, member)) = self.controller.startup_pushes.pop_front() else {
                break;
            };
            self.config_changed(nwid, member);
        }
        // Fresh certificates (not whole configs) for every member that
        // asked lately.
        if self.controller.serving
            && self
                .controller
                .last_refresh_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= CERTIFICATE_REFRESH_INTERVAL_MS)
        {
            self.controller.last_refresh_ms = Some(now_ms);
            self.controller
                .members
                .retain(|_, r| now_ms.saturating_sub(r.asked_ms) < PEER_IDLE_TIMEOUT_MS);
            let mut due: Vec<(NetworkId, Address)> =
                self.controller.members.keys().copied().collect();
            // In a fixed order: a run with one seed repeats exactly.
            due.sort();
            if !due.is_empty() {
                self.events.push_back(Event::CertificatesDue(due));
            }
        }
        for m in self.networks.values_mut() {
            m.expire_revocations();
        }
    }

    /// NETWORK_CONFIG_REQUEST from `member` (controller side).
    pub(crate) fn handle_config_request(
        &mut self,
        now_ms: u64,
        member: Address,
        counter: u64,
        payload: &[u8],
        out: &mut Outbox,
    ) -> bool {
        let Ok(ConfigRequest {
            network: nwid,
            meta,
            ..
        }) = ConfigRequest::decode(payload)
        else {
            return false;
        };
        if !self.controller.serving || nwid.controller() != self.address {
            self.send_config_error(now_ms, member, counter, nwid, ERROR_OBJECT_NOT_FOUND, out);
            return true;
        }
        // Only a member the controller admits is remembered (in
        // serve_config): requests for unknown networks or refused ones
        // leave nothing.
        // The sender's identity was verified when its session was set up.
        let asked = self.peers.get(&member).map(|p| {
            Box::new(MemberAsked {
                identity: p.identity.clone(),
                versions: p.versions,
                meta,
            })
        });
        self.ask_controller(nwid, member, Some(counter), asked);
        true
    }

    fn serve_config(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        member: Address,
        counter: Option<u64>,
        answer: Result<NetworkConfigData, ConfigDenied>,
        out: &mut Outbox,
    ) {
        match answer {
            Ok(mut data) => {
                let record = self.controller.members.get_mut(&(nwid, member));
                // Certificates issued before up to this time grant what the
                // member no longer holds: revoked below.
                let mut revoke_through = None;
                match (record, counter) {
                    (Some(r), counter) => {
                        if counter.is_some() {
                            r.asked_ms = now_ms;
                        }
                        if data.grants != r.grants && r.certified_ms > 0 {
                            // Newer than every certificate issued before,
                            // so a revocation of those spares it.
                            data.timestamp_ms = data.timestamp_ms.max(r.certified_ms + 1);
                            if grants_lost(&r.grants, &data.grants) {
                                revoke_through = Some(r.certified_ms);
                            }
                        }
                        if data.timestamp_ms >= r.certified_ms {
                            r.certified_ms = data.timestamp_ms;
                            r.grants = data.grants.clone();
                        }
                    }
                    // Asked by the member itself (pushes do not admit it).
                    (None, Some(_)) => {
                        self.controller.members.insert(
                            (nwid, member),
                            AdmittedMember {
                                asked_ms: now_ms,
                                certified_ms: data.timestamp_ms,
                                grants: data.grants.clone(),
                            },
                        );
                    }
                    (None, None) => {}
                }
                if let Some(threshold) = revoke_through {
                    // A modified node could go on showing a certificate
                    // with the tag or capability it lost: peers refuse it
                    // from now on, and take the new one.
                    self.issue_revocation(now_ms, nwid, member, threshold, out);
                }
                let config = NetworkConfig::sign(&self.key_pair, nwid, member, data);
                self.controller.next_update_id += 1;
                let update_id = self.controller.next_update_id;
                for chunk in encode_chunks(&self.key_pair, nwid, update_id, &config.encode()) {
                    self.send(now_ms, member, Verb::NetworkConfig, &chunk, out);
                }
            }
            // Nothing to send yet: the member asks again, or is pushed to.
            Err(ConfigDenied::Later) => {}
            Err(denied) => {
                let code = match denied {
                    ConfigDenied::AccessDenied => ERROR_NETWORK_ACCESS_DENIED,
                    _ => ERROR_OBJECT_NOT_FOUND,
                };
                // Stop pushing to a member that is no longer authorized (or
                // whose network is gone); one that was admitted is revoked.
                let admitted = self.controller.members.remove(&(nwid, member));
                if let (Some(r), ConfigDenied::AccessDenied) = (admitted, &denied) {
                    self.revoke_member(now_ms, nwid, member, r.certified_ms, out);
                }
                self.send_config_error(now_ms, member, counter.unwrap_or(0), nwid, code, out);
            }
        }
    }

    fn send_config_error(
        &mut self,
        now_ms: u64,
        member: Address,
        counter: u64,
        nwid: NetworkId,
        code: u8,
        out: &mut Outbox,
    ) {
        let mut p = Vec::with_capacity(18);
        encode_in_re(
            InRe {
                verb: Verb::NetworkConfigRequest,
                counter,
            },
            &mut p,
        );
        p.push(code);
        encode_network_id(nwid, &mut p);
        self.send(now_ms, member, Verb::Error, &p, out);
    }

    /// A controller that is also a member of its own network.
    fn install_own_answer(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        answer: Result<NetworkConfigData, ConfigDenied>,
    ) {
        let me = self.address;
        match answer {
            Ok(data) => {
                let config = NetworkConfig::sign(&self.key_pair, nwid, me, data);
                self.install_config(now_ms, config);
            }
            Err(ConfigDenied::AccessDenied) => self.set_status(nwid, NetworkStatus::AccessDenied),
            // Asked again at the next tick.
            Err(ConfigDenied::Later) => {}
            Err(ConfigDenied::NotFound) => self.set_status(nwid, NetworkStatus::NotFound),
        }
    }

    /// ERROR(NETWORK_CONFIG_REQUEST) from a controller (member side).
    pub(crate) fn handle_config_error(&mut self, src: Address, code: u8, data: &[u8]) {
        let Ok((nwid, _)) = decode_network_id(data, "ERROR(NETWORK_CONFIG_REQUEST)") else {
            return;
        };
        if nwid.controller() != src {
            return;
        }
        let status = match code {
            ERROR_NETWORK_ACCESS_DENIED => NetworkStatus::AccessDenied,
            _ => NetworkStatus::NotFound,
        };
        if let Some(m) = self.networks.get_mut(&nwid) {
            // A denial also withdraws the config we held: no more frames.
            m.config = None;
            m.switch = None;
        }
        self.set_status(nwid, status);
    }

    fn set_status(&mut self, nwid: NetworkId, status: NetworkStatus) {
        if let Some(m) = self.networks.get_mut(&nwid)
            && m.status != status
        {
            m.status = status;
            self.events.push_back(Event::NetworkChanged(nwid));
        }
    }

    /// NETWORK_CONFIG chunk from a controller (member side). Returns false
    /// when the payload is refused (counted by the caller).
    pub(crate) fn handle_config_chunk(
        &mut self,
        now_ms: u64,
        src: Address,
        payload: &[u8],
        out: &mut Outbox,
    ) -> bool {
        let Some(key) = self.peers.get(&src).map(|p| *p.identity.public_key()) else {
            return false;
        };
        let Ok(chunk) = decode_chunk(payload, &key) else {
            return false;
        };
        let nwid = chunk.network;
        if nwid.controller() != src {
            return false;
        }
        let Some(m) = self.networks.get_mut(&nwid) else {
            return true; // not joined (left meanwhile): ignore
        };
        let total = chunk.total_len as usize;
        let fresh = m
            .assembly
            .as_ref()
            .is_none_or(|a| a.update_id != chunk.update_id || a.bytes.len() != total);
        if fresh {
            m.assembly = Some(Assembly {
                update_id: chunk.update_id,
                bytes: vec![0; total],
                received: vec![false; total],
            });
        }
        let a = m.assembly.as_mut().expect("set above");
        let range = chunk.offset as usize..chunk.offset as usize + chunk.data.len();
        a.bytes[range.clone()].copy_from_slice(chunk.data);
        a.received[range].iter_mut().for_each(|r| *r = true);
        if !a.received.iter().all(|r| *r) {
            return true;
        }
        let bytes = m.assembly.take().expect("complete").bytes;
        match NetworkConfig::decode(&bytes, nwid, self.address, &key) {
            Ok(config) => {
                let grants_before = self
                    .networks
                    .get(&nwid)
                    .and_then(|m| m.config.as_ref())
                    .map(|c| c.certificate.grants.clone());
                self.install_config(now_ms, config);
                let m = self.networks.get(&nwid).expect("joined");
                let grants_now = m.config.as_ref().map(|c| &c.certificate.grants);
                if grants_before.is_some() && grants_before.as_ref() != grants_now {
                    // Our grants changed: the controller revokes certificates
                    // granting what we lost, so peers holding one stop
                    // sending to us until ours arrives. It goes now, to the
                    // peers we hold certificates of (bounded like them).
                    let peers: Vec<Address> = m.peer_certificates.keys().copied().collect();
                    for peer in peers {
                        self.push_credentials(now_ms, nwid, peer, false, out);
                    }
                }
                true
            }
            Err(_) => false,
        }
    }

    fn install_config(&mut self, now_ms: u64, config: NetworkConfig) {
        let nwid = config.network;
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        // Never go back to an older config (a reordered or replayed push).
        if m.config
            .as_ref()
            .is_some_and(|old| old.data.timestamp_ms > config.data.timestamp_ms)
        {
            return;
        }
        // Nor to an older certificate than a refresh brought (§4.7).
        let mut config = config;
        if let Some(old) = m.config.as_ref()
            && old.certificate.timestamp_ms > config.certificate.timestamp_ms
        {
            config.certificate = old.certificate.clone();
        }
        m.received_ms = Some(now_ms);
        // Certificates refresh every few seconds; only a change of settings is news.
        let changed = m.config.as_ref().map(|c| {
            let mut old = c.data.clone();
            old.timestamp_ms = config.data.timestamp_ms;
            old
        }) != Some(config.data.clone())
            || m.status != NetworkStatus::Ok;
        super::membership::configure_switch(m, self.address, &config);
        m.config = Some(config);
        m.status = NetworkStatus::Ok;
        if changed {
            self.events.push_back(Event::NetworkChanged(nwid));
        }
    }
}

/// Whether `new` lacks a tag value or a capability that `old` granted.
fn grants_lost(old: &Grants, new: &Grants) -> bool {
    old.tags().iter().any(|&(id, v)| new.tag(id) != Some(v))
        || old
            .capabilities()
            .iter()
            .any(|c| !new.capabilities().contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c25519::KeyPair;
    use crate::constants::{
        CREDENTIAL_CHECKS_PER_PEER_PER_SECOND, MAX_CREDENTIAL_CHECKS_PER_PACKET,
    };
    use crate::identity::Identity;
    use crate::message::Versions;
    use crate::netconf::Certificate;
    use crate::netconf::NetworkConfigData;
    use crate::node::NodeConfig;
    use crate::world::{Root, World, WorldKind};

    /// A node that is its own network's controller, configured on it (private).
    fn configured_node(now_ms: u64) -> (Node, NetworkId, KeyPair) {
        let identity = Identity::generate(&mut crate::rng::os_rng());
        let key = identity.key_pair().unwrap();
        let planet_key = KeyPair::generate(&mut crate::rng::os_rng());
        let planet = World::make(
            WorldKind::Planet,
            7,
            1,
            *planet_key.public(),
            vec![Root {
                identity: identity.to_public(),
                endpoints: vec!["192.0.2.1:9993".parse().unwrap()],
            }],
            &planet_key,
        )
        .unwrap();
        let mut node = Node::new(NodeConfig {
            identity,
            planet,
            moons: Vec::new(),
            versions: Versions {
                protocol: 1,
                major: 0,
                minor: 1,
                revision: 0,
            },
            rng_seed: [9; 32],
        })
        .unwrap();
        let nwid = NetworkId::new(node.address, 1);
        node.join(now_ms, nwid, &mut Outbox::new());
        let data = NetworkConfigData {
            pull_interval_ms: None,
            rules: None,
            capabilities: Vec::new(),
            grants: Default::default(),
            dns: None,
            name: "n".into(),
            revision: 1,
            timestamp_ms: now_ms,
            private: true,
            mtu: 2800,
            multicast_limit: 32,
            enable_broadcast: true,
            active_bridge: false,
            assigned: vec![],
            routes: vec![],
            bridges: vec![],
        };
        let certificate = Certificate::issue(&key, nwid, node.address, now_ms);
        let address = node.address;
        node.install_config(
            now_ms,
            NetworkConfig {
                network: nwid,
                issued_to: address,
                data,
                certificate,
            },
        );
        (node, nwid, key)
    }

    fn credentials(certs: &[Certificate]) -> Vec<u8> {
        crate::netconf::Credentials {
            certificates: certs.to_vec(),
            revocations: vec![],
        }
        .encode()
    }

    #[test]
    fn credentials_are_checked_for_membership_before_any_signature_and_capped() {
        let now = 10_000_000;
        let (mut node, nwid, key) = configured_node(now);
        let src = Address::from_u64(0x0102030405).unwrap();
        let other = Address::from_u64(0x0a0b0c0d0e).unwrap();
        let forger = KeyPair::generate(&mut crate::rng::os_rng());
        let mut out = Outbox::new();
        let checked = |node: &Node| node.counters.credential_signatures_checked;

        // 255 certificates that cannot matter: none costs a signature check.
        let not_ours = NetworkId::new(other, 9);
        for certs in [
            vec![Certificate::issue(&forger, not_ours, src, now); 255],
            vec![Certificate::issue(&forger, nwid, other, now); 255],
            vec![Certificate::issue(&forger, nwid, src, now - 2 * CERTIFICATE_MAX_DELTA_MS); 255],
        ] {
            node.handle_credentials(now, src, &credentials(&certs), &mut out);
        }
        assert_eq!(checked(&node), 0);
        assert_eq!(node.counters.dropped_credentials_irrelevant, 2 * 255);

        // 255 forged certificates that would matter: a few per packet, a few
        // per second from this peer.
        let forged = credentials(&vec![Certificate::issue(&forger, nwid, src, now); 255]);
        node.handle_credentials(now, src, &forged, &mut out);
        assert_eq!(checked(&node), MAX_CREDENTIAL_CHECKS_PER_PACKET as u64);
        for _ in 0..10 {
            node.handle_credentials(now + 500, src, &forged, &mut out);
        }
        assert_eq!(
            checked(&node),
            u64::from(CREDENTIAL_CHECKS_PER_PEER_PER_SECOND)
        );
        assert!(node.networks[&nwid].peer_certificates.is_empty());
        // Another peer has its own budget; and a new second brings a new one.
        node.handle_credentials(
            now + 500,
            other,
            &credentials(&[Certificate::issue(&forger, nwid, other, now)]),
            &mut out,
        );
        assert_eq!(
            checked(&node),
            u64::from(CREDENTIAL_CHECKS_PER_PEER_PER_SECOND) + 1
        );
        node.handle_credentials(now + 1_000, src, &forged, &mut out);
        assert_eq!(
            checked(&node),
            u64::from(CREDENTIAL_CHECKS_PER_PEER_PER_SECOND)
                + 1
                + MAX_CREDENTIAL_CHECKS_PER_PACKET as u64
        );

        // A genuine certificate after the forged ones in the same packet is
        // still taken if within the packet's budget; once held, the same one
        // again costs nothing.
        let genuine = Certificate::issue(&key, nwid, src, now + 1);
        let mut certs = vec![Certificate::issue(&forger, nwid, src, now + 1); 2];
        certs.push(genuine.clone());
        node.handle_credentials(now + 2_000, src, &credentials(&certs), &mut out);
        assert_eq!(
            node.networks[&nwid].peer_certificates.get(&src),
            Some(&genuine)
        );
        let before = checked(&node);
        node.handle_credentials(now + 3_000, src, &credentials(&[genuine]), &mut out);
        assert_eq!(checked(&node), before);
    }

    #[test]
    fn a_member_that_sends_a_held_certificate_again_gets_ours_again_every_few_seconds() {
        use crate::constants::CREDENTIALS_ANSWER_INTERVAL_MS;
        let now = 10_000_000;
        let (mut node, nwid, key) = configured_node(now);
        let src = Address::from_u64(0x0102030405).unwrap();
        let mut out = Outbox::new();
        let cert = Certificate::issue(&key, nwid, src, now);
        let sent = |node: &Node| node.networks[&nwid].credentials_sent.get(&src).map(|s| s.1);
        node.handle_credentials(
            now,
            src,
            &credentials(std::slice::from_ref(&cert)),
            &mut out,
        );
        assert_eq!(
            sent(&node),
            Some(now),
            "ours goes back when theirs is stored"
        );
        let checked = node.counters.credential_signatures_checked;
        // Theirs again: it lacks ours (our push was lost). Answered, but not
        // within the interval, so two members never keep answering each other.
        node.handle_credentials(
            now + 1_000,
            src,
            &credentials(std::slice::from_ref(&cert)),
            &mut out,
        );
        assert_eq!(sent(&node), Some(now));
        let later = now + CREDENTIALS_ANSWER_INTERVAL_MS;
        node.handle_credentials(
            later,
            src,
            &credentials(std::slice::from_ref(&cert)),
            &mut out,
        );
        assert_eq!(sent(&node), Some(later), "answered");
        assert_eq!(
            node.counters.credential_signatures_checked, checked,
            "a held certificate costs no signature check"
        );
    }

    #[test]
    fn revocations_come_from_the_controller_only_and_void_older_certificates() {
        use crate::netconf::{Credentials, Revocation};
        let now = 10_000_000;
        let (mut node, nwid, key) = configured_node(now);
        let controller = node.address;
        let member = Address::from_u64(0x0102030405).unwrap();
        let mut out = Outbox::new();
        let send = |node: &mut Node, from: Address, c: Credentials, out: &mut Outbox| {
            node.handle_credentials(now, from, &c.encode(), out);
        };
        let cert = |ts: u64| Certificate::issue(&key, nwid, member, ts);
        let only_cert = |ts: u64| Credentials {
            certificates: vec![cert(ts)],
            revocations: vec![],
        };
        send(&mut node, member, only_cert(now), &mut out);
        assert!(node.networks[&nwid].peer_certificates.contains_key(&member));

        // A revocation relayed by anyone but the controller is refused.
        let revocation = Revocation::issue(&key, nwid, member, now);
        let only = |r: Revocation| Credentials {
            certificates: vec![],
            revocations: vec![r],
        };
        send(&mut node, member, only(revocation.clone()), &mut out);
        assert_eq!(node.counters.revocations_applied, 0);
        // A forged one from the controller is refused after its signature check.
        let forger = KeyPair::generate(&mut crate::rng::os_rng());
        send(
            &mut node,
            controller,
            only(Revocation::issue(&forger, nwid, member, now)),
            &mut out,
        );
        assert_eq!(node.counters.revocations_applied, 0);
        // The controller's: the member's certificate goes, older ones are refused.
        send(&mut node, controller, only(revocation.clone()), &mut out);
        assert_eq!(node.counters.revocations_applied, 1);
        let m = &node.networks[&nwid];
        assert!(!m.peer_certificates.contains_key(&member));
        assert!(m.revocations.is_revoked(member));
        send(&mut node, member, only_cert(now), &mut out);
        assert_eq!(node.counters.dropped_credentials_revoked, 1);
        assert!(!node.networks[&nwid].peer_certificates.contains_key(&member));
        // The same revocation again costs no signature check.
        let checks = node.counters.credential_signatures_checked;
        send(&mut node, controller, only(revocation), &mut out);
        assert_eq!(node.counters.credential_signatures_checked, checks);
        // Re-authorized: a certificate issued after the threshold is taken.
        send(&mut node, member, only_cert(now + 1), &mut out);
        let m = &node.networks[&nwid];
        assert!(m.peer_certificates.contains_key(&member));
        assert!(!m.revocations.is_revoked(member));
        // At most MAX_REVOCATIONS_PER_PUSH are checked per packet.
        let many: Vec<Revocation> = (0..20)
            .map(|i| {
                Revocation::issue(
                    &key,
                    nwid,
                    Address::from_u64(0x0200000000 + i).unwrap(),
                    now,
                )
            })
            .collect();
        let applied = node.counters.revocations_applied;
        send(
            &mut node,
            controller,
            Credentials {
                certificates: vec![],
                revocations: many,
            },
            &mut out,
        );
        assert_eq!(
            node.counters.revocations_applied,
            applied + crate::constants::MAX_REVOCATIONS_PER_PUSH as u64
        );
    }
}
