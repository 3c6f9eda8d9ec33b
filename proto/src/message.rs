//! Typed message payloads: decoded once at the edge, so the node sees only
//! valid values (PROTOCOL.md §3.4–3.5).

use std::net::SocketAddr;

use crate::address::Address;
use crate::constants::{
    ADDRESS_LEN_BYTES, ECHO_MAX_LEN_BYTES, PACKET_MIN_LEN_BYTES, WHOIS_MAX_ADDRESSES,
};
use crate::endpoint::{decode_endpoint, encode_endpoint};
use crate::identity::{IdentityError, UncheckedIdentity};
use crate::nat_mapping::NatMapping;
use crate::verb::Verb;

/// Why a payload was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Ends early.
    #[error("truncated {0} payload")]
    Truncated(&'static str),
    /// Bytes after the end.
    #[error("trailing bytes after {0} payload")]
    Trailing(&'static str),
    /// A field holds an impossible value.
    #[error("bad {0} field")]
    BadField(&'static str),
    /// An identity in the payload is malformed.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
}

/// Version information a node announces in HELLO and OK(HELLO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// Wire protocol version.
    pub protocol: u8,
    /// Software major version.
    pub major: u8,
    /// Software minor version.
    pub minor: u8,
    /// Software revision.
    pub revision: u16,
}

/// HELLO: the sender's identity and ephemeral key (PROTOCOL.md §3.4).
#[derive(Debug, Clone)]
pub struct Hello {
    /// Versions of the sender.
    pub versions: Versions,
    /// Sender's clock, echoed back for latency.
    pub timestamp_ms: u64,
    /// Sender's identity, address not yet checked against the key.
    pub(crate) identity: UncheckedIdentity,
    /// Sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Where the sender sent this HELLO to.
    pub sent_to: Option<SocketAddr>,
    /// Planet id and timestamp the sender holds.
    pub planet: (u64, u64),
    /// Moons the sender orbits: id and timestamp.
    pub moons: Vec<(u64, u64)>,
}

/// OK(HELLO): the responder's ephemeral key and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    /// The HELLO's timestamp, echoed.
    pub echoed_timestamp_ms: u64,
    /// Versions of the responder.
    pub versions: Versions,
    /// Responder's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The address the HELLO arrived from, as the responder saw it.
    pub reflected: Option<SocketAddr>,
}

/// CAPABILITIES: what the sender's node supports, as bits of a 32-bit
/// big-endian word (bits it does not know of are ignored, so later versions
/// can add some). Sent once per new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// It takes OFFLOAD_FRAME (bit 0).
    pub offload_frames: bool,
    /// It opens session packets sealed with AES-256-GCM (bit 1).
    pub aes_gcm: bool,
    /// It answers PATH_MTU_PROBE (bit 2).
    pub path_mtu_probes: bool,
    /// It takes OFFLOAD_FRAMEs whose segmentation is UDP (USO, bit 3).
    pub udp_segmentation: bool,
}

const CAPABILITY_OFFLOAD_FRAMES: u32 = 1;
const CAPABILITY_AES_GCM: u32 = 2;
const CAPABILITY_PATH_MTU_PROBES: u32 = 4;
const CAPABILITY_UDP_SEGMENTATION: u32 = 8;

impl Capabilities {
    /// The body.
    pub fn encode(&self) -> [u8; 4] {
        self.bits().to_be_bytes()
    }

    /// The bits the body carries (those defined so far fit a byte).
    pub fn bits(&self) -> u32 {
        let bit = |on: bool, b: u32| if on { b } else { 0 };
        bit(self.offload_frames, CAPABILITY_OFFLOAD_FRAMES)
            | bit(self.aes_gcm, CAPABILITY_AES_GCM)
            | bit(self.path_mtu_probes, CAPABILITY_PATH_MTU_PROBES)
            | bit(self.udp_segmentation, CAPABILITY_UDP_SEGMENTATION)
    }

    /// From the bits; those not defined are ignored.
    pub fn from_bits(bits: u32) -> Self {
        Self {
            offload_frames: bits & CAPABILITY_OFFLOAD_FRAMES != 0,
            aes_gcm: bits & CAPABILITY_AES_GCM != 0,
            path_mtu_probes: bits & CAPABILITY_PATH_MTU_PROBES != 0,
            udp_segmentation: bits & CAPABILITY_UDP_SEGMENTATION != 0,
        }
    }

