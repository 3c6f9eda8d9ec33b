//! Verbs: the first byte of a packet's body, naming what the payload is (§3.5).

/// A byte that names no verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown verb 0x{0:02x}")]
pub struct UnknownVerb(pub u8);

/// What a packet carries; the code is byte 35 of the packet.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// Keepalive, no payload.
    Nop = 0x00,
    /// Handshake opener; the only verb sent in clear.
    Hello = 0x01,
    /// Error reply: in-re verb, in-re counter, error code, data.
    Error = 0x02,
    /// Success reply: in-re verb, in-re counter, verb-specific data.
    Ok = 0x03,
    /// Asks for the identities of up to 64 addresses.
    Whois = 0x04,
    /// Tells a peer where to reach another peer directly.
    Rendezvous = 0x05,
    /// Virtual network frame (reserved for virtual networks).
    Frame = 0x06,
    /// Virtual network frame with extended fields (reserved for virtual networks).
    ExtFrame = 0x07,
    /// Multicast virtual network frame (reserved for virtual networks).
    MulticastFrame = 0x08,
    /// Network configuration request (reserved for virtual networks).
    NetworkConfigRequest = 0x09,
    /// Network configuration (reserved for virtual networks).
    NetworkConfig = 0x0a,
    /// Network credentials (reserved for virtual networks).
    NetworkCredentials = 0x0b,
    /// Up to 256 arbitrary bytes, echoed back in OK(ECHO).
    Echo = 0x0c,
    /// Endpoints at which the sender may be reached directly.
    PushDirectPaths = 0x0d,
    /// A newer world file, sent only on confirmed paths.
    WorldUpdate = 0x0e,
    /// Birthday hole punch: the hard-NAT side opened its sockets; spray now.
    Punch = 0x0f,
    /// Virtual network frame with its offloads (a partial checksum, a
    /// super-frame to segment); sent only to peers that announced it.
    OffloadFrame = 0x10,
    /// What the sender's node supports, sent once per new session.
    Capabilities = 0x11,
    /// A datagram padded to the size it names, sent whole on one path;
    /// answered by OK naming the size (path MTU discovery).
    PathMtuProbe = 0x12,
    /// The multicast groups the sender listens to, on which networks (to its
    /// roots, PROTOCOL.md §4.6).
    MulticastLike = 0x13,
    /// Who listens to a group: asked of a root, answered by OK naming members.
    MulticastGather = 0x14,
}

impl Verb {
    /// Every verb, in code order.
    pub const ALL: [Verb; 21] = [
        Verb::Nop,
        Verb::Hello,
        Verb::Error,
        Verb::Ok,
        Verb::Whois,
        Verb::Rendezvous,
        Verb::Frame,
        Verb::ExtFrame,
        Verb::MulticastFrame,
        Verb::NetworkConfigRequest,
        Verb::NetworkConfig,
        Verb::NetworkCredentials,
        Verb::Echo,
        Verb::PushDirectPaths,
        Verb::WorldUpdate,
        Verb::Punch,
        Verb::OffloadFrame,
        Verb::Capabilities,
        Verb::PathMtuProbe,
        Verb::MulticastLike,
        Verb::MulticastGather,
    ];

    /// The verb's code byte.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Verb> for u8 {
    fn from(verb: Verb) -> u8 {
        verb as u8
    }
}

impl TryFrom<u8> for Verb {
    type Error = UnknownVerb;

    fn try_from(code: u8) -> Result<Self, UnknownVerb> {
        Verb::ALL
            .get(usize::from(code))
            .copied()
            .ok_or(UnknownVerb(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_spec() {
        for (i, verb) in Verb::ALL.iter().enumerate() {
            assert_eq!(usize::from(verb.code()), i, "{verb:?} out of order");
            assert_eq!(Verb::try_from(verb.code()), Ok(*verb));
            assert_eq!(u8::from(*verb), verb.code());
        }
        assert_eq!(Verb::Hello.code(), 0x01);
        assert_eq!(Verb::NetworkConfig.code(), 0x0a);
        assert_eq!(Verb::WorldUpdate.code(), 0x0e);
    }

    #[test]
    fn unknown_codes_are_refused() {
        for code in 0x15..=0xff {
            assert_eq!(Verb::try_from(code), Err(UnknownVerb(code)));
        }
    }
}
