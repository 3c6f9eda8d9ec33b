//! The multicast directory (PROTOCOL.md §4.6): members tell their roots which
//! groups they listen to (MULTICAST_LIKE), roots keep that in a bounded
//! table, and a member that has a multicast frame for a group with no known
//! recipient asks a root (MULTICAST_GATHER) and sends the frame when the
//! answer names them. So a config never lists the network's members, and
//! ARP or neighbour discovery for a member never seen before costs one round
//! trip to a root.

use super::membership::CertificateGrants;
use super::{Node, Outbox};
use crate::address::Address;
use crate::constants::{
    MAX_FRAMES_AWAITING_GATHER, MAX_GATHER_ASKERS, MAX_GATHERS_TRACKED, MAX_PASSED_ON_GATHERS,
    MAX_ROOT_MULTICAST_SUBSCRIPTIONS, MAX_ROOT_MULTICAST_SUBSCRIPTIONS_PER_MEMBER,
    MULTICAST_ANNOUNCE_INTERVAL_MS, MULTICAST_GATHER_MAX_RESULTS, MULTICAST_GATHER_REFRESH_MS,
    MULTICAST_GATHER_RETRY_MS, MULTICAST_GATHER_WAIT_MS, MULTICAST_SUBSCRIPTION_TTL_MS,
};
use crate::hash_state::{HashMap, HashState};
use crate::message::{InRe, encode_in_re};
use crate::multicast_message::{GatherResult, MulticastGather, MulticastLike};
use crate::network_id::NetworkId;
use crate::offload::Offload;
use crate::rng::Rng;
use crate::switch::{DropReason, MulticastGroup, Outbound, Subscribed, Subscriptions};
use crate::verb::Verb;

/// The node's side of the multicast directory.
pub(crate) struct MulticastState {
    /// On a root: who listens to what, per network (bounded by
    /// `MAX_ROOT_MULTICAST_SUBSCRIPTIONS`).
    pub directory: Subscriptions<(NetworkId, MulticastGroup)>,
    /// When we last told our roots our groups, and what we told them.
    pub last_announce_ms: u64,
    pub announced: Vec<(NetworkId, MulticastGroup)>,
    /// On a root: gathers passed on to the other roots, by group: when, and
    /// who asked (with the counter to answer and the limit asked for).
    pub passed_on: HashMap<(NetworkId, MulticastGroup), PassedOnGather>,
}

/// A gather a root passed on to the other roots, waiting for their answers.
pub(crate) struct PassedOnGather {
    pub since_ms: u64,
    pub askers: Vec<(Address, u64, u32)>,
}

impl MulticastState {
    /// Nothing known, nothing announced.
    pub fn new(hasher: HashState) -> Self {
        Self {
            passed_on: HashMap::with_hasher(hasher.clone()),
            directory: Subscriptions::with_limits(
                MAX_ROOT_MULTICAST_SUBSCRIPTIONS,
                MULTICAST_SUBSCRIPTION_TTL_MS,
                hasher,
            )
            .with_member_limit(MAX_ROOT_MULTICAST_SUBSCRIPTIONS_PER_MEMBER),
            last_announce_ms: 0,
            announced: Vec::new(),
        }
    }
}

/// A multicast frame waiting for the roots to name its recipients.
pub(crate) struct FrameAwaitingGather {
    pub group: MulticastGroup,
    pub since_ms: u64,
    pub offload: Offload,
    pub frame: Vec<u8>,
}

impl Node {
    /// Our groups on every configured network, as (network, group) pairs.
    fn our_groups(&self) -> Vec<(NetworkId, MulticastGroup)> {
        let mut all: Vec<(NetworkId, MulticastGroup)> = self
            .networks
            .iter()
            .filter_map(|(n, m)| m.switch.as_ref().map(|s| (*n, s)))
            .flat_map(|(n, s)| s.our_groups().into_iter().map(move |g| (n, g)))
            .collect();
        all.sort_unstable();
        all
    }

    /// Tells root `root` every group we listen to.
    fn announce_groups_to(
        &mut self,
        now_ms: u64,
        root: Address,
        groups: &[(NetworkId, MulticastGroup)],
        out: &mut Outbox,
    ) {
        for like in MulticastLike::split(groups) {
            self.counters.multicast_likes_sent += 1;
            self.send(now_ms, root, Verb::MulticastLike, &like.encode(), out);
        }
    }

