//! Protocol constants, in one place, with units in their names.

/// Length of a node address in bytes (40 bits).
pub const ADDRESS_LEN_BYTES: usize = 5;
/// Length of a C25519 public key: X25519 public key then Ed25519 public key.
pub const C25519_PUBLIC_KEY_LEN_BYTES: usize = 64;
/// Length of a C25519 secret key: X25519 secret then Ed25519 seed.
pub const C25519_SECRET_KEY_LEN_BYTES: usize = 64;
/// Length of a signature: Ed25519 signature then the 32 signed digest bytes.
pub const C25519_SIGNATURE_LEN_BYTES: usize = 96;
/// Identity type byte of a C25519 identity (the only type there is).
pub const IDENTITY_TYPE_C25519: u8 = 0;

/// Scratch memory the memory-hard identity hash fills (2 MiB).
pub const IDENTITY_HASH_MEMORY_BYTES: usize = 2 * 1024 * 1024;
/// A key pair is acceptable only if the first digest byte is below this.
pub const IDENTITY_HASH_FIRST_BYTE_LIMIT: u8 = 17;

/// World type byte of a planet.
pub const WORLD_TYPE_PLANET: u8 = 1;
/// World type byte of a moon.
pub const WORLD_TYPE_MOON: u8 = 127;
/// Most roots a world may list.
pub const WORLD_MAX_ROOTS: usize = 4;
/// Most stable endpoints one root may list.
pub const WORLD_MAX_ENDPOINTS_PER_ROOT: usize = 32;
/// Bytes framing a world's signed form before it.
pub const WORLD_SIGNED_PREFIX: [u8; 8] = [0x7f; 8];
/// Bytes framing a world's signed form after it.
pub const WORLD_SIGNED_SUFFIX: [u8; 8] = [0xf7; 8];
/// Largest serialized world we accept (ZeroTier's ZT_WORLD_MAX_SERIALIZED_LENGTH).
pub const WORLD_MAX_SERIALIZED_LEN_BYTES: usize = 4096;

/// Endpoint type byte for IPv4 (then 4 address bytes, 2 port bytes).
pub const ENDPOINT_TYPE_IPV4: u8 = 0x04;
/// Endpoint type byte for IPv6 (then 16 address bytes, 2 port bytes).
pub const ENDPOINT_TYPE_IPV6: u8 = 0x06;

/// Bytes of a packet before its verb: counter, destination, source, flags, MAC.
pub const PACKET_HEADER_LEN_BYTES: usize = 35;
/// Shortest valid packet: the header and a verb byte.
pub const PACKET_MIN_LEN_BYTES: usize = 36;
/// Longest packet built or reassembled: a 64 KiB frame plus headers.
pub const PACKET_MAX_LEN_BYTES: usize = 65536 + 512;
/// Length of a packet's Poly1305 tag.
pub const MAC_LEN_BYTES: usize = 16;
/// Bytes of a fragment before its data: counter, destination, indicator, total, number, hops.
pub const FRAGMENT_HEADER_LEN_BYTES: usize = 17;
/// Byte 13 of a fragment (where a packet's source address starts; no address starts with it).
pub const FRAGMENT_INDICATOR: u8 = 0xff;
/// Most pieces one packet is cut into, head included.
pub const MAX_FRAGMENTS: usize = 64;
/// ZeroTier's default path MTU (UDP payload bytes): a common size, used by
/// tests; vnet's own sends follow each route's discovered MTU (§3.10).
pub const UDP_PAYLOAD_MTU_BYTES: usize = 1432;

// ---- Path MTU discovery (PROTOCOL.md §3.10) ----