    /// Reads a body: at least the 32-bit word; anything after it is for
    /// later versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let bits = bytes
            .first_chunk::<4>()
            .map(|b| u32::from_be_bytes(*b))
            .ok_or(MessageError::Truncated("CAPABILITIES"))?;
        Ok(Self::from_bits(bits))
    }
}

/// PATH_MTU_PROBE: the size of the datagram it travels in (a 16-bit
/// big-endian count of bytes), then zeros up to that size. It must arrive
/// whole, in one datagram of exactly that size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMtuProbe {
    /// Bytes of the whole datagram (UDP payload).
    pub size: u16,
}

impl PathMtuProbe {
    /// Smallest probe: a packet with the size field.
    pub const MIN_SIZE_BYTES: u16 = PACKET_MIN_LEN_BYTES as u16 + 2;

    /// Appends the body: the size, then zeros so that the packet, its
    /// header and verb included, is `size` bytes long.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let size = self.size.max(Self::MIN_SIZE_BYTES);
        out.extend_from_slice(&size.to_be_bytes());
        let padding = usize::from(size) - usize::from(Self::MIN_SIZE_BYTES);
        out.resize(out.len() + padding, 0);
    }

    /// Reads a body; the packet it came in must be the size it names.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let size = body
            .first_chunk::<2>()
            .map(|b| u16::from_be_bytes(*b))
            .ok_or(MessageError::Truncated("PATH_MTU_PROBE"))?;
        if PACKET_MIN_LEN_BYTES + body.len() != usize::from(size) {
            return Err(MessageError::BadField("PATH_MTU_PROBE size"));
        }
        Ok(Self { size })
    }

    /// The body of its OK: the size again.
    pub fn answer(&self) -> [u8; 2] {
        self.size.to_be_bytes()
    }
}

/// RENDEZVOUS: where a root saw another node (so both can punch through NAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// The other node.
    pub peer: Address,
    /// Its address as the root sees it.
    pub endpoint: SocketAddr,
}

/// The body of an OK, by the verb it answers.
#[derive(Debug, Clone)]
pub enum OkBody {
    /// Answer to HELLO.
    Hello(HelloOk),
    /// Answer to WHOIS: binary identities, unchecked.
    Whois(Vec<u8>),
    /// Answer to ECHO: the echoed bytes.
    Echo(Vec<u8>),
    /// Answer to PATH_MTU_PROBE: the size that arrived.
    PathMtuProbe(u16),
    /// Answer to MULTICAST_GATHER: members of the group.
    MulticastGather(crate::multicast_message::GatherResult),
    /// Answer to a verb we do not track.
    Other(Verb),
}

/// Header common to OK and ERROR: what they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InRe {
    /// The verb answered.
    pub verb: Verb,
    /// The counter of the packet answered.
    pub counter: u64,
}

/// Appends an optional endpoint: type 0 for none, else the endpoint form.
pub fn encode_opt_endpoint(addr: Option<&SocketAddr>, out: &mut Vec<u8>) {
    match addr {
        Some(a) => encode_endpoint(a, out),
        None => out.push(0),
    }
}

/// Cursor over a payload.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, at: 0, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.bytes.len() - self.at < n {
            return Err(MessageError::Truncated(self.what));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, MessageError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, MessageError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        Ok(self.take(N)?.try_into().expect("N"))
    }

    pub(crate) fn address(&mut self) -> Result<Address, MessageError> {
        Address::from_bytes(self.array()?).map_err(|_| MessageError::BadField("address"))
    }

    pub(crate) fn opt_endpoint(&mut self) -> Result<Option<SocketAddr>, MessageError> {
        if self.bytes.get(self.at) == Some(&0) {
            self.at += 1;
            return Ok(None);
        }
        let (addr, used) = decode_endpoint(&self.bytes[self.at..])
            .map_err(|_| MessageError::BadField("endpoint"))?;
        self.at += used;
        Ok(Some(addr))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.at..];
        self.at = self.bytes.len();
        out
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn finish(&self) -> Result<(), MessageError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(MessageError::Trailing(self.what))
        }
    }
}

fn encode_versions(v: &Versions, out: &mut Vec<u8>) {
    out.push(v.protocol);
    out.push(v.major);
    out.push(v.minor);
    out.extend_from_slice(&v.revision.to_be_bytes());
}

