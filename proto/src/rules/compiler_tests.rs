use serde_json::json;

use super::RuleSet;
use super::compiler::compile;

/// The example that ships with ZeroTier's rule compiler
/// (`rule-compiler/examples/capabilities-and-tags.ztrules`), and the JSON
/// its `cli.js` prints for it, worked out from `rule-compiler.js`.
#[test]
fn zerotier_s_example_compiles_to_what_its_compiler_prints() {
    let source = include_str!("../../tests/rules/capabilities-and-tags.ztrules");
    let compiled = compile(source).unwrap();
    let want = json!({
        "config": {
            "rules": [
                {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 2048},
                {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 2054},
                {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 34525},
                {"type": "ACTION_DROP"},
                {"type": "MATCH_TAGS_DIFFERENCE", "not": false, "or": false, "id": 1000, "value": 0},
                {"type": "ACTION_ACCEPT"},
                {"type": "ACTION_ACCEPT"}
            ],
            "capabilities": [{"id": 1000, "default": false, "rules": [
                {"type": "MATCH_IP_PROTOCOL", "not": false, "or": false, "ipProtocol": 6},
                {"type": "MATCH_IP_DEST_PORT_RANGE", "not": false, "or": false, "start": 22, "end": 22},
                {"type": "ACTION_ACCEPT"}
            ]}],
            "tags": [{"id": 1000, "default": null}]
        },
        "capabilitiesByName": {"ssh": 1000},
        "tagsByName": {"department": {"id": 1000, "default": null, "flags": {},
            "enums": {"sales": 100, "marketing": 200, "accounting": 300, "engineering": 400}}}
    });
    assert_eq!(compiled.to_cli_json(), want);
    // What the controller takes reads back as the same rules.
    let set = RuleSet::from_zerotier_json(&compiled.network_update(source)["rules"]).unwrap();
    assert_eq!(set.rules().len(), 7);
}

#[test]
fn the_uis_default_source_and_common_shapes() {
    let c =
        compile("drop not ethertype ipv4 and not ethertype arp and not ethertype ipv6;\naccept;\n")
            .unwrap();
    assert_eq!(
        json!(c.rules),
        json!([
            {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 2048},
            {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 2054},
            {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 34525},
            {"type": "ACTION_DROP"},
            {"type": "ACTION_ACCEPT"}
        ])
    );
    let c = compile(
        "# no SSH, no telnet\ndrop ipprotocol tcp and dport 22 or dport 23;\n\
         accept chr tcp_syn,tcp_ack ipsrc 10.0.0.0/8 framesize 64-1500 icmp 8 -1;\naccept;",
    )
    .unwrap();
    assert_eq!(
        json!(c.rules),
        json!([
            {"type": "MATCH_IP_PROTOCOL", "not": false, "or": false, "ipProtocol": 6},
            {"type": "MATCH_IP_DEST_PORT_RANGE", "not": false, "or": false, "start": 22, "end": 22},
            {"type": "MATCH_IP_DEST_PORT_RANGE", "not": false, "or": true, "start": 23, "end": 23},
            {"type": "ACTION_DROP"},
            {"type": "MATCH_CHARACTERISTICS", "not": false, "or": false, "mask": "0000000000000012"},
            {"type": "MATCH_IPV4_SOURCE", "not": false, "or": false, "ip": "10.0.0.0/8"},
            {"type": "MATCH_FRAME_SIZE_RANGE", "not": false, "or": false, "start": 64, "end": 1500},
            {"type": "MATCH_ICMP", "not": false, "or": false, "icmpType": 8, "icmpCode": null},
            {"type": "ACTION_ACCEPT"},
            {"type": "ACTION_ACCEPT"}
        ])
    );
    // Macros with parameters, tee, flags.
    let c = compile(
        "macro block_port($p)\n  drop ipprotocol tcp dport $p;\n;\n\
         tag role id 7 flag 0 admin flag 1 ops default ops;\n\
         include block_port(25)\ntee 128 1122334455 tand role admin;\naccept;",
    )
    .unwrap();
    assert_eq!(
        json!(c.rules),
        json!([
            {"type": "MATCH_IP_PROTOCOL", "not": false, "or": false, "ipProtocol": 6},
            {"type": "MATCH_IP_DEST_PORT_RANGE", "not": false, "or": false, "start": 25, "end": 25},
            {"type": "ACTION_DROP"},
            {"type": "MATCH_TAGS_BITWISE_AND", "not": false, "or": false, "id": 7, "value": 1},
            {"type": "ACTION_TEE", "address": "1122334455", "length": 128},
            {"type": "ACTION_ACCEPT"}
        ])
    );
    assert_eq!(c.tags[0].1["default"], json!(2));
}

#[test]
fn errors_say_where_and_what_was_expected() {
    let e = compile("drop not ethertype;\naccept;").unwrap_err();
    assert_eq!((e.line, e.column), (1, 10), "{e}");
    assert!(
        e.message.contains("expected 1 argument(s) after ethertype"),
        "{e}"
    );
    let e = compile("accept;\naccept ipprotocol tcp dport 99999;").unwrap_err();
    assert_eq!((e.line, e.column), (2, 29), "{e}");
    assert!(e.message.starts_with("expected a port or a range"), "{e}");
    let e = compile("accept ethertype ipv4 tcpflags syn;").unwrap_err();
    assert_eq!((e.line, e.column), (1, 23), "{e}");
    assert_eq!(
        e.to_string(),
        "line 1, column 23: expected a match (ethertype, ipprotocol, dport, ...), not, or, and, found \"tcpflags\""
    );
    let e = compile("tag drop id 1;").unwrap_err();
    assert!(e.message.contains("tag name"), "{e}");
    let e = compile("cap admin accept;;").unwrap_err();
    assert!(e.message.contains("expected an id"), "{e}");
    let e = compile("include nothing;").unwrap_err();
    assert!(e.message.contains("expected a defined macro"), "{e}");
    let e = compile("bogus;").unwrap_err();
    assert_eq!((e.line, e.column), (1, 1));
}