/// The UDP payload every path is assumed to carry before discovery: IPv6's
/// minimum MTU (1,280) less its 40-byte header and UDP's 8, so it fits any
/// IPv4 or IPv6 path worth using. Relayed packets are cut to it.
pub const PATH_MTU_BASE_BYTES: u16 = 1232;
/// The largest UDP payload probed for: a 9,000-byte jumbo frame less IPv4
/// and UDP headers.
pub const PATH_MTU_MAX_BYTES: u16 = 8972;
/// A search stops once the largest size that passed and the smallest that
/// did not are this close.
pub const PATH_MTU_PRECISION_BYTES: u16 = 8;
/// Evenly spaced sizes probed per search round (besides common path MTUs).
pub const PATH_MTU_SPREAD_PROBES: u16 = 6;
/// A round's probes not answered within three round trips, but at least
/// this long, did not pass.
pub const PATH_MTU_PROBE_WAIT_MIN_MS: u64 = 100;
/// ... and at most this long (also the wait while the path's RTT is unknown).
pub const PATH_MTU_PROBE_WAIT_MAX_MS: u64 = 1_000;
/// The size in use is confirmed this often while the path is used, so a
/// path that narrows (a route change, a tunnel) is noticed.
pub const PATH_MTU_CONFIRM_INTERVAL_MS: u64 = 10_000;
/// A path in use is searched again this often, in case it widened.
pub const PATH_MTU_SEARCH_INTERVAL_MS: u64 = 600_000;
/// Length of a network id on the wire.
pub const NETWORK_ID_LEN_BYTES: usize = 8;
/// Room kept in front of a frame read from a TAP device so its EXT_FRAME
/// packet is built and sealed where the frame lies: packet header, verb,
/// network id.
pub const FRAME_HEADROOM_BYTES: usize = PACKET_HEADER_LEN_BYTES + 1 + NETWORK_ID_LEN_BYTES;
/// Bytes of a frame's offloads in an OFFLOAD_FRAME: flags, segmentation
/// kind, segment size.
pub const OFFLOAD_LEN_BYTES: usize = 4;
/// Room kept in front of a frame read from a TAP device, enough for an
/// OFFLOAD_FRAME's headers (packet header, verb, network id, offloads).
pub const OFFLOAD_FRAME_HEADROOM_BYTES: usize = FRAME_HEADROOM_BYTES + OFFLOAD_LEN_BYTES;
/// Bytes of the `virtio_net_hdr` a TAP device with `IFF_VNET_HDR` puts in
/// front of each frame.
pub const VIRTIO_NET_HDR_LEN_BYTES: usize = 10;
/// Longest super-frame: an IP packet of 64 KiB and its Ethernet header
/// (one VLAN tag).
pub const MAX_SUPER_FRAME_LEN_BYTES: usize = 65_535 + 14 + 4;
/// UDP datagrams of one flow joined into one super-frame for the TAP, at
/// most (as many as one UDP GSO send takes on any kernel with USO).
pub const MAX_JOINED_DATAGRAMS: usize = 64;
/// Longest frame joined from datagrams read from our TAP: its OFFLOAD_FRAME
/// fits one datagram on any path (`PATH_MTU_BASE_BYTES`), so a lost
/// datagram loses no more than the run's datagrams sent one by one would.
pub const MAX_JOINED_READ_LEN_BYTES: usize =
    PATH_MTU_BASE_BYTES as usize - OFFLOAD_FRAME_HEADROOM_BYTES;
/// Most datagrams in one transmit (Linux's UDP_MAX_SEGMENTS for GSO).
pub const MAX_SEGMENTS_PER_TRANSMIT: usize = 64;
/// Most bytes in one transmit (all its datagrams; one GSO send must fit an
/// IP packet's 64 KiB).
pub const MAX_TRANSMIT_LEN_BYTES: usize = 65_000;
/// Highest hop count a relayed packet may carry; relays drop what would exceed it.
pub const RELAY_MAX_HOPS: u8 = 3;
/// How long an incomplete packet waits for its missing pieces, in milliseconds.
pub const FRAGMENT_TIMEOUT_MS: u64 = 1000;
/// Most incomplete packets held for reassembly at once, per node.
pub const MAX_PENDING_REASSEMBLIES: usize = 64;
/// Most of those from one source host (IPv4 address or IPv6 /64); a source at
/// its quota evicts its own oldest, never another source's.
pub const MAX_PENDING_REASSEMBLIES_PER_SOURCE: usize = 16;
/// Size of a receiving key's replay window: counters `highest - (this - 1) ..= highest`
/// are accepted once each; a counter `this` or more below the highest is refused.
/// As large as WireGuard's (8,192) so reordering by a busy path is not mistaken for replay.
pub const REPLAY_WINDOW_PACKETS: u64 = 8192;
/// The replay window of a root server's sessions (`vnet-planet`): they carry
/// only control packets (a few a minute per peer), never a burst that could
/// arrive out of order by hundreds; the window then fits inline in the
/// session (no 1 KiB bitmap per session).
pub const ROOT_REPLAY_WINDOW_PACKETS: u64 = 128;