    /// A new session with `addr`: if it is a root of ours, it may have
    /// restarted and forgotten what we listen to.
    pub(crate) fn announce_groups_on_new_session(
        &mut self,
        now_ms: u64,
        addr: Address,
        out: &mut Outbox,
    ) {
        if !self.root_addrs.contains(&addr) {
            return;
        }
        let groups = self.our_groups();
        if !groups.is_empty() {
            self.announce_groups_to(now_ms, addr, &groups, out);
        }
    }

    /// Periodic multicast work: tells the roots what we listen to (every
    /// `MULTICAST_ANNOUNCE_INTERVAL_MS`, and at once when it changed), and
    /// drops frames whose recipients were not named in time.
    pub(crate) fn tick_multicast(&mut self, now_ms: u64, out: &mut Outbox) {
        let groups = self.our_groups();
        let due = now_ms.saturating_sub(self.multicast.last_announce_ms)
            >= MULTICAST_ANNOUNCE_INTERVAL_MS;
        if (due || groups != self.multicast.announced) && !groups.is_empty() {
            self.multicast.last_announce_ms = now_ms;
            if self.am_root {
                let me = self.address;
                for (n, g) in &groups {
                    self.multicast.directory.subscribe(now_ms, me, (*n, *g));
                }
            }
            let roots: Vec<Address> = self
                .root_addrs
                .iter()
                .copied()
                .filter(|r| *r != self.address)
                .collect();
            for root in roots {
                self.announce_groups_to(now_ms, root, &groups, out);
            }
        }
        self.multicast.announced = groups;
        for m in self.networks.values_mut() {
            let mut gone = 0;
            while m
                .awaiting_gather
                .front()
                .is_some_and(|f| now_ms.saturating_sub(f.since_ms) >= MULTICAST_GATHER_WAIT_MS)
            {
                m.awaiting_gather.pop_front();
                gone += 1;
            }
            if let Some(switch) = m.switch.as_mut() {
                for _ in 0..gone {
                    switch.count_drop(DropReason::NoRecipients);
                }
            }
        }
    }

    /// On a root, forgets lapsed subscriptions (from the sweep).
    pub(crate) fn sweep_multicast_directory(&mut self, now_ms: u64) {
        self.multicast.directory.expire(now_ms);
        self.multicast
            .passed_on
            .retain(|_, p| now_ms.saturating_sub(p.since_ms) < MULTICAST_GATHER_WAIT_MS);
    }

    /// Subscriptions the root holds (`GET /status` tables).
    pub(crate) fn multicast_directory_len(&self) -> usize {
        self.multicast.directory.len()
    }

    /// MULTICAST_LIKE from `src`: on a root, recorded (bounded table).
    pub(crate) fn handle_multicast_like(&mut self, now_ms: u64, src: Address, like: MulticastLike) {
        if !self.am_root {
            self.counters.dropped_multicast_not_root += 1;
            return;
        }
        for (network, group) in like.groups {
            match self
                .multicast
                .directory
                .subscribe(now_ms, src, (network, group))
            {
                Subscribed::Full => self.counters.dropped_multicast_directory_full += 1,
                Subscribed::MemberFull => self.counters.dropped_multicast_member_quota += 1,
                Subscribed::Added | Subscribed::Renewed => {}
            }
        }
    }

    /// The members a root names for `group` of `network`: at most `limit`
    /// (and `MULTICAST_GATHER_MAX_RESULTS`), never `asker`, starting at a
    /// random member so a large group's traffic spreads over its members.
    fn gather_from_directory(
        &mut self,
        now_ms: u64,
        asker: Address,
        network: NetworkId,
        group: MulticastGroup,
        limit: u32,
    ) -> GatherResult {
        let key = (network, group);
        let total = self.multicast.directory.count(now_ms, key);
        let start = self.rng.next_u32() as usize;
        let limit = (limit as usize).min(MULTICAST_GATHER_MAX_RESULTS);
        let members = self
            .multicast
            .directory
            .members_rotated(now_ms, key, start)
            .filter(|m| *m != asker)
            .take(limit)
            .collect();
        GatherResult {
            network,
            group,
            total_known: u32::try_from(total).unwrap_or(u32::MAX),
            members,
        }
    }

