//! What the node dropped and why, and what it relayed: every malformed or
//! refused packet is counted, never silently lost.

use serde::Serialize;

/// Packet counters, exposed through the local API.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Datagrams received.
    pub received: u64,
    /// Bytes of the datagrams received.
    pub received_bytes: u64,
    /// Datagrams sent by the engine (each segment of a batch counts).
    pub sent: u64,
    /// Bytes of the datagrams sent.
    pub sent_bytes: u64,
    /// PATH_MTU_PROBE datagrams sent (each size twice).
    pub path_mtu_probes_sent: u64,
    /// PATH_MTU_PROBE sizes answered (the path carries them).
    pub path_mtu_probes_answered: u64,
    /// Paths whose discovered MTU stopped passing and fell back to the base.
    pub path_mtu_lowered: u64,
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
    /// HELLOs not newer than the last one accepted from that identity (replays).
    pub dropped_stale_hello: u64,
    /// HELLOs from identities that failed the identity check before.
    pub dropped_identity_failed: u64,
    /// Identity checks pushed out of the waiting queue by newer ones (a flood).
    pub dropped_identity_budget: u64,
    /// Identity checks (memory-hard hashes) run.
    pub identity_checks: u64,
    /// Config requests not passed to the controller: too many were waiting
    /// for its answers (`MAX_PENDING_CONFIG_REQUESTS`).
    pub dropped_config_requests_busy: u64,
    /// WHOIS not asked (the WHOIS table is full).
    pub dropped_whois_table_full: u64,
    /// WHOIS received by a node that is no root (never answered).
    pub dropped_whois_not_root: u64,
    /// WHOIS a root passed on to other roots.
    pub whois_passed_on: u64,
    /// PUSH_DIRECT_PATHS ignored (to a root, or over the sender's budget).
    pub dropped_push_ignored: u64,
    /// New peers refused: the peer table is full.
    pub dropped_peer_table_full: u64,
    /// Idle peers forgotten.
    pub forgotten_peers: u64,
    /// Peers whose timer work ran (a tick runs only the peers due).
    pub peer_timer_runs: u64,
    /// Packets relayed for others.
    pub relayed: u64,
    /// Of `relayed`, those a root's relay threads forwarded.
    pub relayed_by_threads: u64,
    /// World updates refused.
    pub refused_world_updates: u64,
    /// Frames dropped: not joined, not configured, or refused by the switch.
    pub dropped_frames: u64,
    /// Session packets sealed with AES-256-GCM (to peers that announced it).
    pub sealed_aes_gcm: u64,
    /// Session packets opened that were sealed with AES-256-GCM.
    pub opened_aes_gcm: u64,
    /// Session packets accepted after a later packet of their session
    /// (reordered on the way or by the sender).
    pub received_late: u64,
    /// Outboxes a member's flush threads sent and wrote (service).
    pub flushed_by_threads: u64,
    /// TAP writes of UDP datagrams of one flow joined into one USO
    /// super-frame (service).
    pub udp_joined_writes: u64,
    /// Datagrams those writes carried.
    pub udp_datagrams_joined: u64,
    /// Super-frames joined from UDP datagrams of one flow read from our
    /// TAP one after another (service).
    pub udp_joined_reads: u64,
    /// Datagrams those super-frames carried.
    pub udp_datagrams_joined_read: u64,
    /// Super-frames (TCP segmentation left to the receiver) sent whole in
    /// an OFFLOAD_FRAME.
    pub super_frames_sent: u64,
    /// Super-frames received in an OFFLOAD_FRAME and handed to the TAP.
    pub super_frames_received: u64,
    /// Super-frames (from our TAP or a peer) cut here so the flow rules
    /// judge each segment: a frame-size match told their full and last
    /// segments apart.
    pub super_frames_split_by_rules: u64,
    /// Super-frames cut into segments here for a peer that does not take
    /// OFFLOAD_FRAME.
    pub super_frames_cut: u64,
    /// OFFLOAD_FRAMEs whose offloads do not fit their frame (also counted
    /// in `dropped_frames`).
    pub dropped_bad_offloads: u64,
    /// Frames from our own TAP whose `virtio_net_hdr` we could not use (an
    /// offload we did not enable, or one that does not fit the frame).
    pub dropped_tap_offloads: u64,
    /// Frames from members without a valid certificate of membership, or
    /// whose membership the controller revoked (private networks).
    pub dropped_frames_unauthorized: u64,
    /// Frames not sent to a member without a fresh certificate (private
    /// networks): revoked, or none came within `FRAME_AWAITING_CREDENTIALS_MS`.
    pub dropped_frames_to_unauthorized: u64,
    /// Certificates ignored unchecked: for a network we are not configured on,
    /// a public one, or stale against ours.
    pub dropped_credentials_irrelevant: u64,
    /// Certificates not checked: over the per-packet or per-peer signature budget.
    pub dropped_credentials_rate_limited: u64,
    /// Certificate and revocation signatures checked (each costs an
    /// Ed25519 verification).
    pub credential_signatures_checked: u64,
    /// Certificates refused: the controller revoked them (PROTOCOL.md §4.7).
    pub dropped_credentials_revoked: u64,
    /// Our own certificates refreshed by the controller.
    pub certificates_refreshed: u64,
    /// On a controller: certificates issued by refresh (one signature each).
    pub certificates_issued: u64,
    /// Revocations verified and applied.
    pub revocations_applied: u64,
    /// MULTICAST_LIKE packets sent to roots (what we listen to).
    pub multicast_likes_sent: u64,
    /// MULTICAST_GATHERs asked (of a root, or of our own directory on a root).
    pub multicast_gathers_sent: u64,
    /// On a root: MULTICAST_GATHERs answered.
    pub multicast_gathers_answered: u64,
    /// On a root: MULTICAST_GATHERs passed on to the other roots.
    pub multicast_gathers_passed_on: u64,
    /// MULTICAST_LIKE or MULTICAST_GATHER received by a node that is no root.
    pub dropped_multicast_not_root: u64,
    /// On a root: subscriptions refused, the multicast directory being full
    /// (`MAX_ROOT_MULTICAST_SUBSCRIPTIONS`).
    pub dropped_multicast_directory_full: u64,
    /// On a root: subscriptions refused, the member holding its share of
    /// the directory (`MAX_ROOT_MULTICAST_SUBSCRIPTIONS_PER_MEMBER`).
    pub dropped_multicast_member_quota: u64,
    /// What reassembly of fragmented packets did, drops by reason (copied
    /// every tick).
    pub reassembly: crate::fragment::ReassemblyStats,
}

