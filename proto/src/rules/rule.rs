//! One flow rule, as ZeroTier defines it: a match or an action, with the
//! `not` and `or` flags. Two encodings, each with one encoder and one
//! decoder: ZeroTier's JSON (the controller API, what UIs post) and a
//! compact binary form (in a member's config, PROTOCOL.md §4.8).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use crate::address::Address;
use crate::network_id::Mac;

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not a JSON object, or without a known `type`.
    #[error("rule {index}: {problem}")]
    Json {
        /// Its position in the list.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// The binary form ends early, has an unknown type or a wrong length.
    #[error("malformed rule set at byte {0}")]
    Malformed(usize),
}

/// What a rule does or matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Drop the frame.
    Drop,
    /// Accept the frame.
    Accept,
    /// Send a copy (its first `length` bytes; 0: all) to `address`.
    Tee {
        /// The observer.
        address: Address,
        /// ZeroTier's flags (kept, unused).
        flags: u32,
        /// Bytes copied; 0 for the whole frame.
        length: u16,
    },
    /// As `Tee`, marked as a watch copy.
    Watch {
        /// The observer.
        address: Address,
        /// ZeroTier's flags (kept, unused).
        flags: u32,
        /// Bytes copied; 0 for the whole frame.
        length: u16,
    },
    /// Send the frame to `address` instead.
    Redirect {
        /// The new recipient.
        address: Address,
        /// ZeroTier's flags (kept, unused).
        flags: u32,
    },
    /// Stop evaluating this rule list: no match.
    Break,
    /// The sender's member address.
    SourceAddress(Address),
    /// The recipient's member address.
    DestAddress(Address),
    /// 802.1Q VLAN id (vnet, as ZeroTier, sees 0).
    VlanId(u16),
    /// 802.1Q priority (matches only 0).
    VlanPcp(u8),
    /// 802.1Q drop-eligible bit (matches only 0).
    VlanDei(u8),
    /// Source MAC.
    MacSource(Mac),
    /// Destination MAC.
    MacDest(Mac),
    /// IPv4 source within a prefix.
    Ipv4Source(Ipv4Addr, u8),
    /// IPv4 destination within a prefix.
    Ipv4Dest(Ipv4Addr, u8),
    /// IPv6 source within a prefix.
    Ipv6Source(Ipv6Addr, u8),
    /// IPv6 destination within a prefix.
    Ipv6Dest(Ipv6Addr, u8),
    /// IP type of service, masked, within `start..=end`.
    IpTos {
        /// Applied to the TOS byte first.
        mask: u8,
        /// Lowest value.
        start: u8,
        /// Highest value.
        end: u8,
    },
    /// IP protocol (IPv6: after extension headers).
    IpProtocol(u8),
    /// Ethertype.
    EtherType(u16),
    /// ICMP (v4 or v6) type, and code if given.
    Icmp {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code, if it must match too.
        code: Option<u8>,
    },
    /// TCP/UDP/SCTP/UDP-Lite source port within a range.
    SourcePortRange(u16, u16),
    /// TCP/UDP/SCTP/UDP-Lite destination port within a range.
    DestPortRange(u16, u16),
    /// Any of these packet characteristic bits (TCP flags, inbound, ...).
    Characteristics(u64),
    /// Frame payload size within a range.
    FrameSizeRange(u16, u16),
    /// Matches with probability `p / 2^32`.
    Random(u32),
    /// |our tag − theirs| ≤ value.
    TagsDifference {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// (ours & theirs) == value.
    TagsBitwiseAnd {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// (ours | theirs) == value.
    TagsBitwiseOr {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// (ours ^ theirs) == value.
    TagsBitwiseXor {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// ours == value and theirs == value.
    TagsEqual {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// The sender's tag equals value.
    TagSender {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// The receiver's tag equals value.
    TagReceiver {
        /// Tag id.
        id: u32,
        /// Compared value.
        value: u32,
    },
    /// An integer read from the payload at `idx` within `start..=end`.
    IntegerRange {
        /// Lowest value.
        start: u64,
        /// Highest value (at most `start + u32::MAX`).
        end: u64,
        /// Byte offset in the payload.
        idx: u16,
        /// Little-endian.
        little: bool,
        /// Width, 1 to 64 bits.
        bits: u8,
    },
}

/// A rule: what it matches or does, and how it combines with the previous
/// match of its set (`or`) and whether its result is inverted (`not`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Inverts a match.
    pub not: bool,
    /// ORs a match into the set (else ANDs it).
    pub or: bool,
    /// The match or action.
    pub kind: RuleKind,
}

// ZeroTier's rule type numbers (ZT_VirtualNetworkRuleType), used in the
// binary form.
const T_DROP: u8 = 0;
const T_ACCEPT: u8 = 1;
const T_TEE: u8 = 2;
const T_WATCH: u8 = 3;
const T_REDIRECT: u8 = 4;
const T_BREAK: u8 = 5;
const T_SOURCE_ADDRESS: u8 = 24;
const T_DEST_ADDRESS: u8 = 25;
const T_VLAN_ID: u8 = 26;
const T_VLAN_PCP: u8 = 27;
const T_VLAN_DEI: u8 = 28;
const T_MAC_SOURCE: u8 = 29;
const T_MAC_DEST: u8 = 30;
const T_IPV4_SOURCE: u8 = 31;
const T_IPV4_DEST: u8 = 32;
const T_IPV6_SOURCE: u8 = 33;
const T_IPV6_DEST: u8 = 34;
const T_IP_TOS: u8 = 35;
const T_IP_PROTOCOL: u8 = 36;
const T_ETHERTYPE: u8 = 37;
const T_ICMP: u8 = 38;
const T_SOURCE_PORT_RANGE: u8 = 39;
const T_DEST_PORT_RANGE: u8 = 40;
const T_CHARACTERISTICS: u8 = 41;
const T_FRAME_SIZE_RANGE: u8 = 42;
const T_RANDOM: u8 = 43;
const T_TAGS_DIFFERENCE: u8 = 44;
const T_TAGS_BITWISE_AND: u8 = 45;
const T_TAGS_BITWISE_OR: u8 = 46;
const T_TAGS_BITWISE_XOR: u8 = 47;
const T_TAGS_EQUAL: u8 = 48;
const T_TAG_SENDER: u8 = 49;
const T_TAG_RECEIVER: u8 = 50;
const T_INTEGER_RANGE: u8 = 51;
/// The `not` bit of the type byte.
const NOT_BIT: u8 = 0x80;
/// The `or` bit of the type byte.
const OR_BIT: u8 = 0x40;
/// The tag matches: ZeroTier's JSON name and type number of each.
const TAG_MATCHES: [(&str, u8); 7] = [
    ("MATCH_TAGS_DIFFERENCE", T_TAGS_DIFFERENCE),
    ("MATCH_TAGS_BITWISE_AND", T_TAGS_BITWISE_AND),
    ("MATCH_TAGS_BITWISE_OR", T_TAGS_BITWISE_OR),
    ("MATCH_TAGS_BITWISE_XOR", T_TAGS_BITWISE_XOR),
    ("MATCH_TAGS_EQUAL", T_TAGS_EQUAL),
    ("MATCH_TAG_SENDER", T_TAG_SENDER),
    ("MATCH_TAG_RECEIVER", T_TAG_RECEIVER),
];

impl RuleKind {
    /// Whether this is an action (ends a set) rather than a match.
    pub fn is_action(&self) -> bool {
        self.type_number() <= T_BREAK
    }

    /// Whether it needs tags (credentials a member holds).
    pub fn uses_tags(&self) -> bool {
        self.tag_parts().is_some()
    }

    /// A tag match's type number, tag id and value.
    fn tag_parts(&self) -> Option<(u8, u32, u32)> {
        match *self {
            RuleKind::TagsDifference { id, value }
            | RuleKind::TagsBitwiseAnd { id, value }
            | RuleKind::TagsBitwiseOr { id, value }
            | RuleKind::TagsBitwiseXor { id, value }
            | RuleKind::TagsEqual { id, value }
            | RuleKind::TagSender { id, value }
            | RuleKind::TagReceiver { id, value } => Some((self.type_number(), id, value)),
            _ => None,
        }
    }

    /// The tag match of type `number` (one of [`TAG_MATCHES`]).
    fn tag_match(number: u8, id: u32, value: u32) -> RuleKind {
        match number {
            T_TAGS_DIFFERENCE => RuleKind::TagsDifference { id, value },
            T_TAGS_BITWISE_AND => RuleKind::TagsBitwiseAnd { id, value },
            T_TAGS_BITWISE_OR => RuleKind::TagsBitwiseOr { id, value },
            T_TAGS_BITWISE_XOR => RuleKind::TagsBitwiseXor { id, value },
            T_TAGS_EQUAL => RuleKind::TagsEqual { id, value },
            T_TAG_SENDER => RuleKind::TagSender { id, value },
            _ => RuleKind::TagReceiver { id, value },
        }
    }

    fn type_number(&self) -> u8 {
        match self {
            RuleKind::Drop => T_DROP,
            RuleKind::Accept => T_ACCEPT,
            RuleKind::Tee { .. } => T_TEE,
            RuleKind::Watch { .. } => T_WATCH,
            RuleKind::Redirect { .. } => T_REDIRECT,
            RuleKind::Break => T_BREAK,
            RuleKind::SourceAddress(_) => T_SOURCE_ADDRESS,
            RuleKind::DestAddress(_) => T_DEST_ADDRESS,
            RuleKind::VlanId(_) => T_VLAN_ID,
            RuleKind::VlanPcp(_) => T_VLAN_PCP,
            RuleKind::VlanDei(_) => T_VLAN_DEI,
            RuleKind::MacSource(_) => T_MAC_SOURCE,
            RuleKind::MacDest(_) => T_MAC_DEST,
            RuleKind::Ipv4Source(..) => T_IPV4_SOURCE,
            RuleKind::Ipv4Dest(..) => T_IPV4_DEST,
            RuleKind::Ipv6Source(..) => T_IPV6_SOURCE,
            RuleKind::Ipv6Dest(..) => T_IPV6_DEST,
            RuleKind::IpTos { .. } => T_IP_TOS,
            RuleKind::IpProtocol(_) => T_IP_PROTOCOL,
            RuleKind::EtherType(_) => T_ETHERTYPE,
            RuleKind::Icmp { .. } => T_ICMP,
            RuleKind::SourcePortRange(..) => T_SOURCE_PORT_RANGE,
            RuleKind::DestPortRange(..) => T_DEST_PORT_RANGE,
            RuleKind::Characteristics(_) => T_CHARACTERISTICS,
            RuleKind::FrameSizeRange(..) => T_FRAME_SIZE_RANGE,
            RuleKind::Random(_) => T_RANDOM,
            RuleKind::TagsDifference { .. } => T_TAGS_DIFFERENCE,
            RuleKind::TagsBitwiseAnd { .. } => T_TAGS_BITWISE_AND,
            RuleKind::TagsBitwiseOr { .. } => T_TAGS_BITWISE_OR,
            RuleKind::TagsBitwiseXor { .. } => T_TAGS_BITWISE_XOR,
            RuleKind::TagsEqual { .. } => T_TAGS_EQUAL,
            RuleKind::TagSender { .. } => T_TAG_SENDER,
            RuleKind::TagReceiver { .. } => T_TAG_RECEIVER,
            RuleKind::IntegerRange { .. } => T_INTEGER_RANGE,
        }
    }
}

/// An address in a rule: ZeroTier reads 0 or garbage as "no address"; a
/// rule naming none can never match it, so it is refused.
fn rule_address(v: &Value, index: usize) -> Result<Address, RuleError> {
    let text = v.as_str().unwrap_or("0");
    u64::from_str_radix(text, 16)
        .ok()
        .and_then(|n| Address::from_u64(n & 0xff_ffff_ffff).ok())
        .ok_or_else(|| json_err(index, format!("address {v} is not a member address")))
}

fn json_err(index: usize, problem: String) -> RuleError {
    RuleError::Json { index, problem }
}

/// ZeroTier's `jsonInt`: a number, or a string of digits; absent → `default`.
fn int(r: &Value, key: &str, default: u64) -> u64 {
    match &r[key] {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|i| i as u64))
            .or_else(|| n.as_f64().map(|f| f as u64))
            .unwrap_or(default),
        Value::String(s) => s.trim().parse().unwrap_or(default),
        Value::Bool(b) => u64::from(*b),
        _ => default,
    }
}

/// ZeroTier's `jsonBool`: a boolean, a number, or a string starting with t/T/1.
fn flag(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => s.starts_with(['t', 'T', '1']),
        _ => false,
    }
}

/// A u64 given as hex text or as a number.
fn hex_or_int(v: &Value) -> u64 {
    match v {
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn parse_mac(v: &Value, index: usize) -> Result<Mac, RuleError> {
    let hex: String = v
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let bytes = hex::decode(&hex)
        .ok()
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .ok_or_else(|| json_err(index, format!("mac {v} is not a MAC address")))?;
    Ok(Mac(bytes))
}

/// `ip/bits` (bits clamped as ZeroTier does; no bits: the full length).
fn parse_prefix<T: std::str::FromStr>(
    v: &Value,
    max: u8,
    index: usize,
) -> Result<(T, u8), RuleError> {
    let text = v.as_str().unwrap_or("");
    let (ip, bits) = text.split_once('/').unwrap_or((text, ""));
    let ip = ip
        .parse()
        .map_err(|_| json_err(index, format!("ip {v} is not an address/bits")))?;
    let bits = if bits.is_empty() {
        max
    } else {
        bits.parse::<u8>()
            .map_err(|_| json_err(index, format!("ip {v}: bad prefix length")))?
            .min(max)
    };
    Ok((ip, bits))
}

impl Rule {
    /// Reads one rule of ZeroTier's JSON (`index`: its place in the list,
    /// for errors). Lenient where ZeroTier is (numbers as strings, booleans
    /// as strings or numbers, missing fields as 0); an unknown `type` is refused.
    pub fn from_zerotier_json(r: &Value, index: usize) -> Result<Rule, RuleError> {
        if !r.is_object() {
            return Err(json_err(index, "not an object".into()));
        }
        let t = r["type"].as_str().unwrap_or("");
        let u8v = |key: &str| (int(r, key, 0) & 0xff) as u8;
        let u16v = |key: &str, default: u64| (int(r, key, default) & 0xffff) as u16;
        let u32v = |key: &str| (int(r, key, 0) & 0xffff_ffff) as u32;
        let tag = |r: &Value| {
            (
                (int(r, "id", 0) & 0xffff_ffff) as u32,
                (int(r, "value", 0) & 0xffff_ffff) as u32,
            )
        };
        let kind = match t {
            "ACTION_DROP" => RuleKind::Drop,
            "ACTION_ACCEPT" => RuleKind::Accept,
            "ACTION_TEE" => RuleKind::Tee {
                address: rule_address(&r["address"], index)?,
                flags: u32v("flags"),
                length: u16v("length", 0),
            },
            "ACTION_WATCH" => RuleKind::Watch {
                address: rule_address(&r["address"], index)?,
                flags: u32v("flags"),
                length: u16v("length", 0),
            },
            "ACTION_REDIRECT" => RuleKind::Redirect {
                address: rule_address(&r["address"], index)?,
                flags: u32v("flags"),
            },
            "ACTION_BREAK" => RuleKind::Break,
            "MATCH_SOURCE_ZEROTIER_ADDRESS" => {
                RuleKind::SourceAddress(rule_address(&r["zt"], index)?)
            }
            "MATCH_DEST_ZEROTIER_ADDRESS" => RuleKind::DestAddress(rule_address(&r["zt"], index)?),
            "MATCH_VLAN_ID" => RuleKind::VlanId(u16v("vlanId", 0)),
            "MATCH_VLAN_PCP" => RuleKind::VlanPcp(u8v("vlanPcp")),
            "MATCH_VLAN_DEI" => RuleKind::VlanDei(u8v("vlanDei")),
            "MATCH_MAC_SOURCE" => RuleKind::MacSource(parse_mac(&r["mac"], index)?),
            "MATCH_MAC_DEST" => RuleKind::MacDest(parse_mac(&r["mac"], index)?),
            "MATCH_IPV4_SOURCE" => {
                let (ip, bits) = parse_prefix(&r["ip"], 32, index)?;
                RuleKind::Ipv4Source(ip, bits)
            }
            "MATCH_IPV4_DEST" => {
                let (ip, bits) = parse_prefix(&r["ip"], 32, index)?;
                RuleKind::Ipv4Dest(ip, bits)
            }
            "MATCH_IPV6_SOURCE" => {
                let (ip, bits) = parse_prefix(&r["ip"], 128, index)?;
                RuleKind::Ipv6Source(ip, bits)
            }
            "MATCH_IPV6_DEST" => {
                let (ip, bits) = parse_prefix(&r["ip"], 128, index)?;
                RuleKind::Ipv6Dest(ip, bits)
            }
            "MATCH_IP_TOS" => RuleKind::IpTos {
                mask: u8v("mask"),
                start: u8v("start"),
                end: u8v("end"),
            },
            "MATCH_IP_PROTOCOL" => RuleKind::IpProtocol(u8v("ipProtocol")),
            "MATCH_ETHERTYPE" => RuleKind::EtherType(u16v("etherType", 0)),
            "MATCH_ICMP" => RuleKind::Icmp {
                icmp_type: u8v("icmpType"),
                code: (!r["icmpCode"].is_null()).then(|| u8v("icmpCode")),
            },
            "MATCH_IP_SOURCE_PORT_RANGE" | "MATCH_IP_DEST_PORT_RANGE" => {
                let start = u16v("start", 0);
                let end = u16v("end", u64::from(start));
                if t == "MATCH_IP_SOURCE_PORT_RANGE" {
                    RuleKind::SourcePortRange(start, end)
                } else {
                    RuleKind::DestPortRange(start, end)
                }
            }
            "MATCH_CHARACTERISTICS" => RuleKind::Characteristics(hex_or_int(&r["mask"])),
            "MATCH_FRAME_SIZE_RANGE" => {
                let start = u16v("start", 0);
                RuleKind::FrameSizeRange(start, u16v("end", u64::from(start)))
            }
            "MATCH_RANDOM" => RuleKind::Random(u32v("probability")),
            "INTEGER_RANGE" => {
                let start = hex_or_int(&r["start"]);
                let end = hex_or_int(&r["end"]);
                let bits = ((int(r, "bits", 1).wrapping_sub(1)) & 63) as u8 + 1;
                if end < start || end - start > u64::from(u32::MAX) {
                    return Err(json_err(
                        index,
                        "INTEGER_RANGE end before start or too far".into(),
                    ));
                }
                RuleKind::IntegerRange {
                    start,
                    end,
                    idx: u16v("idx", 0),
                    little: flag(&r["little"]),
                    bits,
                }
            }
            other => match TAG_MATCHES.iter().find(|(name, _)| *name == other) {
                Some(&(_, number)) => {
                    let (id, value) = tag(r);
                    RuleKind::tag_match(number, id, value)
                }
                None => return Err(json_err(index, format!("unknown rule type {other:?}"))),
            },
        };
        Ok(Rule {
            not: flag(&r["not"]),
            or: flag(&r["or"]),
            kind,
        })
    }

    /// The rule as ZeroTier's controller renders it.
    pub fn to_zerotier_json(&self) -> Value {
        let mut r = match self.kind {
            RuleKind::Drop => json!({"type": "ACTION_DROP"}),
            RuleKind::Accept => json!({"type": "ACTION_ACCEPT"}),
            RuleKind::Tee {
                address,
                flags,
                length,
            } => {
                json!({"type": "ACTION_TEE", "address": address.to_string(), "flags": flags, "length": length})
            }
            RuleKind::Watch {
                address,
                flags,
                length,
            } => {
                json!({"type": "ACTION_WATCH", "address": address.to_string(), "flags": flags, "length": length})
            }
            RuleKind::Redirect { address, flags } => {
                json!({"type": "ACTION_REDIRECT", "address": address.to_string(), "flags": flags})
            }
            RuleKind::Break => json!({"type": "ACTION_BREAK"}),
            RuleKind::SourceAddress(a) => {
                json!({"type": "MATCH_SOURCE_ZEROTIER_ADDRESS", "zt": a.to_string()})
            }
            RuleKind::DestAddress(a) => {
                json!({"type": "MATCH_DEST_ZEROTIER_ADDRESS", "zt": a.to_string()})
            }
            RuleKind::VlanId(v) => json!({"type": "MATCH_VLAN_ID", "vlanId": v}),
            RuleKind::VlanPcp(v) => json!({"type": "MATCH_VLAN_PCP", "vlanPcp": v}),
            RuleKind::VlanDei(v) => json!({"type": "MATCH_VLAN_DEI", "vlanDei": v}),
            RuleKind::MacSource(m) => json!({"type": "MATCH_MAC_SOURCE", "mac": m.to_string()}),
            RuleKind::MacDest(m) => json!({"type": "MATCH_MAC_DEST", "mac": m.to_string()}),
            RuleKind::Ipv4Source(ip, b) => {
                json!({"type": "MATCH_IPV4_SOURCE", "ip": format!("{ip}/{b}")})
            }
            RuleKind::Ipv4Dest(ip, b) => {
                json!({"type": "MATCH_IPV4_DEST", "ip": format!("{ip}/{b}")})
            }
            RuleKind::Ipv6Source(ip, b) => {
                json!({"type": "MATCH_IPV6_SOURCE", "ip": format!("{ip}/{b}")})
            }
            RuleKind::Ipv6Dest(ip, b) => {
                json!({"type": "MATCH_IPV6_DEST", "ip": format!("{ip}/{b}")})
            }
            RuleKind::IpTos { mask, start, end } => {
                json!({"type": "MATCH_IP_TOS", "mask": mask, "start": start, "end": end})
            }
            RuleKind::IpProtocol(p) => json!({"type": "MATCH_IP_PROTOCOL", "ipProtocol": p}),
            RuleKind::EtherType(e) => json!({"type": "MATCH_ETHERTYPE", "etherType": e}),
            RuleKind::Icmp { icmp_type, code } => {
                json!({"type": "MATCH_ICMP", "icmpType": icmp_type, "icmpCode": code})
            }
            RuleKind::SourcePortRange(s, e) => {
                json!({"type": "MATCH_IP_SOURCE_PORT_RANGE", "start": s, "end": e})
            }
            RuleKind::DestPortRange(s, e) => {
                json!({"type": "MATCH_IP_DEST_PORT_RANGE", "start": s, "end": e})
            }
            RuleKind::Characteristics(m) => {
                json!({"type": "MATCH_CHARACTERISTICS", "mask": format!("{m:016x}")})
            }
            RuleKind::FrameSizeRange(s, e) => {
                json!({"type": "MATCH_FRAME_SIZE_RANGE", "start": s, "end": e})
            }
            RuleKind::Random(p) => json!({"type": "MATCH_RANDOM", "probability": p}),
            RuleKind::IntegerRange {
                start,
                end,
                idx,
                little,
                bits,
            } => json!({
                "type": "INTEGER_RANGE", "start": format!("{start:016x}"), "end": format!("{end:016x}"),
                "idx": idx, "little": little, "bits": bits
            }),
            // The tag matches.
            _ => {
                let (number, id, value) = self.kind.tag_parts().unwrap_or_default();
                let name = TAG_MATCHES
                    .iter()
                    .find(|(_, n)| *n == number)
                    .map_or("", |(name, _)| *name);
                json!({"type": name, "id": id, "value": value})
            }
        };
        r["not"] = json!(self.not);
        r["or"] = json!(self.or);
        r
    }

    /// Appends the binary form: the type byte (`not` 0x80, `or` 0x40, then
    /// ZeroTier's type number), the value's length, the value (big-endian).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut t = self.kind.type_number();
        if self.not {
            t |= NOT_BIT;
        }
        if self.or {
            t |= OR_BIT;
        }
        out.push(t);
        let len_at = out.len();
        out.push(0);
        match self.kind {
            RuleKind::Drop | RuleKind::Accept | RuleKind::Break => {}
            RuleKind::Tee {
                address,
                flags,
                length,
            }
            | RuleKind::Watch {
                address,
                flags,
                length,
            } => {
                out.extend_from_slice(&address.to_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
            }
            RuleKind::Redirect { address, flags } => {
                out.extend_from_slice(&address.to_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
            }
            RuleKind::SourceAddress(a) | RuleKind::DestAddress(a) => {
                out.extend_from_slice(&a.to_bytes())
            }
            RuleKind::VlanId(v) | RuleKind::EtherType(v) => out.extend_from_slice(&v.to_be_bytes()),
            RuleKind::VlanPcp(v) | RuleKind::VlanDei(v) | RuleKind::IpProtocol(v) => out.push(v),
            RuleKind::MacSource(m) | RuleKind::MacDest(m) => out.extend_from_slice(&m.0),
            RuleKind::Ipv4Source(ip, b) | RuleKind::Ipv4Dest(ip, b) => {
                out.extend_from_slice(&ip.octets());
                out.push(b);
            }
            RuleKind::Ipv6Source(ip, b) | RuleKind::Ipv6Dest(ip, b) => {
                out.extend_from_slice(&ip.octets());
                out.push(b);
            }
            RuleKind::IpTos { mask, start, end } => out.extend_from_slice(&[mask, start, end]),
            RuleKind::Icmp { icmp_type, code } => {
                out.extend_from_slice(&[icmp_type, code.unwrap_or(0), u8::from(code.is_some())]);
            }
            RuleKind::SourcePortRange(s, e)
            | RuleKind::DestPortRange(s, e)
            | RuleKind::FrameSizeRange(s, e) => {
                out.extend_from_slice(&s.to_be_bytes());
                out.extend_from_slice(&e.to_be_bytes());
            }
            RuleKind::Characteristics(m) => out.extend_from_slice(&m.to_be_bytes()),
            RuleKind::Random(p) => out.extend_from_slice(&p.to_be_bytes()),
            RuleKind::IntegerRange {
                start,
                end,
                idx,
                little,
                bits,
            } => {
                out.extend_from_slice(&start.to_be_bytes());
                // end - start fits: checked where the rule is made.
                out.extend_from_slice(&((end - start) as u32).to_be_bytes());
                out.extend_from_slice(&idx.to_be_bytes());
                out.push(if little { 0x80 } else { 0 } | ((bits - 1) & 63));
            }
            // The tag matches.
            _ => {
                let (_, id, value) = self.kind.tag_parts().unwrap_or_default();
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        out[len_at] = (out.len() - len_at - 1) as u8;
    }

    /// Reads one rule of the binary form at the start of `bytes`; returns it
    /// and the bytes used. `at` is the offset for errors.
    pub fn decode(bytes: &[u8], at: usize) -> Result<(Rule, usize), RuleError> {
        let bad = || RuleError::Malformed(at);
        let (&t, rest) = bytes.split_first().ok_or_else(bad)?;
        let (&len, rest) = rest.split_first().ok_or_else(bad)?;
        let v = rest.get(..usize::from(len)).ok_or_else(bad)?;
        let want = |n: usize| if v.len() == n { Ok(()) } else { Err(bad()) };
        let u16_at = |i: usize| u16::from_be_bytes([v[i], v[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        let addr_at = |i: usize| -> Result<Address, RuleError> {
            let mut b = [0u8; 5];
            b.copy_from_slice(&v[i..i + 5]);
            Address::from_bytes(b).map_err(|_| bad())
        };
        let tag = || -> Result<(u32, u32), RuleError> {
            want(8)?;
            Ok((u32_at(0), u32_at(4)))
        };
        let kind = match t & 0x3f {
            T_DROP => want(0).map(|_| RuleKind::Drop)?,
            T_ACCEPT => want(0).map(|_| RuleKind::Accept)?,
            T_BREAK => want(0).map(|_| RuleKind::Break)?,
            T_TEE | T_WATCH => {
                want(11)?;
                let (address, flags, length) = (addr_at(0)?, u32_at(5), u16_at(9));
                if t & 0x3f == T_TEE {
                    RuleKind::Tee {
                        address,
                        flags,
                        length,
                    }
                } else {
                    RuleKind::Watch {
                        address,
                        flags,
                        length,
                    }
                }
            }
            T_REDIRECT => {
                want(9)?;
                RuleKind::Redirect {
                    address: addr_at(0)?,
                    flags: u32_at(5),
                }
            }
            T_SOURCE_ADDRESS => want(5)
                .and_then(|_| addr_at(0))
                .map(RuleKind::SourceAddress)?,
            T_DEST_ADDRESS => want(5)
                .and_then(|_| addr_at(0))
                .map(RuleKind::DestAddress)?,
            T_VLAN_ID => want(2).map(|_| RuleKind::VlanId(u16_at(0)))?,
            T_ETHERTYPE => want(2).map(|_| RuleKind::EtherType(u16_at(0)))?,
            T_VLAN_PCP => want(1).map(|_| RuleKind::VlanPcp(v[0]))?,
            T_VLAN_DEI => want(1).map(|_| RuleKind::VlanDei(v[0]))?,
            T_IP_PROTOCOL => want(1).map(|_| RuleKind::IpProtocol(v[0]))?,
            T_MAC_SOURCE | T_MAC_DEST => {
                want(6)?;
                let m = Mac([v[0], v[1], v[2], v[3], v[4], v[5]]);
                if t & 0x3f == T_MAC_SOURCE {
                    RuleKind::MacSource(m)
                } else {
                    RuleKind::MacDest(m)
                }
            }
            T_IPV4_SOURCE | T_IPV4_DEST => {
                want(5)?;
                let ip = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
                let b = v[4].min(32);
                if t & 0x3f == T_IPV4_SOURCE {
                    RuleKind::Ipv4Source(ip, b)
                } else {
                    RuleKind::Ipv4Dest(ip, b)
                }
            }
            T_IPV6_SOURCE | T_IPV6_DEST => {
                want(17)?;
                let mut o = [0u8; 16];
                o.copy_from_slice(&v[..16]);
                let ip = Ipv6Addr::from(o);
                let b = v[16].min(128);
                if t & 0x3f == T_IPV6_SOURCE {
                    RuleKind::Ipv6Source(ip, b)
                } else {
                    RuleKind::Ipv6Dest(ip, b)
                }
            }
            T_IP_TOS => want(3).map(|_| RuleKind::IpTos {
                mask: v[0],
                start: v[1],
                end: v[2],
            })?,
            T_ICMP => {
                want(3)?;
                RuleKind::Icmp {
                    icmp_type: v[0],
                    code: (v[2] & 1 != 0).then_some(v[1]),
                }
            }
            T_SOURCE_PORT_RANGE => {
                want(4).map(|_| RuleKind::SourcePortRange(u16_at(0), u16_at(2)))?
            }
            T_DEST_PORT_RANGE => want(4).map(|_| RuleKind::DestPortRange(u16_at(0), u16_at(2)))?,
            T_FRAME_SIZE_RANGE => {
                want(4).map(|_| RuleKind::FrameSizeRange(u16_at(0), u16_at(2)))?
            }
            T_CHARACTERISTICS => {
                want(8)?;
                RuleKind::Characteristics(u64::from_be_bytes(v.try_into().map_err(|_| bad())?))
            }
            T_RANDOM => want(4).map(|_| RuleKind::Random(u32_at(0)))?,
            n @ T_TAGS_DIFFERENCE..=T_TAG_RECEIVER => {
                tag().map(|(id, value)| RuleKind::tag_match(n, id, value))?
            }
            T_INTEGER_RANGE => {
                want(15)?;
                let start = u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?);
                let span = u64::from(u32_at(8));
                RuleKind::IntegerRange {
                    start,
                    end: start.checked_add(span).ok_or_else(bad)?,
                    idx: u16_at(12),
                    little: v[14] & 0x80 != 0,
                    bits: (v[14] & 63) + 1,
                }
            }
            _ => return Err(bad()),
        };
        Ok((
            Rule {
                not: t & NOT_BIT != 0,
                or: t & OR_BIT != 0,
                kind,
            },
            2 + usize::from(len),
        ))
    }
}
