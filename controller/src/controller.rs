//! The controller: networks and members in memory, mirrored in the store,
//! and the configs members get.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use serde_json::Value;
use vnet_node::core::address::Address;
use vnet_node::core::constants::{MAX_MEMBER_TAGS, RFC4193_PREFIX_LEN, SIXPLANE_PREFIX_LEN};
use vnet_node::core::netconf::{AssignedIp, ManagedRoute, NetworkConfigData, NetworkDns};
use vnet_node::core::network_id::NetworkId;
use vnet_node::core::rules::{Capability, Grants, RuleSet};

pub use vnet_node::core::netconf::ConfigDenied;

use crate::assign::{AssignError, assign_due, assignment_problem, is_due};
use crate::join_keys::{self, JoinKey, KeyOptions, MAX_JOIN_KEYS_PER_NETWORK, MAX_USES_RECORDED};
use crate::member_report::MemberReport;
use crate::model::{Member, Network};
use crate::requesters::Requesters;
use crate::store::{Store, StoreError};
use crate::update::{FieldError, MAX_MEMBER_IPS, MAX_ROUTES, member_update, network_update};

/// How many removed members [`Controller::changed_members`] remembers.
const MAX_REMOVED: usize = 10_000;
/// Random tries for a free network number before counting up.
const RANDOM_NUMBER_TRIES: usize = 32;
/// Most newcomers a public network admits (stores) by their own request
/// per minute; more wait (no answer) until the next minute. Each admission
/// writes two files and changes every member's config, so a flood of
/// identities must not turn into a flood of writes and pushes.
pub const PUBLIC_JOINS_PER_MINUTE: u32 = 60;
/// A public network with this many stored members admits no more by
/// request (an admin can still add members), so strangers cannot fill the
/// disk even slowly.
pub const MAX_MEMBERS_ADMITTED_BY_REQUEST: usize = 10_000;
/// Most members waiting for a save decided by a config request; beyond
/// it, requests that need a save get no answer (they ask again).
pub const MAX_QUEUED_SAVES: usize = 4_096;
/// The window of [`PUBLIC_JOINS_PER_MINUTE`].
const JOIN_WINDOW_MS: u64 = 60_000;
/// How long an ephemeral member may go without asking for its config
/// before it is removed, unless local.conf's `ephemeralMemberTimeoutSeconds`
/// says otherwise (Headscale's default inactivity timeout).
pub const EPHEMERAL_MEMBER_TIMEOUT_DEFAULT_S: u64 = 1_800;
/// A refused join key is logged at most this often per member.
const KEY_REFUSAL_LOG_INTERVAL_MS: u64 = 60_000;
/// Members whose refused keys are remembered for that (then forgotten at once).
const MAX_KEY_REFUSALS_LOGGED: usize = 4_096;
/// Most managed routes in one config: the network's own (at most
/// [`MAX_ROUTES`]) and as many approved routes via members.
pub const MAX_CONFIG_ROUTES: usize = 2 * MAX_ROUTES;

/// Why a controller operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A field of the update is wrong (HTTP 400).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such network (HTTP 404).
    #[error("network {0} not found")]
    NetworkNotFound(NetworkId),
    /// No such member (HTTP 404).
    #[error("member {1} of network {0} not found")]
    MemberNotFound(NetworkId, Address),
    /// No such join key (HTTP 404).
    #[error("join key {1} of network {0} not found")]
    KeyNotFound(NetworkId, String),
    /// Creating a network whose id is taken (HTTP 409).
    #[error("network {0} already exists")]
    NetworkExists(NetworkId),
    /// A network id of another controller (HTTP 400).
    #[error("network {nwid} belongs to controller {}, not to this one ({ours})", nwid.controller())]
    ForeignNetwork {
        /// The id asked for.
        nwid: NetworkId,
        /// This controller's address.
        ours: Address,
    },
    /// All 2^24 network numbers are taken (HTTP 500).
    #[error("no free network number left on this controller")]
    NoFreeNetworkNumber,
    /// The change could not be made durable (HTTP 500); nothing changed.
    #[error("cannot save: {0}")]
    Store(#[from] StoreError),
}

/// What one member of a network is told (unsigned; the node signs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// The network.
    pub nwid: NetworkId,
    /// The member it is for.
    pub member: Address,
    /// Network name.
    pub name: String,
    /// The network's revision plus the member's: grows with every change
    /// of what this config says.
    pub revision: u64,
    /// When issued (the `now_ms` of the request).
    pub timestamp_ms: u64,
    /// Whether the network is private.
    pub private: bool,
    /// Virtual MTU.
    pub mtu: u16,
    /// Most recipients of one multicast.
    pub multicast_limit: u32,
    /// Whether Ethernet broadcast is carried.
    pub enable_broadcast: bool,
    /// Whether this member may bridge.
    pub active_bridge: bool,
    /// This member's addresses with their prefix lengths.
    pub assigned: Vec<AssignedIp>,
    /// The network's managed routes.
    pub routes: Vec<ManagedRoute>,
    /// The network's authorized active bridges.
    pub bridges: Vec<Address>,
    /// How often the member should ask again (ephemeral members: often
    /// enough that silence means offline).
    pub pull_interval_ms: Option<u64>,
    /// The network's DNS settings.
    pub dns: Option<NetworkDns>,
    /// The network's flow rules, unless they are the accept-all default.
    pub rules: Option<RuleSet>,
    /// The network's capabilities.
    pub capabilities: Vec<Capability>,
    /// This member's tags (its own, then the network's defaults) and capabilities.
    pub grants: Grants,
}

impl From<MemberConfig> for NetworkConfigData {
    fn from(c: MemberConfig) -> Self {
        NetworkConfigData {
            name: c.name,
            revision: c.revision,
            timestamp_ms: c.timestamp_ms,
            private: c.private,
            mtu: c.mtu,
            multicast_limit: c.multicast_limit,
            enable_broadcast: c.enable_broadcast,
            active_bridge: c.active_bridge,
            assigned: c.assigned,
            routes: c.routes,
            bridges: c.bridges.iter().map(ToString::to_string).collect(),
            pull_interval_ms: c.pull_interval_ms,
            dns: c.dns,
            rules: c.rules,
            capabilities: c.capabilities,
            grants: c.grants,
        }
    }
}

/// What a member's certificate grants it, as ZeroTier's controller computes
/// it: its own tags, then the network's defaults for tags it lacks (the
/// first [`MAX_MEMBER_TAGS`] by id); the capabilities it holds that the
/// network defines.
fn member_grants(n: &Network, member: &Member) -> Grants {
    let mut tags: std::collections::BTreeMap<u32, u32> = member.tags.iter().copied().collect();
    for t in &n.tags {
        if let Some(default) = t.default {
            tags.entry(t.id).or_insert(default);
        }
    }
    let capabilities = member
        .capabilities
        .iter()
        .copied()
        .filter(|id| n.capabilities.iter().any(|c| c.id == *id));
    Grants::new(tags.into_iter().take(MAX_MEMBER_TAGS), capabilities)
        .expect("bounded by the update's checks")
}

/// The addresses a member's config gives it: the derived IPv6 addresses
/// its network's `v6AssignMode` calls for (RFC 4193 /88, then 6PLANE /40,
/// as ZeroTier lists them), then its `ipAssignments` with the prefix length
/// of their managed route; at most [`MAX_MEMBER_IPS`] in all.
fn assigned_ips(n: &Network, member: &Member) -> Vec<AssignedIp> {
    let mode = n.v6_assign;
    let derived = [
        mode.rfc4193
            .then(|| (n.id.rfc4193_addr(member.address), RFC4193_PREFIX_LEN)),
        mode.sixplane
            .then(|| (n.id.sixplane_addr(member.address), SIXPLANE_PREFIX_LEN)),
    ];
    derived
        .into_iter()
        .flatten()
        .map(|(ip, prefix_len)| AssignedIp {
            ip: IpAddr::V6(ip),
            prefix_len,
        })
        .chain(member.ip_assignments.iter().map(|&ip| AssignedIp {
            ip,
            prefix_len: n.prefix_len_for(ip),
        }))
        .take(MAX_MEMBER_IPS)
        .collect()
}

#[derive(Debug)]
struct MemberEntry {
    member: Member,
    /// Sequence number of its last change.
    changed_at: u64,
}

#[derive(Debug)]
struct NetworkEntry {
    network: Network,
    members: BTreeMap<Address, MemberEntry>,
    /// Sequence number of the last change of what every member is told.
    changed_at: u64,
    /// The authorized active bridges (every config lists them), kept up to
    /// date on each change rather than found among thousands of members
    /// for every config.
    bridges: Vec<Address>,
    /// Managed routes via members: the routes they advertise that an
    /// admin approved (kept like `bridges`).
    gateway_routes: Vec<ManagedRoute>,
}

impl NetworkEntry {
    fn new(network: Network, members: BTreeMap<Address, MemberEntry>, changed_at: u64) -> Self {
        let mut e = Self {
            network,
            members,
            changed_at,
            bridges: Vec::new(),
            gateway_routes: Vec::new(),
        };
        e.recompute_shared();
        e
    }

    /// Recomputes what every member is told about the others.
    fn recompute_shared(&mut self) {
        self.bridges = self
            .members
            .values()
            .filter(|e| is_bridge(&e.member))
            .map(|e| e.member.address)
            .collect();
        self.gateway_routes = self
            .members
            .values()
            .flat_map(|e| gateway_routes(&e.member))
            .collect();
    }

    fn taken_ips(&self) -> HashSet<IpAddr> {
        self.members
            .values()
            .flat_map(|e| e.member.ip_assignments.iter().copied())
            .collect()
    }

    /// The member holding `ip`, if any.
    fn holder(&self, ip: IpAddr) -> Option<Address> {
        self.members
            .values()
            .find(|e| e.member.ip_assignments.contains(&ip))
            .map(|e| e.member.address)
    }
}