fn decode_versions(c: &mut Cursor<'_>) -> Result<Versions, MessageError> {
    Ok(Versions {
        protocol: c.u8()?,
        major: c.u8()?,
        minor: c.u8()?,
        revision: c.u16()?,
    })
}

impl Hello {
    /// Appends the payload.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        versions: &Versions,
        timestamp_ms: u64,
        identity: &crate::identity::Identity,
        ephemeral: &[u8; 32],
        sent_to: Option<&SocketAddr>,
        planet: (u64, u64),
        moons: &[(u64, u64)],
        out: &mut Vec<u8>,
    ) {
        encode_versions(versions, out);
        out.extend_from_slice(&timestamp_ms.to_be_bytes());
        identity.encode_into(out, false);
        out.extend_from_slice(ephemeral);
        encode_opt_endpoint(sent_to, out);
        out.extend_from_slice(&planet.0.to_be_bytes());
        out.extend_from_slice(&planet.1.to_be_bytes());
        out.push(moons.len().min(u8::MAX as usize) as u8);
        for (id, ts) in moons.iter().take(u8::MAX as usize) {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&ts.to_be_bytes());
        }
    }

    /// Decodes the payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(bytes, "HELLO");
        let versions = decode_versions(&mut c)?;
        let timestamp_ms = c.u64()?;
        let (identity, used) = UncheckedIdentity::decode(&bytes[c.at..])?;
        if identity.secret.is_some() {
            return Err(MessageError::BadField("identity carries a secret"));
        }
        c.at += used;
        let ephemeral = c.array()?;
        let sent_to = c.opt_endpoint()?;
        let planet = (c.u64()?, c.u64()?);
        let n = c.u8()? as usize;
        let mut moons = Vec::with_capacity(n);
        for _ in 0..n {
            moons.push((c.u64()?, c.u64()?));
        }
        c.finish()?;
        Ok(Self {
            versions,
            timestamp_ms,
            identity,
            ephemeral,
            sent_to,
            planet,
            moons,
        })
    }
}

impl HelloOk {
    /// Appends the body (after the in-re header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.echoed_timestamp_ms.to_be_bytes());
        encode_versions(&self.versions, out);
        out.extend_from_slice(&self.ephemeral);
        encode_opt_endpoint(self.reflected.as_ref(), out);
    }

    fn decode(c: &mut Cursor<'_>) -> Result<Self, MessageError> {
        let ok = Self {
            echoed_timestamp_ms: c.u64()?,
            versions: decode_versions(c)?,
            ephemeral: c.array()?,
            reflected: c.opt_endpoint()?,
        };
        c.finish()?;
        Ok(ok)
    }
}

/// Appends the in-re header of an OK or ERROR.
pub fn encode_in_re(in_re: InRe, out: &mut Vec<u8>) {
    out.push(in_re.verb as u8);
    out.extend_from_slice(&in_re.counter.to_be_bytes());
}

fn decode_in_re(c: &mut Cursor<'_>) -> Result<InRe, MessageError> {
    let verb = Verb::try_from(c.u8()?).map_err(|_| MessageError::BadField("in-re verb"))?;
    Ok(InRe {
        verb,
        counter: c.u64()?,
    })
}

/// Decodes an OK payload.
pub fn decode_ok(bytes: &[u8]) -> Result<(InRe, OkBody), MessageError> {
    let mut c = Cursor::new(bytes, "OK");
    let in_re = decode_in_re(&mut c)?;
    let body = match in_re.verb {
        Verb::Hello => OkBody::Hello(HelloOk::decode(&mut c)?),
        Verb::Whois => OkBody::Whois(c.rest().to_vec()),
        Verb::Echo => OkBody::Echo(c.rest().to_vec()),
        Verb::PathMtuProbe => {
            let size = c.rest();
            let size: [u8; 2] = size
                .try_into()
                .map_err(|_| MessageError::BadField("OK(PATH_MTU_PROBE) length"))?;
            OkBody::PathMtuProbe(u16::from_be_bytes(size))
        }
        Verb::MulticastGather => {
            OkBody::MulticastGather(crate::multicast_message::GatherResult::decode(c.rest())?)
        }
        other => {
            c.rest();
            OkBody::Other(other)
        }
    };
    Ok((in_re, body))
}

