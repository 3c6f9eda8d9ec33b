//! Flow rule cost on one core: frames a member's switch passes per second
//! (`Switch::outbound` on a 1,400-byte IPv4/TCP frame to another member)
//! with no rules, with ZeroTier's accept-all default, with the UIs' default
//! allowlist (5 rules), and with 1,024 rules none of which matches until
//! the final accept (the longest a frame can take). After criterion's runs,
//! a plain timing loop prints the median frames/s of each, side by side.
//! `cargo bench -p vnet-proto --bench rules`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vnet_proto::address::Address;
use vnet_proto::constants::MAX_RULES;
use vnet_proto::hash_state::HashState;
use vnet_proto::network_id::{Mac, NetworkId};
use vnet_proto::rng::{NodeRng, SeedableRng};
use vnet_proto::rules::{Rule, RuleKind, RuleSet};
use vnet_proto::switch::{Outbound, Switch, SwitchPolicy};

fn nwid() -> NetworkId {
    "8056c2e21c000001".parse().unwrap()
}

fn addr(n: u64) -> Address {
    Address::from_u64(0x89_e92c_ee00 + n).unwrap()
}

/// A 1,400-byte IPv4/TCP frame from member 1 to member 2, port 443.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 1400];
    f[..6].copy_from_slice(&Mac::for_member(addr(2), nwid()).0);
    f[6..12].copy_from_slice(&Mac::for_member(addr(1), nwid()).0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&443u16.to_be_bytes());
    f
}

fn rule(or: bool, kind: RuleKind) -> Rule {
    Rule {
        not: false,
        or,
        kind,
    }
}

/// The rule sets compared, by name.
fn rule_sets() -> Vec<(&'static str, Option<RuleSet>)> {
    let allowlist = vec![
        Rule {
            not: true,
            or: false,
            kind: RuleKind::EtherType(0x0800),
        },
        Rule {
            not: true,
            or: false,
            kind: RuleKind::EtherType(0x0806),
        },
        Rule {
            not: true,
            or: false,
            kind: RuleKind::EtherType(0x86dd),
        },
        rule(false, RuleKind::Drop),
        rule(false, RuleKind::Accept),
    ];
    // 341 sets of (TCP, a port range that misses, DROP), then ACCEPT.
    let mut long = Vec::with_capacity(MAX_RULES);
    while long.len() + 3 < MAX_RULES {
        let port = 1000 + long.len() as u16;
        long.push(rule(false, RuleKind::IpProtocol(6)));
        long.push(rule(false, RuleKind::DestPortRange(port, port)));
        long.push(rule(false, RuleKind::Drop));
    }
    long.push(rule(false, RuleKind::Accept));
    vec![
        ("no rules", None),
        ("accept-all", Some(RuleSet::accept_all())),
        (
            "allowlist (5 rules)",
            Some(RuleSet::new(allowlist).unwrap()),
        ),
        ("1,024 rules", Some(RuleSet::new(long).unwrap())),
    ]
}

fn switch(rules: Option<RuleSet>) -> Switch {
    let hasher = HashState::new(&mut NodeRng::seed_from_u64(7));
    let mut s = Switch::new(nwid(), addr(1), SwitchPolicy::default(), hasher);
    s.set_rules(rules);
    s
}

fn bench(c: &mut Criterion) {
    let f = frame();
    let mut group = c.benchmark_group("switch_outbound");
    group.throughput(Throughput::Elements(1));
    for (name, rules) in rule_sets() {
        let mut s = switch(rules);
        assert_eq!(s.outbound(0, &f), Outbound::Unicast(addr(2)));
        group.bench_function(name, |b| {
            b.iter(|| matches!(s.outbound(0, black_box(&f)), Outbound::Unicast(_)))
        });
    }
    group.finish();
    println!("\nframes/s through Switch::outbound (median of 9 runs of 0.2 s):");
    for (name, rules) in rule_sets() {
        let mut s = switch(rules);
        let mut rates = Vec::new();
        for _ in 0..9 {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(200) {
                for _ in 0..256 {
                    black_box(s.outbound(0, black_box(&f)));
                }
                n += 256;
            }
            rates.push(n as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        println!("  {name:<22} {:>14.0}", rates[4]);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
