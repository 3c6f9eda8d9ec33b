//! Network configurations and certificates of membership: what a controller
//! signs for each member, how it travels (signed chunks), and the trait a
//! controller plugs into (PROTOCOL.md §4).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::c25519::{KeyPair, PublicKey, Signature};
use crate::constants::{
    C25519_SIGNATURE_LEN_BYTES, CERTIFICATE_MAX_DELTA_MS, DNS_DOMAIN_MAX_LEN_BYTES,
    DNS_SERVERS_MAX, MAX_CAPABILITY_RULES, MAX_CONFIG_RULES, MAX_NETWORK_CAPABILITIES,
    NETWORK_CONFIG_CHUNK_MAX_BYTES, NETWORK_CONFIG_MAX_BYTES, NETWORK_MTU_MAX_BYTES,
    NETWORK_MTU_MIN_BYTES,
};
use crate::network_id::NetworkId;
use crate::rules::{Capability, Grants, RuleSet};

/// Domain separation for certificate signatures.
const CERTIFICATE_LABEL: &[u8] = b"vnet certificate of membership v1";
/// Domain separation for certificates that grant tags or capabilities.
const CERTIFICATE_WITH_GRANTS_LABEL: &[u8] = b"vnet certificate of membership v2";
/// Domain separation for config chunk signatures.
const CHUNK_LABEL: &[u8] = b"vnet network config chunk v1";
/// Domain separation for revocation signatures.
const REVOCATION_LABEL: &[u8] = b"vnet revocation v1";

/// Why a certificate, config or chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetconfError {
    /// Ends early or has trailing bytes.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Not signed by the network's controller.
    #[error("{0} signature does not verify with the controller's key")]
    BadSignature(&'static str),
    /// For another network or member.
    #[error("{0} is for another network or member")]
    WrongTarget(&'static str),
    /// A field holds an impossible value.
    #[error("network config field {field}: {problem}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Larger than any config may be.
    #[error("network config larger than {NETWORK_CONFIG_MAX_BYTES} bytes")]
    TooLarge,
}

/// A certificate of membership: the controller vouches that `issued_to`
/// belongs to `network` at `timestamp_ms` (the controller's clock).
/// Two certificates agree when their timestamps are within the smaller
/// `max_delta_ms` of each other: a member the controller stops refreshing
/// falls out of agreement with everyone else's fresh certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The network.
    pub network: NetworkId,
    /// The member.
    pub issued_to: Address,
    /// When issued (controller's clock, ms).
    pub timestamp_ms: u64,
    /// How far apart two certificates may be and still agree.
    pub max_delta_ms: u64,
    /// The tags and capabilities the controller grants the member.
    pub grants: Grants,
    signature: Signature,
}

/// Bytes of an encoded certificate without grants.
pub const CERTIFICATE_LEN_BYTES: usize = 8 + 5 + 8 + 8 + C25519_SIGNATURE_LEN_BYTES;

/// In an encoded certificate's max delta field: grants follow it.
const CERTIFICATE_HAS_GRANTS: u64 = 1 << 63;

impl Certificate {
    /// Issues and signs a certificate granting nothing more (controller side).
    pub fn issue(
        controller: &KeyPair,
        network: NetworkId,
        issued_to: Address,
        timestamp_ms: u64,
    ) -> Self {
        Self::issue_with_grants(
            controller,
            network,
            issued_to,
            timestamp_ms,
            Grants::default(),
        )
    }

    /// Issues and signs a certificate that also grants tags and capabilities.
    pub fn issue_with_grants(
        controller: &KeyPair,
        network: NetworkId,
        issued_to: Address,
        timestamp_ms: u64,
        grants: Grants,
    ) -> Self {
        let mut c = Self {
            network,
            issued_to,
            timestamp_ms,
            max_delta_ms: CERTIFICATE_MAX_DELTA_MS,
            grants,
            signature: Signature::from_bytes([0; C25519_SIGNATURE_LEN_BYTES]),
        };
        c.signature = controller.sign(&c.signed_bytes());
        c
    }

