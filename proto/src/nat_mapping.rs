//! How a NAT in front of a node maps its UDP flows, told from the addresses
//! that several roots see it at.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// A NAT's mapping behaviour, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NatMapping {
    /// Not enough reflections to tell (fewer than two roots answered).
    Unknown,
    /// No NAT: the roots see one of our own interface addresses.
    None,
    /// One public port for every destination ("easy"): hole punching works.
    EndpointIndependent,
    /// A new public port per destination ("hard", symmetric): only a birthday punch
    /// against an easy peer, or the relay.
    EndpointDependent,
}

impl NatMapping {
    /// The byte sent in PUSH_DIRECT_PATHS.
    pub fn to_byte(self) -> u8 {
        match self {
            NatMapping::Unknown => 0,
            NatMapping::None => 1,
            NatMapping::EndpointIndependent => 2,
            NatMapping::EndpointDependent => 3,
        }
    }

    /// The mapping a byte names; unknown values read as `Unknown` (newer senders).
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => NatMapping::None,
            2 => NatMapping::EndpointIndependent,
            3 => NatMapping::EndpointDependent,
            _ => NatMapping::Unknown,
        }
    }

    /// Classifies from the IPv4 addresses roots reflected (one per root) and
    /// our own interface endpoints.
    pub fn classify(reflected: &[SocketAddr], local: &[SocketAddr]) -> Self {
        let v4: Vec<&SocketAddr> = reflected.iter().filter(|a| a.is_ipv4()).collect();
        if v4.iter().any(|r| local.contains(r)) {
            return NatMapping::None;
        }
        if v4.len() < 2 {
            return NatMapping::Unknown;
        }
        let ip: IpAddr = v4[0].ip();
        let port = v4[0].port();
        if v4.iter().all(|r| r.port() == port && r.ip() == ip) {
            NatMapping::EndpointIndependent
        } else {
            NatMapping::EndpointDependent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn two_roots_tell_easy_from_hard() {
        let local = [a("10.1.0.2:9993")];
        assert_eq!(
            NatMapping::classify(&[a("198.51.100.5:9993")], &local),
            NatMapping::Unknown
        );
        assert_eq!(
            NatMapping::classify(&[a("198.51.100.5:9993"), a("198.51.100.5:9993")], &local),
            NatMapping::EndpointIndependent
        );
        assert_eq!(
            NatMapping::classify(&[a("198.51.100.5:41234"), a("198.51.100.5:5310")], &local),
            NatMapping::EndpointDependent
        );
        assert_eq!(
            NatMapping::classify(&[a("10.1.0.2:9993")], &local),
            NatMapping::None
        );
        for m in [
            NatMapping::Unknown,
            NatMapping::None,
            NatMapping::EndpointIndependent,
            NatMapping::EndpointDependent,
        ] {
            assert_eq!(NatMapping::from_byte(m.to_byte()), m);
        }
        assert_eq!(NatMapping::from_byte(200), NatMapping::Unknown);
    }
}
