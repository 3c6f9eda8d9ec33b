//! Several roots share the load, in network namespaces: a planet of three
//! roots (`vnet-planet`), one of them 30 ms farther than the others. Two
//! members behind hard NATs (so every frame between them is relayed) each
//! relay through the near root their address hashes to (PROTOCOL.md §3.6),
//! never the far one; the test picks their identities so they hash to
//! different near roots. Each root relays for the member of the other, and
//! when the near roots die one by one the members move to what is left: the
//! other near root, then the far one.
//!
//! The kernel here has no `sch_netem`: the far root's UDP answers go through
//! an NFQUEUE that the test hands back 30 ms late ([`Delay`]).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use vnet_node::core::Address;
use vnet_node::core::node::root_affinity;
use vnet_tests::daemon::{Daemon, PORT, make_planet_with_roots, ping_until_via, relayed};
use vnet_tests::delay::Delay;
use vnet_tests::netns::{Lab, NatKind, wait_until};
use vnet_tests::run_in;

/// What the far root adds to every UDP datagram it sends.
const FAR_DELAY: Duration = Duration::from_millis(30);

/// The 10-digit address of the identity in `home`.
fn address_in(home: &Path) -> String {
    fs::read_to_string(home.join("identity.public")).expect("identity.public")[..10].to_string()
}

/// Generates an identity in `home` (replacing one there) and returns its address.
fn generate_identity(home: &Path) -> String {
    fs::create_dir_all(home).expect("home");
    for f in ["identity.secret", "identity.public"] {
        let _ = fs::remove_file(home.join(f));
    }
    let run = run_in(
        home,
        "vnet-idtool",
        &["generate", "identity.secret", "identity.public"],
    );
    assert!(run.ok, "{run:?}");
    address_in(home)
}

/// The root among `roots` that `member` ranks highest (PROTOCOL.md §3.6).
fn preferred_root(member: &str, roots: &[&str]) -> String {
    let parse = |a: &str| a.parse::<Address>().expect("address");
    roots
        .iter()
        .max_by_key(|r| root_affinity(parse(member), parse(r)))
        .expect("roots")
        .to_string()
}

/// Kills a root with SIGKILL, as a machine dies.
fn kill(root: &mut Daemon) {
    assert!(!root.proc().kill().success());
    root.forget_proc();
}