    /// What the signature covers: a certificate without grants is signed
    /// as before grants existed (so older members still verify it).
    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        if self.grants.is_empty() {
            b.extend_from_slice(CERTIFICATE_LABEL);
        } else {
            b.extend_from_slice(CERTIFICATE_WITH_GRANTS_LABEL);
        }
        self.encode_fields(&mut b);
        b
    }

    /// Everything but the signature, as encoded.
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network.to_u64().to_be_bytes());
        out.extend_from_slice(&self.issued_to.to_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        if self.grants.is_empty() {
            out.extend_from_slice(&self.max_delta_ms.to_be_bytes());
        } else {
            out.extend_from_slice(&(self.max_delta_ms | CERTIFICATE_HAS_GRANTS).to_be_bytes());
            self.grants.encode_into(out);
        }
    }

    /// Whether the network's controller signed it.
    pub fn verify(&self, controller_key: &PublicKey) -> bool {
        controller_key.verify(&self.signed_bytes(), &self.signature)
    }

    /// Whether two certificates of the same network are close enough in time.
    pub fn agrees_with(&self, other: &Certificate) -> bool {
        self.network == other.network
            && self.timestamp_ms.abs_diff(other.timestamp_ms)
                <= self.max_delta_ms.min(other.max_delta_ms)
    }

    /// Appends the binary form.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_fields(out);
        out.extend_from_slice(self.signature.as_bytes());
    }

    /// Bytes of the binary form.
    pub fn encoded_len(&self) -> usize {
        let grants = if self.grants.is_empty() {
            0
        } else {
            2 + self.grants.tags().len() * 8 + self.grants.capabilities().len() * 4
        };
        CERTIFICATE_LEN_BYTES + grants
    }

    /// Decodes one certificate from the front of `bytes` (signature not checked).
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), NetconfError> {
        const FIELDS: usize = CERTIFICATE_LEN_BYTES - C25519_SIGNATURE_LEN_BYTES;
        if bytes.len() < CERTIFICATE_LEN_BYTES {
            return Err(NetconfError::Malformed("certificate"));
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8"));
        let network = NetworkId::from_u64(u64_at(0))
            .map_err(|_| NetconfError::Malformed("certificate network id"))?;
        let issued_to = Address::from_bytes(bytes[8..13].try_into().expect("5"))
            .map_err(|_| NetconfError::Malformed("certificate member address"))?;
        let max_delta = u64_at(21);
        let (grants, grants_len) = if max_delta & CERTIFICATE_HAS_GRANTS != 0 {
            let (g, used) = Grants::decode(&bytes[FIELDS..])
                .map_err(|_| NetconfError::Malformed("certificate grants"))?;
            if g.is_empty() {
                // Encoded without the flag: one certificate, one encoding.
                return Err(NetconfError::Malformed("certificate grants"));
            }
            (g, used)
        } else {
            (Grants::default(), 0)
        };
        let sig_at = FIELDS + grants_len;
        let signature = bytes
            .get(sig_at..sig_at + C25519_SIGNATURE_LEN_BYTES)
            .ok_or(NetconfError::Malformed("certificate"))?;
        let cert = Self {
            network,
            issued_to,
            timestamp_ms: u64_at(13),
            max_delta_ms: max_delta & !CERTIFICATE_HAS_GRANTS,
            grants,
            signature: Signature::from_bytes(signature.try_into().expect("96")),
        };
        Ok((cert, sig_at + C25519_SIGNATURE_LEN_BYTES))
    }
}

/// A revocation: the controller declares every certificate of `member` on
/// `network` issued at or before `threshold_ms` void (PROTOCOL.md §4.7), so
/// a deauthorized member is cut off at once rather than when its last
/// certificate stops agreeing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The network.
    pub network: NetworkId,
    /// The member revoked.
    pub member: Address,
    /// Certificates issued at or before this (controller's clock, ms) are void.
    pub threshold_ms: u64,
    signature: Signature,
}

/// Bytes of an encoded revocation.
pub const REVOCATION_LEN_BYTES: usize = 8 + 5 + 8 + C25519_SIGNATURE_LEN_BYTES;

impl Revocation {
    /// Issues and signs a revocation (controller side).
    pub fn issue(
        controller: &KeyPair,
        network: NetworkId,
        member: Address,
        threshold_ms: u64,
    ) -> Self {
        let mut r = Self {
            network,
            member,
            threshold_ms,
            signature: Signature::from_bytes([0; C25519_SIGNATURE_LEN_BYTES]),
        };
        r.signature = controller.sign(&r.signed_bytes());
        r
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(48);
        b.extend_from_slice(REVOCATION_LABEL);
        b.extend_from_slice(&self.network.to_u64().to_be_bytes());
        b.extend_from_slice(&self.member.to_bytes());
        b.extend_from_slice(&self.threshold_ms.to_be_bytes());
        b
    }

    /// Whether the network's controller signed it.
    pub fn verify(&self, controller_key: &PublicKey) -> bool {
        controller_key.verify(&self.signed_bytes(), &self.signature)
    }

    /// Whether it voids `certificate`.
    pub fn voids(&self, certificate: &Certificate) -> bool {
        certificate.network == self.network
            && certificate.issued_to == self.member
            && certificate.timestamp_ms <= self.threshold_ms
    }

