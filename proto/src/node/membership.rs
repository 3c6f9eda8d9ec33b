//! One joined network's state: its status and config, the config being
//! assembled, the virtual switch, and the certificates exchanged with its
//! members. [`super::network`] (configs) and [`super::frames`] (frames)
//! both work on it.

use std::net::IpAddr;

use serde::Serialize;

use crate::address::Address;
use crate::constants::{
    CERTIFICATE_MAX_DELTA_MS, CREDENTIALS_ANSWER_INTERVAL_MS, CREDENTIALS_RESEND_INTERVAL_MS,
    MAX_REVOCATIONS_PER_NETWORK,
};
use crate::hash_state::{HashMap, HashState};
use crate::netconf::{Certificate, NetworkConfig};
use crate::network_id::{Mac, NetworkId};
use crate::offload::Offload;
use crate::rules::Grants;
use crate::switch::{GrantsOf, MulticastGroup, Switch, SwitchPolicy, eui64_link_local};

/// A joined network's status, as `listnetworks` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NetworkStatus {
    /// Waiting for the controller.
    RequestingConfiguration,
    /// Configured.
    Ok,
    /// The controller refuses us (private network, not authorized).
    AccessDenied,
    /// The controller has no such network.
    NotFound,
}

/// A frame held for a member's certificate: its offloads and bytes.
pub(crate) type HeldFrame = (Offload, Vec<u8>);

/// Members whose membership the controller revoked: any certificate of
/// theirs issued at or before the threshold (controller's clock, ms) is
/// refused (PROTOCOL.md §4.7). At most `MAX_REVOCATIONS_PER_NETWORK`
/// (the lowest threshold goes first); forgotten once no certificate they
/// void could agree with ours.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    by_member: std::collections::HashMap<Address, u64>,
}

impl Revocations {
    /// Whether `member` has a revocation in force.
    pub fn is_revoked(&self, member: Address) -> bool {
        self.by_member.contains_key(&member)
    }

    /// The threshold in force for `member`, if any.
    pub fn threshold(&self, member: Address) -> Option<u64> {
        self.by_member.get(&member).copied()
    }

    /// Whether a certificate of `member` issued at `timestamp_ms` is void.
    pub fn refuses(&self, member: Address, timestamp_ms: u64) -> bool {
        self.threshold(member).is_some_and(|t| timestamp_ms <= t)
    }

    /// Records a revocation (raising the threshold only).
    pub fn insert(&mut self, member: Address, threshold_ms: u64) {
        if !self.by_member.contains_key(&member)
            && self.by_member.len() >= MAX_REVOCATIONS_PER_NETWORK
            && let Some(lowest) = self
                .by_member
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(a, _)| *a)
        {
            self.by_member.remove(&lowest);
        }
        let t = self.by_member.entry(member).or_insert(threshold_ms);
        *t = (*t).max(threshold_ms);
    }

    /// Forgets `member`'s revocation (a newer certificate of it came).
    pub fn remove(&mut self, member: Address) {
        self.by_member.remove(&member);
    }

    /// Forgets revocations that void nothing agreeing with a certificate of
    /// `ours_ms` any more.
    pub fn expire(&mut self, ours_ms: u64) {
        self.by_member
            .retain(|_, t| *t + CERTIFICATE_MAX_DELTA_MS >= ours_ms);
    }
}

/// A config being received in chunks.
pub(super) struct Assembly {
    pub update_id: u64,
    pub bytes: Vec<u8>,
    pub received: Vec<bool>,
}

/// One joined network.
pub(crate) struct Membership {
    pub status: NetworkStatus,
    pub config: Option<NetworkConfig>,
    pub last_request_ms: Option<u64>,
    /// When the current config arrived.
    pub received_ms: Option<u64>,
    pub assembly: Option<Assembly>,
    /// The virtual switch, once configured.
    pub switch: Option<Switch>,
    /// Peers' latest certificates on this network.
    pub peer_certificates: HashMap<Address, Certificate>,
    /// Our certificate last sent to each peer: its timestamp, and when.
    pub credentials_sent: HashMap<Address, (u64, u64)>,
    /// The newest frames for each member whose fresh certificate we
    /// lack, with when the wait began (bounded by
    /// `MAX_MEMBERS_AWAITING_CREDENTIALS` and `MAX_FRAMES_AWAITING_CREDENTIALS_PER_MEMBER`).
    pub awaiting_credentials: HashMap<Address, (u64, Vec<HeldFrame>)>,
    /// Signature checks of each peer's certificates this second: (start, used).
    pub credential_checks: HashMap<Address, (u64, u32)>,
    /// Multicast frames waiting for the roots to name recipients, oldest first.
    pub awaiting_gather: std::collections::VecDeque<super::multicast::FrameAwaitingGather>,
    /// When each group's recipients were last asked of a root.
    pub gathers: HashMap<MulticastGroup, u64>,
    /// Members whose membership the controller revoked.
    pub revocations: Revocations,
    /// What our requests tell the controller (join key, advertised routes).
    pub request_meta: crate::network_message::RequestMeta,
    /// The node's keyed hasher, for the switch's tables.
    hasher: HashState,
}