/// Decodes an ERROR payload: what it answers, the code, and the data.
pub fn decode_error(bytes: &[u8]) -> Result<(InRe, u8, &[u8]), MessageError> {
    let mut c = Cursor::new(bytes, "ERROR");
    let in_re = decode_in_re(&mut c)?;
    let code = c.u8()?;
    Ok((in_re, code, c.rest()))
}

/// Decodes a WHOIS payload: 1 to WHOIS_MAX_ADDRESSES addresses.
pub fn decode_whois(bytes: &[u8]) -> Result<Vec<Address>, MessageError> {
    if bytes.is_empty()
        || !bytes.len().is_multiple_of(ADDRESS_LEN_BYTES)
        || bytes.len() / ADDRESS_LEN_BYTES > WHOIS_MAX_ADDRESSES
    {
        return Err(MessageError::BadField("WHOIS length"));
    }
    let mut c = Cursor::new(bytes, "WHOIS");
    let mut out = Vec::with_capacity(bytes.len() / ADDRESS_LEN_BYTES);
    while c.at < bytes.len() {
        out.push(c.address()?);
    }
    Ok(out)
}

impl Rendezvous {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0);
        out.extend_from_slice(&self.peer.to_bytes());
        out.extend_from_slice(&self.endpoint.port().to_be_bytes());
        match self.endpoint.ip() {
            std::net::IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                out.push(16);
                out.extend_from_slice(&ip.octets());
            }
        }
    }

    /// Decodes the payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(bytes, "RENDEZVOUS");
        let _flags = c.u8()?;
        let peer = c.address()?;
        let port = c.u16()?;
        let ip: std::net::IpAddr = match c.u8()? {
            4 => std::net::Ipv4Addr::from(c.array::<4>()?).into(),
            16 => std::net::Ipv6Addr::from(c.array::<16>()?).into(),
            _ => return Err(MessageError::BadField("RENDEZVOUS ip length")),
        };
        c.finish()?;
        if port == 0 {
            return Err(MessageError::BadField("RENDEZVOUS port"));
        }
        Ok(Self {
            peer,
            endpoint: SocketAddr::new(ip, port),
        })
    }
}

/// Appends a PUSH_DIRECT_PATHS payload: the paths, then the sender's NAT mapping byte.
pub fn encode_push_direct_paths(paths: &[SocketAddr], mapping: NatMapping, out: &mut Vec<u8>) {
    out.extend_from_slice(&(paths.len() as u16).to_be_bytes());
    for p in paths {
        out.push(0);
        encode_endpoint(p, out);
    }
    out.push(mapping.to_byte());
}

/// Decodes a PUSH_DIRECT_PATHS payload: the paths, and the sender's NAT
/// mapping if it sent one (the byte is optional).
pub fn decode_push_direct_paths(
    bytes: &[u8],
) -> Result<(Vec<SocketAddr>, Option<NatMapping>), MessageError> {
    let mut c = Cursor::new(bytes, "PUSH_DIRECT_PATHS");
    let n = c.u16()? as usize;
    let mut out = Vec::with_capacity(n.min(32));
    for _ in 0..n {
        let _flags = c.u8()?;
        match c.opt_endpoint()? {
            Some(addr) if addr.port() != 0 => out.push(addr),
            _ => return Err(MessageError::BadField("PUSH_DIRECT_PATHS endpoint")),
        }
    }
    let mapping = if c.remaining() > 0 {
        Some(NatMapping::from_byte(c.u8()?))
    } else {
        None
    };
    c.finish()?;
    Ok((out, mapping))
}

/// A PUNCH payload: how many sockets the (hard-NAT) sender opened toward us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchMessage {
    /// Sockets opened.
    pub sockets: u16,
}

/// Appends a PUNCH payload.
pub fn encode_punch(p: PunchMessage, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.sockets.to_be_bytes());
}

/// Decodes a PUNCH payload.
pub fn decode_punch(bytes: &[u8]) -> Result<PunchMessage, MessageError> {
    let mut c = Cursor::new(bytes, "PUNCH");
    let sockets = c.u16()?;
    c.finish()?;
    if sockets == 0 {
        return Err(MessageError::BadField("PUNCH sockets"));
    }
    Ok(PunchMessage { sockets })
}

/// What an ECHO of ours is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoKind {
    /// A path probe or keepalive (does not make a peer "in use").
    Probe,
    /// A user's ping (`vnet-cli ping`).
    Ping,
}

