use serde_json::json;

use super::*;
use crate::address::Address;
use crate::network_id::Mac;

fn a(n: u64) -> Address {
    Address::from_u64(n).unwrap()
}

const ME: u64 = 0x11_1111_1111;
const PEER: u64 = 0x22_2222_2222;
const OBSERVER: u64 = 0x33_3333_3333;

/// An IPv4 TCP (proto 6) or UDP (17) packet from 10.0.0.1:sport to 10.0.0.2:dport.
fn ipv4(proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[9] = proto;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[33] = tcp_flags;
    p
}

fn facts(payload: &[u8], ether_type: u16, inbound: bool) -> FrameFacts<'_> {
    FrameFacts {
        inbound,
        source: if inbound { a(PEER) } else { a(ME) },
        dest: Some(if inbound { a(ME) } else { a(PEER) }),
        mac_source: Mac([2, 0, 0, 0, 0, 1]),
        mac_dest: Mac([2, 0, 0, 0, 0, 2]),
        ether_type,
        payload,
        segments: None,
    }
}

fn rules(v: serde_json::Value) -> RuleSet {
    RuleSet::from_zerotier_json(&v).unwrap()
}

fn decide(set: &RuleSet, f: &FrameFacts<'_>) -> (Decision, Option<CarbonCopy>) {
    let mut copy = None;
    let d = evaluate(set.rules(), a(ME), f, &NoTags, &mut || 7, &mut copy);
    (d, copy)
}

/// ZeroTier's "drop TCP 22 unless ..." shape: `drop ipprotocol tcp and dport 22; accept;`
fn no_ssh() -> RuleSet {
    rules(json!([
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6, "not": false, "or": false},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22, "not": false, "or": false},
        {"type": "ACTION_DROP", "not": false, "or": false},
        {"type": "ACTION_ACCEPT", "not": false, "or": false}
    ]))
}

#[test]
fn an_and_set_drops_only_what_matches_every_match() {
    let set = no_ssh();
    let ssh = ipv4(6, 40000, 22, 0x02);
    let web = ipv4(6, 40000, 80, 0x02);
    let dns22 = ipv4(17, 40000, 22, 0);
    assert_eq!(
        decide(&set, &facts(&ssh, 0x0800, false)).0,
        Decision::Drop(2)
    );
    assert_eq!(
        decide(&set, &facts(&ssh, 0x0800, true)).0,
        Decision::Drop(2)
    );
    assert_eq!(
        decide(&set, &facts(&web, 0x0800, false)).0,
        Decision::Accept {
            super_accept: false
        }
    );
    assert_eq!(
        decide(&set, &facts(&dns22, 0x0800, false)).0,
        Decision::Accept {
            super_accept: false
        }
    );
}

#[test]
fn not_and_or_follow_zerotier() {
    // drop not ethertype ipv4 and not ethertype arp and not ethertype ipv6; accept;
    let set = rules(json!([
        {"type": "MATCH_ETHERTYPE", "etherType": 2048, "not": true, "or": false},
        {"type": "MATCH_ETHERTYPE", "etherType": 2054, "not": true, "or": false},
        {"type": "MATCH_ETHERTYPE", "etherType": 34525, "not": true, "or": false},
        {"type": "ACTION_DROP"},
        {"type": "ACTION_ACCEPT"}
    ]));
    let p = ipv4(6, 1, 2, 0);
    assert_eq!(
        decide(&set, &facts(&p, 0x0800, false)).0,
        Decision::Accept {
            super_accept: false
        }
    );
    assert_eq!(
        decide(&set, &facts(&p, 0x0806, false)).0,
        Decision::Accept {
            super_accept: false
        }
    );
    assert_eq!(decide(&set, &facts(&p, 0x88cc, false)).0, Decision::Drop(3));
    // OR: drop dport 22 or dport 23 (an OR joins the set).
    let set = rules(json!([
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 23, "end": 23, "or": true},
        {"type": "ACTION_DROP"},
        {"type": "ACTION_ACCEPT"}
    ]));
    for (port, dropped) in [(22, true), (23, true), (24, false)] {
        let p = ipv4(6, 1, port, 0);
        let d = decide(&set, &facts(&p, 0x0800, false)).0;
        assert_eq!(d == Decision::Drop(2), dropped, "port {port}: {d:?}");
    }
}

