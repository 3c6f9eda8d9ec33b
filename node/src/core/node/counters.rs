//! What the node dropped and why, and what it relayed: every malformed or
//! refused packet is counted, never silently lost.

use serde::Serialize;

/// Packet counters, exposed through the local API.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams that are not packets or fragments.
    pub dropped_malformed: u64,
    /// Packets whose MAC did not verify.
    pub dropped_bad_mac: u64,
    /// Packets replayed or too old.
    pub dropped_replay: u64,
    /// Packets from or for an unknown peer that could not be handled.
    pub dropped_unknown_peer: u64,
    /// Payloads that did not decode.
    pub dropped_bad_payload: u64,
    /// HELLOs over the per-source rate limit.
    pub dropped_rate_limited: u64,
    /// Packets not for us that we could not or would not relay.
    pub dropped_unroutable: u64,
    /// Datagrams from an address inside one of our virtual networks (never a path).
    pub dropped_virtual_source: u64,
    /// Packets a root would not relay: their source never said HELLO from there.
    pub dropped_relay_refused: u64,
    /// Packets relayed for others.
    pub relayed: u64,
    /// World updates refused.
    pub refused_world_updates: u64,
    /// Frames dropped: not joined, not configured, or refused by the switch.
    pub dropped_frames: u64,
    /// Frames from members without a valid certificate of membership.
    pub dropped_frames_unauthorized: u64,
}