// ---- Peers, sessions and paths (PROTOCOL.md §3.4, node behaviour) ----

/// Wire protocol version announced in HELLO.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest ECHO payload answered.
pub const ECHO_MAX_LEN_BYTES: usize = 256;
/// Most addresses one WHOIS may ask for.
pub const WHOIS_MAX_ADDRESSES: usize = 64;
/// ERROR code: the object asked for is not known.
pub const ERROR_OBJECT_NOT_FOUND: u8 = 0x03;
/// A new handshake is started when the newest session is this old and
/// the peer is in use (user traffic, `PEER_ACTIVE_WINDOW_MS`)...
pub const REKEY_INTERVAL_MS: u64 = 120_000;
/// ...or this old while it is not: sessions that carry only keepalives and
/// control (a root's or a controller's with thousands of idle members) are
/// not rekeyed every two minutes; traffic starting on an older one rekeys at once.
pub const REKEY_IDLE_INTERVAL_MS: u64 = 600_000;
/// ...or when its send counter reaches this.
pub const REKEY_AFTER_PACKETS: u64 = 1 << 48;
/// A superseded session still receives for this long.
pub const KEY_OVERLAP_MS: u64 = 30_000;
/// Sessions kept per peer (the newest sends).
pub const MAX_SESSIONS_PER_PEER: usize = 3;
/// A session is wiped this long after it was made, used or not: keys never
/// outlive the idle rekey interval by more than two rekey intervals, even
/// when rekeys are blocked.
pub const SESSION_MAX_AGE_MS: u64 = REKEY_IDLE_INTERVAL_MS + 2 * REKEY_INTERVAL_MS;
/// A session answered to a HELLO and never confirmed by a packet under it
/// is dropped after this.
pub const SESSION_PENDING_TIMEOUT_MS: u64 = 30_000;
/// A HELLO not answered is sent again after this.
pub const HELLO_RETRY_INTERVAL_MS: u64 = 1_000;
/// A handshake not completed is abandoned (its ephemeral wiped) after this.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Most HELLOs (targets) one handshake attempt sends.
pub const MAX_HELLO_TARGETS: usize = 16;
/// HELLOs accepted per second from one source IP (token bucket rate).
pub const HELLO_RATE_PER_SECOND: u64 = 10;
/// ...and its burst.
pub const HELLO_BURST: u32 = 20;
/// WHOIS is sent again after this (like ARP).
pub const WHOIS_RETRY_INTERVAL_MS: u64 = 500;
/// WHOIS gives up after this.
pub const WHOIS_TIMEOUT_MS: u64 = 5_000;
/// Most addresses a node asks the roots about at once (the WHOIS table).
pub const MAX_PENDING_WHOIS: usize = 1_024;
/// Most askers a root remembers for one WHOIS it passed on to other roots.
pub const MAX_WHOIS_ASKERS: usize = 8;
/// Identity checks (the memory-hard hash) run per second at most, node-wide,
/// and their burst, unless `identityChecksPerSecond` in local.conf says otherwise.
pub const IDENTITY_CHECKS_PER_SECOND: u32 = 20;
/// The most `identityChecksPerSecond` may be set to.
pub const MAX_IDENTITY_CHECKS_PER_SECOND: u32 = 1_000;
/// Identity checks waiting for the budget; past this a new one replaces a
/// random waiting one (a flood cannot keep a legitimate node out for long).
pub const MAX_PENDING_IDENTITY_CHECKS: usize = 64;
/// Identities remembered as asked for (to spot a retried HELLO after its
/// first request was pushed out of a full check queue).
pub const MAX_ASKED_IDENTITIES: usize = 4_096;
/// Identities already verified, remembered (address -> public key) so they
/// are never hashed again.
pub const MAX_VERIFIED_IDENTITIES: usize = 16_384;
/// Identities that failed the check, remembered so they are never hashed again.
pub const MAX_FAILED_IDENTITIES: usize = 4_096;
/// Most source IPs (IPv6: /64 prefixes) with a HELLO or relay budget tracked.
pub const MAX_RATE_LIMITED_SOURCES: usize = 16_384;
/// Most peers a node holds; past this no new peer is admitted until idle
/// ones are forgotten.
pub const MAX_PEERS: usize = 65_536;
/// Most destinations a root remembers as reached through another root.
pub const MAX_RELAY_ROUTES: usize = 65_536;
/// Idle peers and stale routes are swept this often.
pub const SWEEP_INTERVAL_MS: u64 = 1_000;
/// Most peers a root remembers as relaying for others (moons, other roots).
pub const MAX_RELAYERS: usize = 16;
/// A HELLO budget of a source idle this long is full again and forgotten.
pub const HELLO_BUCKET_IDLE_MS: u64 = 10_000;
/// A route learned from a packet relayed by another root is kept this long.
pub const RELAY_ROUTE_TTL_MS: u64 = 300_000;
/// Messages held per peer while waiting for its identity or a session.
pub const MAX_QUEUED_PER_PEER: usize = 32;
/// Paths remembered per peer.
pub const MAX_PATHS_PER_PEER: usize = 16;
/// Keepalive on idle paths, so NAT mappings do not expire (ZeroTier: 14 s).
pub const PATH_KEEPALIVE_INTERVAL_MS: u64 = 14_000;
/// Probe interval on the paths of a peer in use, and on unconfirmed candidates.
pub const PATH_PROBE_INTERVAL_ACTIVE_MS: u64 = 1_000;
/// A path of a peer in use is dead after this much silence.
pub const PATH_ACTIVE_TIMEOUT_MS: u64 = 5_000;
/// A send not answered on its path this long makes the path suspect: it is
/// probed every [`PATH_QUICK_PROBE_INTERVAL_MS`] and ranks after paths that answer.
pub const PATH_QUICK_PROBE_AFTER_MS: u64 = 250;
/// Interval of those quick probes.
pub const PATH_QUICK_PROBE_INTERVAL_MS: u64 = 250;
/// A path whose sends went unanswered this long (3 quick probes included) is
/// dead at once, and traffic falls back to the relay while it is re-probed.
pub const PATH_ANSWER_TIMEOUT_MS: u64 = 1_000;
/// A path of an idle peer is dead (and forgotten) after this much silence.
pub const PATH_IDLE_TIMEOUT_MS: u64 = 45_000;
/// Roots whose latency is within this of the nearest root's count as
/// equally near (plus [`ROOT_NEAR_SLACK_PERCENT`] of it): among them each
/// node picks by a hash of its address and theirs, so nodes spread evenly
/// over equally near roots instead of all taking the lowest address.
pub const ROOT_NEAR_SLACK_MS: u64 = 5;
/// See [`ROOT_NEAR_SLACK_MS`] (percent of the nearest root's latency).
pub const ROOT_NEAR_SLACK_PERCENT: u64 = 25;
/// A root or busy peer silent this long on every path gets a new HELLO (it may have restarted).
pub const SILENT_PEER_HELLO_AFTER_MS: u64 = 2_000;
/// A peer is in use if user traffic went either way this recently.
pub const PEER_ACTIVE_WINDOW_MS: u64 = 10_000;
/// Sessions with a peer not heard from for this long are not renewed, and a
/// non-root peer idle this long is forgotten (sessions wiped).
pub const PEER_IDLE_TIMEOUT_MS: u64 = 300_000;
/// PUSH_DIRECT_PATHS accepted from one peer: one per this interval (burst 2).
pub const PUSH_DIRECT_PATHS_MIN_INTERVAL_MS: u64 = 5_000;
/// A pushed candidate path is probed at most this many times without an answer.
pub const MAX_UNANSWERED_CANDIDATE_PROBES: u32 = 5;
/// Direct-path candidates are pushed to a peer this often.
pub const PUSH_DIRECT_PATHS_INTERVAL_MS: u64 = 120_000;
/// A root introduces the same pair of nodes at most this often.
pub const RENDEZVOUS_INTERVAL_MS: u64 = 5_000;
/// The driver calls the timer at least this often.
pub const TIMER_TICK_MS: u64 = 250;