/// What of a member every other member's config shows: whether it is an
/// authorized active bridge, and the managed routes via it. (Members'
/// addresses are not in configs: they announce them to the roots,
/// PROTOCOL.md §4.6, so a member joining or changing its addresses changes
/// no one else's config, unless it is a route's gateway.)
fn shown_to_others(member: Option<&Member>) -> (bool, Vec<ManagedRoute>) {
    member.map_or((false, Vec::new()), |m| (is_bridge(m), gateway_routes(m)))
}

fn is_bridge(m: &Member) -> bool {
    m.authorized && m.active_bridge
}

/// The managed routes via an authorized member: each route it advertises
/// that an admin approved, via its first address of the route's family
/// (none while it has no such address).
fn gateway_routes(m: &Member) -> Vec<ManagedRoute> {
    if !m.authorized {
        return Vec::new();
    }
    m.routes_in_use()
        .filter_map(|r| {
            let via = m
                .ip_assignments
                .iter()
                .find(|ip| ip.is_ipv4() == r.addr().is_ipv4())?;
            Some(ManagedRoute {
                target: r.addr(),
                prefix_len: r.prefix_len(),
                via: Some(*via),
            })
        })
        .collect()
}

/// What the controller refused or put off, by reason, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerCounters {
    /// Unauthorized requesters evicted from the full list.
    pub requesters_evicted: u64,
    /// Newcomers of a public network not admitted now (join rate or member cap).
    pub joins_deferred: u64,
    /// Requests that needed a save when the save queue was full.
    pub saves_deferred: u64,
    /// Saves decided by requests that failed (the member asks again).
    pub saves_failed: u64,
    /// Requests not answered because the controller was busy (an admin
    /// change or a save held it); the member asks again or is pushed to.
    pub requests_deferred_busy: u64,
    /// Requests refused because the key was not the one pinned for the
    /// member's address at first contact.
    pub identities_refused: u64,
    /// Join keys presented that did not authorize (unknown, wrong secret,
    /// revoked, expired, used).
    pub join_keys_refused: u64,
    /// Ephemeral members removed after being offline too long.
    pub ephemeral_removed: u64,
}

impl ControllerCounters {
    /// Each counter with its name in `/status` (camelCase).
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("requestersEvicted", self.requesters_evicted),
            ("joinsDeferred", self.joins_deferred),
            ("savesDeferred", self.saves_deferred),
            ("savesFailed", self.saves_failed),
            ("requestsDeferredBusy", self.requests_deferred_busy),
            ("identitiesRefused", self.identities_refused),
            ("joinKeysRefused", self.join_keys_refused),
            ("ephemeralRemoved", self.ephemeral_removed),
        ]
    }
}