#[test]
fn the_end_of_the_list_and_break_decide_nothing() {
    let p = ipv4(6, 1, 22, 0);
    assert_eq!(
        decide(&RuleSet::default(), &facts(&p, 0x0800, false)).0,
        Decision::NoMatch
    );
    let set = rules(json!([{"type": "ACTION_BREAK"}, {"type": "ACTION_ACCEPT"}]));
    assert_eq!(decide(&set, &facts(&p, 0x0800, false)).0, Decision::NoMatch);
    // A set that does not match skips its action and starts a new set.
    let set = rules(json!([
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 17},
        {"type": "ACTION_BREAK"},
        {"type": "ACTION_DROP"}
    ]));
    assert_eq!(decide(&set, &facts(&p, 0x0800, false)).0, Decision::Drop(2));
}

#[test]
fn port_ranges_prefixes_icmp_and_characteristics() {
    let syn = ipv4(6, 5000, 443, 0x02);
    let f = facts(&syn, 0x0800, true);
    let one = |r: serde_json::Value| {
        let set = rules(json!([r, {"type": "ACTION_DROP"}]));
        decide(&set, &f).0 == Decision::Drop(1)
    };
    assert!(one(
        json!({"type": "MATCH_IP_DEST_PORT_RANGE", "start": 400, "end": 500})
    ));
    assert!(!one(
        json!({"type": "MATCH_IP_DEST_PORT_RANGE", "start": 444, "end": 500})
    ));
    assert!(one(
        json!({"type": "MATCH_IP_SOURCE_PORT_RANGE", "start": 5000})
    ));
    assert!(one(
        json!({"type": "MATCH_IPV4_SOURCE", "ip": "10.0.0.0/8"})
    ));
    assert!(!one(
        json!({"type": "MATCH_IPV4_DEST", "ip": "10.0.0.1/32"})
    ));
    assert!(one(json!({"type": "MATCH_IPV4_DEST", "ip": "10.0.0.2/32"})));
    // TCP SYN (bit 0x02) and inbound characteristic bits.
    assert!(one(
        json!({"type": "MATCH_CHARACTERISTICS", "mask": "0000000000000002"})
    ));
    assert!(!one(
        json!({"type": "MATCH_CHARACTERISTICS", "mask": "0000000000000010"})
    ));
    assert!(one(
        json!({"type": "MATCH_CHARACTERISTICS", "mask": "8000000000000000"})
    ));
    assert!(one(
        json!({"type": "MATCH_FRAME_SIZE_RANGE", "start": 40, "end": 40})
    ));
    assert!(one(
        json!({"type": "MATCH_SOURCE_ZEROTIER_ADDRESS", "zt": "2222222222"})
    ));
    assert!(!one(
        json!({"type": "MATCH_DEST_ZEROTIER_ADDRESS", "zt": "2222222222"})
    ));
    // 16 bits big-endian: ZeroTier reads the last bytes of an 8-byte field
    // at idx, so idx 16 reads offsets 22-23, the destination port.
    assert!(one(
        json!({"type": "INTEGER_RANGE", "start": 443, "end": 443, "idx": 16, "bits": 16})
    ));
    let mut ping = ipv4(1, 0, 0, 0);
    ping[20] = 8;
    let f = facts(&ping, 0x0800, false);
    let set = rules(
        json!([{"type": "MATCH_ICMP", "icmpType": 8, "icmpCode": null}, {"type": "ACTION_DROP"}]),
    );
    assert_eq!(decide(&set, &f).0, Decision::Drop(1));
    let set = rules(
        json!([{"type": "MATCH_ICMP", "icmpType": 8, "icmpCode": 3}, {"type": "ACTION_DROP"}]),
    );
    assert_eq!(decide(&set, &f).0, Decision::NoMatch);
}