/// `relayRoot` of a daemon's `GET /status`.
fn relay_root(d: &Daemon) -> String {
    d.json(&["info"])["relayRoot"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn members_spread_over_near_roots_each_relays_for_all_and_the_far_root_is_the_last_resort() {
    let lab = Lab::new();
    let r1_host = lab.host("r1");
    let r2_host = lab.host("r2");
    let far_host = lab.host("r3");
    let nat_a = lab.nat_router("nata", NatKind::Hard);
    let nat_b = lab.nat_router("natb", NatKind::Hard);
    let a_host = lab.host_behind("a", &nat_a);
    let b_host = lab.host_behind("b", &nat_b);
    let (a_home, b_home) = (lab.home(&a_host), lab.home(&b_host));
    make_planet_with_roots(
        &lab,
        &[&r1_host, &r2_host, &far_host],
        &[a_home.clone(), b_home.clone()],
    );
    let near = [
        address_in(&lab.home(&r1_host)),
        address_in(&lab.home(&r2_host)),
    ];
    let near: Vec<&str> = near.iter().map(String::as_str).collect();
    let far_addr = address_in(&lab.home(&far_host));

    // a takes the first identity it gets; b draws until it hashes to the
    // other near root, so the two relay through different roots.
    let a_addr = generate_identity(&a_home);
    let a_root = preferred_root(&a_addr, &near);
    let mut b_addr = generate_identity(&b_home);
    let mut draws = 1;
    while preferred_root(&b_addr, &near) == a_root {
        assert!(draws < 64, "64 identities in a row prefer {a_root}");
        b_addr = generate_identity(&b_home);
        draws += 1;
    }
    let b_root = preferred_root(&b_addr, &near);
    // Each member would pick the far root among all three by hash alone for
    // some draws; latency must rule it out, so the test does not depend on it.

    let _delay = Delay::udp_out(&lab, &far_host, PORT, FAR_DELAY);
    let mut r1 = Daemon::start(&lab, &r1_host, "vnet-planet");
    let mut r2 = Daemon::start(&lab, &r2_host, "vnet-planet");
    let far = Daemon::start(&lab, &far_host, "vnet-planet");
    let a = Daemon::start(&lab, &a_host, "vnet-node");
    let b = Daemon::start(&lab, &b_host, "vnet-node");
    assert_eq!(a.address(), a_addr);
    assert_eq!(b.address(), b_addr);
    a.wait_online();
    b.wait_online();

    // Once each has measured every root (the far one answers last), it
    // settles on its near root.
    let far_latency = |m: &Daemon| -> u64 {
        m.json(&["netcheck"])["roots"]
            .as_array()
            .and_then(|r| r.iter().find(|x| x["address"] == far_addr.as_str()))
            .and_then(|x| x["latency"].as_u64())
            .unwrap_or(0)
    };
    for (m, want) in [(&a, &a_root), (&b, &b_root)] {
        let settled = wait_until(Duration::from_secs(20), || {
            far_latency(m) >= FAR_DELAY.as_millis() as u64 && relay_root(m) == *want
        });
        assert!(
            settled,
            "{} relays through {:?}, not its near root {want} (near {near:?}, far {far_addr}, {} ms); netcheck:\n{}",
            m.host.name(),
            relay_root(m),
            far_latency(m),
            m.cli(&["netcheck"]).stdout
        );
    }

    // Each root relays for the other root's member: a's echoes go through
    // a's root, b's replies through b's (a reply names the root it came by).
    let (ok, reply) = ping_until_via(&a, &b_addr, &b_root, Duration::from_secs(15));
    assert!(
        ok,
        "a → b, answered through b's root {b_root}: last reply {reply}"
    );
    let (ok, reply) = ping_until_via(&b, &a_addr, &a_root, Duration::from_secs(10));
    assert!(
        ok,
        "b → a, answered through a's root {a_root}: last reply {reply}"
    );
    let by_addr = |addr: &str| -> &Daemon { if r1.address() == addr { &r1 } else { &r2 } };
    let before = [
        relayed(by_addr(&a_root)),
        relayed(by_addr(&b_root)),
        relayed(&far),
    ];
    let run = a.cli(&["ping", &b_addr, "-c", "5", "-i", "0.2"]);
    assert!(run.ok, "{run:?}");
    let after = [
        relayed(by_addr(&a_root)),
        relayed(by_addr(&b_root)),
        relayed(&far),
    ];
    assert!(
        after[0] - before[0] >= 4 && after[1] - before[1] >= 4,
        "a's root relayed the echoes, b's root the replies: {before:?} → {after:?}"
    );
    assert!(
        after[2] - before[2] <= 1,
        "the far root stayed out of it: {before:?} → {after:?}"
    );

    // a's root dies: a moves to the other near root, not the far one.
    let alive = if r1.address() == a_root {
        kill(&mut r1);
        &r2
    } else {
        kill(&mut r2);
        &r1
    };
    let died = Instant::now();
    let moved = wait_until(Duration::from_secs(25), || relay_root(&a) == b_root);
    assert!(
        moved,
        "25 s after its root died a relays through {:?}, not the other near root {b_root}:\n{}",
        relay_root(&a),
        a.cli(&["netcheck"]).stdout
    );
    eprintln!(
        "a relays through the other near root {:.1} s after its root died",
        died.elapsed().as_secs_f64()
    );
    let before = relayed(alive);
    let (ok, reply) = ping_until_via(&a, &b_addr, &b_root, Duration::from_secs(10));
    assert!(ok, "a → b with one near root left: last reply {reply}");
    let run = b.cli(&["ping", &a_addr, "-c", "3", "-i", "0.2"]);
    assert!(run.ok, "{run:?}");
    assert!(
        relayed(alive) - before >= 8,
        "the near root left relays both ways"
    );

    // The other near root dies too: both fall back to the far one.
    assert_eq!(alive.address(), b_root);
    if r1.address() == b_root {
        kill(&mut r1);
    } else {
        kill(&mut r2);
    }
    let died = Instant::now();
    let moved = wait_until(Duration::from_secs(25), || {
        relay_root(&a) == far_addr && relay_root(&b) == far_addr
    });
    assert!(
        moved,
        "25 s after the last near root died a and b relay through {:?} and {:?}, not the far root {far_addr}",
        relay_root(&a),
        relay_root(&b)
    );
    eprintln!(
        "both relay through the far root {:.1} s after the last near root died",
        died.elapsed().as_secs_f64()
    );
    let (ok, reply) = ping_until_via(&a, &b_addr, &far_addr, Duration::from_secs(10));
    assert!(ok, "a → b through the far root: last reply {reply}");
    let (ok, reply) = ping_until_via(&b, &a_addr, &far_addr, Duration::from_secs(10));
    assert!(ok, "b → a through the far root: last reply {reply}");

    // Prometheus scrapes: the far root counts what it relayed and holds
    // both members; a member sees its peer relayed.
    let relayed_by_far = far
        .metric("vnet_relayed_total", &[])
        .expect("vnet_relayed_total on the root");
    assert!(relayed_by_far >= 4.0, "{relayed_by_far}");
    assert!(
        far.metric("vnet_table_entries", &[("table", "peers")])
            .is_some_and(|n| n >= 2.0)
    );
    assert!(
        far.metric("vnet_received_bytes_total", &[])
            .is_some_and(|n| n > 0.0)
    );
    assert!(a.metric("vnet_sent_total", &[]).is_some_and(|n| n > 0.0));
    assert!(
        a.metric("vnet_peers", &[("route", "relay")])
            .is_some_and(|n| n >= 1.0),
        "{:?}",
        a.metrics()
    );
    assert!(
        a.metric("vnet_dropped_total", &[("reason", "bad_mac")])
            .is_some(),
        "drops by reason"
    );

    // Logs to a file (as to journald) carry no terminal colour codes.
    for d in [&a, &b, &far] {
        let log = d.proc().stderr_text();
        assert!(log.contains("vnet node starting"), "{log}");
        assert!(
            !log.contains('\x1b'),
            "{} logs ANSI escapes to a file:\n{log}",
            d.host.name()
        );
    }
}