/// [`ControllerCounters`] as atomics, shared with the node's side so it
/// counts and reads them without locking the controller.
#[derive(Debug, Default)]
pub struct Stats {
    requesters_evicted: AtomicU64,
    joins_deferred: AtomicU64,
    saves_deferred: AtomicU64,
    saves_failed: AtomicU64,
    requests_deferred_busy: AtomicU64,
    identities_refused: AtomicU64,
    join_keys_refused: AtomicU64,
    ephemeral_removed: AtomicU64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> ControllerCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ControllerCounters {
            requesters_evicted: get(&self.requesters_evicted),
            joins_deferred: get(&self.joins_deferred),
            saves_deferred: get(&self.saves_deferred),
            saves_failed: get(&self.saves_failed),
            requests_deferred_busy: get(&self.requests_deferred_busy),
            identities_refused: get(&self.identities_refused),
            join_keys_refused: get(&self.join_keys_refused),
            ephemeral_removed: get(&self.ephemeral_removed),
        }
    }

    /// Counts a request put off because the controller was busy.
    pub fn count_busy(&self) {
        self.requests_deferred_busy.fetch_add(1, Ordering::Relaxed);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A network controller: its networks and members, kept in memory and
/// (unless made with [`Controller::in_memory`]) in a [`Store`]. Every change
/// an admin makes is written, durably, before it is made in memory and
/// before the call returns; a refused or failed change changes nothing.
///
/// Config requests never write: members of private networks that are not
/// stored are only listed in memory ([`Requesters`], bounded); a change a
/// request calls for (admitting a member of a public network, an IPv4
/// address for an authorized member) is queued and made by
/// [`Controller::save_requested`], which the node's saver thread runs, off
/// the packet path. A member is never told an address that is not on disk.
///
/// Each change also takes a number from a sequence, so a caller can ask
/// which members' configs changed since it last looked
/// ([`Controller::changed_members`]).
#[derive(Debug)]
pub struct Controller {
    address: Address,
    store: Option<Store>,
    networks: BTreeMap<NetworkId, NetworkEntry>,
    sequence: u64,
    /// Members removed (alone or with their network): (sequence, network, member).
    removed: VecDeque<(u64, NetworkId, Address)>,
    /// Unauthorized requesters of private networks (memory only).
    requesters: Requesters,
    /// Members whose request called for a save, not yet made.
    to_save: BTreeSet<(NetworkId, Address)>,
    /// What those requests told (taken when the save is made; at most one
    /// per queued save).
    reports: HashMap<(NetworkId, Address), MemberReport>,
    /// When each ephemeral member last asked (memory only; one entry per
    /// stored ephemeral member).
    ephemeral_seen: HashMap<(NetworkId, Address), u64>,
    /// How long an ephemeral member may go without asking.
    ephemeral_timeout_ms: u64,
    /// When a refused join key was last logged for each requester (a
    /// member retries every 2 s; one line a minute says it).
    key_refusals_logged: std::cell::RefCell<HashMap<(NetworkId, Address), (u64, String)>>,
    /// Wakes the saver thread when `to_save` grows.
    saver: Option<SyncSender<()>>,
    /// Public networks' admissions by request: (window start, count).
    joins: HashMap<NetworkId, (u64, u32)>,
    stats: Arc<Stats>,
}

impl Controller {
    /// A controller with address `address` that keeps nothing on disk.
    pub fn in_memory(address: Address) -> Self {
        Self {
            address,
            store: None,
            networks: BTreeMap::new(),
            sequence: 1,
            removed: VecDeque::new(),
            requesters: Requesters::default(),
            to_save: BTreeSet::new(),
            reports: HashMap::new(),
            ephemeral_seen: HashMap::new(),
            ephemeral_timeout_ms: EPHEMERAL_MEMBER_TIMEOUT_DEFAULT_S * 1000,
            key_refusals_logged: std::cell::RefCell::default(),
            saver: None,
            joins: HashMap::new(),
            stats: Arc::default(),
        }
    }

    /// Replaces the unauthorized requesters' list (to set its caps).
    pub fn set_requesters(&mut self, requesters: Requesters) {
        self.requesters = requesters;
    }

    /// Makes `saver` receive a message whenever a request queued a save
    /// (its thread then calls [`Controller::save_requested`]).
    pub fn set_saver(&mut self, saver: SyncSender<()>) {
        self.saver = Some(saver);
    }

    /// What was refused or put off so far.
    pub fn counters(&self) -> ControllerCounters {
        self.stats.snapshot()
    }

    /// The counters, for the node's side to count and read without
    /// locking the controller.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// How many unauthorized requesters are listed (all networks).
    pub fn requester_count(&self) -> usize {
        self.requesters.total()
    }

    /// How many saves decided by requests are waiting.
    pub fn queued_saves(&self) -> usize {
        self.to_save.len()
    }

    /// A controller with address `address` whose state lives under `home`
    /// (`home/controller.d`); loads what is there (an error names a
    /// malformed file).
    pub fn open(address: Address, home: &Path) -> Result<Self, StoreError> {
        Self::open_store(address, Store::new(home))
    }

    /// A controller with address `address` whose state lives in `store`;
    /// loads its networks (an error names a malformed file or row).
    pub fn open_store(address: Address, store: Store) -> Result<Self, StoreError> {
        let loaded = store.load(Some(address))?;
        let mut c = Self::in_memory(address);
        for (network, members) in loaded {
            let members = members
                .into_iter()
                .map(|m| {
                    (
                        m.address,
                        MemberEntry {
                            member: m,
                            changed_at: 1,
                        },
                    )
                })
                .collect();
            c.networks
                .insert(network.id, NetworkEntry::new(network, members, 1));
        }
        c.store = Some(store);
        Ok(c)
    }

    /// This controller's address (the first 10 digits of its network ids).
    pub fn address(&self) -> Address {
        self.address
    }

    /// The ids of all networks, in order.
    pub fn network_ids(&self) -> Vec<NetworkId> {
        self.networks.keys().copied().collect()
    }

    /// One network.
    pub fn network(&self, nwid: NetworkId) -> Option<&Network> {
        self.networks.get(&nwid).map(|e| &e.network)
    }

    /// The members of a network, by address, unauthorized requesters
    /// (memory only) included; none if there is no such network.
    pub fn members(&self, nwid: NetworkId) -> Option<Vec<&Member>> {
        let entry = self.networks.get(&nwid)?;
        let mut all: Vec<&Member> = entry.members.values().map(|m| &m.member).collect();
        all.extend(
            self.requesters
                .of(nwid)
                .filter(|m| !entry.members.contains_key(&m.address)),
        );
        all.sort_by_key(|m| m.address);
        Some(all)
    }

    /// The stored members of a network (requesters not included).
    pub fn stored_members(&self, nwid: NetworkId) -> Option<Vec<&Member>> {
        self.networks
            .get(&nwid)
            .map(|e| e.members.values().map(|m| &m.member).collect())
    }

    /// One member, stored or an unauthorized requester.
    pub fn member(&self, nwid: NetworkId, addr: Address) -> Option<&Member> {
        let entry = self.networks.get(&nwid)?;
        entry
            .members
            .get(&addr)
            .map(|e| &e.member)
            .or_else(|| self.requesters.get(nwid, addr))
    }

    /// Creates a network with a random free number and the fields of `body`
    /// (an update, as for [`Controller::update_network`]).
    pub fn create_network(
        &mut self,
        now_ms: u64,
        body: &Value,
    ) -> Result<&Network, ControllerError> {
        let nwid = self.free_network_id()?;
        self.create_network_with_id(now_ms, nwid, body)
    }

    /// Creates network `nwid` (which must be this controller's and unused).
    pub fn create_network_with_id(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        body: &Value,
    ) -> Result<&Network, ControllerError> {
        if nwid.controller() != self.address {
            return Err(ControllerError::ForeignNetwork {
                nwid,
                ours: self.address,
            });
        }
        if self.networks.contains_key(&nwid) {
            return Err(ControllerError::NetworkExists(nwid));
        }
        let mut network = network_update(&Network::new(nwid, now_ms), body)?;
        network.revision = 1;
        if let Some(store) = &self.store {
            store.save_network(&network)?;
        }
        let changed_at = self.next_sequence();
        let entry = self
            .networks
            .entry(nwid)
            .or_insert_with(|| NetworkEntry::new(network, BTreeMap::new(), changed_at));
        Ok(&entry.network)
    }

    fn free_network_id(&self) -> Result<NetworkId, ControllerError> {
        let free = |n: u32| {
            let id = NetworkId::new(self.address, n);
            (!self.networks.contains_key(&id)).then_some(id)
        };
        for _ in 0..RANDOM_NUMBER_TRIES {
            let Ok(n) = getrandom::u32() else { break };
            if let Some(id) = free(n & 0xff_ffff) {
                return Ok(id);
            }
        }
        (0..=0xff_ffff)
            .find_map(free)
            .ok_or(ControllerError::NoFreeNetworkNumber)
    }

    /// Applies a partial update to a network. Members that become due an
    /// IPv4 address (pools added, `v4AssignMode.zt` on) get one.
    pub fn update_network(
        &mut self,
        nwid: NetworkId,
        body: &Value,
    ) -> Result<&Network, ControllerError> {
        let entry = self
            .networks
            .get(&nwid)
            .ok_or(ControllerError::NetworkNotFound(nwid))?;
        let network = network_update(&entry.network, body)?;
        let mut taken = entry.taken_ips();
        let mut assigned = Vec::new();
        for e in entry.members.values() {
            let mut m = e.member.clone();
            assign_due(&network, &mut m, &mut taken);
            if m != e.member {
                assigned.push(m);
            }
        }
        self.apply(nwid, Some(network), assigned)?;
        Ok(&self.networks[&nwid].network)
    }

    /// Deletes a network and its members; the network as it was.
    pub fn delete_network(&mut self, nwid: NetworkId) -> Result<Network, ControllerError> {
        if !self.networks.contains_key(&nwid) {
            return Err(ControllerError::NetworkNotFound(nwid));
        }
        if let Some(store) = &self.store {
            store.delete_network(nwid)?;
        }
        let entry = self.networks.remove(&nwid).expect("checked");
        self.requesters.remove_network(nwid);
        self.to_save.retain(|(n, _)| *n != nwid);
        self.joins.remove(&nwid);
        for addr in entry.members.keys() {
            let seq = self.next_sequence();
            self.note_removed(seq, nwid, *addr);
        }
        Ok(entry.network)
    }

    /// Applies a partial update to a member, recording it first if it is new.
    /// Its addresses must not be held by another member. An authorized
    /// member due an IPv4 address gets one if a pool has room (else see
    /// [`Controller::ip_assignment_problem`]).
    pub fn update_member(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        addr: Address,
        body: &Value,
    ) -> Result<&Member, ControllerError> {
        let entry = self
            .networks
            .get(&nwid)
            .ok_or(ControllerError::NetworkNotFound(nwid))?;
        let before = entry
            .members
            .get(&addr)
            .map(|e| e.member.clone())
            .or_else(|| self.requesters.get(nwid, addr).cloned())
            .unwrap_or_else(|| Member::new(nwid, addr, now_ms));
        let mut member = member_update(&before, body, now_ms)?;
        for (i, ip) in member.ip_assignments.iter().enumerate() {
            if let Some(holder) = entry.holder(*ip).filter(|&h| h != addr) {
                return Err(FieldError::new(
                    format!("ipAssignments[{i}]"),
                    format!("{ip} is already assigned to member {holder}"),
                )
                .into());
            }
        }
        if is_due(&entry.network, &member) {
            assign_due(&entry.network, &mut member, &mut entry.taken_ips());
        }
        let is_new = !entry.members.contains_key(&addr);
        if is_new || member != before {
            self.apply(nwid, None, vec![member])?;
        }
        Ok(&self.networks[&nwid].members[&addr].member)
    }

    /// Deletes a member (its addresses become free); the member as it was.
    pub fn delete_member(
        &mut self,
        nwid: NetworkId,
        addr: Address,
    ) -> Result<Member, ControllerError> {
        let entry = self
            .networks
            .get(&nwid)
            .ok_or(ControllerError::NetworkNotFound(nwid))?;
        let Some(member) = entry.members.get(&addr).map(|e| e.member.clone()) else {
            // An unauthorized requester is only in memory.
            return self
                .requesters
                .remove(nwid, addr)
                .ok_or(ControllerError::MemberNotFound(nwid, addr));
        };
        // What others are told changes if it was an authorized active
        // bridge or a route's gateway.
        let others_change = shown_to_others(Some(&member)) != shown_to_others(None);
        let mut network = entry.network.clone();
        if others_change {
            network.revision += 1;
        }
        if let Some(store) = &self.store {
            store.delete_member(nwid, addr)?;
            if others_change && let Err(e) = store.save_network(&network) {
                tracing::warn!("controller: network {nwid}: revision not saved: {e}");
                network.revision -= 1;
            }
        }
        let seq = self.next_sequence();
        self.ephemeral_seen.remove(&(nwid, addr));
        let entry = self.networks.get_mut(&nwid).expect("checked");
        entry.members.remove(&addr);
        if others_change {
            entry.network = network;
            entry.changed_at = seq;
            entry.recompute_shared();
        }
        self.note_removed(seq, nwid, addr);
        Ok(member)
    }

    /// Why an authorized member that should have an IPv4 address has none:
    /// the network has no IPv4 pool, or its pools are used up. None when it
    /// has one, is not due one, or will get one at its next config request.
    pub fn ip_assignment_problem(&self, nwid: NetworkId, addr: Address) -> Option<AssignError> {
        let entry = self.networks.get(&nwid)?;
        let member = &entry.members.get(&addr)?.member;
        is_due(&entry.network, member)
            .then(|| assignment_problem(&entry.network, member, &entry.taken_ips()))
            .flatten()
    }

    /// A member asks for its config at `now_ms`. Nothing is written here
    /// (see [`Controller::save_requested`]), and an unknown network leaves
    /// no trace. A member not stored in a private network is listed as an
    /// unauthorized requester (memory only, bounded) and denied. A newcomer
    /// to a public network is admitted (within [`PUBLIC_JOINS_PER_MINUTE`]
    /// and [`MAX_MEMBERS_ADMITTED_BY_REQUEST`]; else [`ConfigDenied::Later`])
    /// and its save queued; an authorized member due an IPv4 address gets
    /// one queued. The answer is what is on disk: the queued change is
    /// pushed once saved (it shows in [`Controller::changed_members`]).
    pub fn request_config(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        addr: Address,
        report: Option<MemberReport>,
    ) -> Result<MemberConfig, ConfigDenied> {
        let entry = self.networks.get(&nwid).ok_or(ConfigDenied::NotFound)?;
        let private = entry.network.private;
        let stored_count = entry.members.len();
        let current = entry.members.get(&addr).map(|e| e.member.clone());
        if let Some(r) = &report {
            let known = current.as_ref().or_else(|| self.requesters.get(nwid, addr));
            if let Some(m) = known.filter(|m| !r.matches(m)) {
                bump(&self.stats.identities_refused);
                tracing::warn!(
                    "controller: network {nwid}: member {addr} refused: its key is not the one \
                     pinned at first contact ({} instead of {})",
                    r.identity,
                    m.identity.as_deref().unwrap_or("?")
                );
                return Err(ConfigDenied::AccessDenied);
            }
        }
        if let Some(m) = current.as_ref().filter(|m| m.ephemeral) {
            self.ephemeral_seen.insert((nwid, m.address), now_ms);
        }
        // A join key authorizes on a private network: through a save, as
        // a public network's newcomer is admitted; asked again meanwhile.
        if private
            && !current.as_ref().is_some_and(|m| m.authorized)
            && let Some(r) = report.as_ref().filter(|r| r.join_key.is_some())
        {
            let before = current.as_ref().or_else(|| self.requesters.get(nwid, addr));
            if self
                .key_authorizes(now_ms, nwid, addr, before, Some(r))
                .is_some()
            {
                if self.queue_save(nwid, addr)
                    && let Some(r) = report
                {
                    self.reports.insert((nwid, addr), r);
                }
                return Err(ConfigDenied::Later);
            }
        }
        let Some(current) = current else {
            if private {
                if self.requesters.note(now_ms, nwid, addr) {
                    bump(&self.stats.requesters_evicted);
                }
                if let (Some(r), Some(m)) = (&report, self.requesters.get_mut(nwid, addr)) {
                    r.apply_to(m);
                }
                return Err(ConfigDenied::AccessDenied);
            }
            if !self.to_save.contains(&(nwid, addr)) {
                if stored_count >= MAX_MEMBERS_ADMITTED_BY_REQUEST || !self.admit_join(now_ms, nwid)
                {
                    bump(&self.stats.joins_deferred);
                    return Err(ConfigDenied::Later);
                }
                if !self.queue_save(nwid, addr) {
                    return Err(ConfigDenied::Later);
                }
                if let Some(r) = report {
                    self.reports.insert((nwid, addr), r);
                }
            }
            // A public network lets anyone in; its address comes once saved.
            let mut newcomer = Member::new(nwid, addr, now_ms);
            newcomer.set_authorized(true, now_ms);
            return Ok(self.config_for(now_ms, nwid, &newcomer));
        };
        if self.wanted(now_ms, nwid, &current, report.as_ref()) != current
            && self.queue_save(nwid, addr)
            && let Some(r) = report
        {
            self.reports.insert((nwid, addr), r);
        }
        let mut served = current;
        // A public network lets anyone in, saved or not.
        served.authorized |= !private;
        if !served.authorized {
            return Err(ConfigDenied::AccessDenied);
        }
        Ok(self.config_for(now_ms, nwid, &served))
    }

    /// What a request of stored member `current` calls for: authorized on
    /// a public network, the addresses it is due, and what it reported
    /// (identity pinned, versions, advertised routes).
    fn wanted(
        &self,
        now_ms: u64,
        nwid: NetworkId,
        current: &Member,
        report: Option<&MemberReport>,
    ) -> Member {
        let entry = &self.networks[&nwid];
        let mut member = current.clone();
        if let Some(r) = report.filter(|r| r.matches(current)) {
            r.apply_to(&mut member);
        }
        if entry.network.private
            && !member.authorized
            && let Some(i) =
                self.key_authorizes(now_ms, nwid, current.address, Some(current), report)
        {
            member.set_authorized(true, now_ms);
            member.ephemeral = entry.network.join_keys[i].options.ephemeral;
        }
        if !entry.network.private {
            member.set_authorized(true, now_ms);
        }
        // Every config request passes here: the taken addresses (one a
        // member) are gathered only for a member due one.
        if is_due(&entry.network, &member) {
            assign_due(&entry.network, &mut member, &mut entry.taken_ips());
        }
        member
    }

    /// Whether public network `nwid` may admit one more newcomer by request
    /// now (and counts it).
    fn admit_join(&mut self, now_ms: u64, nwid: NetworkId) -> bool {
        let (start, count) = self.joins.entry(nwid).or_insert((now_ms, 0));
        if now_ms.saturating_sub(*start) >= JOIN_WINDOW_MS || now_ms < *start {
            *start = now_ms;
            *count = 0;
        }
        if *count >= PUBLIC_JOINS_PER_MINUTE {
            return false;
        }
        *count += 1;
        true
    }

    /// Queues a save for a request's member and wakes the saver; false
    /// (counted) if the queue is full.
    fn queue_save(&mut self, nwid: NetworkId, addr: Address) -> bool {
        if self.to_save.contains(&(nwid, addr)) {
            return true;
        }
        if self.to_save.len() >= MAX_QUEUED_SAVES {
            bump(&self.stats.saves_deferred);
            return false;
        }
        self.to_save.insert((nwid, addr));
        if let Some(saver) = &self.saver {
            // A full channel already holds a wake-up.
            let _ = saver.try_send(());
        }
        true
    }

    /// Makes up to `max` of the saves config requests queued (the saver
    /// thread calls this; never the packet path): each member's state is
    /// decided again from what is stored now, written durably, then
    /// committed (so it is pushed). How many are still queued.
    pub fn save_requested(&mut self, now_ms: u64, max: usize) -> usize {
        for _ in 0..max {
            let Some((nwid, addr)) = self.to_save.pop_first() else {
                break;
            };
            let report = self.reports.remove(&(nwid, addr));
            let Some(entry) = self.networks.get(&nwid) else {
                continue;
            };
            let stored = entry.members.get(&addr).map(|e| e.member.clone());
            let member = match &stored {
                Some(m) => self.wanted(now_ms, nwid, m, report.as_ref()),
                // A private network admits by request only with a join key.
                None if entry.network.private => {
                    let asked = self
                        .requesters
                        .get(nwid, addr)
                        .cloned()
                        .unwrap_or_else(|| Member::new(nwid, addr, now_ms));
                    let m = self.wanted(now_ms, nwid, &asked, report.as_ref());
                    if !m.authorized {
                        continue;
                    }
                    m
                }
                None => {
                    let mut m = Member::new(nwid, addr, now_ms);
                    m.set_authorized(true, now_ms);
                    self.wanted(now_ms, nwid, &m, report.as_ref())
                }
            };
            // Authorized by a key now: the key records its use.
            let by_key = !stored.as_ref().is_some_and(|m| m.authorized)
                && member.authorized
                && entry.network.private;
            let network = by_key
                .then(|| {
                    let before = stored.as_ref().or_else(|| self.requesters.get(nwid, addr));
                    let i = self.key_authorizes(now_ms, nwid, addr, before, report.as_ref())?;
                    let mut n = entry.network.clone();
                    let key = &mut n.join_keys[i];
                    if !key.used_by.contains(&addr) && key.used_by.len() < MAX_USES_RECORDED {
                        key.used_by.push(addr);
                    }
                    tracing::info!(
                        "controller: network {nwid}: member {addr} authorized by join key {}",
                        key.id
                    );
                    Some(n)
                })
                .flatten();
            if let Err(e) = self.apply(nwid, network, vec![member]) {
                tracing::warn!("controller: network {nwid}: member {addr} not saved: {e}");
                bump(&self.stats.saves_failed);
            }
        }
        self.to_save.len()
    }

    /// Which join key of `nwid`, if any, authorizes `addr` now: the key its
    /// report presents, valid for it, and the member never deauthorized by
    /// an admin (a key does not undo an admin's decision). A key refused
    /// is counted and logged (by id; never the secret).
    fn key_authorizes(
        &self,
        now_ms: u64,
        nwid: NetworkId,
        addr: Address,
        before: Option<&Member>,
        report: Option<&MemberReport>,
    ) -> Option<usize> {
        let text = report?.join_key.as_deref()?;
        if before.is_some_and(|m| m.last_deauthorized_time != 0) {
            tracing::info!(
                "controller: network {nwid}: member {addr} presented join key {} but was \
                 deauthorized by an admin: not authorized",
                join_keys::key_id(text).unwrap_or("?")
            );
            return None;
        }
        let keys = &self.networks.get(&nwid)?.network.join_keys;
        match join_keys::check(keys, text, addr, now_ms) {
            Ok(i) => Some(i),
            Err(why) => {
                bump(&self.stats.join_keys_refused);
                let said = format!(
                    "{}: {why}",
                    join_keys::key_id(text).unwrap_or("(malformed)")
                );
                let mut logged = self.key_refusals_logged.borrow_mut();
                let repeat = logged.get(&(nwid, addr)).is_some_and(|(t, last)| {
                    *last == said && now_ms.saturating_sub(*t) < KEY_REFUSAL_LOG_INTERVAL_MS
                });
                if !repeat {
                    if logged.len() >= MAX_KEY_REFUSALS_LOGGED {
                        logged.clear();
                    }
                    tracing::warn!(
                        "controller: network {nwid}: member {addr} presented join key {said}"
                    );
                    logged.insert((nwid, addr), (now_ms, said));
                }
                None
            }
        }
    }

    /// Creates a join key for `nwid` from `random` bytes; the key text (to
    /// show once) and the stored key.
    pub fn create_key(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        options: KeyOptions,
        random: [u8; 20],
    ) -> Result<(String, JoinKey), ControllerError> {
        let entry = self
            .networks
            .get(&nwid)
            .ok_or(ControllerError::NetworkNotFound(nwid))?;
        if entry.network.join_keys.len() >= MAX_JOIN_KEYS_PER_NETWORK {
            return Err(FieldError::new(
                "joinKeys",
                format!("at most {MAX_JOIN_KEYS_PER_NETWORK} keys per network; delete some"),
            )
            .into());
        }
        let (text, key) = JoinKey::create(random, options, now_ms);
        let mut n = entry.network.clone();
        n.join_keys.push(key.clone());
        self.apply(nwid, Some(n), Vec::new())?;
        Ok((text, key))
    }

    /// The join keys of `nwid`.
    pub fn join_keys(&self, nwid: NetworkId) -> Option<&[JoinKey]> {
        self.networks
            .get(&nwid)
            .map(|e| e.network.join_keys.as_slice())
    }

    /// Revokes key `id` of `nwid` (kept, listed as revoked); the key.
    pub fn revoke_key(&mut self, nwid: NetworkId, id: &str) -> Result<JoinKey, ControllerError> {
        let entry = self
            .networks
            .get(&nwid)
            .ok_or(ControllerError::NetworkNotFound(nwid))?;
        let i = entry
            .network
            .join_keys
            .iter()
            .position(|k| k.id == id)
            .ok_or_else(|| ControllerError::KeyNotFound(nwid, id.to_string()))?;
        let mut n = entry.network.clone();
        n.join_keys[i].revoked = true;
        let key = n.join_keys[i].clone();
        self.apply(nwid, Some(n), Vec::new())?;
        Ok(key)
    }

    /// Sets how long an ephemeral member may go without asking for its
    /// config (it is told to ask three times as often).
    pub fn set_ephemeral_timeout_s(&mut self, seconds: u64) {
        self.ephemeral_timeout_ms = seconds.saturating_mul(1000);
    }

    /// Deletes the ephemeral members that have not asked for their config
    /// for the ephemeral timeout (counted from when this controller first
    /// saw them, at the earliest); how many.
    pub fn remove_idle_ephemeral(&mut self, now_ms: u64) -> usize {
        let timeout_ms = self.ephemeral_timeout_ms;
        let mut idle = Vec::new();
        for (nwid, entry) in &self.networks {
            for m in entry
                .members
                .values()
                .map(|e| &e.member)
                .filter(|m| m.ephemeral)
            {
                let seen = *self
                    .ephemeral_seen
                    .entry((*nwid, m.address))
                    .or_insert(now_ms);
                if now_ms.saturating_sub(seen) >= timeout_ms {
                    idle.push((*nwid, m.address));
                }
            }
        }
        let mut removed = 0;
        for (nwid, addr) in idle {
            self.ephemeral_seen.remove(&(nwid, addr));
            match self.delete_member(nwid, addr) {
                Ok(_) => {
                    removed += 1;
                    bump(&self.stats.ephemeral_removed);
                    tracing::info!(
                        "controller: network {nwid}: ephemeral member {addr} removed (offline)"
                    );
                }
                Err(e) => tracing::warn!(
                    "controller: network {nwid}: ephemeral member {addr} not removed: {e}"
                ),
            }
        }
        removed
    }

    fn config_for(&self, now_ms: u64, nwid: NetworkId, member: &Member) -> MemberConfig {
        let entry = &self.networks[&nwid];
        let n = &entry.network;
        MemberConfig {
            nwid,
            member: member.address,
            name: n.name.clone(),
            revision: n.revision + member.revision,
            timestamp_ms: now_ms,
            private: n.private,
            mtu: n.mtu,
            multicast_limit: n.multicast_limit,
            enable_broadcast: n.enable_broadcast,
            active_bridge: member.active_bridge,
            assigned: assigned_ips(n, member),
            routes: n
                .routes
                .iter()
                .map(|r| ManagedRoute {
                    target: r.target.addr(),
                    prefix_len: r.target.prefix_len(),
                    via: r.via,
                })
                .chain(entry.gateway_routes.iter().copied())
                .take(MAX_CONFIG_ROUTES)
                .collect(),
            bridges: entry.bridges.clone(),
            // Three requests per timeout: one lost is no removal.
            pull_interval_ms: member.ephemeral.then_some(self.ephemeral_timeout_ms / 3),
            dns: n.dns.clone(),
            rules: (!n.rules.is_accept_all()).then(|| n.rules.clone()),
            capabilities: n.capabilities.clone(),
            grants: member_grants(n, member),
        }
    }

    /// The addresses authorized member `addr` of `nwid` holds: its
    /// `ipAssignments` and the IPv6 addresses `v6AssignMode` derives.
    pub fn member_addresses(&self, nwid: NetworkId, addr: Address) -> Vec<IpAddr> {
        let Some(entry) = self.networks.get(&nwid) else {
            return Vec::new();
        };
        match entry.members.get(&addr) {
            Some(e) if e.member.authorized => assigned_ips(&entry.network, &e.member)
                .into_iter()
                .map(|a| a.ip)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The addresses of the authorized member of `nwid` that `label` names
    /// (its name as a DNS label, or its 10-digit address); empty if none.
    pub fn member_addresses_by_label(&self, nwid: NetworkId, label: &str) -> Vec<IpAddr> {
        let Some(entry) = self.networks.get(&nwid) else {
            return Vec::new();
        };
        let by_address = label.parse::<Address>().ok().filter(|_| label.len() == 10);
        let found = entry.members.values().map(|e| &e.member).find(|m| {
            Some(m.address) == by_address
                || crate::name_server::label_of(&m.name).as_deref() == Some(label)
        });
        found.map_or_else(Vec::new, |m| self.member_addresses(nwid, m.address))
    }

    /// Whether `addr` is a stored member of `nwid` (not a requester).
    pub fn is_stored(&self, nwid: NetworkId, addr: Address) -> bool {
        self.networks
            .get(&nwid)
            .is_some_and(|e| e.members.contains_key(&addr))
    }

    /// Whether `member` of `nwid` is admitted now (the network exists and
    /// the member is stored as authorized): answers certificate refreshes
    /// from memory, without building a config.
    pub fn admits(&self, nwid: NetworkId, member: Address) -> bool {
        self.networks
            .get(&nwid)
            .and_then(|e| e.members.get(&member))
            .is_some_and(|e| e.member.authorized)
    }

    /// The authorized members of a network (empty if there is no such network).
    pub fn authorized_members(&self, nwid: NetworkId) -> Vec<Address> {
        self.networks
            .get(&nwid)
            .map(|e| {
                e.members
                    .values()
                    .filter(|m| m.member.authorized)
                    .map(|m| m.member.address)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The current change sequence number: pass it to
    /// [`Controller::changed_members`] later to learn what changed after now.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Members of `nwid` whose config (or access) changed after sequence
    /// number `since`: members changed themselves, every member when
    /// something all are told changed (network settings, active
    /// bridges), and members removed since (alone or with the network; the
    /// last 10,000 removals are remembered). Sorted, without repeats.
    pub fn changed_members(&self, nwid: NetworkId, since: u64) -> Vec<Address> {
        let mut out = BTreeSet::new();
        if let Some(entry) = self.networks.get(&nwid) {
            let all = entry.changed_at > since;
            out.extend(
                entry
                    .members
                    .values()
                    .filter(|e| all || e.changed_at > since)
                    .map(|e| e.member.address),
            );
        }
        out.extend(
            self.removed
                .iter()
                .filter(|(seq, n, _)| *seq > since && *n == nwid)
                .map(|(_, _, a)| *a),
        );
        out.into_iter().collect()
    }

    /// [`Controller::changed_members`] over all networks, including
    /// networks deleted since.
    pub fn changes_since(&self, since: u64) -> Vec<(NetworkId, Address)> {
        let mut nwids: BTreeSet<NetworkId> = self.networks.keys().copied().collect();
        nwids.extend(
            self.removed
                .iter()
                .filter(|(seq, _, _)| *seq > since)
                .map(|(_, n, _)| *n),
        );
        nwids
            .into_iter()
            .flat_map(|n| {
                self.changed_members(n, since)
                    .into_iter()
                    .map(move |a| (n, a))
            })
            .collect()
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn note_removed(&mut self, seq: u64, nwid: NetworkId, addr: Address) {
        if self.removed.len() == MAX_REMOVED {
            self.removed.pop_front();
        }
        self.removed.push_back((seq, nwid, addr));
    }

    /// Saves and then commits a change of network `nwid`: its new settings
    /// (if any) and new member states (checked already; revisions are set
    /// here). The network's revision grows if its settings changed or if
    /// what every member is told about the others did (active bridges).
    /// The network is written first, then each member; memory follows each
    /// write, so it never holds what the disk does not.
    fn apply(
        &mut self,
        nwid: NetworkId,
        network: Option<Network>,
        members: Vec<Member>,
    ) -> Result<(), StoreError> {
        let entry = &self.networks[&nwid];
        let mut others_change = false;
        let mut changed = Vec::with_capacity(members.len());
        for mut m in members {
            let before = entry.members.get(&m.address).map(|e| &e.member);
            if before == Some(&m) {
                continue;
            }
            others_change |= shown_to_others(before) != shown_to_others(Some(&m));
            m.revision = before.map_or(0, |b| b.revision) + 1;
            changed.push(m);
        }
        let settings_change = network.as_ref().is_some_and(|n| *n != entry.network);
        if settings_change || others_change {
            let mut n = network.unwrap_or_else(|| entry.network.clone());
            n.revision = entry.network.revision + 1;
            if let Some(store) = &self.store {
                store.save_network(&n)?;
            }
            let seq = self.next_sequence();
            let entry = self.networks.get_mut(&nwid).expect("checked");
            entry.network = n;
            entry.changed_at = seq;
        }
        for m in changed {
            if let Some(store) = &self.store {
                store.save_member(&m)?;
            }
            let seq = self.next_sequence();
            self.requesters.remove(nwid, m.address);
            let entry = self.networks.get_mut(&nwid).expect("checked");
            entry.members.insert(
                m.address,
                MemberEntry {
                    member: m,
                    changed_at: seq,
                },
            );
            if others_change {
                entry.recompute_shared();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;

    fn ctl() -> Address {
        "8056c2e21c".parse().unwrap()
    }

    fn addr(n: u64) -> Address {
        Address::from_u64(0x01_0000_0000 + n).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// A private network with pool 10.0.0.1-10.0.0.20 and route 10.0.0.0/24.
    fn with_network(c: &mut Controller) -> NetworkId {
        c.create_network(
            NOW,
            &json!({"name": "lab",
                    "ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.20"}],
                    "routes": [{"target": "10.0.0.0/24", "via": null}]}),
        )
        .unwrap()
        .id
    }

    fn authorize(c: &mut Controller, nwid: NetworkId, a: Address) -> Member {
        c.update_member(NOW, nwid, a, &json!({"authorized": true}))
            .unwrap()
            .clone()
    }

    fn report(identity: &str, routes: &[&str]) -> Option<MemberReport> {
        Some(MemberReport {
            identity: identity.to_string(),
            versions: Some(vnet_node::core::message::Versions {
                protocol: 1,
                major: 0,
                minor: 3,
                revision: 7,
            }),
            advertised_routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            join_key: None,
        })
    }

    #[test]
    fn identities_are_pinned_at_first_contact_and_versions_kept() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let key_a = format!("{}:0:{}", addr(1), "a".repeat(128));
        let key_b = format!("{}:0:{}", addr(1), "b".repeat(128));
        // An unauthorized requester: its identity is noted, not stored.
        let denied = c.request_config(NOW, nwid, addr(1), report(&key_a, &[]));
        assert_eq!(denied, Err(ConfigDenied::AccessDenied));
        // Another key for the same address is refused and counted.
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), report(&key_b, &[])),
            Err(ConfigDenied::AccessDenied)
        );
        assert_eq!(c.counters().identities_refused, 1);
        // Authorized: the pinned key carries over from the requester.
        let m = authorize(&mut c, nwid, addr(1));
        assert_eq!(m.identity.as_deref(), Some(key_a.as_str()));
        assert!(
            c.request_config(NOW, nwid, addr(1), report(&key_a, &[]))
                .is_ok()
        );
        c.save_requested(NOW, 10);
        let m = c.member(nwid, addr(1)).unwrap();
        assert_eq!(m.to_json()["vMinor"], 3);
        assert_eq!(m.to_json()["vRev"], 7);
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), report(&key_b, &[])),
            Err(ConfigDenied::AccessDenied)
        );
        assert_eq!(c.counters().identities_refused, 2);
        // The API cannot re-pin it either.
        let e = c
            .update_member(NOW, nwid, addr(1), &json!({"identity": key_b}))
            .unwrap_err();
        assert!(e.to_string().contains("identity"), "{e}");
    }

    fn keyed(n: u64, key: &str) -> Option<MemberReport> {
        let mut r = report(&format!("{}:0:{}", addr(n), "d".repeat(128)), &[])?;
        r.join_key = Some(key.to_string());
        Some(r)
    }

    #[test]
    fn a_join_key_authorizes_once_and_is_refused_after() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let (key, _) = c
            .create_key(NOW, nwid, KeyOptions::default(), [5; 20])
            .unwrap();
        // First contact with the key: answered once the save is made.
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), keyed(1, &key)),
            Err(ConfigDenied::Later)
        );
        c.save_requested(NOW, 10);
        let m = c.member(nwid, addr(1)).unwrap();
        assert!(m.authorized && !m.ephemeral);
        assert_eq!(m.ip_assignments, vec![ip("10.0.0.1")]);
        assert!(c.request_config(NOW, nwid, addr(1), keyed(1, &key)).is_ok());
        assert_eq!(c.join_keys(nwid).unwrap()[0].used_by, vec![addr(1)]);
        // Single use: another member is refused, listed, counted.
        assert_eq!(
            c.request_config(NOW, nwid, addr(2), keyed(2, &key)),
            Err(ConfigDenied::AccessDenied)
        );
        c.save_requested(NOW, 10);
        assert!(c.member(nwid, addr(2)).is_none_or(|m| !m.authorized));
        assert_eq!(c.counters().join_keys_refused, 1);
        // A wrong secret, a revoked key: refused too.
        let (reusable, k) = c
            .create_key(
                NOW,
                nwid,
                KeyOptions {
                    reusable: true,
                    ephemeral: true,
                    expires_at_ms: Some(NOW + 60_000),
                },
                [6; 20],
            )
            .unwrap();
        let wrong = reusable.replace(&reusable[reusable.len() - 4..], "0000");
        assert_eq!(
            c.request_config(NOW, nwid, addr(3), keyed(3, &wrong)),
            Err(ConfigDenied::AccessDenied)
        );
        // Expired.
        assert_eq!(
            c.request_config(NOW + 60_000, nwid, addr(3), keyed(3, &reusable)),
            Err(ConfigDenied::AccessDenied)
        );
        assert_eq!(
            c.request_config(NOW, nwid, addr(3), keyed(3, &reusable)),
            Err(ConfigDenied::Later)
        );
        c.save_requested(NOW, 10);
        assert!(c.member(nwid, addr(3)).unwrap().ephemeral);
        c.revoke_key(nwid, &k.id).unwrap();
        assert_eq!(
            c.request_config(NOW, nwid, addr(4), keyed(4, &reusable)),
            Err(ConfigDenied::AccessDenied)
        );
        // A member an admin deauthorized is not let back in by a key.
        c.update_member(NOW, nwid, addr(1), &json!({"authorized": false}))
            .unwrap();
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), keyed(1, &key)),
            Err(ConfigDenied::AccessDenied)
        );
        assert!(matches!(
            c.revoke_key(nwid, "00000000"),
            Err(ControllerError::KeyNotFound(..))
        ));
    }

    #[test]
    fn ephemeral_members_go_once_idle() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let (key, _) = c
            .create_key(
                NOW,
                nwid,
                KeyOptions {
                    ephemeral: true,
                    ..KeyOptions::default()
                },
                [8; 20],
            )
            .unwrap();
        authorize(&mut c, nwid, addr(2));
        c.request_config(NOW, nwid, addr(1), keyed(1, &key))
            .unwrap_err();
        c.save_requested(NOW, 10);
        assert!(c.request_config(NOW, nwid, addr(1), keyed(1, &key)).is_ok());
        // Asking keeps it; silence for the timeout removes it (and only it).
        c.set_ephemeral_timeout_s(6);
        // It is told to ask three times per timeout; the others as usual.
        let asked = c.request_config(NOW, nwid, addr(1), None).unwrap();
        assert_eq!(asked.pull_interval_ms, Some(2_000));
        assert_eq!(
            c.request_config(NOW, nwid, addr(2), None)
                .unwrap()
                .pull_interval_ms,
            None
        );
        assert_eq!(c.remove_idle_ephemeral(NOW + 4_000), 0);
        assert!(c.request_config(NOW + 4_000, nwid, addr(1), None).is_ok());
        assert_eq!(c.remove_idle_ephemeral(NOW + 9_000), 0);
        assert_eq!(c.remove_idle_ephemeral(NOW + 10_000), 1);
        assert!(c.member(nwid, addr(1)).is_none());
        assert!(c.member(nwid, addr(2)).is_some());
        assert_eq!(c.counters().ephemeral_removed, 1);
    }

    #[test]
    fn advertised_routes_become_managed_routes_once_approved() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let gw = authorize(&mut c, nwid, addr(1));
        let other = authorize(&mut c, nwid, addr(2));
        let key = format!("{}:0:{}", addr(1), "c".repeat(128));
        let lan = "192.168.31.0/24";
        c.request_config(NOW, nwid, addr(1), report(&key, &[lan, "0.0.0.0/0"]))
            .unwrap();
        c.save_requested(NOW, 10);
        let m = c.member(nwid, addr(1)).unwrap();
        assert_eq!(m.to_json()["advertisedRoutes"], json!([lan, "0.0.0.0/0"]));
        let routes = |c: &mut Controller| {
            c.request_config(NOW, nwid, other.address, None)
                .unwrap()
                .routes
                .iter()
                .map(|r| format!("{}/{} via {:?}", r.target, r.prefix_len, r.via))
                .collect::<Vec<_>>()
        };
        // Pending: nothing is routed via it yet.
        assert_eq!(routes(&mut c), vec!["10.0.0.0/24 via None"]);
        let revision = c.network(nwid).unwrap().revision;
        c.update_member(NOW, nwid, addr(1), &json!({"approvedRoutes": [lan]}))
            .unwrap();
        let via = gw.ip_assignments[0];
        assert_eq!(
            routes(&mut c),
            vec![
                "10.0.0.0/24 via None".to_string(),
                format!("{lan} via Some({via})")
            ]
        );
        // Every member's config changed: the network's revision grew.
        assert!(c.network(nwid).unwrap().revision > revision);
        // It stops advertising it: the route goes, the approval stays.
        c.request_config(NOW, nwid, addr(1), report(&key, &[]))
            .unwrap();
        c.save_requested(NOW, 10);
        assert_eq!(routes(&mut c), vec!["10.0.0.0/24 via None"]);
        assert_eq!(
            c.member(nwid, addr(1)).unwrap().approved_routes,
            vec![lan.parse().unwrap()]
        );
    }

    #[test]
    fn v6_assign_modes_give_zerotiers_addresses() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let m = authorize(&mut c, nwid, addr(7));
        let config = |c: &mut Controller| {
            c.request_config(NOW, nwid, addr(7), None)
                .unwrap()
                .assigned
                .iter()
                .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                .collect::<Vec<_>>()
        };
        assert_eq!(config(&mut c), vec!["10.0.0.1/24"]);
        // Turning the modes on hands the member its IPv6 addresses at once.
        c.update_network(
            nwid,
            &json!({"v6AssignMode": {"rfc4193": true, "6plane": true, "zt": true},
                    "ipAssignmentPools": [
                        {"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.20"},
                        {"ipRangeStart": "fd00:7::", "ipRangeEnd": "fd00:7::ffff:ffff:ffff:ffff"}]}),
        )
        .unwrap();
        let rfc = nwid.rfc4193_addr(m.address);
        let six = nwid.sixplane_addr(m.address);
        assert_eq!(
            config(&mut c),
            vec![
                format!("{rfc}/88"),
                format!("{six}/40"),
                "10.0.0.1/24".into(),
                "fd00:7::1:0:7/64".into()
            ]
        );
        // The derived ones are not stored as assignments (ZeroTier neither).
        assert_eq!(
            c.member(nwid, addr(7)).unwrap().ip_assignments,
            vec![ip("10.0.0.1"), ip("fd00:7::1:0:7")]
        );
        // No IPv6 pool: the problem is said.
        c.update_network(
            nwid,
            &json!({"ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.20"}]}),
        )
        .unwrap();
        let late = authorize(&mut c, nwid, addr(8));
        assert_eq!(late.ip_assignments, vec![ip("10.0.0.2")]);
        assert_eq!(
            c.ip_assignment_problem(nwid, addr(8)),
            Some(AssignError::NoIpv6Pools)
        );
    }

    #[test]
    fn create_uses_a_free_number_of_this_controller() {
        let mut c = Controller::in_memory(ctl());
        let a = with_network(&mut c);
        let b = with_network(&mut c);
        assert_ne!(a, b);
        assert_eq!(a.controller(), ctl());
        assert_eq!(c.network_ids().len(), 2);
        let n = c.network(a).unwrap();
        assert_eq!(
            (n.revision, n.creation_time, n.name.as_str()),
            (1, NOW, "lab")
        );
        assert!(matches!(
            c.create_network_with_id(NOW, a, &json!({})),
            Err(ControllerError::NetworkExists(_))
        ));
        let foreign = NetworkId::new("0102030405".parse().unwrap(), 1);
        assert!(matches!(
            c.create_network_with_id(NOW, foreign, &json!({})),
            Err(ControllerError::ForeignNetwork { .. })
        ));
        // A refused body creates nothing.
        assert!(matches!(
            c.create_network(NOW, &json!({"mtu": 1})),
            Err(ControllerError::Invalid(_))
        ));
        assert_eq!(c.network_ids().len(), 2);
    }

    #[test]
    fn revisions_grow_only_on_change() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        assert_eq!(
            c.update_network(nwid, &json!({"name": "lab"}))
                .unwrap()
                .revision,
            1
        );
        assert_eq!(
            c.update_network(nwid, &json!({"mtu": 1500}))
                .unwrap()
                .revision,
            2
        );
        let m = c.update_member(NOW, nwid, addr(1), &json!({})).unwrap();
        assert_eq!(m.revision, 1);
        assert_eq!(
            c.update_member(NOW, nwid, addr(1), &json!({"activeBridge": false}))
                .unwrap()
                .revision,
            1
        );
        assert_eq!(
            c.update_member(NOW, nwid, addr(1), &json!({"noAutoAssignIps": true}))
                .unwrap()
                .revision,
            2
        );
    }

    #[test]
    fn authorizing_assigns_the_lowest_free_address() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let m = authorize(&mut c, nwid, addr(1));
        assert_eq!(m.ip_assignments, vec![ip("10.0.0.1")]);
        assert_eq!(m.last_authorized_time, NOW);
        // An address set by hand is skipped by later assignments.
        c.update_member(NOW, nwid, addr(2), &json!({"ipAssignments": ["10.0.0.2"]}))
            .unwrap();
        assert_eq!(
            authorize(&mut c, nwid, addr(3)).ip_assignments,
            vec![ip("10.0.0.3")]
        );
        // Authorizing the member holding 10.0.0.2 keeps it, adds nothing.
        assert_eq!(
            authorize(&mut c, nwid, addr(2)).ip_assignments,
            vec![ip("10.0.0.2")]
        );
        // An IPv6 address does not count as an IPv4 one.
        let m = c
            .update_member(
                NOW,
                nwid,
                addr(4),
                &json!({"authorized": true, "ipAssignments": ["2001:db8::4"]}),
            )
            .unwrap();
        assert_eq!(m.ip_assignments, vec![ip("2001:db8::4"), ip("10.0.0.4")]);
        // Opted out, or the network does not assign IPv4: nothing.
        let m = c
            .update_member(
                NOW,
                nwid,
                addr(5),
                &json!({"authorized": true, "noAutoAssignIps": true}),
            )
            .unwrap();
        assert!(m.ip_assignments.is_empty());
        assert_eq!(c.ip_assignment_problem(nwid, addr(5)), None);
        // Turning the opt-out off assigns at once.
        let m = c
            .update_member(NOW, nwid, addr(5), &json!({"noAutoAssignIps": false}))
            .unwrap();
        assert_eq!(m.ip_assignments, vec![ip("10.0.0.5")]);
        // Deauthorizing keeps the address; it stays taken.
        let m = c
            .update_member(NOW + 1, nwid, addr(1), &json!({"authorized": false}))
            .unwrap();
        assert_eq!(
            (m.ip_assignments.clone(), m.last_deauthorized_time),
            (vec![ip("10.0.0.1")], NOW + 1)
        );
        assert_eq!(
            authorize(&mut c, nwid, addr(6)).ip_assignments,
            vec![ip("10.0.0.6")]
        );
        // Deleting a member frees its addresses.
        c.delete_member(nwid, addr(1)).unwrap();
        assert_eq!(
            authorize(&mut c, nwid, addr(7)).ip_assignments,
            vec![ip("10.0.0.1")]
        );
    }

    #[test]
    fn many_members_never_share_an_address_and_exhaustion_is_explained() {
        let mut c = Controller::in_memory(ctl());
        let nwid = c
            .create_network(
                NOW,
                &json!({"ipAssignmentPools": [
                    {"ipRangeStart": "10.1.0.250", "ipRangeEnd": "10.1.1.5"},
                    {"ipRangeStart": "10.2.0.0", "ipRangeEnd": "10.2.0.99"}],
                    "routes": [{"target": "10.1.0.0/16"}]}),
            )
            .unwrap()
            .id;
        // Some by hand inside the pools, then many authorized at once.
        c.update_member(
            NOW,
            nwid,
            addr(1000),
            &json!({"ipAssignments": ["10.2.0.50", "10.1.0.252"]}),
        )
        .unwrap();
        // Usable: 10.1.0.250..=10.1.1.5 is 12 addresses (the /16 has no
        // boundary inside); 10.2.0.1..=10.2.0.99 (its /24 network address
        // skipped) is 99; two are taken by hand.
        let usable: u64 = 12 + 99 - 2;
        let mut seen = HashSet::new();
        for i in 0..usable + 5 {
            let m = authorize(&mut c, nwid, addr(i));
            let v4: Vec<IpAddr> = m
                .ip_assignments
                .iter()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect();
            if i < usable {
                assert_eq!(v4.len(), 1, "member {i}");
                let a = v4[0];
                assert!(seen.insert(a), "{a} given twice");
                assert!(a != ip("10.2.0.50") && a != ip("10.1.0.252") && a != ip("10.2.0.0"));
                assert!(
                    c.network(nwid)
                        .unwrap()
                        .ip_assignment_pools
                        .iter()
                        .any(|p| p.contains(a))
                );
            } else {
                assert!(v4.is_empty(), "member {i} got {v4:?}");
                assert_eq!(
                    c.ip_assignment_problem(nwid, addr(i)),
                    Some(AssignError::Exhausted)
                );
            }
        }
        // Lowest first: the first member got the pool's first address.
        assert_eq!(
            c.member(nwid, addr(0)).unwrap().ip_assignments,
            vec![ip("10.1.0.250")]
        );
        // Adding a pool gives the waiting members addresses at once.
        let rev = c.network(nwid).unwrap().revision;
        c.update_network(
            nwid,
            &json!({"ipAssignmentPools": [
                {"ipRangeStart": "10.1.0.250", "ipRangeEnd": "10.1.1.5"},
                {"ipRangeStart": "10.2.0.0", "ipRangeEnd": "10.2.0.99"},
                {"ipRangeStart": "10.3.0.1", "ipRangeEnd": "10.3.0.9"}]}),
        )
        .unwrap();
        assert_eq!(
            c.network(nwid).unwrap().revision,
            rev + 1,
            "one revision for the whole update"
        );
        for i in usable..usable + 5 {
            let m = c.member(nwid, addr(i)).unwrap();
            assert_eq!(m.ip_assignments.len(), 1);
            assert!(seen.insert(m.ip_assignments[0]));
            assert_eq!(c.ip_assignment_problem(nwid, addr(i)), None);
        }
        // A network without IPv4 pools says so.
        let bare = c.create_network(NOW, &json!({})).unwrap().id;
        authorize(&mut c, bare, addr(1));
        assert_eq!(
            c.ip_assignment_problem(bare, addr(1)),
            Some(AssignError::NoPools)
        );
    }

    #[test]
    fn an_address_held_by_another_member_is_refused_whole() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        authorize(&mut c, nwid, addr(1));
        let before = c
            .update_member(NOW, nwid, addr(2), &json!({}))
            .unwrap()
            .clone();
        let e = c
            .update_member(
                NOW,
                nwid,
                addr(2),
                &json!({"authorized": true, "ipAssignments": ["10.0.0.9", "10.0.0.1"]}),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ipAssignments[1]: 10.0.0.1 is already assigned to member 0100000001"
        );
        assert_eq!(c.member(nwid, addr(2)), Some(&before));
        // A refused update of an unknown member records nothing.
        assert!(
            c.update_member(NOW, nwid, addr(3), &json!({"authorized": null}))
                .is_err()
        );
        assert_eq!(c.member(nwid, addr(3)), None);
        // Keeping one's own address is fine.
        c.update_member(
            NOW,
            nwid,
            addr(1),
            &json!({"ipAssignments": ["10.0.0.1", "10.0.0.19"]}),
        )
        .unwrap();
        // Unknown network or member.
        let other = NetworkId::new(ctl(), 0xabcdef);
        assert!(matches!(
            c.update_member(NOW, other, addr(1), &json!({})),
            Err(ControllerError::NetworkNotFound(_))
        ));
        assert!(matches!(
            c.delete_member(nwid, addr(9)),
            Err(ControllerError::MemberNotFound(..))
        ));
    }

    /// A member's certificate grants its own tags, the network's defaults
    /// for the others, and the capabilities it holds that the network
    /// defines; a change of them is a change of its config.
    #[test]
    fn configs_grant_tags_with_defaults_and_defined_capabilities() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        c.update_network(
            nwid,
            &json!({"tags": [{"id": 1000, "default": 100}, {"id": 1001}],
                    "capabilities": [{"id": 7, "rules": [{"type": "ACTION_ACCEPT"}]}]}),
        )
        .unwrap();
        authorize(&mut c, nwid, addr(1));
        let cfg = c.request_config(NOW + 1, nwid, addr(1), None).unwrap();
        assert_eq!(cfg.grants.tags(), &[(1000, 100)]);
        assert!(cfg.grants.capabilities().is_empty());
        assert_eq!(cfg.capabilities.len(), 1);
        let before = c.member(nwid, addr(1)).unwrap().revision;
        c.update_member(
            NOW,
            nwid,
            addr(1),
            &json!({"tags": [[1000, 200], [1001, 5]], "capabilities": [7, 8]}),
        )
        .unwrap();
        assert!(c.member(nwid, addr(1)).unwrap().revision > before);
        let cfg = c.request_config(NOW + 2, nwid, addr(1), None).unwrap();
        assert_eq!(cfg.grants.tags(), &[(1000, 200), (1001, 5)]);
        // 8 is not defined by the network: not granted.
        assert_eq!(cfg.grants.capabilities(), &[7]);
    }

    #[test]
    fn config_requests_private_and_public() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        let unknown = NetworkId::new(ctl(), 0xabcdef);
        assert_eq!(
            c.request_config(NOW, unknown, addr(1), None),
            Err(ConfigDenied::NotFound)
        );
        // Private: a stranger is listed (in memory), unauthorized, and denied.
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), None),
            Err(ConfigDenied::AccessDenied)
        );
        let m = c.member(nwid, addr(1)).unwrap();
        assert!(!m.authorized && m.ip_assignments.is_empty());
        assert_eq!(m.creation_time, NOW);
        assert!(c.authorized_members(nwid).is_empty());
        assert_eq!(c.stored_members(nwid).unwrap().len(), 0);
        assert_eq!(c.queued_saves(), 0);
        // Once authorized it gets its config.
        authorize(&mut c, nwid, addr(1));
        c.update_member(
            NOW,
            nwid,
            addr(2),
            &json!({"authorized": true, "activeBridge": true}),
        )
        .unwrap();
        let cfg = c.request_config(NOW + 5, nwid, addr(1), None).unwrap();
        let n = c.network(nwid).unwrap();
        let m = c.member(nwid, addr(1)).unwrap();
        assert_eq!(cfg.revision, n.revision + m.revision);
        assert_eq!(
            (cfg.nwid, cfg.member, cfg.name.as_str()),
            (nwid, addr(1), "lab")
        );
        assert_eq!(
            (
                cfg.private,
                cfg.mtu,
                cfg.multicast_limit,
                cfg.enable_broadcast
            ),
            (true, 2800, 32, true)
        );
        assert_eq!(cfg.timestamp_ms, NOW + 5);
        assert!(!cfg.active_bridge);
        assert_eq!(
            cfg.assigned,
            vec![AssignedIp {
                ip: ip("10.0.0.1"),
                prefix_len: 24
            }]
        );
        assert_eq!(
            cfg.routes,
            vec![ManagedRoute {
                target: ip("10.0.0.0"),
                prefix_len: 24,
                via: None
            }]
        );
        assert_eq!(cfg.bridges, vec![addr(2)]);
        assert_eq!(c.authorized_members(nwid), vec![addr(1), addr(2)]);
        let data: NetworkConfigData = cfg.into();
        assert_eq!(data.bridges, vec![addr(2).to_string()]);
        // Deauthorized: denied again.
        c.update_member(NOW, nwid, addr(1), &json!({"authorized": false}))
            .unwrap();
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), None),
            Err(ConfigDenied::AccessDenied)
        );
        // Public: anyone is let in at once, and stored as authorized with
        // an address by the saver (its config then pushed).
        c.update_network(nwid, &json!({"private": false})).unwrap();
        let cfg = c.request_config(NOW + 9, nwid, addr(3), None).unwrap();
        assert!(!cfg.private);
        assert!(cfg.assigned.is_empty(), "no address before it is saved");
        assert_eq!(c.member(nwid, addr(3)), None);
        let seq = c.sequence();
        assert_eq!(c.save_requested(NOW + 9, usize::MAX), 0);
        // Only the newcomer's config changed: no config lists the members.
        assert_eq!(c.changed_members(nwid, seq), vec![addr(3)]);
        let cfg = c.request_config(NOW + 9, nwid, addr(3), None).unwrap();
        assert_eq!(
            cfg.assigned,
            vec![AssignedIp {
                ip: ip("10.0.0.3"),
                prefix_len: 24
            }]
        );
        let m = c.member(nwid, addr(3)).unwrap();
        assert!(m.authorized);
        assert_eq!(m.last_authorized_time, NOW + 9);
        // A request that changes nothing saves nothing.
        let rev = m.revision;
        c.request_config(NOW + 10, nwid, addr(3), None).unwrap();
        assert_eq!(c.member(nwid, addr(3)).unwrap().revision, rev);
    }

    #[test]
    fn config_revision_grows_with_every_change_a_member_sees() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        authorize(&mut c, nwid, addr(1));
        let r1 = c.request_config(NOW, nwid, addr(1), None).unwrap().revision;
        // Another member joining changes nothing member 1 is told (members
        // announce their addresses to the roots, not in configs)...
        authorize(&mut c, nwid, addr(2));
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), None).unwrap().revision,
            r1
        );
        // ...but it becoming an active bridge does (configs list bridges).
        c.update_member(NOW, nwid, addr(2), &json!({"activeBridge": true}))
            .unwrap();
        let r2 = c.request_config(NOW, nwid, addr(1), None).unwrap().revision;
        assert!(r2 > r1);
        c.update_network(nwid, &json!({"mtu": 1400})).unwrap();
        let r3 = c.request_config(NOW, nwid, addr(1), None).unwrap().revision;
        assert!(r3 > r2);
        c.delete_member(nwid, addr(2)).unwrap();
        assert!(c.request_config(NOW, nwid, addr(1), None).unwrap().revision > r3);
    }

    #[test]
    fn changed_members_since_a_sequence_number() {
        let mut c = Controller::in_memory(ctl());
        let nwid = with_network(&mut c);
        for i in 1..=3 {
            c.update_member(NOW, nwid, addr(i), &json!({})).unwrap();
        }
        let s0 = c.sequence();
        assert!(c.changed_members(nwid, s0).is_empty());
        // An unauthorized member changing only touches itself.
        c.update_member(NOW, nwid, addr(2), &json!({"activeBridge": true}))
            .unwrap();
        assert_eq!(c.changed_members(nwid, s0), vec![addr(2)]);
        // Authorizing a member changes its own config only...
        let s1 = c.sequence();
        authorize(&mut c, nwid, addr(3));
        assert_eq!(c.changed_members(nwid, s1), vec![addr(3)]);
        // ...unless it is an active bridge, which every config lists.
        let s1 = c.sequence();
        authorize(&mut c, nwid, addr(2));
        assert_eq!(c.changed_members(nwid, s1), vec![addr(1), addr(2), addr(3)]);
        // Network settings: all.
        let s2 = c.sequence();
        c.update_network(nwid, &json!({"name": "new"})).unwrap();
        assert_eq!(c.changed_members(nwid, s2).len(), 3);
        // Removed members are reported too, alone or with their network.
        let s3 = c.sequence();
        c.delete_member(nwid, addr(1)).unwrap();
        assert_eq!(c.changed_members(nwid, s3), vec![addr(1)]);
        let s4 = c.sequence();
        c.delete_network(nwid).unwrap();
        assert_eq!(c.changed_members(nwid, s4), vec![addr(2), addr(3)]);
        assert_eq!(c.changes_since(s4), vec![(nwid, addr(2)), (nwid, addr(3))]);
        assert!(c.changes_since(c.sequence()).is_empty());
        assert_eq!(
            c.request_config(NOW, nwid, addr(2), None),
            Err(ConfigDenied::NotFound)
        );
    }

    #[test]
    fn the_store_holds_what_was_acknowledged() {
        let home = tempfile::tempdir().unwrap();
        let mut c = Controller::open(ctl(), home.path()).unwrap();
        let nwid = with_network(&mut c);
        authorize(&mut c, nwid, addr(1));
        assert_eq!(
            c.request_config(NOW, nwid, addr(2), None),
            Err(ConfigDenied::AccessDenied)
        );
        let gone = with_network(&mut c);
        c.update_member(NOW, gone, addr(1), &json!({})).unwrap();
        c.delete_network(gone).unwrap();
        // A refused update writes nothing.
        assert!(
            c.update_network(nwid, &json!({"name": "x", "mtu": 0}))
                .is_err()
        );

        let again = Controller::open(ctl(), home.path()).unwrap();
        assert_eq!(again.network_ids(), vec![nwid]);
        assert_eq!(again.network(nwid), c.network(nwid));
        assert_eq!(again.members(nwid), c.stored_members(nwid));
        // The unauthorized requester was never stored: forgotten.
        assert_eq!(again.members(nwid).unwrap().len(), 1);
        assert_eq!(c.members(nwid).unwrap().len(), 2);
        // No temp files anywhere, and the deleted network left nothing.
        let net_dir = home.path().join("controller.d/network");
        let mut names: Vec<String> = std::fs::read_dir(&net_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec![nwid.to_string(), format!("{nwid}.json")]);
        for e in std::fs::read_dir(net_dir.join(nwid.to_string()).join("member")).unwrap() {
            assert!(!e.unwrap().file_name().to_string_lossy().starts_with('.'));
        }
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let home = tempfile::tempdir().unwrap();
        let mut c = Controller::open(ctl(), home.path()).unwrap();
        let nwid = with_network(&mut c);
        authorize(&mut c, nwid, addr(1));
        // Break the store (even for root): the member directory becomes a
        // file and the network file a directory, so every write fails.
        let net_file = home
            .path()
            .join(format!("controller.d/network/{nwid}.json"));
        let member_dir = home
            .path()
            .join(format!("controller.d/network/{nwid}/member"));
        let saved_net = std::fs::read(&net_file).unwrap();
        let aside = home.path().join("aside");
        std::fs::rename(&member_dir, &aside).unwrap();
        std::fs::write(&member_dir, b"").unwrap();
        std::fs::remove_file(&net_file).unwrap();
        std::fs::create_dir(&net_file).unwrap();

        let net_before = c.network(nwid).unwrap().clone();
        let before = c.member(nwid, addr(1)).unwrap().clone();
        let e = c.update_member(NOW, nwid, addr(1), &json!({"activeBridge": true}));
        assert!(matches!(e, Err(ControllerError::Store(_))), "{e:?}");
        assert_eq!(c.member(nwid, addr(1)), Some(&before));
        let e = c.update_network(nwid, &json!({"mtu": 1500}));
        assert!(matches!(e, Err(ControllerError::Store(_))), "{e:?}");
        assert_eq!(c.network(nwid), Some(&net_before));
        // Config requests serve what was saved, and store nothing.
        assert_eq!(
            c.request_config(NOW, nwid, addr(1), None)
                .unwrap()
                .assigned
                .len(),
            1
        );
        assert_eq!(
            c.request_config(NOW, nwid, addr(2), None),
            Err(ConfigDenied::AccessDenied)
        );
        assert_eq!(c.stored_members(nwid).unwrap().len(), 1);
        // A save a request queued fails, is counted, and changes nothing.
        c.update_network(nwid, &json!({"private": false}))
            .unwrap_err();
        c.networks.get_mut(&nwid).unwrap().network.private = false;
        assert!(c.request_config(NOW, nwid, addr(3), None).is_ok());
        assert_eq!(c.save_requested(NOW, usize::MAX), 0);
        assert_eq!(c.counters().saves_failed, 1);
        assert_eq!(c.member(nwid, addr(3)), None);
        c.networks.get_mut(&nwid).unwrap().network.private = true;
        assert!(matches!(
            c.delete_network(nwid),
            Err(ControllerError::Store(_))
        ));
        assert!(c.network(nwid).is_some());

        // Repaired, a reload gives the acknowledged state.
        std::fs::remove_dir(&net_file).unwrap();
        std::fs::write(&net_file, saved_net).unwrap();
        std::fs::remove_file(&member_dir).unwrap();
        std::fs::rename(&aside, &member_dir).unwrap();
        let again = Controller::open(ctl(), home.path()).unwrap();
        assert_eq!(again.network(nwid), Some(&net_before));
        assert_eq!(again.members(nwid).unwrap(), vec![&before]);
    }
}