// ---- Getting through NAT (PROTOCOL.md §3.9, §3.10) ----

/// A node that has heard no UDP from any root this long relays through TCP.
pub const TCP_FALLBACK_AFTER_MS: u64 = 4_000;
/// Over TCP, a root whose connection does not answer is left for the next after this.
pub const TCP_RELAY_ROOT_TRY_MS: u64 = 10_000;
/// While relaying through TCP, the roots are probed over UDP this often (to go back).
pub const TCP_RELAY_UDP_RETRY_INTERVAL_MS: u64 = 5_000;
/// Packets a root relays per second for one source address (token bucket
/// rate): about 10 Gbit/s of full datagrams, so one relayed TCP flow of
/// super-frames is not cut short, while a flood from one address is...
pub const RELAY_RATE_PACKETS_PER_SECOND: u64 = 1_000_000;
/// ...and its burst (a few super-frames' worth of fragments).
pub const RELAY_BURST_PACKETS: u32 = 100_000;
/// A root's relay threads forward with a table (who talks from where, where
/// each peer is reached) the node rebuilds this often...
pub const RELAY_TABLE_REFRESH_MS: u64 = 250;
/// ...and trust it this long after it was built: past that (the engine is
/// stalled) they hand every datagram to the node.
pub const RELAY_TABLE_TTL_MS: u64 = 2_000;
/// Relay threads a root runs besides its engine when `relayThreads` is not
/// set: one per core beyond the first, at most this many.
pub const RELAY_THREADS_MAX_DEFAULT: usize = 3;
/// Relay threads a root may be asked to run (`relayThreads`).
pub const RELAY_THREADS_MAX: usize = 64;
/// Flush threads a member runs besides its engine when `flushThreads` is
/// not set: one per core beyond two, at most this many.
pub const FLUSH_THREADS_MAX_DEFAULT: usize = 3;
/// Flush threads a member may be asked to run (`flushThreads`).
pub const FLUSH_THREADS_MAX: usize = 64;
/// The longest a member's engine may be asked to poll without sleeping
/// after traffic (`busyPollMicros`): one second.
pub const BUSY_POLL_MICROS_MAX: u64 = 1_000_000;
/// A restarted root says HELLO to at most this many peers it knew (at their
/// last path) per timer tick, until it has greeted them all.
pub const READMIT_HELLOS_PER_TICK: usize = 500;
/// A peer relayed this long, with an easy NAT facing our hard one, gets a birthday punch.
pub const PUNCH_AFTER_RELAYED_MS: u64 = 1_000;
/// Sockets the hard-NAT side opens for a birthday punch (one NAT mapping each).
pub const PUNCH_SOCKETS: usize = 256;
/// Random ports the easy side probes, at most, per punch (NAT table entries it makes).
pub const PUNCH_PROBES_MAX: usize = 2048;
/// ...sent this many per timer tick (2048 in 1 s).
pub const PUNCH_PROBES_PER_TICK: usize = 512;
/// A punch ends this long after it started, hit or not; its sockets are closed.
pub const PUNCH_WINDOW_MS: u64 = 3_000;
/// After a failed punch the next waits this long, doubling per failure...
pub const PUNCH_BACKOFF_BASE_MS: u64 = 30_000;
/// ...up to this.
pub const PUNCH_BACKOFF_MAX_MS: u64 = 600_000;

