//! Why frames were dropped, and what the switch forwarded: every dropped
//! frame is counted under exactly one reason.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Malformed,
    /// The source MAC is a multicast MAC (no station has one).
    MulticastSource,
    /// Outbound: the source MAC is not ours and we are not an active bridge
    /// (or, bridging, it is another member's MAC).
    ForeignSource,
    /// Inbound: the source MAC is not the sender's member MAC and the sender
    /// is not an active bridge (or, bridging, it claims another member's MAC or ours).
    SpoofedSource,
    /// A frame to ourselves (outbound), or one claiming to come from us (inbound).
    Loopback,
    /// Inbound, private network: from a member without a fresh certificate
    /// (none, one that no longer agrees with ours, or one revoked).
    NotAuthorized,
    /// Inbound unicast to a MAC that is not ours, and we are not a bridge.
    NotForUs,
    /// Plain broadcast while the network has broadcast disabled.
    BroadcastDisabled,
    /// Inbound multicast to a group we did not subscribe to.
    NotSubscribed,
    /// Outbound multicast that no member subscribed to: the roots named none
    /// in time (or the multicast limit is 0).
    NoRecipients,
    /// Outbound unicast to a MAC neither a member's nor learned, with no bridge to flood to.
    UnknownDestination,
    /// Outbound, private network: not sent to a recipient for which we hold
    /// no fresh certificate, none having come within the wait for one.
    RecipientNotAuthorized,
    /// The network's flow rules dropped it (or none accepted it).
    FlowRule,
}

impl DropReason {
    /// Every reason, in declaration order.
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::MulticastSource,
        DropReason::ForeignSource,
        DropReason::SpoofedSource,
        DropReason::Loopback,
        DropReason::NotAuthorized,
        DropReason::NotForUs,
        DropReason::BroadcastDisabled,
        DropReason::NotSubscribed,
        DropReason::NoRecipients,
        DropReason::UnknownDestination,
        DropReason::RecipientNotAuthorized,
        DropReason::FlowRule,
    ];

    /// The reason's name as counters and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::MulticastSource => "multicastSource",
            DropReason::ForeignSource => "foreignSource",
            DropReason::SpoofedSource => "spoofedSource",
            DropReason::Loopback => "loopback",
            DropReason::NotAuthorized => "notAuthorized",
            DropReason::NotForUs => "notForUs",
            DropReason::BroadcastDisabled => "broadcastDisabled",
            DropReason::NotSubscribed => "notSubscribed",
            DropReason::NoRecipients => "noRecipients",
            DropReason::UnknownDestination => "unknownDestination",
            DropReason::RecipientNotAuthorized => "recipientNotAuthorized",
            DropReason::FlowRule => "flowRule",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dropped frames, one counter per [`DropReason`].
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DropCounters {
    /// [`DropReason::Malformed`].
    pub malformed: u64,
    /// [`DropReason::MulticastSource`].
    pub multicast_source: u64,
    /// [`DropReason::ForeignSource`].
    pub foreign_source: u64,
    /// [`DropReason::SpoofedSource`].
    pub spoofed_source: u64,
    /// [`DropReason::Loopback`].
    pub loopback: u64,
    /// [`DropReason::NotAuthorized`].
    pub not_authorized: u64,
    /// [`DropReason::NotForUs`].
    pub not_for_us: u64,
    /// [`DropReason::BroadcastDisabled`].
    pub broadcast_disabled: u64,
    /// [`DropReason::NotSubscribed`].
    pub not_subscribed: u64,
    /// [`DropReason::NoRecipients`].
    pub no_recipients: u64,
    /// [`DropReason::UnknownDestination`].
    pub unknown_destination: u64,
    /// [`DropReason::RecipientNotAuthorized`].
    pub recipient_not_authorized: u64,
    /// [`DropReason::FlowRule`].
    pub flow_rule: u64,
}