    /// Appends the binary form.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network.to_u64().to_be_bytes());
        out.extend_from_slice(&self.member.to_bytes());
        out.extend_from_slice(&self.threshold_ms.to_be_bytes());
        out.extend_from_slice(self.signature.as_bytes());
    }

    /// Decodes one revocation from the front of `bytes` (signature not checked).
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), NetconfError> {
        if bytes.len() < REVOCATION_LEN_BYTES {
            return Err(NetconfError::Malformed("revocation"));
        }
        let network = NetworkId::from_u64(u64::from_be_bytes(bytes[..8].try_into().expect("8")))
            .map_err(|_| NetconfError::Malformed("revocation network id"))?;
        let member = Address::from_bytes(bytes[8..13].try_into().expect("5"))
            .map_err(|_| NetconfError::Malformed("revocation member address"))?;
        let r = Self {
            network,
            member,
            threshold_ms: u64::from_be_bytes(bytes[13..21].try_into().expect("8")),
            signature: Signature::from_bytes(
                bytes[21..REVOCATION_LEN_BYTES].try_into().expect("96"),
            ),
        };
        Ok((r, REVOCATION_LEN_BYTES))
    }
}

/// NETWORK_CREDENTIALS: `count (1) | certificates`, then optionally
/// `count (1) | revocations` (PROTOCOL.md §4.5, §4.7). Signatures are
/// checked by the receiver, not here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Certificates of membership: the sender's own, or from the
    /// controller, the receiver's refreshed one.
    pub certificates: Vec<Certificate>,
    /// Revocations (sent by the controller).
    pub revocations: Vec<Revocation>,
}

impl Credentials {
    /// The body; at most 255 of each.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + self
                .certificates
                .iter()
                .map(Certificate::encoded_len)
                .sum::<usize>()
                + self.revocations.len() * REVOCATION_LEN_BYTES,
        );
        let certs = &self.certificates[..self.certificates.len().min(255)];
        out.push(certs.len() as u8);
        for c in certs {
            c.encode_into(&mut out);
        }
        if !self.revocations.is_empty() {
            let revs = &self.revocations[..self.revocations.len().min(255)];
            out.push(revs.len() as u8);
            for r in revs {
                r.encode_into(&mut out);
            }
        }
        out
    }

    /// Reads a body (a body of certificates alone, as nodes before
    /// revocations send, included).
    pub fn decode(mut bytes: &[u8]) -> Result<Self, NetconfError> {
        let mut c = Self::default();
        let (&count, rest) = bytes
            .split_first()
            .ok_or(NetconfError::Malformed("credentials"))?;
        bytes = rest;
        for _ in 0..count {
            let (cert, used) = Certificate::decode(bytes)?;
            c.certificates.push(cert);
            bytes = &bytes[used..];
        }
        if let Some((&count, rest)) = bytes.split_first() {
            bytes = rest;
            for _ in 0..count {
                let (r, used) = Revocation::decode(bytes)?;
                c.revocations.push(r);
                bytes = &bytes[used..];
            }
        }
        if !bytes.is_empty() {
            return Err(NetconfError::Malformed("credentials (trailing bytes)"));
        }
        Ok(c)
    }
}

/// An address assigned to a member, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedIp {
    /// The address.
    pub ip: IpAddr,
    /// Prefix length of the network it is on.
    pub prefix_len: u8,
}

/// A route the controller hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedRoute {
    /// Network address of the target.
    pub target: IpAddr,
    /// Prefix length of the target.
    pub prefix_len: u8,
    /// Gateway; none for the network's own subnets.
    pub via: Option<IpAddr>,
}

/// A network's DNS settings (ZeroTier's `dns`): its search domain and the
/// servers that answer for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDns {
    /// The search domain, e.g. `vnet.lan` (lowercase, no trailing dot).
    pub domain: String,
    /// The servers, at most [`DNS_SERVERS_MAX`].
    pub servers: Vec<IpAddr>,
}

impl NetworkDns {
    /// Why these settings are not usable, if they are not: a domain of 1 to
    /// [`DNS_DOMAIN_MAX_LEN_BYTES`] bytes made of labels of letters, digits
    /// and inner hyphens (1–63 each), lowercase; 1 to [`DNS_SERVERS_MAX`]
    /// unicast servers.
    pub fn problem(&self) -> Option<String> {
        let d = &self.domain;
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if d.is_empty() || d.len() > DNS_DOMAIN_MAX_LEN_BYTES || !d.split('.').all(label_ok) {
            return Some(format!(
                "domain {d:?} is not a DNS name (lowercase labels of letters, digits and \
                 hyphens, at most {DNS_DOMAIN_MAX_LEN_BYTES} bytes)"
            ));
        }
        if self.servers.is_empty() || self.servers.len() > DNS_SERVERS_MAX {
            return Some(format!(
                "1 to {DNS_SERVERS_MAX} servers, not {}",
                self.servers.len()
            ));
        }
        if let Some(s) = self
            .servers
            .iter()
            .find(|s| s.is_unspecified() || s.is_multicast())
        {
            return Some(format!("server {s} is not a unicast address"));
        }
        None
    }
}

