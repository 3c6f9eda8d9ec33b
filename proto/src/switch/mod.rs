//! The virtual Ethernet switch of one joined network, sans IO.
//!
//! Every member's TAP device is a port of one switch. [`Switch::outbound`]
//! decides where a frame read from our TAP goes; [`Switch::inbound`] decides
//! whether a frame a member sent us reaches our TAP. The rules are ZeroTier's:
//!
//! - A member's MAC is derived from its address ([`Mac::for_member`]), so a
//!   unicast frame to a member MAC goes straight to that member. Members send
//!   only from their own MAC, except active bridges, whose foreign source
//!   MACs are learned ([`MacTable`]) so unicast to them goes to the bridge.
//!   Unicast to an unknown MAC goes to the active bridges, or nowhere.
//! - Multicast goes to the members subscribed to the group ([`Subscriptions`],
//!   filled from what the roots name when asked, PROTOCOL.md §4.6: members
//!   announce broadcast and the groups their addresses resolve through),
//!   plus the active bridges, at most `multicast_limit` of them. A group with
//!   no subscriber known is [`Outbound::Unresolved`]: the node asks a root. A broadcast ARP
//!   request goes to the group of its target address (ADI = the IPv4
//!   address), which only that address's owner holds; IPv6 neighbour
//!   solicitations go to solicited-node MACs that only their owners hold.
//!   On a network with active bridges, an ARP request whose target no member
//!   holds also goes to the broadcast group: there, members may hold
//!   addresses from the bridged LAN (its DHCP server) that none announces.
//! - On a private network, frames go only between members holding fresh
//!   certificates that agree ([`Switch::receive`] for frames received,
//!   [`Switch::certificate_admits`] before sending any frame, unicast, ARP, ND,
//!   broadcast or multicast); a member whose membership the controller
//!   revoked loses its subscriptions and learned MACs ([`Switch::forget_member`]).
//! - Inbound frames need an honest source MAC, and a destination that is us,
//!   or a group we announce.
//!
//! Time comes in as `now_ms`; nothing here reads a clock, touches a socket, or
//! allocates on the unicast path. Every dropped frame is counted by reason.

pub mod counters;
pub mod frame;
pub mod mac_table;
pub mod multicast;
pub mod ndp_emulation;

use std::net::IpAddr;

use crate::address::Address;
use crate::constants::{DEFAULT_MULTICAST_LIMIT, ETHERNET_HEADER_LEN_BYTES};
use crate::hash_state::{HashSet, HashState};
use crate::netconf::Certificate;
use crate::network_id::{Mac, NetworkId};
use crate::rules::{
    Capability, CarbonCopy, Decision, FrameFacts, Grants, MemberTags, RuleSet, evaluate,
};

pub use counters::{DropCounters, DropReason, SwitchCounters};
pub use frame::Frame;
pub use mac_table::{Learned, MacTable};
pub use multicast::{MulticastGroup, Subscribed, Subscriptions, eui64_link_local, groups_for_ips};

/// The network configuration the switch enforces (from the member's netconf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchPolicy {
    /// Members need a fresh certificate for their frames and subscriptions to count.
    pub private: bool,
    /// We are an active bridge: we may send from, and receive for, MACs not ours.
    pub active_bridge: bool,
    /// Plain Ethernet broadcast is carried (ARP requests are carried either way).
    pub enable_broadcast: bool,
    /// Most members one multicast frame is sent to; 0 disables multicast.
    pub multicast_limit: u32,
}

impl Default for SwitchPolicy {
    /// ZeroTier's defaults: private, not a bridge, broadcast on, limit 32.
    fn default() -> Self {
        Self {
            private: true,
            active_bridge: false,
            enable_broadcast: true,
            multicast_limit: DEFAULT_MULTICAST_LIMIT,
        }
    }
}

/// Where a frame read from our TAP goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// To this one member (its member MAC, or a MAC learned behind it).
    Unicast(Address),
    /// Unknown unicast destination: to each of these active bridges.
    Bridges(&'a [Address]),
    /// A multicast of `group`, to each of `members` (never empty, never us).
    Multicast {
        /// The group (carry it with the frame: the ADI is not in the frame).
        group: MulticastGroup,
        /// The recipients: active bridges first, then subscribers, most recent first.
        members: &'a [Address],
    },
    /// A multicast of `group` for which no recipient is known yet: ask the
    /// roots who listens to it (MULTICAST_GATHER) and send it then.
    Unresolved(MulticastGroup),
    /// Nowhere; this frame goes back to our TAP instead: a neighbour
    /// solicitation answered locally ([`ndp_emulation`]).
    Answer(&'a [u8]),
    /// Nowhere.
    Drop(DropReason),
}

/// Whether a frame a member sent us goes to our TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Write it to the TAP.
    Deliver,
    /// Discard it.
    Drop(DropReason),
}