impl DropCounters {
    /// Counts one frame dropped for `reason`.
    pub fn record(&mut self, reason: DropReason) {
        let slot = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::MulticastSource => &mut self.multicast_source,
            DropReason::ForeignSource => &mut self.foreign_source,
            DropReason::SpoofedSource => &mut self.spoofed_source,
            DropReason::Loopback => &mut self.loopback,
            DropReason::NotAuthorized => &mut self.not_authorized,
            DropReason::NotForUs => &mut self.not_for_us,
            DropReason::BroadcastDisabled => &mut self.broadcast_disabled,
            DropReason::NotSubscribed => &mut self.not_subscribed,
            DropReason::NoRecipients => &mut self.no_recipients,
            DropReason::UnknownDestination => &mut self.unknown_destination,
            DropReason::RecipientNotAuthorized => &mut self.recipient_not_authorized,
            DropReason::FlowRule => &mut self.flow_rule,
        };
        *slot += 1;
    }

    /// Frames dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Malformed => self.malformed,
            DropReason::MulticastSource => self.multicast_source,
            DropReason::ForeignSource => self.foreign_source,
            DropReason::SpoofedSource => self.spoofed_source,
            DropReason::Loopback => self.loopback,
            DropReason::NotAuthorized => self.not_authorized,
            DropReason::NotForUs => self.not_for_us,
            DropReason::BroadcastDisabled => self.broadcast_disabled,
            DropReason::NotSubscribed => self.not_subscribed,
            DropReason::NoRecipients => self.no_recipients,
            DropReason::UnknownDestination => self.unknown_destination,
            DropReason::RecipientNotAuthorized => self.recipient_not_authorized,
            DropReason::FlowRule => self.flow_rule,
        }
    }

    /// Frames dropped for any reason.
    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// What one network's switch did, exposed through the local API.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchCounters {
    /// Outbound frames sent to one member.
    pub sent_unicast: u64,
    /// Outbound frames to an unknown unicast MAC, sent to the active bridges.
    pub sent_to_bridges: u64,
    /// Outbound multicast frames sent (each counted once, whatever its recipients).
    pub sent_multicast: u64,
    /// Outbound multicast frames with no recipient known yet, held while the
    /// roots are asked (MULTICAST_GATHER); sent or dropped (`noRecipients`) later.
    pub multicast_unresolved: u64,
    /// Neighbour solicitations for members' derived IPv6 addresses answered
    /// locally (NDP emulation), not sent.
    pub neighbors_answered: u64,
    /// Inbound frames delivered to our TAP.
    pub delivered: u64,
    /// MACs newly learned (or moved) behind a bridge.
    pub macs_learned: u64,
    /// Learned MACs forgotten early because the table was full.
    pub macs_evicted: u64,
    /// Subscriptions refused: for a non-multicast MAC, or with the
    /// subscription table full.
    pub subscriptions_refused: u64,
    /// Outbound frames a REDIRECT rule sent to another member.
    pub redirected: u64,
    /// Copies sent for TEE and WATCH rules.
    pub copies_sent: u64,
    /// Dropped frames by reason.
    pub drops: DropCounters,
    /// Frames the flow rules dropped, by the index of the rule that
    /// dropped them; the rule count (one past the last) for frames no rule
    /// accepted. At most [`crate::constants::MAX_RULES`] + 1 entries.
    pub dropped_by_rule: BTreeMap<u32, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_named_like_it() {
        let mut c = DropCounters::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                c.record(*r);
            }
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(c.get(*r), i as u64 + 1, "{r}");
        }
        assert_eq!(c.total(), (1..=13).sum::<u64>());
        let json = serde_json::to_value(&c).unwrap();
        let obj = json.as_object().unwrap();
        assert_eq!(obj.len(), DropReason::ALL.len());
        for r in DropReason::ALL {
            assert!(obj.contains_key(r.as_str()), "{r}");
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        let s = serde_json::to_value(SwitchCounters::default()).unwrap();
        assert!(s.get("sentUnicast").is_some() && s["drops"].get("notForUs").is_some());
    }
}