/// Sizes of the tables a stranger can make grow, each with a fixed bound
/// (`GET /status` `tables`).
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableSizes {
    /// Peers held (`MAX_PEERS`).
    pub peers: usize,
    /// Addresses asked about by WHOIS (`MAX_PENDING_WHOIS`).
    pub whois: usize,
    /// Sources with a HELLO budget (`MAX_RATE_LIMITED_SOURCES`).
    pub hello_buckets: usize,
    /// Sources with a relay budget (`MAX_RATE_LIMITED_SOURCES`).
    pub relay_buckets: usize,
    /// On a root: its peers' confirmed paths it relays from (at most
    /// `MAX_PATHS_PER_PEER` a peer).
    pub known_paths: usize,
    /// On a root: destinations reached through another root (`MAX_RELAY_ROUTES`).
    pub relay_routes: usize,
    /// Pairs introduced lately (`MAX_RELAY_ROUTES`).
    pub rendezvous: usize,
    /// Identity checks waiting (`MAX_PENDING_IDENTITY_CHECKS`).
    pub identity_checks_waiting: usize,
    /// Packets being reassembled (`MAX_PENDING_REASSEMBLIES`).
    pub reassembly: usize,
    /// Entries of the peers' timer heap (at most four per peer plus 1,024).
    pub timer_heap: usize,
    /// On a root: (network, group, member) subscriptions held
    /// (`MAX_ROOT_MULTICAST_SUBSCRIPTIONS`).
    pub multicast_subscriptions: usize,
}