/// The switch of one network.
#[derive(Debug, Clone)]
pub struct Switch {
    network_id: NetworkId,
    address: Address,
    mac: Mac,
    policy: SwitchPolicy,
    bridges: Vec<Address>,
    local_ips: Vec<IpAddr>,
    extra_groups: Vec<MulticastGroup>,
    local_groups: HashSet<MulticastGroup>,
    macs: MacTable,
    subscriptions: Subscriptions,
    /// Reused for each frame's recipients, so forwarding does not allocate.
    recipients: Vec<Address>,
    /// Reused for a locally made answer ([`Outbound::Answer`]).
    answer: Vec<u8>,
    /// The network's flow rules; none: accept everything.
    rules: Option<RuleSet>,
    /// The network's capabilities: rules a member holding one may also pass.
    capabilities: Vec<Capability>,
    /// State of the generator MATCH_RANDOM draws from (xorshift: a rule's
    /// coin needs no cryptographic strength).
    coin: u64,
    /// The copy a TEE or WATCH asked for on the last outbound frame.
    copy: Option<CarbonCopy>,
    counters: SwitchCounters,
}

impl Switch {
    /// The switch of `network_id` for us, member `address`.
    pub fn new(
        network_id: NetworkId,
        address: Address,
        policy: SwitchPolicy,
        hasher: HashState,
    ) -> Self {
        Self::with_tables(
            network_id,
            address,
            policy,
            MacTable::new(hasher.clone()),
            Subscriptions::new(hasher.clone()),
            hasher,
        )
    }

    /// As [`Switch::new`], with tables of chosen limits (for tests).
    pub fn with_tables(
        network_id: NetworkId,
        address: Address,
        policy: SwitchPolicy,
        macs: MacTable,
        subscriptions: Subscriptions,
        hasher: HashState,
    ) -> Self {
        let mut switch = Self {
            network_id,
            address,
            mac: Mac::for_member(address, network_id),
            policy,
            bridges: Vec::new(),
            local_ips: Vec::new(),
            extra_groups: Vec::new(),
            local_groups: HashSet::with_hasher(hasher),
            macs,
            subscriptions,
            recipients: Vec::new(),
            answer: Vec::new(),
            rules: None,
            capabilities: Vec::new(),
            copy: None,
            coin: address.to_u64() ^ network_id.to_u64() | 1,
            counters: SwitchCounters::default(),
        };
        switch.recompute_local_groups();
        switch
    }

    /// The network.
    pub fn network_id(&self) -> NetworkId {
        self.network_id
    }

    /// Our address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Our MAC on this network (the TAP's MAC).
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The policy in force.
    pub fn policy(&self) -> SwitchPolicy {
        self.policy
    }

    /// Replaces the policy (on every new netconf).
    pub fn set_policy(&mut self, policy: SwitchPolicy) {
        self.policy = policy;
        self.recompute_local_groups();
    }

    /// Forgets `member`'s subscriptions and the MACs learned behind it (its
    /// membership was revoked, PROTOCOL.md §4.7).
    pub fn forget_member(&mut self, member: Address) {
        self.subscriptions.remove_member(member);
        self.macs.forget_bridge(member);
    }

    /// The certificate rule (PROTOCOL.md §4.5): on a private network, a peer
    /// may exchange frames with us only while `theirs`, its latest verified
    /// certificate, agrees with `ours` (same network, timestamps within the
    /// certificate's max delta). Always true on a public network.
    /// The caller asks for the certificate when this says no before a
    /// send, and counts a frame it finally gives up on with
    /// [`Switch::count_unsent`].
    pub fn certificate_admits(&self, ours: &Certificate, theirs: Option<&Certificate>) -> bool {
        !self.policy.private || theirs.is_some_and(|t| t.agrees_with(ours))
    }