    /// MULTICAST_GATHER from `src`: a root answers with the members it
    /// knows; knowing fewer than asked for, it passes the question on to the
    /// other roots it has a session with (once per group within
    /// `MULTICAST_GATHER_WAIT_MS`; never a question from a root), and
    /// passes their answers back (a member may announce to roots the asker
    /// cannot reach: a moon's members and the planet's).
    pub(crate) fn handle_multicast_gather(
        &mut self,
        now_ms: u64,
        src: Address,
        counter: u64,
        gather: MulticastGather,
        out: &mut Outbox,
    ) {
        if !self.am_root {
            self.counters.dropped_multicast_not_root += 1;
            return;
        }
        let result =
            self.gather_from_directory(now_ms, src, gather.network, gather.group, gather.limit);
        let short = result.members.len() < gather.limit as usize;
        if !result.members.is_empty() || !short {
            self.answer_gather(now_ms, src, counter, &result, out);
        }
        if !short || self.is_root_or_relayer(src) {
            return;
        }
        let ups = self.upstream_roots(now_ms, src);
        if ups.is_empty() {
            return;
        }
        let key = (gather.network, gather.group);
        let fresh = !self.multicast.passed_on.contains_key(&key);
        if fresh && self.multicast.passed_on.len() >= MAX_PASSED_ON_GATHERS {
            return;
        }
        let entry = self
            .multicast
            .passed_on
            .entry(key)
            .or_insert(PassedOnGather {
                since_ms: now_ms,
                askers: Vec::new(),
            });
        entry.askers.retain(|(a, _, _)| *a != src);
        if entry.askers.len() >= MAX_GATHER_ASKERS {
            entry.askers.remove(0);
        }
        entry.askers.push((src, counter, gather.limit));
        if fresh {
            self.counters.multicast_gathers_passed_on += 1;
            for up in ups {
                self.send(now_ms, up, Verb::MulticastGather, &gather.encode(), out);
            }
        }
    }

    fn answer_gather(
        &mut self,
        now_ms: u64,
        to: Address,
        counter: u64,
        result: &GatherResult,
        out: &mut Outbox,
    ) {
        let mut reply = Vec::with_capacity(40 + result.members.len() * 5);
        encode_in_re(
            InRe {
                verb: Verb::MulticastGather,
                counter,
            },
            &mut reply,
        );
        result.encode_into(&mut reply);
        self.counters.multicast_gathers_answered += 1;
        self.send_session(now_ms, to, None, Verb::Ok, &reply, out);
    }

    /// OK(MULTICAST_GATHER) from `src`: taken only from a root of ours; the
    /// members named subscribe to the group, and frames waiting for it go.
    pub(crate) fn handle_gather_result(
        &mut self,
        now_ms: u64,
        src: Address,
        result: GatherResult,
        out: &mut Outbox,
    ) {
        if !self.root_addrs.contains(&src) && !self.is_root_or_relayer(src) {
            self.counters.dropped_bad_payload += 1;
            return;
        }
        // Answers to a question we passed on go back to who asked.
        if let Some(passed) = self
            .multicast
            .passed_on
            .remove(&(result.network, result.group))
        {
            for (asker, counter, limit) in passed.askers {
                let members: Vec<Address> = result
                    .members
                    .iter()
                    .copied()
                    .filter(|m| *m != asker)
                    .take(limit as usize)
                    .collect();
                if !members.is_empty() {
                    let answer = GatherResult {
                        members,
                        ..result.clone()
                    };
                    self.answer_gather(now_ms, asker, counter, &answer, out);
                }
            }
        }
        self.learn_gathered(now_ms, result, out);
    }