/// The ECHO we send: `kind (1: 0 probe, 1 ping) | id (8) | sender's clock
/// in ms (8)`, answered by OK(ECHO) with the same bytes. A peer may echo
/// anything up to [`ECHO_MAX_LEN_BYTES`]; only answers of this shape are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// Probe or ping.
    pub kind: EchoKind,
    /// The ping's id (0 for probes).
    pub id: u64,
    /// When we sent it, on our clock.
    pub sent_ms: u64,
}

/// Bytes of [`Echo`].
const ECHO_LEN_BYTES: usize = 17;

impl Echo {
    /// The payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(ECHO_LEN_BYTES);
        p.push(match self.kind {
            EchoKind::Probe => 0,
            EchoKind::Ping => 1,
        });
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.sent_ms.to_be_bytes());
        p
    }

    /// Reads an echoed payload of ours.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let bytes: &[u8; ECHO_LEN_BYTES] = bytes
            .try_into()
            .map_err(|_| MessageError::BadField("ECHO length"))?;
        let kind = match bytes[0] {
            0 => EchoKind::Probe,
            1 => EchoKind::Ping,
            _ => return Err(MessageError::BadField("ECHO kind")),
        };
        let (id, sent) = bytes[1..].split_at(8);
        Ok(Self {
            kind,
            id: u64::from_be_bytes(id.try_into().expect("8 bytes")),
            sent_ms: u64::from_be_bytes(sent.try_into().expect("8 bytes")),
        })
    }

    /// Whether an ECHO payload is a probe (a keepalive, not use).
    pub fn is_probe(payload: &[u8]) -> bool {
        payload.first() == Some(&0)
    }

    /// Whether an ECHO payload is a user's ping.
    pub fn is_ping(payload: &[u8]) -> bool {
        payload.first() == Some(&1)
    }

    /// Whether an OK payload answers one of our probes: `in-re verb (1) |
    /// in-re counter (8) | echoed bytes`.
    pub fn ok_answers_probe(ok_payload: &[u8]) -> bool {
        ok_payload.first() == Some(&(Verb::Echo as u8)) && ok_payload.get(9) == Some(&0)
    }
}

/// Checks an ECHO payload's size.
pub fn check_echo(bytes: &[u8]) -> Result<(), MessageError> {
    if bytes.len() > ECHO_MAX_LEN_BYTES {
        return Err(MessageError::BadField("ECHO length"));
    }
    Ok(())
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    #[test]
    fn capabilities_round_trip_and_unknown_bits_are_ignored() {
        for bits in 0..16u8 {
            let c = Capabilities {
                offload_frames: bits & 1 != 0,
                aes_gcm: bits & 2 != 0,
                path_mtu_probes: bits & 4 != 0,
                udp_segmentation: bits & 8 != 0,
            };
            assert_eq!(Capabilities::decode(&c.encode()), Ok(c));
        }
        // Bits and bytes of later versions.
        assert_eq!(
            Capabilities::decode(&[0xff, 0xff, 0xff, 0xf0, 9, 9]),
            Ok(Capabilities::default())
        );
        assert_eq!(
            Capabilities::decode(&[0, 0, 1]),
            Err(MessageError::Truncated("CAPABILITIES"))
        );
    }

    #[test]
    fn path_mtu_probes_fill_their_size_and_must_arrive_whole() {
        for size in [PathMtuProbe::MIN_SIZE_BYTES, 1232, 1472, 8972] {
            let mut body = Vec::new();
            PathMtuProbe { size }.encode_into(&mut body);
            assert_eq!(PACKET_MIN_LEN_BYTES + body.len(), usize::from(size));
            assert_eq!(PathMtuProbe::decode(&body), Ok(PathMtuProbe { size }));
            // Cut short (a piece of it) or padded: refused.
            assert!(PathMtuProbe::decode(&body[..body.len() - 1]).is_err());
            body.push(0);
            assert!(PathMtuProbe::decode(&body).is_err());
        }
        assert!(PathMtuProbe::decode(&[5]).is_err());
        let mut ok = vec![Verb::PathMtuProbe as u8];
        ok.extend_from_slice(&7u64.to_be_bytes());
        ok.extend_from_slice(&PathMtuProbe { size: 1472 }.answer());
        assert!(matches!(
            decode_ok(&ok),
            Ok((_, OkBody::PathMtuProbe(1472)))
        ));
        ok.push(0);
        assert!(decode_ok(&ok).is_err());
    }
}