#[test]
fn a_super_frame_is_judged_by_the_size_of_every_segment() {
    // `drop framesize 1001-65535; accept;`: drops frames above 1,000 bytes.
    let set = rules(json!([
        {"type": "MATCH_FRAME_SIZE_RANGE", "start": 1001, "end": 65535, "not": false, "or": false},
        {"type": "ACTION_DROP", "not": false, "or": false},
        {"type": "ACTION_ACCEPT", "not": false, "or": false}
    ]));
    let whole = ipv4(17, 40000, 53, 0);
    let run = |first, last| FrameFacts {
        segments: Some((first, last)),
        ..facts(&whole, 0x0800, false)
    };
    // A super-frame whose payload is 40 bytes here: its segments decide.
    assert_eq!(
        decide(&set, &run(92, 92)).0,
        Decision::Accept {
            super_accept: false
        }
    );
    assert_eq!(decide(&set, &run(1_400, 1_400)).0, Decision::Drop(1));
    // 30 datagrams of 64 bytes joined are 2,500 bytes long, yet each is small.
    let mut long = ipv4(17, 40000, 53, 0);
    long.resize(2_500, 0);
    assert_eq!(
        decide(&set, &facts(&long, 0x0800, false)).0,
        Decision::Drop(1)
    );
    let joined = FrameFacts {
        segments: Some((92, 60)),
        ..facts(&long, 0x0800, false)
    };
    assert_eq!(
        decide(&set, &joined).0,
        Decision::Accept {
            super_accept: false
        }
    );
    // Segments on both sides of the range: the match needs every one, so
    // the switch cuts such a super-frame first (Switch::size_rules_split).
    assert_eq!(
        decide(&set, &run(1_400, 200)).0,
        Decision::Accept {
            super_accept: false
        }
    );
    assert!(set.judges_sizes_apart(1_400, 200));
    assert!(set.judges_sizes_apart(1_000, 1_001));
    assert!(!set.judges_sizes_apart(1_400, 1_001));
    assert!(!set.judges_sizes_apart(92, 60));
    assert!(!RuleSet::accept_all().judges_sizes_apart(1_400, 200));
}

#[test]
fn ipv6_matches_walk_extension_headers() {
    let mut p = vec![0u8; 40 + 8 + 8];
    p[0] = 0x60;
    p[6] = 0; // hop-by-hop options first
    p[8] = 0xfd;
    p[24] = 0xfd;
    p[39] = 2;
    p[40] = 17; // next: UDP
    p[41] = 0; // 8 bytes
    p[48..50].copy_from_slice(&53u16.to_be_bytes());
    p[50..52].copy_from_slice(&5353u16.to_be_bytes());
    let f = facts(&p, 0x86dd, false);
    let set = rules(json!([
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 17},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 5353, "end": 5353},
        {"type": "MATCH_IPV6_DEST", "ip": "fd00::/8"},
        {"type": "ACTION_DROP"}
    ]));
    assert_eq!(decide(&set, &f).0, Decision::Drop(3));
}

#[test]
fn tee_watch_and_redirect_name_their_member() {
    let p = ipv4(6, 1, 22, 0);
    let obs = format!("{OBSERVER:010x}");
    let set = rules(
        json!([{"type": "ACTION_TEE", "address": obs, "length": 10}, {"type": "ACTION_ACCEPT"}]),
    );
    let (d, copy) = decide(&set, &facts(&p, 0x0800, false));
    assert_eq!(
        d,
        Decision::Accept {
            super_accept: false
        }
    );
    assert_eq!(
        copy,
        Some(CarbonCopy {
            to: a(OBSERVER),
            length: 10,
            watch: false
        })
    );
    let set =
        rules(json!([{"type": "ACTION_REDIRECT", "address": obs}, {"type": "ACTION_ACCEPT"}]));
    assert_eq!(
        decide(&set, &facts(&p, 0x0800, false)).0,
        Decision::Redirect(a(OBSERVER))
    );
    // We are the target: an inbound frame is taken in spite of its addressing.
    let me = format!("{ME:010x}");
    let set = rules(json!([{"type": "ACTION_REDIRECT", "address": me}, {"type": "ACTION_DROP"}]));
    assert_eq!(
        decide(&set, &facts(&p, 0x0800, true)).0,
        Decision::Accept { super_accept: true }
    );
}