impl Membership {
    /// A network just joined: no config yet.
    pub fn new(hasher: HashState) -> Self {
        Self {
            status: NetworkStatus::RequestingConfiguration,
            config: None,
            last_request_ms: None,
            received_ms: None,
            assembly: None,
            switch: None,
            peer_certificates: HashMap::with_hasher(hasher.clone()),
            credentials_sent: HashMap::with_hasher(hasher.clone()),
            awaiting_credentials: HashMap::with_hasher(hasher.clone()),
            credential_checks: HashMap::with_hasher(hasher.clone()),
            awaiting_gather: std::collections::VecDeque::new(),
            gathers: HashMap::with_hasher(hasher.clone()),
            revocations: Revocations::default(),
            request_meta: crate::network_message::RequestMeta::default(),
            hasher,
        }
    }

    /// Forgets revocations our current certificate makes moot.
    pub fn expire_revocations(&mut self) {
        if let Some(config) = self.config.as_ref() {
            self.revocations.expire(config.certificate.timestamp_ms);
        }
    }

    /// Whether our certificate (private networks only) should go to `to`
    /// now: it has not had this one yet, or, when `asking` (we want its
    /// certificate in return), we last sent it `CREDENTIALS_RESEND_INTERVAL_MS`
    /// ago or more.
    /// Whether a member that sent us a certificate we already hold gets
    /// ours again: not within `CREDENTIALS_ANSWER_INTERVAL_MS` of the last.
    pub fn credentials_answer_due(&self, to: Address, now_ms: u64) -> bool {
        self.config.as_ref().is_some_and(|c| c.data.private)
            && self.credentials_sent.get(&to).is_none_or(|&(_, sent_ms)| {
                now_ms.saturating_sub(sent_ms) >= CREDENTIALS_ANSWER_INTERVAL_MS
            })
    }

    pub fn credentials_due(&self, to: Address, asking: bool, now_ms: u64) -> bool {
        let Some(config) = self
            .config
            .as_ref()
            .filter(|c| c.data.exchanges_certificates())
        else {
            return false;
        };
        match self.credentials_sent.get(&to) {
            None => true,
            Some(&(sent_ts, sent_ms)) => {
                sent_ts != config.certificate.timestamp_ms
                    || (asking && now_ms.saturating_sub(sent_ms) >= CREDENTIALS_RESEND_INTERVAL_MS)
            }
        }
    }
}

/// The grants the flow rules see on one network: ours from our
/// certificate, each peer's from the certificate of it we hold.
pub(crate) struct CertificateGrants<'a> {
    /// Our certificate.
    pub ours: Option<&'a Certificate>,
    /// Peers' certificates.
    pub peers: &'a HashMap<Address, Certificate>,
}

impl GrantsOf for CertificateGrants<'_> {
    fn ours(&self) -> Option<&Grants> {
        self.ours.map(|c| &c.grants)
    }
    fn of(&self, member: Address) -> Option<&Grants> {
        self.peers.get(&member).map(|c| &c.grants)
    }
}

/// (Re)configures a network's switch from a new config: policy, bridges and
/// our addresses (whose groups we announce to the roots, PROTOCOL.md §4.6).
pub(crate) fn configure_switch(m: &mut Membership, me: Address, config: &NetworkConfig) {
    let d = &config.data;
    let policy = SwitchPolicy {
        private: d.private,
        active_bridge: d.active_bridge,
        enable_broadcast: d.enable_broadcast,
        multicast_limit: d.multicast_limit,
    };
    let switch = m
        .switch
        .get_or_insert_with(|| Switch::new(config.network, me, policy, m.hasher.clone()));
    switch.set_policy(policy);
    switch.set_rules(d.rules.clone());
    switch.set_capabilities(d.capabilities.clone());
    let bridges: Vec<Address> = d.bridges.iter().filter_map(|b| b.parse().ok()).collect();
    switch.set_bridges(&bridges);
    let mut ours: Vec<IpAddr> = d.assigned.iter().map(|a| a.ip).collect();
    ours.push(IpAddr::V6(eui64_link_local(Mac::for_member(
        me,
        config.network,
    ))));
    switch.set_local_ips(&ours);
}

/// A new session with `peer` may mean it restarted and lost the
/// certificates we sent it: ours go again with the next frame.
pub(crate) fn forget_credentials_sent(
    networks: &mut HashMap<NetworkId, Membership>,
    peer: Address,
) {
    for m in networks.values_mut() {
        m.credentials_sent.remove(&peer);
    }
}