/// What a controller decides for one member (unsigned): the core signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigData {
    /// Network name.
    pub name: String,
    /// Configuration revision (grows with every change).
    pub revision: u64,
    /// Controller's clock when issued (ms); also the certificate's timestamp.
    pub timestamp_ms: u64,
    /// Private (certificates required) or public.
    pub private: bool,
    /// Virtual MTU.
    pub mtu: u16,
    /// Most recipients of one multicast.
    pub multicast_limit: u32,
    /// Whether Ethernet broadcast is carried.
    pub enable_broadcast: bool,
    /// Whether this member may bridge other MACs.
    pub active_bridge: bool,
    /// Addresses assigned to this member.
    pub assigned: Vec<AssignedIp>,
    /// Managed routes.
    pub routes: Vec<ManagedRoute>,
    /// Active bridges of the network (unknown unicast goes to them).
    pub bridges: Vec<String>,
    /// How often the member asks for its config again while configured
    /// (ms, at least `NETWORK_CONFIG_PULL_MIN_INTERVAL_MS`); none: every
    /// `NETWORK_CONFIG_PULL_INTERVAL_MS`. A controller that removes
    /// ephemeral members once silent asks them to ask more often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_interval_ms: Option<u64>,
    /// The network's DNS settings, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<NetworkDns>,
    /// The network's flow rules (binary, as hex: PROTOCOL.md §4.8); none:
    /// accept everything (the default rule set, left out to keep configs small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RuleSet>,
    /// The network's capabilities (each an id and its rules, binary as
    /// hex): what a member holding one may also send and receive. Every
    /// member gets them all, to check what its peers hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// This member's tags and capability ids. Carried by the certificate,
    /// not the JSON (the core signs them into it; a decoded config takes
    /// them from it).
    #[serde(skip)]
    pub grants: Grants,
}

impl NetworkConfigData {
    /// Whether members exchange certificates on this network: on a private
    /// one always (they admit each other by them); on a public one when the
    /// rules look at tags or the network has capabilities (the certificates
    /// carry them).
    pub fn exchanges_certificates(&self) -> bool {
        self.private
            || !self.capabilities.is_empty()
            || self
                .rules
                .as_ref()
                .is_some_and(|r| r.rules().iter().any(|r| r.kind.uses_tags()))
    }
}

/// A signed network configuration, as a member holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The network.
    pub network: NetworkId,
    /// The member it is for.
    pub issued_to: Address,
    /// The settings.
    pub data: NetworkConfigData,
    /// The member's certificate of membership.
    pub certificate: Certificate,
}

impl NetworkConfig {
    /// The config of `data` for `issued_to`, with its certificate signed by
    /// the controller (stamped with the data's time, granting its grants).
    pub fn sign(
        controller: &KeyPair,
        network: NetworkId,
        issued_to: Address,
        data: NetworkConfigData,
    ) -> Self {
        let certificate = Certificate::issue_with_grants(
            controller,
            network,
            issued_to,
            data.timestamp_ms,
            data.grants.clone(),
        );
        Self {
            network,
            issued_to,
            data,
            certificate,
        }
    }

    /// Checks the data's fields (decoded from a controller; never trusted blindly).
    fn check(&self) -> Result<(), NetconfError> {
        let bad = |field: &'static str, problem: String| NetconfError::BadField { field, problem };
        let d = &self.data;
        if !(NETWORK_MTU_MIN_BYTES..=NETWORK_MTU_MAX_BYTES).contains(&d.mtu) {
            return Err(bad("mtu", format!("{} out of range", d.mtu)));
        }
        if d.name.len() > 127 {
            return Err(bad("name", "longer than 127 bytes".into()));
        }
        for a in &d.assigned {
            if a.prefix_len > max_prefix(a.ip) {
                return Err(bad(
                    "assigned",
                    format!("{}/{} is not a valid prefix", a.ip, a.prefix_len),
                ));
            }
        }
        for r in &d.routes {
            if r.prefix_len > max_prefix(r.target)
                || r.via.is_some_and(|v| v.is_ipv4() != r.target.is_ipv4())
            {
                return Err(bad(
                    "routes",
                    format!("{}/{} via {:?}", r.target, r.prefix_len, r.via),
                ));
            }
        }
        for b in &d.bridges {
            b.parse::<Address>()
                .map_err(|e| bad("bridges", e.to_string()))?;
        }
        if let Some(problem) = d.dns.as_ref().and_then(NetworkDns::problem) {
            return Err(bad("dns", problem));
        }
        if let Some(problem) = capabilities_problem(d.rules.as_ref(), &d.capabilities) {
            return Err(bad("capabilities", problem));
        }
        if self.certificate.network != self.network
            || self.certificate.issued_to != self.issued_to
            || self.certificate.timestamp_ms != d.timestamp_ms
        {
            return Err(NetconfError::WrongTarget("certificate"));
        }
        Ok(())
    }

