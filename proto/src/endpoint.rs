//! Root endpoints: their binary form in world files, their `ip/port` text
//! form in world JSON, and ZeroTier's ordering of them.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::constants::{ENDPOINT_TYPE_IPV4, ENDPOINT_TYPE_IPV6};

/// Why bytes or text are not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Binary form ends early.
    #[error("endpoint truncated: needs {needed} more byte(s)")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// A type byte other than 4 or 6.
    #[error("unknown endpoint type byte 0x{0:02x} (expected 0x04 or 0x06)")]
    UnknownType(u8),
    /// Text not of the form `ip/port`.
    #[error("endpoint {0:?} is not of the form ip/port (e.g. 203.0.113.10/9993)")]
    BadText(String),
}

/// Appends the binary form: type byte, address bytes, big-endian port.
pub fn encode_endpoint(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(ENDPOINT_TYPE_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ENDPOINT_TYPE_IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Decodes one endpoint from the front of `bytes`; returns it and its length.
pub fn decode_endpoint(bytes: &[u8]) -> Result<(SocketAddr, usize), EndpointError> {
    let Some(&kind) = bytes.first() else {
        return Err(EndpointError::Truncated { needed: 1 });
    };
    let ip_len = match kind {
        ENDPOINT_TYPE_IPV4 => 4,
        ENDPOINT_TYPE_IPV6 => 16,
        other => return Err(EndpointError::UnknownType(other)),
    };
    let total = 1 + ip_len + 2;
    if bytes.len() < total {
        return Err(EndpointError::Truncated {
            needed: total - bytes.len(),
        });
    }
    let ip = if ip_len == 4 {
        IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&bytes[1..5]).expect("4"),
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&bytes[1..17]).expect("16"),
        ))
    };
    let port = u16::from_be_bytes([bytes[1 + ip_len], bytes[2 + ip_len]]);
    Ok((SocketAddr::new(ip, port), total))
}

/// Parses ZeroTier's `ip/port` text form.
pub fn parse_endpoint(text: &str) -> Result<SocketAddr, EndpointError> {
    let bad = || EndpointError::BadText(text.to_string());
    let (ip, port) = text.trim().split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    // Digits only: u16's parser would also take "+9993".
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(SocketAddr::new(ip, port))
}

/// Formats ZeroTier's `ip/port` text form.
pub fn format_endpoint(addr: &SocketAddr) -> String {
    format!("{}/{}", addr.ip(), addr.port())
}

/// ZeroTier's `InetAddress` ordering, which `genmoon` sorts endpoints by:
/// IPv4 before IPv6; then the port, then the address, each compared as the
/// little-endian integer its network-order bytes make (raw `sockaddr`
/// fields compared on x86). Matching it makes our files byte-identical.
pub fn zerotier_order(a: &SocketAddr, b: &SocketAddr) -> Ordering {
    fn key(addr: &SocketAddr) -> (u8, u16, Vec<u8>) {
        let port = u16::from_le_bytes(addr.port().to_be_bytes());
        match addr.ip() {
            IpAddr::V4(ip) => {
                // s_addr compared as a native (little-endian) u32: reverse the bytes.
                let mut raw = ip.octets().to_vec();
                raw.reverse();
                (0, port, raw)
            }
            IpAddr::V6(ip) => (1, port, ip.octets().to_vec()),
        }
    }
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_round_trip() {
        for text in ["203.0.113.10/9993", "2001:db8::10/9993"] {
            let addr = parse_endpoint(text).unwrap();
            assert_eq!(format_endpoint(&addr), text);
            let mut bin = Vec::new();
            encode_endpoint(&addr, &mut bin);
            assert_eq!(decode_endpoint(&bin).unwrap(), (addr, bin.len()));
        }
    }

    #[test]
    fn malformed_is_refused() {
        assert!(parse_endpoint("203.0.113.10:9993").is_err());
        assert!(parse_endpoint("203.0.113.10/0").is_err());
        assert!(parse_endpoint("203.0.113.10/70000").is_err());
        assert!(parse_endpoint("host/9993").is_err());
        assert!(parse_endpoint("203.0.113.10/+9993").is_err());
        assert!(parse_endpoint("203.0.113.10/009993").is_err());
        assert_eq!(decode_endpoint(&[0x05]), Err(EndpointError::UnknownType(5)));
        assert_eq!(
            decode_endpoint(&[0x04, 1, 2]),
            Err(EndpointError::Truncated { needed: 4 })
        );
    }

    #[test]
    fn ordering_matches_zerotier() {
        let v4 = parse_endpoint("203.0.113.10/9993").unwrap();
        let v6 = parse_endpoint("2001:db8::10/9993").unwrap();
        assert_eq!(zerotier_order(&v4, &v6), Ordering::Less);
        // Port 256 (bytes 01 00) sorts before port 1 (bytes 00 01) on x86.
        let p256 = parse_endpoint("10.0.0.1/256").unwrap();
        let p1 = parse_endpoint("10.0.0.1/1").unwrap();
        assert_eq!(zerotier_order(&p256, &p1), Ordering::Less);
        // 2.0.0.1 sorts before 1.0.0.2: the last octet is most significant.
        let a = parse_endpoint("2.0.0.1/9").unwrap();
        let b = parse_endpoint("1.0.0.2/9").unwrap();
        assert_eq!(zerotier_order(&a, &b), Ordering::Less);
    }
}
