//! Evaluating a rule list on one frame, with ZeroTier's semantics
//! (`Network.cpp` `_doZtFilter`): matches combine into a set (AND, or OR
//! with the `or` flag; `not` inverts each), and the first action reached
//! while its set matches decides; an action whose set does not match
//! starts a new set. Reaching the end decides nothing (`NoMatch`).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::address::Address;
use crate::network_id::Mac;

use super::rule::{Rule, RuleKind};

/// Characteristic bit: the frame is inbound.
pub const CHARACTERISTIC_INBOUND: u64 = 0x8000_0000_0000_0000;
/// Characteristic bit: the destination MAC is multicast.
pub const CHARACTERISTIC_MULTICAST: u64 = 0x4000_0000_0000_0000;
/// Characteristic bit: the destination MAC is broadcast.
pub const CHARACTERISTIC_BROADCAST: u64 = 0x2000_0000_0000_0000;
/// Characteristic bit: the sender's IP is vouched for (an IPv6 neighbour
/// solicitation always is, as in ZeroTier).
pub const CHARACTERISTIC_SENDER_IP_AUTHENTICATED: u64 = 0x1000_0000_0000_0000;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// What the filter knows of one frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameFacts<'a> {
    /// Received from a member (else: we are sending it).
    pub inbound: bool,
    /// The sending member.
    pub source: Address,
    /// The receiving member; `None` for a multicast (ZeroTier's 0).
    pub dest: Option<Address>,
    /// Source MAC.
    pub mac_source: Mac,
    /// Destination MAC.
    pub mac_dest: Mac,
    /// Ethertype.
    pub ether_type: u16,
    /// Everything after the Ethernet header.
    pub payload: &'a [u8],
    /// For a super-frame: what follows the Ethernet header in its first
    /// and last segment, in bytes (each segment is a frame the size rules
    /// judge; those between are as long as the first).
    pub segments: Option<(usize, usize)>,
}

/// The tags the tag matches compare: ours, and the other member's.
pub trait TagView {
    /// Our value of tag `id`, if the controller gave us one.
    fn local(&self, id: u32) -> Option<u32>;
    /// The other member's value of tag `id`, if it showed us one.
    fn remote(&self, id: u32) -> Option<u32>;
}

/// No tags on either side.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTags;

impl TagView for NoTags {
    fn local(&self, _: u32) -> Option<u32> {
        None
    }
    fn remote(&self, _: u32) -> Option<u32> {
        None
    }
}

/// A copy a TEE or WATCH asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarbonCopy {
    /// The observer.
    pub to: Address,
    /// Bytes of the frame's payload to copy.
    pub length: usize,
    /// WATCH (else TEE).
    pub watch: bool,
}

/// What a rule list decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No action applied (the end was reached, or a BREAK).
    NoMatch,
    /// Dropped by the rule at this index.
    Drop(usize),
    /// Accepted; `super_accept`: we are a TEE/REDIRECT target, so the
    /// frame is taken in spite of its addressing.
    Accept {
        /// We are the target of a TEE, WATCH or REDIRECT.
        super_accept: bool,
    },
    /// Accepted, but to go to this member instead.
    Redirect(Address),
}

/// Evaluates `rules` on `frame` for us (`me`). `random` gives a fresh u32
/// when a MATCH_RANDOM is reached; `copy` is set by a TEE or WATCH taken.
pub fn evaluate(
    rules: &[Rule],
    me: Address,
    frame: &FrameFacts<'_>,
    tags: &dyn TagView,
    random: &mut dyn FnMut() -> u32,
    copy: &mut Option<CarbonCopy>,
) -> Decision {
    let mut super_accept = false;
    let mut set_matches = true;
    // Found once per frame, not once per rule.
    let layer4 = transport(frame);
    for (index, rule) in rules.iter().enumerate() {
        if rule.kind.is_action() {
            if set_matches {
                match rule.kind {
                    RuleKind::Drop => return Decision::Drop(index),
                    RuleKind::Accept => return Decision::Accept { super_accept },
                    RuleKind::Break => return Decision::NoMatch,
                    RuleKind::Tee {
                        address, length, ..
                    }
                    | RuleKind::Watch {
                        address, length, ..
                    } => {
                        if address == frame.source {
                        } else if address == me {
                            if frame.inbound {
                                return Decision::Accept { super_accept: true };
                            }
                        } else if Some(address) != frame.dest {
                            let len = frame.payload.len();
                            *copy = Some(CarbonCopy {
                                to: address,
                                length: if length == 0 {
                                    len
                                } else {
                                    len.min(usize::from(length))
                                },
                                watch: matches!(rule.kind, RuleKind::Watch { .. }),
                            });
                        }
                    }
                    RuleKind::Redirect { address, .. } => {
                        if address == frame.source {
                        } else if address == me {
                            if frame.inbound {
                                return Decision::Accept { super_accept: true };
                            }
                        } else if Some(address) != frame.dest {
                            return Decision::Redirect(address);
                        }
                    }
                    _ => {}
                }
                // A TEE, WATCH or REDIRECT that did nothing: the set goes on.
                continue;
            }
            if let RuleKind::Tee { address, .. }
            | RuleKind::Watch { address, .. }
            | RuleKind::Redirect { address, .. } = rule.kind
                && frame.inbound
                && address == me
            {
                super_accept = true;
            }
            set_matches = true;
            continue;
        }
        // Anything AND false is false: skip what cannot change the set.
        if !set_matches && !rule.or {
            continue;
        }
        let matched = matches(&rule.kind, frame, layer4, tags, super_accept, random) != rule.not;
        if rule.or {
            set_matches |= matched;
        } else {
            set_matches &= matched;
        }
    }
    Decision::NoMatch
}