    /// Serializes: certificate then the data as JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.certificate.encode_into(&mut out);
        out.extend_from_slice(&serde_json::to_vec(&self.data).expect("plain data"));
        out
    }

    /// Decodes and checks a config for `network` and `member`, signed (its
    /// certificate) by `controller_key`.
    pub fn decode(
        bytes: &[u8],
        network: NetworkId,
        member: Address,
        controller_key: &PublicKey,
    ) -> Result<Self, NetconfError> {
        if bytes.len() > NETWORK_CONFIG_MAX_BYTES {
            return Err(NetconfError::TooLarge);
        }
        let (certificate, used) = Certificate::decode(bytes)?;
        if !certificate.verify(controller_key) {
            return Err(NetconfError::BadSignature("certificate"));
        }
        let mut data: NetworkConfigData = serde_json::from_slice(&bytes[used..])
            .map_err(|_| NetconfError::Malformed("network config JSON"))?;
        data.grants = certificate.grants.clone();
        let config = Self {
            network,
            issued_to: member,
            data,
            certificate,
        };
        config.check()?;
        Ok(config)
    }
}

/// Why a network's capabilities cannot go in a config, if they cannot: at
/// most [`MAX_NETWORK_CAPABILITIES`], ids unique, at most
/// [`MAX_CAPABILITY_RULES`] rules each, and with the network's own rules at
/// most [`MAX_CONFIG_RULES`] rules in all.
pub fn capabilities_problem(
    rules: Option<&RuleSet>,
    capabilities: &[Capability],
) -> Option<String> {
    if capabilities.len() > MAX_NETWORK_CAPABILITIES {
        return Some(format!("more than {MAX_NETWORK_CAPABILITIES} capabilities"));
    }
    let mut total = rules.map_or(1, |r| r.rules().len());
    for (i, c) in capabilities.iter().enumerate() {
        if capabilities[..i].iter().any(|o| o.id == c.id) {
            return Some(format!("capability id {} is defined twice", c.id));
        }
        if c.rules.rules().len() > MAX_CAPABILITY_RULES {
            return Some(format!(
                "capability {} has more than {MAX_CAPABILITY_RULES} rules",
                c.id
            ));
        }
        total += c.rules.rules().len();
    }
    (total > MAX_CONFIG_RULES).then(|| {
        format!("the rules and the capabilities' rules together exceed {MAX_CONFIG_RULES}")
    })
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// One signed piece of a network config in transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChunk<'a> {
    /// The network.
    pub network: NetworkId,
    /// Identifies one config sent in pieces.
    pub update_id: u64,
    /// Length of the whole config.
    pub total_len: u32,
    /// Where this piece starts.
    pub offset: u32,
    /// The piece.
    pub data: &'a [u8],
}

impl ConfigChunk<'_> {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CHUNK_LABEL.len() + 24 + self.data.len());
        b.extend_from_slice(CHUNK_LABEL);
        b.extend_from_slice(&self.network.to_u64().to_be_bytes());
        b.extend_from_slice(&self.update_id.to_be_bytes());
        b.extend_from_slice(&self.total_len.to_be_bytes());
        b.extend_from_slice(&self.offset.to_be_bytes());
        b.extend_from_slice(self.data);
        b
    }
}

/// Cuts a config into signed NETWORK_CONFIG payloads.
pub fn encode_chunks(
    controller: &KeyPair,
    network: NetworkId,
    update_id: u64,
    config: &[u8],
) -> Vec<Vec<u8>> {
    let total_len = config.len() as u32;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let end = (offset + NETWORK_CONFIG_CHUNK_MAX_BYTES).min(config.len());
        let chunk = ConfigChunk {
            network,
            update_id,
            total_len,
            offset: offset as u32,
            data: &config[offset..end],
        };
        let signature = controller.sign(&chunk.signed_bytes());
        let mut p = Vec::with_capacity(24 + chunk.data.len() + C25519_SIGNATURE_LEN_BYTES + 2);
        p.extend_from_slice(&network.to_u64().to_be_bytes());
        p.extend_from_slice(&update_id.to_be_bytes());
        p.extend_from_slice(&total_len.to_be_bytes());
        p.extend_from_slice(&(offset as u32).to_be_bytes());
        p.extend_from_slice(&(chunk.data.len() as u16).to_be_bytes());
        p.extend_from_slice(chunk.data);
        p.extend_from_slice(signature.as_bytes());
        out.push(p);
        offset = end;
        if offset >= config.len() {
            return out;
        }
    }
}