    fn learn_gathered(&mut self, now_ms: u64, result: GatherResult, out: &mut Outbox) {
        let nwid = result.network;
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        let Some(switch) = m.switch.as_mut() else {
            return;
        };
        let mut taken = 0;
        for member in &result.members {
            if !m.revocations.is_revoked(*member) && switch.subscribe(now_ms, *member, result.group)
            {
                taken += 1;
            }
        }
        if taken == 0 {
            // Nobody named: held frames wait on (a root that passed the
            // question on may answer again).
            return;
        }
        // Frames that waited for this group go now (in order); the rest wait on.
        let mut ready = Vec::new();
        m.awaiting_gather.retain_mut(|f| {
            if f.group == result.group {
                ready.push((f.offload, std::mem::take(&mut f.frame)));
                false
            } else {
                true
            }
        });
        for (offload, frame) in ready {
            self.send_multicast_frame(now_ms, nwid, offload, &frame, out);
        }
    }

    /// A held multicast frame, switched again now that recipients are known.
    fn send_multicast_frame(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        offload: Offload,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        let mut targets = Vec::new();
        if let Some(m) = self.networks.get_mut(&nwid)
            && let Some(switch) = m.switch.as_mut()
        {
            let grants = CertificateGrants {
                ours: m.config.as_ref().map(|c| &c.certificate),
                peers: &m.peer_certificates,
            };
            match switch.outbound_granted(now_ms, frame, &grants) {
                Outbound::Multicast { members, .. } => targets.extend_from_slice(members),
                // Still no one: nobody listens (counted by the switch's retry
                // as unresolved; count it dropped now).
                Outbound::Unresolved(_) => switch.count_drop(DropReason::NoRecipients),
                _ => {}
            }
        }
        for to in targets {
            self.send_frame(now_ms, nwid, to, offload, frame, out);
        }
    }

    /// A multicast frame for `group` with no known recipient: held (the
    /// newest `MAX_FRAMES_AWAITING_GATHER` per network) while the roots are asked.
    pub(crate) fn hold_for_gather(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        group: MulticastGroup,
        offload: Offload,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        if let Some(m) = self.networks.get_mut(&nwid) {
            if m.awaiting_gather.len() >= MAX_FRAMES_AWAITING_GATHER {
                m.awaiting_gather.pop_front();
                if let Some(switch) = m.switch.as_mut() {
                    switch.count_drop(DropReason::NoRecipients);
                }
            }
            m.awaiting_gather.push_back(FrameAwaitingGather {
                group,
                since_ms: now_ms,
                offload,
                frame: frame.to_vec(),
            });
        }
        self.gather(now_ms, nwid, group, true, out);
    }

    /// Asks a root who listens to `group`, unless asked lately: with none
    /// known (`unresolved`) at most every `MULTICAST_GATHER_RETRY_MS`, with
    /// fewer than the limit known at most every `MULTICAST_GATHER_REFRESH_MS`.
    pub(crate) fn gather(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        group: MulticastGroup,
        unresolved: bool,
        out: &mut Outbox,
    ) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        let Some(limit) = m.switch.as_ref().map(|s| s.policy().multicast_limit) else {
            return;
        };
        let interval = if unresolved {
            MULTICAST_GATHER_RETRY_MS
        } else {
            MULTICAST_GATHER_REFRESH_MS
        };
        if m.gathers
            .get(&group)
            .is_some_and(|t| now_ms.saturating_sub(*t) < interval)
        {
            return;
        }
        if m.gathers.len() >= MAX_GATHERS_TRACKED {
            m.gathers
                .retain(|_, t| now_ms.saturating_sub(*t) < MULTICAST_GATHER_REFRESH_MS);
            if m.gathers.len() >= MAX_GATHERS_TRACKED {
                m.gathers.clear();
            }
        }
        m.gathers.insert(group, now_ms);
        self.counters.multicast_gathers_sent += 1;
        if self.am_root {
            // Our own directory knows what every member told us.
            let me = self.address;
            let result = self.gather_from_directory(now_ms, me, nwid, group, limit);
            self.learn_gathered(now_ms, result, out);
            return;
        }
        let Some(root) = self
            .best_root(now_ms)
            .or_else(|| self.root_addrs.first().copied())
        else {
            return;
        };
        let gather = MulticastGather {
            network: nwid,
            group,
            limit,
        };
        self.send(now_ms, root, Verb::MulticastGather, &gather.encode(), out);
    }
}