struct Tags {
    ours: Option<u32>,
    theirs: Option<u32>,
}

impl TagView for Tags {
    fn local(&self, _: u32) -> Option<u32> {
        self.ours
    }
    fn remote(&self, _: u32) -> Option<u32> {
        self.theirs
    }
}

#[test]
fn tag_comparisons_are_strict_inbound_and_lenient_outbound() {
    // Departments: drop unless the tag 1000 values are equal (difference 0).
    let set = rules(json!([
        {"type": "MATCH_TAGS_DIFFERENCE", "id": 1000, "value": 0, "not": true},
        {"type": "ACTION_DROP"},
        {"type": "ACTION_ACCEPT"}
    ]));
    let p = ipv4(6, 1, 80, 0);
    let run = |ours, theirs, inbound| {
        let mut copy = None;
        evaluate(
            set.rules(),
            a(ME),
            &facts(&p, 0x0800, inbound),
            &Tags { ours, theirs },
            &mut || 0,
            &mut copy,
        )
    };
    let accept = Decision::Accept {
        super_accept: false,
    };
    assert_eq!(run(Some(100), Some(100), true), accept);
    assert_eq!(run(Some(100), Some(200), true), Decision::Drop(1));
    assert_eq!(run(Some(100), None, true), Decision::Drop(1));
    assert_eq!(run(Some(100), None, false), accept);
    assert_eq!(run(None, Some(100), false), Decision::Drop(1));
    let and = rules(
        json!([{"type": "MATCH_TAGS_BITWISE_AND", "id": 1, "value": 4}, {"type": "ACTION_DROP"}]),
    );
    let mut copy = None;
    let d = evaluate(
        and.rules(),
        a(ME),
        &facts(&p, 0x0800, true),
        &Tags {
            ours: Some(6),
            theirs: Some(12),
        },
        &mut || 0,
        &mut copy,
    );
    assert_eq!(d, Decision::Drop(1));
}