/// Decodes a NETWORK_CONFIG payload and checks its signature.
pub fn decode_chunk<'a>(
    payload: &'a [u8],
    controller_key: &PublicKey,
) -> Result<ConfigChunk<'a>, NetconfError> {
    let m = NetconfError::Malformed("network config chunk");
    if payload.len() < 26 + C25519_SIGNATURE_LEN_BYTES {
        return Err(m);
    }
    let network = NetworkId::from_u64(u64::from_be_bytes(payload[..8].try_into().expect("8")))
        .map_err(|_| m.clone())?;
    let update_id = u64::from_be_bytes(payload[8..16].try_into().expect("8"));
    let total_len = u32::from_be_bytes(payload[16..20].try_into().expect("4"));
    let offset = u32::from_be_bytes(payload[20..24].try_into().expect("4"));
    let len = u16::from_be_bytes(payload[24..26].try_into().expect("2")) as usize;
    if payload.len() != 26 + len + C25519_SIGNATURE_LEN_BYTES
        || total_len as usize > NETWORK_CONFIG_MAX_BYTES
        || offset as usize + len > total_len as usize
    {
        return Err(m);
    }
    let chunk = ConfigChunk {
        network,
        update_id,
        total_len,
        offset,
        data: &payload[26..26 + len],
    };
    let signature = Signature::from_bytes(payload[26 + len..].try_into().expect("96"));
    if !controller_key.verify(&chunk.signed_bytes(), &signature) {
        return Err(NetconfError::BadSignature("network config chunk"));
    }
    Ok(chunk)
}

/// Why a controller refuses a member's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigDenied {
    /// The controller has no such network.
    NotFound,
    /// A private network, and the member is not authorized.
    AccessDenied,
    /// No answer now (the controller is busy, or a join is rate-limited):
    /// nothing is sent; the member asks again, or gets the config pushed
    /// when it is ready ([`NetworkController::take_changed`]).
    Later,
}

/// What a network controller provides to the driver of the node it runs in:
/// the driver asks it when the node reports
/// [`crate::node::Event::ConfigRequested`] and hands the answer to
/// [`crate::node::Node::answer_config`], which signs and delivers; the
/// controller decides. The node never calls it (no controller work, disk or
/// clock inside a packet handler).
pub trait NetworkController: Send {
    /// A member asks for its config; `asked` is what came with its own
    /// request (its verified identity, versions, join key, advertised
    /// routes), none when the node asks on its behalf (a push).
    fn request(
        &mut self,
        network: NetworkId,
        member: Address,
        asked: Option<&crate::node::MemberAsked>,
    ) -> Result<NetworkConfigData, ConfigDenied>;

    /// Members whose config changed since the last call (to be pushed), and
    /// members deauthorized or removed (who simply stop getting fresh certificates).
    fn take_changed(&mut self) -> Vec<(NetworkId, Address)>;

    /// Which of `members` the controller still admits (authorized, network
    /// there), in order, for certificate refreshes; `None` if it cannot
    /// tell now (the refresh waits for the next round). The default asks
    /// for each member's config; a controller should answer from memory.
    fn still_admitted(&mut self, members: &[(NetworkId, Address)]) -> Option<Vec<bool>> {
        Some(
            members
                .iter()
                .map(|(n, a)| self.request(*n, *a, None).is_ok())
                .collect(),
        )
    }

    /// Every member the controller knows (authorized or not), so a restarted
    /// controller pushes configs and denials without waiting to be asked.
    fn known_members(&self) -> Vec<(NetworkId, Address)> {
        Vec::new()
    }