// ---- Virtual networks: configs and certificates (PROTOCOL.md §4) ----

/// Two certificates of membership agree when issued at most this far apart;
/// a member no longer refreshed is cut off within this plus the refresh interval.
pub const CERTIFICATE_MAX_DELTA_MS: u64 = 240_000;
/// The controller re-issues certificates to authorized members this often
/// (four chances per max delta; one signature and one packet per member: a
/// controller of 10,000 members signs 167 a second).
pub const CERTIFICATE_REFRESH_INTERVAL_MS: u64 = 60_000;
/// Most revocations a member holds, and a controller keeps, per network.
pub const MAX_REVOCATIONS_PER_NETWORK: usize = 1_024;
/// Most revocations in one NETWORK_CREDENTIALS (and signatures of them
/// checked per packet).
pub const MAX_REVOCATIONS_PER_PUSH: usize = 8;
/// A member we want a certificate from gets ours again at most this often.
pub const CREDENTIALS_RESEND_INTERVAL_MS: u64 = 1_000;
/// A member that sends us again a certificate we hold (it sends its own when
/// it lacks ours: a push of ours was lost) gets ours again, at most this
/// often; longer than a round trip, so two members never keep answering
/// each other.
pub const CREDENTIALS_ANSWER_INTERVAL_MS: u64 = 5_000;
/// How long a frame waits for its recipient's fresh certificate before it is dropped.
pub const FRAME_AWAITING_CREDENTIALS_MS: u64 = 2_000;
/// Most members whose certificate frames wait for, per network.
pub const MAX_MEMBERS_AWAITING_CREDENTIALS: usize = 32;
/// Most frames waiting for one member's certificate (the newest are kept).
pub const MAX_FRAMES_AWAITING_CREDENTIALS_PER_MEMBER: usize = 8;
/// Most certificate signatures checked per NETWORK_CREDENTIALS packet.
pub const MAX_CREDENTIAL_CHECKS_PER_PACKET: usize = 4;
/// Most certificate signatures checked per peer and network per second.
pub const CREDENTIAL_CHECKS_PER_PEER_PER_SECOND: u32 = 8;
/// Most peers whose signature budget is tracked per network at once.
pub const MAX_CREDENTIAL_BUDGETS: usize = 1_024;
/// Largest encoded network config.
pub const NETWORK_CONFIG_MAX_BYTES: usize = 64 * 1024;
/// Most rules in a network's rule list (ZeroTier's limit too).
pub const MAX_RULES: usize = 1_024;
/// Most rules in one capability (ZeroTier's limit too).
pub const MAX_CAPABILITY_RULES: usize = 64;
/// Most capabilities a network defines (ZeroTier's per-member limit).
pub const MAX_NETWORK_CAPABILITIES: usize = 128;
/// Most tags a network defines (ZeroTier's per-member limit).
pub const MAX_NETWORK_TAGS: usize = 128;
/// Most tags granted to one member (ZeroTier's limit too).
pub const MAX_MEMBER_TAGS: usize = 128;
/// Most capabilities granted to one member (ZeroTier's limit too).
pub const MAX_MEMBER_CAPABILITIES: usize = 128;
/// Most rules a network's config carries, its own and its capabilities'
/// together, so that a config stays well under [`NETWORK_CONFIG_MAX_BYTES`].
pub const MAX_CONFIG_RULES: usize = 1_024;
/// Config bytes per signed NETWORK_CONFIG chunk (one datagram each).
pub const NETWORK_CONFIG_CHUNK_MAX_BYTES: usize = 1024;
/// Smallest virtual MTU.
pub const NETWORK_MTU_MIN_BYTES: u16 = 1280;
/// Largest virtual MTU.
pub const NETWORK_MTU_MAX_BYTES: u16 = 10_000;
/// Default virtual MTU (ZeroTier's).
pub const NETWORK_MTU_DEFAULT_BYTES: u16 = 2800;
/// Longest frame a TAP device gives: the largest virtual MTU, the Ethernet
/// header and one VLAN tag.
pub const MAX_TAP_FRAME_LEN_BYTES: usize = NETWORK_MTU_MAX_BYTES as usize + 14 + 4;