#[test]
fn both_encodings_round_trip_every_rule_type() {
    let all = json!([
        {"type": "ACTION_DROP"}, {"type": "ACTION_ACCEPT", "not": true},
        {"type": "ACTION_TEE", "address": "3333333333", "flags": 0, "length": 64},
        {"type": "ACTION_WATCH", "address": "3333333333", "flags": 1, "length": 0},
        {"type": "ACTION_REDIRECT", "address": "3333333333", "flags": 0},
        {"type": "ACTION_BREAK"},
        {"type": "MATCH_SOURCE_ZEROTIER_ADDRESS", "zt": "2222222222", "or": true},
        {"type": "MATCH_DEST_ZEROTIER_ADDRESS", "zt": "2222222222"},
        {"type": "MATCH_VLAN_ID", "vlanId": 5}, {"type": "MATCH_VLAN_PCP", "vlanPcp": 1},
        {"type": "MATCH_VLAN_DEI", "vlanDei": 1},
        {"type": "MATCH_MAC_SOURCE", "mac": "02:00:00:00:00:01"},
        {"type": "MATCH_MAC_DEST", "mac": "0200000000ff"},
        {"type": "MATCH_IPV4_SOURCE", "ip": "10.1.0.0/16"}, {"type": "MATCH_IPV4_DEST", "ip": "10.1.2.3/32"},
        {"type": "MATCH_IPV6_SOURCE", "ip": "fd00::/8"}, {"type": "MATCH_IPV6_DEST", "ip": "fd00::1/128"},
        {"type": "MATCH_IP_TOS", "mask": 252, "start": 8, "end": 16},
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": "6"}, {"type": "MATCH_ETHERTYPE", "etherType": 2054},
        {"type": "MATCH_ICMP", "icmpType": 8, "icmpCode": null}, {"type": "MATCH_ICMP", "icmpType": 3, "icmpCode": 1},
        {"type": "MATCH_IP_SOURCE_PORT_RANGE", "start": 1, "end": 1023},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
        {"type": "MATCH_CHARACTERISTICS", "mask": "0000000000000012"},
        {"type": "MATCH_FRAME_SIZE_RANGE", "start": 0, "end": 1500},
        {"type": "MATCH_RANDOM", "probability": 2147483648u64},
        {"type": "MATCH_TAGS_DIFFERENCE", "id": 1000, "value": 0},
        {"type": "MATCH_TAGS_BITWISE_AND", "id": 1, "value": 2},
        {"type": "MATCH_TAGS_BITWISE_OR", "id": 1, "value": 2},
        {"type": "MATCH_TAGS_BITWISE_XOR", "id": 1, "value": 2},
        {"type": "MATCH_TAGS_EQUAL", "id": 1, "value": 2},
        {"type": "MATCH_TAG_SENDER", "id": 1, "value": 2},
        {"type": "MATCH_TAG_RECEIVER", "id": 1, "value": 2},
        {"type": "INTEGER_RANGE", "start": "0000000000000010", "end": "0000000000000020", "idx": 4, "little": true, "bits": 12}
    ]);
    let set = rules(all.clone());
    assert_eq!(set.rules().len(), all.as_array().unwrap().len());
    // JSON out and back in.
    assert_eq!(
        RuleSet::from_zerotier_json(&set.to_zerotier_json()).unwrap(),
        set
    );
    // Binary out and back in, and through a config's hex.
    assert_eq!(RuleSet::decode(&set.encode()).unwrap(), set);
    let text = serde_json::to_string(&set).unwrap();
    assert_eq!(serde_json::from_str::<RuleSet>(&text).unwrap(), set);
    // Rendered as ZeroTier renders: every field present, not/or booleans.
    let out = set.to_zerotier_json();
    assert_eq!(
        out[18],
        json!({"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6, "not": false, "or": false})
    );
    assert_eq!(out[12]["mac"], "02:00:00:00:00:ff");
}

#[test]
fn bad_rules_and_bytes_are_refused_with_where() {
    let e =
        RuleSet::from_zerotier_json(&json!([{"type": "ACTION_ACCEPT"}, {"type": "MATCH_NOPE"}]))
            .unwrap_err();
    assert_eq!(e.to_string(), "rule 1: unknown rule type \"MATCH_NOPE\"");
    assert!(RuleSet::from_zerotier_json(&json!([{"type": "ACTION_TEE", "address": "0"}])).is_err());
    assert!(RuleSet::from_zerotier_json(&json!({"type": "ACTION_DROP"})).is_err());
    let too_many = json!(vec![json!({"type": "ACTION_ACCEPT"}); MAX_RULES + 1]);
    assert!(RuleSet::from_zerotier_json(&too_many).is_err());
    // Truncated, unknown type, wrong length.
    assert_eq!(
        RuleSet::decode(&[40, 4, 0, 22]),
        Err(RuleError::Malformed(0))
    );
    assert_eq!(
        RuleSet::decode(&[1, 0, 63, 0]),
        Err(RuleError::Malformed(2))
    );
    assert_eq!(
        RuleSet::decode(&[36, 2, 6, 6]),
        Err(RuleError::Malformed(0))
    );
    // 1,024 port-range rules fit in a config easily.
    let big = RuleSet::new(vec![
        Rule {
            not: false,
            or: true,
            kind: RuleKind::DestPortRange(1, 2)
        };
        MAX_RULES
    ])
    .unwrap();
    assert!(serde_json::to_string(&big).unwrap().len() < 16 * 1024);
}

#[test]
fn any_bytes_decode_or_fail_without_panicking() {
    let mut seed = 1u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
            .collect();
        if let Ok(set) = RuleSet::decode(&bytes) {
            assert_eq!(RuleSet::decode(&set.encode()).unwrap(), set);
            let p = ipv4(6, 1, 2, 0);
            let _ = decide(&set, &facts(&bytes, (seed >> 8) as u16, seed & 1 == 0));
            let _ = decide(&set, &facts(&p, 0x0800, true));
        }
    }
}