/// Whether `ip` lies within `net/bits`.
fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, bits: u8) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits.min(32)))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, bits: u8) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits.min(128)))
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn v4_at(p: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn v6_at(p: &[u8], at: usize) -> Option<Ipv6Addr> {
    let b: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// The IPv6 payload's offset and protocol, past the extension headers
/// ZeroTier walks (hop-by-hop, routing, destination options, mobility).
fn ipv6_payload(p: &[u8]) -> Option<(usize, u8)> {
    if p.len() < 40 {
        return None;
    }
    let mut pos = 40;
    let mut proto = p[6];
    while pos <= p.len() {
        match proto {
            0 | 43 | 60 | 135 => {
                if pos + 8 > p.len() {
                    return None;
                }
                proto = p[pos];
                pos += usize::from(p[pos + 1]) * 8 + 8;
            }
            _ => return Some((pos, proto)),
        }
    }
    None
}

/// The transport header's offset and protocol of an IPv4 or IPv6 packet.
fn transport(frame: &FrameFacts<'_>) -> Option<(usize, u8)> {
    let p = frame.payload;
    match frame.ether_type {
        ETHERTYPE_IPV4 if p.len() >= 20 => Some((usize::from(p[0] & 0xf) * 4, p[9])),
        ETHERTYPE_IPV6 => ipv6_payload(p),
        _ => None,
    }
}

fn port(frame: &FrameFacts<'_>, layer4: Option<(usize, u8)>, dest: bool) -> Option<u16> {
    let (at, proto) = layer4?;
    if !matches!(proto, 0x06 | 0x11 | 0x84 | 0x88) || frame.payload.len() <= at + 4 {
        return None;
    }
    let at = at + if dest { 2 } else { 0 };
    let p = u16::from_be_bytes([frame.payload[at], frame.payload[at + 1]]);
    // ZeroTier takes port 0 for none over IPv6 (and as a port over IPv4).
    (frame.ether_type == ETHERTYPE_IPV4 || p > 0).then_some(p)
}

fn characteristics(frame: &FrameFacts<'_>, layer4: Option<(usize, u8)>) -> u64 {
    let mut cf = if frame.inbound {
        CHARACTERISTIC_INBOUND
    } else {
        0
    };
    if frame.mac_dest.is_multicast() {
        cf |= CHARACTERISTIC_MULTICAST;
    }
    if frame.mac_dest == Mac::BROADCAST {
        cf |= CHARACTERISTIC_BROADCAST;
    }
    let p = frame.payload;
    if frame.ether_type == ETHERTYPE_IPV6 && p.len() >= 40 + 8 + 16 && p[6] == 0x3a && p[40] == 0x87
    {
        cf |= CHARACTERISTIC_SENDER_IP_AUTHENTICATED;
    }
    if let Some((at, 0x06)) = layer4
        && let (Some(&flags), Some(&high)) = (p.get(at + 13), p.get(at + 12))
    {
        cf |= u64::from(flags) | (u64::from(high & 0x0f) << 8);
    }
    cf
}

fn integer(payload: &[u8], idx: u16, little: bool, bits: u8) -> u64 {
    let bits = u32::from(bits.clamp(1, 64));
    let bytes = bits.div_ceil(8) as usize;
    let mut value = 0u64;
    if little {
        let idx = usize::from(idx);
        if let Some(b) = payload.get(idx..idx + bytes) {
            for &x in b {
                value = (value >> 8) | (u64::from(x) << 56);
            }
        }
        value >> (64 - bits)
    } else {
        let idx = usize::from(idx) + (8 - bytes);
        if let Some(b) = payload.get(idx..idx + bytes) {
            for &x in b {
                value = (value << 8) | u64::from(x);
            }
        }
        value & (u64::MAX >> (64 - bits))
    }
}

/// Compares our tag with the other member's, ZeroTier's way: without our
/// tag, no match; without theirs, no match inbound (they must show it),
/// a match outbound (they check on their side).
fn tags_compare(
    frame: &FrameFacts<'_>,
    tags: &dyn TagView,
    id: u32,
    super_accept: bool,
    compare: impl Fn(u32, u32) -> bool,
) -> bool {
    let Some(ours) = tags.local(id) else {
        return false;
    };
    match tags.remote(id) {
        Some(theirs) => compare(ours, theirs),
        None => !frame.inbound || super_accept,
    }
}

fn matches(
    kind: &RuleKind,
    frame: &FrameFacts<'_>,
    layer4: Option<(usize, u8)>,
    tags: &dyn TagView,
    super_accept: bool,
    random: &mut dyn FnMut() -> u32,
) -> bool {
    let p = frame.payload;
    let v4 = frame.ether_type == ETHERTYPE_IPV4 && p.len() >= 20;
    let v6 = frame.ether_type == ETHERTYPE_IPV6 && p.len() >= 40;
    match *kind {
        RuleKind::SourceAddress(a) => a == frame.source,
        RuleKind::DestAddress(a) => Some(a) == frame.dest,
        RuleKind::VlanId(v) => v == 0,
        RuleKind::VlanPcp(v) | RuleKind::VlanDei(v) => v == 0,
        RuleKind::MacSource(m) => m == frame.mac_source,
        RuleKind::MacDest(m) => m == frame.mac_dest,
        RuleKind::Ipv4Source(net, bits) => {
            v4 && v4_at(p, 12).is_some_and(|ip| in_v4(ip, net, bits))
        }
        RuleKind::Ipv4Dest(net, bits) => v4 && v4_at(p, 16).is_some_and(|ip| in_v4(ip, net, bits)),
        RuleKind::Ipv6Source(net, bits) => v6 && v6_at(p, 8).is_some_and(|ip| in_v6(ip, net, bits)),
        RuleKind::Ipv6Dest(net, bits) => v6 && v6_at(p, 24).is_some_and(|ip| in_v6(ip, net, bits)),
        RuleKind::IpTos { mask, start, end } => {
            let tos = if v4 {
                p[1]
            } else if v6 {
                ((p[0] << 4) & 0xf0) | ((p[1] >> 4) & 0x0f)
            } else {
                return false;
            };
            (start..=end).contains(&(tos & mask))
        }
        RuleKind::IpProtocol(proto) => {
            if v4 {
                p[9] == proto
            } else {
                frame.ether_type == ETHERTYPE_IPV6 && layer4.is_some_and(|(_, pr)| pr == proto)
            }
        }
        RuleKind::EtherType(e) => e == frame.ether_type,
        RuleKind::Icmp { icmp_type, code } => {
            let at = match layer4 {
                Some((at, 0x01)) if v4 => at,
                Some((at, 0x3a)) if frame.ether_type == ETHERTYPE_IPV6 => at,
                _ => return false,
            };
            match (p.get(at), p.get(at + 1)) {
                (Some(&t), Some(&c)) => t == icmp_type && code.is_none_or(|want| want == c),
                _ => false,
            }
        }
        RuleKind::SourcePortRange(lo, hi) => {
            port(frame, layer4, false).is_some_and(|x| (lo..=hi).contains(&x))
        }
        RuleKind::DestPortRange(lo, hi) => {
            port(frame, layer4, true).is_some_and(|x| (lo..=hi).contains(&x))
        }
        RuleKind::Characteristics(mask) => characteristics(frame, layer4) & mask != 0,
        RuleKind::FrameSizeRange(lo, hi) => {
            let range = usize::from(lo)..=usize::from(hi);
            // A super-frame matches when every segment it stands for does.
            match frame.segments {
                Some((first, last)) => range.contains(&first) && range.contains(&last),
                None => range.contains(&p.len()),
            }
        }
        RuleKind::Random(probability) => random() <= probability,
        RuleKind::TagsDifference { id, value } => {
            tags_compare(frame, tags, id, super_accept, |a, b| a.abs_diff(b) <= value)
        }
        RuleKind::TagsBitwiseAnd { id, value } => {
            tags_compare(frame, tags, id, super_accept, |a, b| a & b == value)
        }
        RuleKind::TagsBitwiseOr { id, value } => {
            tags_compare(frame, tags, id, super_accept, |a, b| a | b == value)
        }
        RuleKind::TagsBitwiseXor { id, value } => {
            tags_compare(frame, tags, id, super_accept, |a, b| a ^ b == value)
        }
        RuleKind::TagsEqual { id, value } => tags_compare(frame, tags, id, super_accept, |a, b| {
            a == value && b == value
        }),
        RuleKind::TagSender { id, value } | RuleKind::TagReceiver { id, value } => {
            let sender = matches!(kind, RuleKind::TagSender { .. });
            if super_accept {
                true
            } else if sender == frame.inbound {
                // The other member's tag: the sender's when receiving, the
                // receiver's when sending (then unknown may pass: it checks).
                match tags.remote(id) {
                    Some(v) => v == value,
                    None => !sender,
                }
            } else {
                tags.local(id) == Some(value)
            }
        }
        RuleKind::IntegerRange {
            start,
            end,
            idx,
            little,
            bits,
        } => (start..=end).contains(&integer(p, idx, little, bits)),
        RuleKind::Drop
        | RuleKind::Accept
        | RuleKind::Tee { .. }
        | RuleKind::Watch { .. }
        | RuleKind::Redirect { .. }
        | RuleKind::Break => false,
    }
}