/// Prefix length of a member's RFC 4193 address (`v6AssignMode.rfc4193`:
/// `fd` + network id + `9993` + member address), as ZeroTier gives it.
pub const RFC4193_PREFIX_LEN: u8 = 88;
/// Prefix length of a 6PLANE address (`v6AssignMode.6plane`: `fc` + folded
/// network id + member address + `::1`): the route covering every member.
pub const SIXPLANE_PREFIX_LEN: u8 = 40;
/// Prefix length of the block each member owns under 6PLANE.
pub const SIXPLANE_MEMBER_PREFIX_LEN: u8 = 80;

/// Longest metadata a member sends with NETWORK_CONFIG_REQUEST, in bytes.
pub const REQUEST_META_MAX_BYTES: usize = 4096;
/// Longest join key a member presents, in bytes.
pub const JOIN_KEY_MAX_LEN_BYTES: usize = 128;
/// Most routes a member advertises to its controller (ZeroTier's
/// `ZT_MAX_NETWORK_ROUTES`).
pub const MAX_ADVERTISED_ROUTES: usize = 64;

// ---- Virtual switch (proto/src/switch) ----

/// Shortest Ethernet frame switched: destination MAC, source MAC, ethertype.
pub const ETHERNET_HEADER_LEN_BYTES: usize = 14;
/// A MAC learned behind a bridge is forgotten after this long without a frame from it.
pub const MAC_TABLE_ENTRY_TTL_MS: u64 = 300_000;
/// Most MACs learned behind bridges, per network; a full table forgets the least recently seen.
pub const MAX_LEARNED_MACS: usize = 8192;
/// A member's multicast subscription lapses unless renewed (by a config listing it) within this (ZeroTier: 600 s).
pub const MULTICAST_SUBSCRIPTION_TTL_MS: u64 = 600_000;
/// Most (group, member) subscriptions held per network; more are refused until some lapse.
pub const MAX_MULTICAST_SUBSCRIPTIONS: usize = 65_536;
/// Most recipients of one multicast frame unless the network says otherwise (ZeroTier's default).
pub const DEFAULT_MULTICAST_LIMIT: u32 = 32;

