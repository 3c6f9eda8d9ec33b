//! Flow rules on arbitrary input: the first byte picks the part. Binary
//! rule sets (what a config carries) decode or fail without panicking, a
//! decoded set encodes back to itself and evaluates on a frame made of the
//! rest of the input, with grants (tags) decoded from its front when they
//! decode, which also encode back to themselves; the rules language (as UTF-8) compiles or fails with a
//! position inside the text, and what it compiles is taken by the JSON reader.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vnet_proto::address::Address;
use vnet_proto::network_id::Mac;
use vnet_proto::rules::compiler::compile;
use vnet_proto::rules::{FrameFacts, Grants, MemberTags, RuleSet, evaluate};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        let split = rest.len() / 2;
        let (rules, frame) = rest.split_at(split);
        let Ok(set) = RuleSet::decode(rules) else {
            return;
        };
        assert_eq!(RuleSet::decode(&set.encode()).as_ref(), Ok(&set));
        let me = Address::from_u64(0x11_2233_4455).expect("an address");
        let facts = FrameFacts {
            inbound: pick & 2 != 0,
            source: me,
            dest: None,
            mac_source: Mac([2, 0, 0, 0, 0, 1]),
            mac_dest: Mac::BROADCAST,
            ether_type: u16::from_be_bytes([pick, pick.wrapping_mul(7)]) | 0x0800,
            payload: frame,
            segments: (pick & 4 != 0).then(|| (frame.len(), frame.len() / 2)),
        };
        let grants = Grants::decode(frame).ok().map(|(g, used)| {
            let mut back = Vec::new();
            g.encode_into(&mut back);
            assert_eq!(back, frame[..used]);
            g
        });
        let tags = MemberTags {
            local: grants.as_ref(),
            remote: grants.as_ref().filter(|_| pick & 4 != 0),
        };
        let mut copy = None;
        let _ = evaluate(set.rules(), me, &facts, &tags, &mut || 7, &mut copy);
        let _ = RuleSet::from_zerotier_json(&set.to_zerotier_json()).expect("our own JSON reads");
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match compile(text) {
            Ok(compiled) => {
                let body = compiled.network_update(text);
                // Tags and long lists may be refused; nothing may panic.
                let _ = RuleSet::from_zerotier_json(&body["rules"]);
            }
            Err(e) => assert!(
                e.line >= 1 && e.line <= text.lines().count().max(1) + 1,
                "{e}"
            ),
        }
    }
});