    /// Counts a frame dropped outside the switch's own decisions: a
    /// multicast whose recipients the roots did not name in time.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.counters.drops.record(reason);
    }

    /// Counts a frame not sent to a recipient without a fresh certificate.
    pub fn count_unsent(&mut self) {
        self.counters
            .drops
            .record(DropReason::RecipientNotAuthorized);
    }

    /// A frame member `from` sent us (EXT_FRAME), as the node hands it over:
    /// the certificate rule with `theirs`, `from`'s latest verified
    /// certificate, then [`Switch::inbound`].
    pub fn receive(
        &mut self,
        now_ms: u64,
        from: Address,
        ours: &Certificate,
        theirs: Option<&Certificate>,
        frame: &[u8],
    ) -> Inbound {
        self.receive_segmented(now_ms, from, ours, theirs, frame, None)
    }

    /// As [`Switch::receive`], for a super-frame whose segments' sizes
    /// (after the Ethernet header: first, last) the size rules judge.
    pub fn receive_segmented(
        &mut self,
        now_ms: u64,
        from: Address,
        ours: &Certificate,
        theirs: Option<&Certificate>,
        frame: &[u8],
        segments: Option<(usize, usize)>,
    ) -> Inbound {
        if !self.certificate_admits(ours, theirs) {
            self.counters.drops.record(DropReason::NotAuthorized);
            return Inbound::Drop(DropReason::NotAuthorized);
        }
        let tags = MemberTags {
            local: Some(&ours.grants),
            remote: theirs.map(|c| &c.grants),
        };
        self.inbound_tagged(now_ms, from, frame, tags, segments)
    }

    /// Sets the network's active bridges (from the netconf); MACs learned
    /// behind members no longer listed are forgotten.
    pub fn set_bridges(&mut self, bridges: &[Address]) {
        self.bridges.clear();
        for b in bridges {
            if !self.bridges.contains(b) {
                self.bridges.push(*b);
            }
        }
        self.macs.retain_bridges(&self.bridges);
    }

    /// The network's active bridges.
    pub fn bridges(&self) -> &[Address] {
        &self.bridges
    }

    /// Whether `member` is an active bridge of the network.
    pub fn is_bridge(&self, member: Address) -> bool {
        self.bridges.contains(&member)
    }

    /// Whether a broadcast ARP request to `group` is also carried as plain
    /// broadcast when no member owns its target: on a network with active
    /// bridges (and broadcast enabled), where members may hold addresses the
    /// members do not announce, e.g. leased from the DHCP server
    /// of a bridged LAN. Such a request goes to the bridges and the broadcast
    /// group's members, and every member takes it in.
    fn unowned_arp_is_broadcast(&self, group: MulticastGroup) -> bool {
        group.mac == Mac::BROADCAST
            && group.adi != 0
            && self.policy.enable_broadcast
            && !self.bridges.is_empty()
    }

    /// Sets the IP addresses of our TAP (their address-resolution groups are ours).
    pub fn set_local_ips(&mut self, ips: &[IpAddr]) {
        self.local_ips = ips.to_vec();
        self.recompute_local_groups();
    }

    /// Sets further groups we listen to, e.g. the TAP's multicast memberships
    /// (groups whose MAC is not multicast are ignored).
    pub fn set_extra_groups(&mut self, groups: &[MulticastGroup]) {
        self.extra_groups = groups
            .iter()
            .copied()
            .filter(|g| g.mac.is_multicast())
            .collect();
        self.recompute_local_groups();
    }

    fn recompute_local_groups(&mut self) {
        self.local_groups.clear();
        if self.policy.enable_broadcast {
            self.local_groups.insert(MulticastGroup::BROADCAST);
        }
        self.local_groups.extend(groups_for_ips(&self.local_ips));
        self.local_groups.extend(self.extra_groups.iter().copied());
    }

    /// The groups we listen to, sorted: broadcast (if enabled), the ARP
    /// group of each IPv4 address, the solicited-node group of each IPv6
    /// address and IPv6 all-nodes, and the extra groups.
    pub fn our_groups(&self) -> Vec<MulticastGroup> {
        let mut groups: Vec<MulticastGroup> = self.local_groups.iter().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// Whether we listen to `group`.
    pub fn is_local_group(&self, group: MulticastGroup) -> bool {
        self.local_groups.contains(&group)
    }

    /// Records that `member` listens to `group` (a root named it in answer to
    /// a gather, PROTOCOL.md §4.6); false (and counted) if refused:
    /// ourselves, a non-multicast MAC, or a full table. Frames still go to it
    /// only once its certificate agrees with ours ([`Switch::certificate_admits`]).
    pub fn subscribe(&mut self, now_ms: u64, member: Address, group: MulticastGroup) -> bool {
        let taken = member != self.address
            && group.mac.is_multicast()
            && self.subscriptions.subscribe(now_ms, member, group) != Subscribed::Full;
        if !taken {
            self.counters.subscriptions_refused += 1;
        }
        taken
    }

    /// Forgets lapsed subscriptions and learned MACs (call from the timer).
    pub fn expire(&mut self, now_ms: u64) {
        self.macs.expire(now_ms);
        self.subscriptions.expire(now_ms);
    }

    /// What the switch did.
    pub fn counters(&self) -> &SwitchCounters {
        &self.counters
    }

    /// MACs learned behind bridges.
    pub fn mac_table(&self) -> &MacTable {
        &self.macs
    }

    /// The network's capabilities (from the config): what the rules let a
    /// frame pass when their holder sends or receives it and the network's
    /// rules decide nothing.
    pub fn set_capabilities(&mut self, capabilities: Vec<Capability>) {
        self.capabilities = capabilities;
    }

    /// The network's flow rules (none: accept everything).
    pub fn set_rules(&mut self, rules: Option<RuleSet>) {
        self.rules = rules;
    }

    /// Counts a copy sent for a TEE or WATCH rule.
    pub fn count_copy(&mut self) {
        self.counters.copies_sent += 1;
    }

    /// The copy a TEE or WATCH rule asked for on the frame
    /// [`Switch::outbound`] just switched, or a WATCH rule on the frame
    /// [`Switch::receive`] just took (taken once).
    pub fn take_copy(&mut self) -> Option<CarbonCopy> {
        self.copy.take()
    }

    /// Whether the flow rules let this frame through, counting a drop by
    /// rule. `dest`: the receiving member, `None` for a multicast; `tags`:
    /// ours and the other member's grants. When the network's rules decide
    /// nothing, the capabilities of the sending member (us outbound, the
    /// sender inbound) are tried in turn, and the first that accepts
    /// decides (ZeroTier's `filterOutgoingPacket`/`filterIncomingPacket`).
    fn rules_allow(
        &mut self,
        inbound: bool,
        source: Address,
        dest: Option<Address>,
        f: &Frame<'_>,
        tags: MemberTags<'_>,
        segments: Option<(usize, usize)>,
    ) -> RuleVerdict {
        let Some(rules) = &self.rules else {
            return RuleVerdict::Pass;
        };
        let facts = FrameFacts {
            inbound,
            source,
            dest,
            mac_source: f.src(),
            mac_dest: f.dst(),
            ether_type: f.ether_type(),
            payload: f
                .bytes()
                .get(ETHERNET_HEADER_LEN_BYTES..)
                .unwrap_or_default(),
            segments,
        };
        let coin = &mut self.coin;
        let mut random = || {
            *coin ^= *coin << 13;
            *coin ^= *coin >> 7;
            *coin ^= *coin << 17;
            *coin as u32
        };
        let mut copy = None;
        let mut decision = evaluate(
            rules.rules(),
            self.address,
            &facts,
            &tags,
            &mut random,
            &mut copy,
        );
        let holder = if inbound { tags.remote } else { tags.local };
        if decision == Decision::NoMatch
            && let Some(holder) = holder
            && !holder.capabilities().is_empty()
            && let Some((d, cap_copy)) = capability_decision(
                &self.capabilities,
                holder,
                self.address,
                &facts,
                &tags,
                &mut random,
            )
        {
            decision = d;
            copy = cap_copy.or(copy);
        }
        // A copy goes only with a frame the rules let through (ZeroTier's
        // too). TEE copies are made by the sender only (the receiver's would
        // be a second one of the same frame); WATCH copies by both sides, so
        // a sender that skips its rules cannot hide a frame from the
        // observer.
        let accepted = matches!(decision, Decision::Accept { .. } | Decision::Redirect(_));
        self.copy = copy.filter(|c| accepted && (!inbound || c.watch));
        let dropped_at = match decision {
            Decision::Accept { super_accept } => {
                return if super_accept {
                    RuleVerdict::Target
                } else {
                    RuleVerdict::Pass
                };
            }
            Decision::Redirect(to) => {
                return if inbound {
                    RuleVerdict::Pass
                } else {
                    RuleVerdict::Redirect(to)
                };
            }
            Decision::Drop(index) => index,
            Decision::NoMatch => rules.rules().len(),
        };
        *self
            .counters
            .dropped_by_rule
            .entry(u32::try_from(dropped_at).unwrap_or(u32::MAX))
            .or_default() += 1;
        RuleVerdict::Drop
    }

    /// Members' subscriptions.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// Where `frame`, read from our TAP, goes, for rules that grant no one
    /// tags or capabilities.
    pub fn outbound(&mut self, now_ms: u64, frame: &[u8]) -> Outbound<'_> {
        self.outbound_granted(now_ms, frame, &NoGrants)
    }

    /// Where `frame`, read from our TAP, goes; `grants`: ours and those of
    /// the members whose certificates we hold, for the flow rules.
    pub fn outbound_granted(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        grants: &dyn GrantsOf,
    ) -> Outbound<'_> {
        self.outbound_segmented(now_ms, frame, None, grants)
    }

    /// Whether a super-frame whose segments are this long (after the
    /// Ethernet header: first, last) must be cut before the rules judge it:
    /// a frame-size match of the rules or of any capability falls one way
    /// for its full segments and the other for its last. Judged whole, it
    /// would pass or drop them all alike.
    pub fn size_rules_split(&self, segments: Option<(usize, usize)>) -> bool {
        let Some((first, last)) = segments.filter(|(f, l)| f != l) else {
            return false;
        };
        self.rules
            .as_ref()
            .is_some_and(|r| r.judges_sizes_apart(first, last))
            || self
                .capabilities
                .iter()
                .any(|c| c.rules.judges_sizes_apart(first, last))
    }

    /// As [`Switch::outbound_granted`], for a super-frame whose segments'
    /// sizes (after the Ethernet header: first, last) the size rules judge
    /// alike (see [`Switch::size_rules_split`]).
    pub fn outbound_segmented(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        segments: Option<(usize, usize)>,
        grants: &dyn GrantsOf,
    ) -> Outbound<'_> {
        match self.forwarding(now_ms, frame, segments, grants) {
            Forwarding::Unicast(to) => {
                self.counters.sent_unicast += 1;
                Outbound::Unicast(to)
            }
            Forwarding::Bridges => {
                self.counters.sent_to_bridges += 1;
                Outbound::Bridges(&self.recipients)
            }
            Forwarding::Multicast(group) => {
                self.counters.sent_multicast += 1;
                Outbound::Multicast {
                    group,
                    members: &self.recipients,
                }
            }
            Forwarding::Unresolved(group) => {
                self.counters.multicast_unresolved += 1;
                Outbound::Unresolved(group)
            }
            Forwarding::Answer => {
                self.counters.neighbors_answered += 1;
                Outbound::Answer(&self.answer)
            }
            Forwarding::Drop(reason) => {
                self.counters.drops.record(reason);
                Outbound::Drop(reason)
            }
        }
    }

    fn forwarding(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        segments: Option<(usize, usize)>,
        grants: &dyn GrantsOf,
    ) -> Forwarding {
        let Some(f) = Frame::parse(frame) else {
            return Forwarding::Drop(DropReason::Malformed);
        };
        let forwarding = self.switching(now_ms, &f);
        // The rules see where the frame goes: one member, or a multicast.
        let dest = match forwarding {
            Forwarding::Unicast(to) => Some(to),
            Forwarding::Bridges | Forwarding::Multicast(_) | Forwarding::Unresolved(_) => None,
            Forwarding::Answer | Forwarding::Drop(_) => return forwarding,
        };
        self.copy = None;
        let tags = MemberTags {
            local: grants.ours(),
            remote: dest.and_then(|d| grants.of(d)),
        };
        match self.rules_allow(false, self.address, dest, &f, tags, segments) {
            RuleVerdict::Drop => Forwarding::Drop(DropReason::FlowRule),
            RuleVerdict::Redirect(to) => {
                self.counters.redirected += 1;
                Forwarding::Unicast(to)
            }
            RuleVerdict::Pass | RuleVerdict::Target => forwarding,
        }
    }

    fn switching(&mut self, now_ms: u64, f: &Frame<'_>) -> Forwarding {
        let frame = f.bytes();
        let src = f.src();
        if src.is_multicast() {
            return Forwarding::Drop(DropReason::MulticastSource);
        }
        // Only a bridge sends for other MACs, and never for another member's.
        if src != self.mac && (!self.policy.active_bridge || src.member(self.network_id).is_some())
        {
            return Forwarding::Drop(DropReason::ForeignSource);
        }
        let dst = f.dst();
        if dst.is_multicast() {
            // Only IPv6 multicast (33:33:..) can be a neighbour solicitation.
            if dst.0[..2] == [0x33, 0x33]
                && ndp_emulation::answer(
                    self.network_id,
                    self.address,
                    &self.local_ips,
                    frame,
                    &mut self.answer,
                )
            {
                return Forwarding::Answer;
            }
            let group = f.multicast_group();
            if group == MulticastGroup::BROADCAST && !self.policy.enable_broadcast {
                return Forwarding::Drop(DropReason::BroadcastDisabled);
            }
            let limit = self.policy.multicast_limit as usize;
            let me = self.address;
            let bridges = &self.bridges;
            self.recipients.clear();
            self.recipients
                .extend(bridges.iter().copied().filter(|b| *b != me).take(limit));
            let room = limit - self.recipients.len();
            let only_bridges = self.recipients.len();
            self.recipients.extend(
                self.subscriptions
                    .members(now_ms, group)
                    .filter(|m| *m != me && !bridges.contains(m))
                    .take(room),
            );
            if self.recipients.len() == only_bridges && self.unowned_arp_is_broadcast(group) {
                let room = limit - self.recipients.len();
                self.recipients.extend(
                    self.subscriptions
                        .members(now_ms, MulticastGroup::BROADCAST)
                        .filter(|m| *m != me && !bridges.contains(m))
                        .take(room),
                );
            }
            return if limit == 0 {
                Forwarding::Drop(DropReason::NoRecipients)
            } else if self.recipients.is_empty() && self.unowned_arp_is_broadcast(group) {
                // Its owner may hold a bridged LAN's address that no member
                // announces: the broadcast group's members are asked for.
                Forwarding::Unresolved(MulticastGroup::BROADCAST)
            } else if self.recipients.is_empty() {
                Forwarding::Unresolved(group)
            } else {
                Forwarding::Multicast(group)
            };
        }
        if dst == self.mac {
            return Forwarding::Drop(DropReason::Loopback);
        }
        if let Some(member) = dst.member(self.network_id) {
            return Forwarding::Unicast(member);
        }
        if let Some(bridge) = self.macs.lookup(now_ms, dst) {
            return Forwarding::Unicast(bridge);
        }
        let me = self.address;
        self.recipients.clear();
        self.recipients
            .extend(self.bridges.iter().copied().filter(|b| *b != me));
        if self.recipients.is_empty() {
            Forwarding::Drop(DropReason::UnknownDestination)
        } else {
            Forwarding::Bridges
        }
    }

    /// Whether `frame`, sent to us by member `from`, goes to our TAP. Learns
    /// the source MAC if `from` is an active bridge sending for another MAC.
    pub fn inbound(&mut self, now_ms: u64, from: Address, frame: &[u8]) -> Inbound {
        self.inbound_granted(now_ms, from, frame, None, None)
    }

    /// As [`Switch::inbound`], with our grants and the sender's for the
    /// flow rules.
    pub fn inbound_granted(
        &mut self,
        now_ms: u64,
        from: Address,
        frame: &[u8],
        ours: Option<&Grants>,
        theirs: Option<&Grants>,
    ) -> Inbound {
        let tags = MemberTags {
            local: ours,
            remote: theirs,
        };
        self.inbound_tagged(now_ms, from, frame, tags, None)
    }

    fn inbound_tagged(
        &mut self,
        now_ms: u64,
        from: Address,
        frame: &[u8],
        tags: MemberTags<'_>,
        segments: Option<(usize, usize)>,
    ) -> Inbound {
        self.copy = None;
        match self.admit(now_ms, from, frame, tags, segments) {
            Ok(()) => {
                self.counters.delivered += 1;
                Inbound::Deliver
            }
            Err(reason) => {
                self.counters.drops.record(reason);
                Inbound::Drop(reason)
            }
        }
    }

    fn admit(
        &mut self,
        now_ms: u64,
        from: Address,
        frame: &[u8],
        tags: MemberTags<'_>,
        segments: Option<(usize, usize)>,
    ) -> Result<(), DropReason> {
        let f = Frame::parse(frame).ok_or(DropReason::Malformed)?;
        if from == self.address {
            return Err(DropReason::Loopback);
        }
        let src = f.src();
        if src.is_multicast() {
            return Err(DropReason::MulticastSource);
        }
        // Whether `from` may send from this MAC: its own, or any foreign
        // MAC if it is an active bridge (learned below); never another
        // member's (or ours).
        let source = match src.member(self.network_id) {
            Some(owner) if owner == from => Ok(false),
            Some(_) => Err(DropReason::SpoofedSource),
            None if self.is_bridge(from) => Ok(true),
            None => Err(DropReason::SpoofedSource),
        };
        let target = match self.rules_allow(true, from, Some(self.address), &f, tags, segments) {
            RuleVerdict::Drop => return Err(DropReason::FlowRule),
            RuleVerdict::Target => true,
            RuleVerdict::Pass | RuleVerdict::Redirect(_) => false,
        };
        if target {
            // We are a TEE/WATCH/REDIRECT target: taken whatever its
            // addressing and source (a receiver's WATCH copy carries the
            // sender's MAC), as ZeroTier's super-accept.
            return Ok(());
        }
        if source? {
            match self.macs.learn(now_ms, src, from) {
                Learned::Refreshed => {}
                Learned::Added => self.counters.macs_learned += 1,
                Learned::AddedEvictingOldest => {
                    self.counters.macs_learned += 1;
                    self.counters.macs_evicted += 1;
                }
            }
        }
        let dst = f.dst();
        if dst.is_multicast() {
            let group = f.multicast_group();
            if group == MulticastGroup::BROADCAST && !self.policy.enable_broadcast {
                return Err(DropReason::BroadcastDisabled);
            }
            if !self.policy.active_bridge
                && !self.local_groups.contains(&group)
                && !self.unowned_arp_is_broadcast(group)
            {
                return Err(DropReason::NotSubscribed);
            }
            return Ok(());
        }
        if dst != self.mac && !self.policy.active_bridge {
            return Err(DropReason::NotForUs);
        }
        Ok(())
    }
}