// ---- Multicast directory on the roots (PROTOCOL.md §4.6) ----

/// Most (network, group) entries in one MULTICAST_LIKE.
pub const MULTICAST_LIKE_MAX_GROUPS: usize = 64;
/// Most members named in one OK(MULTICAST_GATHER) (fits the 1,232-byte base MTU).
pub const MULTICAST_GATHER_MAX_RESULTS: usize = 128;
/// A member tells its roots what it listens to this often, and at once when
/// that changes or a root session is new (ZeroTier: 120 s).
pub const MULTICAST_ANNOUNCE_INTERVAL_MS: u64 = 120_000;
/// With no recipient of a group known, a member asks the roots again at most this often.
pub const MULTICAST_GATHER_RETRY_MS: u64 = 1_000;
/// With fewer recipients known than the limit, a member asks again at most this often.
pub const MULTICAST_GATHER_REFRESH_MS: u64 = 60_000;
/// A multicast frame waits at most this long for the roots to name its recipients.
pub const MULTICAST_GATHER_WAIT_MS: u64 = 2_000;
/// Most multicast frames waiting for recipients, per network; older ones are dropped.
pub const MAX_FRAMES_AWAITING_GATHER: usize = 32;
/// Most groups per network whose last gather a member remembers.
pub const MAX_GATHERS_TRACKED: usize = 1_024;
/// Most groups whose gather a root has passed on to the other roots at once.
pub const MAX_PASSED_ON_GATHERS: usize = 1_024;
/// Most members waiting for one passed-on gather (older ones are forgotten).
pub const MAX_GATHER_ASKERS: usize = 8;
/// Most (network, group, member) subscriptions a root holds; more are
/// refused until some lapse (`MULTICAST_SUBSCRIPTION_TTL_MS`).
pub const MAX_ROOT_MULTICAST_SUBSCRIPTIONS: usize = 262_144;
/// Most of those one member holds (a member announces broadcast, all-nodes
/// and one group per address on each network it is in): a stranger with
/// one identity cannot fill the directory for everyone.
pub const MAX_ROOT_MULTICAST_SUBSCRIPTIONS_PER_MEMBER: usize = 1_024;
/// ERROR code: access to the network denied (private, not authorized).
pub const ERROR_NETWORK_ACCESS_DENIED: u8 = 0x06;
/// A member asks for its config this often until it gets one.
pub const NETWORK_CONFIG_REQUEST_INTERVAL_MS: u64 = 2_000;
/// A configured member asks again this often (the controller pushes
/// changes and refreshes certificates; this only heals a lost push, and
/// keeps the member on the controller's list, `PEER_IDLE_TIMEOUT_MS`).
pub const NETWORK_CONFIG_PULL_INTERVAL_MS: u64 = 120_000;
/// Most DNS servers a network config names (ZeroTier's `ZT_MAX_DNS_SERVERS`).
pub const DNS_SERVERS_MAX: usize = 4;
/// Longest DNS search domain a network config names, in bytes.
pub const DNS_DOMAIN_MAX_LEN_BYTES: usize = 128;
/// Shortest pull interval a config may ask for (`pullIntervalMs`).
pub const NETWORK_CONFIG_PULL_MIN_INTERVAL_MS: u64 = 5_000;
/// Config requests a controller node holds for the driver to answer at most;
/// beyond it new ones are dropped (and counted) until answers come: the
/// member simply asks again.
pub const MAX_PENDING_CONFIG_REQUESTS: usize = 4_096;
/// A restarted controller pushes configs to the members it remembers this
/// many a timer tick (2,000 a second), so 10,000 members cost it no burst.
pub const STARTUP_PUSHES_PER_TICK: usize = 500;