    /// The controller's drop/deferral counters by name, for `/status`
    /// (read without waiting for the controller).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (KeyPair, NetworkId, Address) {
        let controller = KeyPair::generate(&mut crate::rng::os_rng());
        let nwid = NetworkId::new(Address::from_u64(0x1122334455).unwrap(), 7);
        (controller, nwid, Address::from_u64(0x0a0b0c0d0e).unwrap())
    }

    fn data(ts: u64) -> NetworkConfigData {
        NetworkConfigData {
            pull_interval_ms: None,
            rules: None,
            capabilities: Vec::new(),
            grants: Default::default(),
            dns: None,
            name: "office".into(),
            revision: 3,
            timestamp_ms: ts,
            private: true,
            mtu: 2800,
            multicast_limit: 32,
            enable_broadcast: true,
            active_bridge: false,
            assigned: vec![AssignedIp {
                ip: "10.147.17.5".parse().unwrap(),
                prefix_len: 24,
            }],
            routes: vec![ManagedRoute {
                target: "10.147.17.0".parse().unwrap(),
                prefix_len: 24,
                via: None,
            }],
            bridges: vec![],
        }
    }

    #[test]
    fn certificates_agree_only_within_their_delta_and_verify() {
        let (k, nwid, member) = ids();
        let a = Certificate::issue(&k, nwid, member, 1_000_000);
        let b = Certificate::issue(&k, nwid, member, 1_000_000 + CERTIFICATE_MAX_DELTA_MS);
        let c = Certificate::issue(&k, nwid, member, 1_000_001 + CERTIFICATE_MAX_DELTA_MS);
        assert!(a.agrees_with(&b) && b.agrees_with(&a));
        assert!(!a.agrees_with(&c));
        assert!(a.verify(k.public()));
        assert!(!a.verify(KeyPair::generate(&mut crate::rng::os_rng()).public()));
        let mut bytes = Vec::new();
        a.encode_into(&mut bytes);
        let (back, used) = Certificate::decode(&bytes).unwrap();
        assert_eq!((back.clone(), used), (a, CERTIFICATE_LEN_BYTES));
        bytes[15] ^= 1; // the timestamp
        assert!(!Certificate::decode(&bytes).unwrap().0.verify(k.public()));
    }

    #[test]
    fn a_certificate_signs_its_grants_and_one_without_is_encoded_as_before() {
        let (k, nwid, member) = ids();
        let grants = Grants::new([(2000, 100), (2001, 7)], [1000]).unwrap();
        let c = Certificate::issue_with_grants(&k, nwid, member, 9_000, grants.clone());
        assert!(c.verify(k.public()));
        let mut bytes = Vec::new();
        c.encode_into(&mut bytes);
        assert_eq!(bytes.len(), c.encoded_len());
        assert_eq!(bytes.len(), CERTIFICATE_LEN_BYTES + 2 + 16 + 4);
        bytes.extend_from_slice(b"next");
        let (back, used) = Certificate::decode(&bytes).unwrap();
        assert_eq!((&back, used), (&c, bytes.len() - 4));
        assert_eq!(
            (back.grants.tag(2000), back.max_delta_ms),
            (Some(100), CERTIFICATE_MAX_DELTA_MS)
        );
        // A member that raises its own tag, or adds a capability, breaks
        // the controller's signature.
        let mut raised = bytes.clone();
        raised[29 + 1 + 7] ^= 1; // the value of tag 2000
        assert!(!Certificate::decode(&raised).unwrap().0.verify(k.public()));
        let mut forged = c.clone();
        forged.grants = Grants::new([(2000, 100), (2001, 7)], [1000, 1001]).unwrap();
        assert!(!forged.verify(k.public()));
        // Dropping the grants (and the flag) does not verify either: the
        // two forms are signed under different labels.
        let mut stripped = c.clone();
        stripped.grants = Grants::default();
        assert!(!stripped.verify(k.public()));
        // Without grants: the first certificate form, byte for byte.
        let plain = Certificate::issue(&k, nwid, member, 9_000);
        let mut plain_bytes = Vec::new();
        plain.encode_into(&mut plain_bytes);
        assert_eq!(plain_bytes.len(), CERTIFICATE_LEN_BYTES);
        assert_eq!(plain_bytes[21..29], CERTIFICATE_MAX_DELTA_MS.to_be_bytes());
        // The flag with empty grants, or grants cut short: malformed.
        let mut empty_flagged = plain_bytes[..29].to_vec();
        empty_flagged[21] |= 0x80;
        empty_flagged.extend_from_slice(&[0, 0]);
        empty_flagged.extend_from_slice(&plain_bytes[29..]);
        assert!(Certificate::decode(&empty_flagged).is_err());
        for len in 0..bytes.len() - 4 {
            assert!(Certificate::decode(&bytes[..len]).is_err(), "{len}");
        }
        // Credentials carry them whole.
        let creds = Credentials {
            certificates: vec![c.clone(), plain.clone()],
            revocations: vec![],
        };
        assert_eq!(Credentials::decode(&creds.encode()).unwrap(), creds);
        // A config takes its member's grants from its certificate.
        let mut d = data(9_000);
        d.grants = grants;
        d.capabilities = vec![Capability::new(1000, RuleSet::accept_all()).unwrap()];
        let config = NetworkConfig {
            network: nwid,
            issued_to: member,
            certificate: c,
            data: d,
        };
        let decoded = NetworkConfig::decode(&config.encode(), nwid, member, k.public()).unwrap();
        assert_eq!(decoded, config);
        // Capabilities beyond the bounds make a config refused, named.
        let mut many = config.clone();
        many.data.capabilities = (0..2)
            .map(|_| Capability::new(1, RuleSet::accept_all()).unwrap())
            .collect();
        let err = NetworkConfig::decode(&many.encode(), nwid, member, k.public()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network config field capabilities: capability id 1 is defined twice"
        );
    }

    #[test]
    fn config_travels_in_signed_chunks_and_is_checked() {
        let (k, nwid, member) = ids();
        let d = data(5_000);
        let config = NetworkConfig {
            network: nwid,
            issued_to: member,
            certificate: Certificate::issue(&k, nwid, member, d.timestamp_ms),
            data: d,
        };
        let mut bytes = config.encode();
        // Make it big enough to need several chunks.
        let mut big = config.clone();
        big.data.name = "x".repeat(100);
        big.data.routes = (0..40)
            .map(|i| ManagedRoute {
                target: format!("10.{i}.0.0").parse().unwrap(),
                prefix_len: 16,
                via: Some("10.147.17.1".parse().unwrap()),
            })
            .collect();
        let big_bytes = big.encode();
        let chunks = encode_chunks(&k, nwid, 99, &big_bytes);
        assert!(chunks.len() > 1);
        let mut assembled = vec![0u8; big_bytes.len()];
        for c in &chunks {
            let chunk = decode_chunk(c, k.public()).unwrap();
            assembled[chunk.offset as usize..chunk.offset as usize + chunk.data.len()]
                .copy_from_slice(chunk.data);
        }
        assert_eq!(
            NetworkConfig::decode(&assembled, nwid, member, k.public()).unwrap(),
            big
        );
        // A forged chunk is refused.
        let mut forged = chunks[0].clone();
        forged[30] ^= 1;
        assert_eq!(
            decode_chunk(&forged, k.public()),
            Err(NetconfError::BadSignature("network config chunk"))
        );
        // Signed by another key, or for another member: refused.
        let other = KeyPair::generate(&mut crate::rng::os_rng());
        assert!(NetworkConfig::decode(&bytes, nwid, member, other.public()).is_err());
        let someone = Address::from_u64(0x0101010101).unwrap();
        assert_eq!(
            NetworkConfig::decode(&bytes, nwid, someone, k.public()),
            Err(NetconfError::WrongTarget("certificate"))
        );
        // Bad fields are named.
        let mut bad = config.clone();
        bad.data.mtu = 100;
        let err = NetworkConfig::decode(&bad.encode(), nwid, member, k.public()).unwrap_err();
        assert!(err.to_string().contains("mtu"), "{err}");
        bytes.truncate(bytes.len() - 3);
        assert!(NetworkConfig::decode(&bytes, nwid, member, k.public()).is_err());
    }

    #[test]
    fn revocations_void_older_certificates_and_travel_with_them() {
        let controller = KeyPair::generate(&mut crate::rng::os_rng());
        let nwid = NetworkId::from_u64(0x8056_c2e2_1c00_0001).unwrap();
        let member = Address::from_u64(0x01_0203_0405).unwrap();
        let r = Revocation::issue(&controller, nwid, member, 5_000);
        assert!(r.verify(controller.public()));
        assert!(!r.verify(KeyPair::generate(&mut crate::rng::os_rng()).public()));
        let old = Certificate::issue(&controller, nwid, member, 5_000);
        let new = Certificate::issue(&controller, nwid, member, 5_001);
        let other = Certificate::issue(
            &controller,
            nwid,
            Address::from_u64(0x01_0203_0406).unwrap(),
            1,
        );
        assert!(r.voids(&old) && !r.voids(&new) && !r.voids(&other));
        let c = Credentials {
            certificates: vec![new.clone()],
            revocations: vec![r.clone()],
        };
        let bytes = c.encode();
        assert_eq!(
            bytes.len(),
            2 + CERTIFICATE_LEN_BYTES + REVOCATION_LEN_BYTES
        );
        assert_eq!(Credentials::decode(&bytes).unwrap(), c);
        // Certificates alone (the older form) still decode.
        let alone = Credentials {
            certificates: vec![new],
            revocations: vec![],
        };
        assert_eq!(alone.encode().len(), 1 + CERTIFICATE_LEN_BYTES);
        assert_eq!(Credentials::decode(&alone.encode()).unwrap(), alone);
        assert!(Credentials::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Credentials::decode(&trailing).is_err());
        // A tampered threshold no longer verifies.
        let mut tampered = r.clone();
        tampered.threshold_ms += 1;
        assert!(!tampered.verify(controller.public()));
    }
}