/// The first of `holder`'s capabilities (those the network defines, in id
/// order) that accepts or redirects the frame, with the copy it asks for; a
/// capability's DROP only ends that capability. Kept out of line: most
/// frames never get here, and the network's own evaluation stays inlined.
#[cold]
#[inline(never)]
fn capability_decision(
    capabilities: &[Capability],
    holder: &Grants,
    me: Address,
    facts: &FrameFacts<'_>,
    tags: &MemberTags<'_>,
    random: &mut dyn FnMut() -> u32,
) -> Option<(Decision, Option<CarbonCopy>)> {
    for id in holder.capabilities() {
        let Some(cap) = capabilities.iter().find(|c| c.id == *id) else {
            continue;
        };
        let mut copy = None;
        let d = evaluate(cap.rules.rules(), me, facts, tags, random, &mut copy);
        if matches!(d, Decision::Accept { .. } | Decision::Redirect(_)) {
            return Some((d, copy));
        }
    }
    None
}

/// Who holds which tags and capabilities, as the flow rules see it.
pub trait GrantsOf {
    /// Ours (from our certificate).
    fn ours(&self) -> Option<&Grants>;
    /// Those of `member`, if we hold its certificate.
    fn of(&self, member: Address) -> Option<&Grants>;
}

/// Nobody holds anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGrants;

impl GrantsOf for NoGrants {
    fn ours(&self) -> Option<&Grants> {
        None
    }
    fn of(&self, _: Address) -> Option<&Grants> {
        None
    }
}

/// What the flow rules say of one frame.
enum RuleVerdict {
    /// Accepted (or no rules).
    Pass,
    /// Accepted, and we are the target of a TEE, WATCH or REDIRECT.
    Target,
    /// Accepted, to go to this member instead (outbound).
    Redirect(Address),
    /// Dropped (and counted).
    Drop,
}

/// [`Outbound`] before borrowing the recipients.
enum Forwarding {
    Answer,
    Unicast(Address),
    Bridges,
    Multicast(MulticastGroup),
    Unresolved(MulticastGroup),
    Drop(DropReason),
}

#[cfg(test)]
mod tests;

/// Keyed hashers for the switch's unit tests (a fixed seed).
#[cfg(test)]
pub(crate) fn tests_hasher() -> HashState {
    use crate::rng::{NodeRng, SeedableRng};
    HashState::new(&mut NodeRng::seed_from_u64(7))
}