// ---- TCP relay (datagrams over TCP to a root when UDP is blocked) ----

/// Bytes before each relayed datagram: content type, version, length (a TLS 1.2 record header).
pub const TLS_RECORD_HEADER_LEN_BYTES: usize = 5;
/// Content type byte of every record: TLS application data.
pub const TLS_RECORD_CONTENT_TYPE: u8 = 0x17;
/// Version bytes of every record: TLS 1.2.
pub const TLS_RECORD_VERSION: [u8; 2] = [0x03, 0x03];
/// Longest datagram one record carries: TLS 1.2's ciphertext limit (2^14 + 2048),
/// so records stay plausible TLS; datagrams are at most a path MTU long anyway.
pub const TLS_RECORD_MAX_PAYLOAD_BYTES: usize = 16384 + 2048;
/// Most relay connections a root holds at once; more are closed as they come.
pub const TCP_RELAY_MAX_CONNECTIONS: usize = 1024;
/// A relay connection that brings no record for this long is closed.
pub const TCP_RELAY_IDLE_TIMEOUT_MS: u64 = 120_000;
/// A connection that accepts no bytes for this long while we write is closed.
pub const TCP_RELAY_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Records a client queues for sending on its connection; more are dropped, like UDP under load.
pub const TCP_RELAY_QUEUE_RECORDS: usize = 1024;
/// Records held while a client connection is being made; more are dropped.
pub const TCP_RELAY_CONNECTING_QUEUE_RECORDS: usize = 16;
/// A client gives up connecting after this.
pub const TCP_RELAY_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// A client waits this long before connecting again after a failure, doubling each time...
pub const TCP_RELAY_RETRY_MIN_MS: u64 = 1_000;
/// ...up to this.
pub const TCP_RELAY_RETRY_MAX_MS: u64 = 30_000;

// ---- TCP relay: what one stranger can hold on a root (audit A17) ----

/// Most relay connections a root holds from one source IPv4 address or IPv6
/// /64 ([`TCP_RELAY_IPV6_PREFIX_LEN_BITS`]); more are closed at once.
pub const TCP_RELAY_MAX_CONNECTIONS_PER_IP: usize = 8;
/// IPv6 sources are counted per prefix of this length (one subscriber's allocation).
pub const TCP_RELAY_IPV6_PREFIX_LEN_BITS: u32 = 64;
/// A relay connection whose first record is not in within this long is closed
/// (that record must be a HELLO).
pub const TCP_RELAY_HELLO_TIMEOUT_MS: u64 = 5_000;
/// A record once begun must be complete within this long, so trickled bytes
/// never keep a connection open.
pub const TCP_RELAY_RECORD_TIMEOUT_MS: u64 = 5_000;
/// Bytes (records with their headers) a root queues for sending per
/// connection, those being written included; more are dropped, like UDP under load.
pub const TCP_RELAY_QUEUE_BYTES: usize = 256 * 1024;
