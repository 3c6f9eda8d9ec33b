//! Getting through NAT, end to end in network namespaces: two roots, a
//! controller and members on the underlay, behind an easy NAT, behind a hard
//! NAT, behind a router with a real UPnP gateway (miniupnpd), or behind a
//! firewall that drops all UDP. Every pair pings over the virtual network and
//! must end up on the path kind the network allows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use vnet_tests::daemon::{Daemon, make_planet_with_roots, network_of};
use vnet_tests::netns::{Lab, NatKind, Node, Proc, Router, wait_until};

/// Where a member sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Underlay,
    Easy,
    Hard,
    Upnp,
    UdpBlocked,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Underlay => "underlay",
            Kind::Easy => "easy",
            Kind::Hard => "hard",
            Kind::Upnp => "upnp",
            Kind::UdpBlocked => "udp-blocked",
        }
    }
}

/// The path kind `a` must see to `b`.
fn expected(a: Kind, b: Kind) -> &'static str {
    if a == Kind::UdpBlocked {
        "TCP_RELAY"
    } else if b == Kind::UdpBlocked || (a == Kind::Hard && b == Kind::Hard) {
        "RELAY"
    } else {
        "DIRECT"
    }
}

/// A member host and what it needs kept alive (its router, a gateway daemon).
struct Placed {
    kind: Kind,
    host: Node,
    _router: Option<Router>,
    _gateway: Option<Proc>,
}

fn place(lab: &Lab, kind: Kind, i: usize) -> Placed {
    let name = format!("{}{i}", &kind.name()[..2]);
    let (host, router, gateway) = match kind {
        Kind::Underlay => (lab.host(&name), None, None),
        Kind::Easy | Kind::Hard | Kind::UdpBlocked => {
            let nat = if kind == Kind::Hard {
                NatKind::Hard
            } else {
                NatKind::Easy
            };
            let router = lab.nat_router(&format!("r{name}"), nat);
            if kind == Kind::UdpBlocked {
                lab.block_udp(&router);
            }
            (lab.host_behind(&name, &router), Some(router), None)
        }
        Kind::Upnp => {
            let (router, gateway) = lab.upnp_router(&format!("r{name}"), true, false);
            (lab.host_behind(&name, &router), Some(router), Some(gateway))
        }
    };
    Placed {
        kind,
        host,
        _router: router,
        _gateway: gateway,
    }
}

/// The route `from` reports to the peer `to` (DIRECT, RELAY, TCP_RELAY, NONE).
fn route(from: &Daemon, to: &str) -> String {
    from.route_to(to)
}

/// One pair's outcome.
struct Outcome {
    a: Kind,
    b: Kind,
    route_ab: String,
    route_ba: String,
    to_direct: Option<Duration>,
    replies: usize,
    /// a's preferred path to b (`ip/port`), and the gateway-mapped endpoint b advertises.
    a_path: String,
    b_mapped: Option<String>,
    /// The MTU a uses on its route to b (path MTU discovery; every link
    /// of this lab carries 1,500-byte packets).
    mtu_ab: Option<u64>,
}

/// The MTU `from` uses on its route to peer `to` now (`GET /peer` `mtu`).
fn route_mtu(from: &Daemon, to: &str) -> Option<u64> {
    let peers = from.json(&["listpeers"]);
    let peer = peers.as_array()?.iter().find(|p| p["address"] == to)?;
    peer["mtu"].as_u64()
}

/// `a` pings `b`'s virtual IP every 200 ms until the route settles on what is
/// expected (or 20 s pass); returns what happened.
fn run_pair(lab: &Lab, a: &Daemon, a_kind: Kind, b: &Daemon, b_kind: Kind, b_ip: &str) -> Outcome {
    let want = expected(a_kind, b_kind);
    let b_addr = b.address();
    let a_addr = a.address();
    let ping = lab.spawn(a.host, "ping", &["-n", "-i", "0.2", "-W", "1", b_ip], &[]);
    let start = Instant::now();
    let mut to_direct = None;
    // A relayed outcome must hold after the first 4 s (no later upgrade);
    // a direct one is taken as soon as seen.
    let deadline = Duration::from_secs(20);
    loop {
        let r = route(a, &b_addr);
        if r == "DIRECT" && to_direct.is_none() {
            to_direct = Some(start.elapsed());
        }
        if want == "DIRECT" && r == "DIRECT" {
            break;
        }
        if want != "DIRECT" && start.elapsed() >= Duration::from_secs(6) {
            break;
        }
        if start.elapsed() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more replies on the settled path.
    std::thread::sleep(Duration::from_millis(1_500));
    let route_ab = route(a, &b_addr);
    let route_ba = route(b, &a_addr);
    let peers = a.json(&["listpeers"]);
    let a_path = peers
        .as_array()
        .and_then(|l| l.iter().find(|p| p["address"] == b_addr.as_str()))
        .and_then(|p| {
            p["paths"]
                .as_array()?
                .iter()
                .find(|x| x["preferred"] == true)
                .and_then(|x| x["address"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let b_mapped = b.json(&["info"])["mappedEndpoint"]
        .as_str()
        .map(str::to_string);
    // Discovery runs while the pings keep the peers in use: a few rounds
    // of probes (over UDP only; a TCP relay route stays at the base).
    let mut mtu_ab = route_mtu(a, &b_addr);
    if route_ab != "TCP_RELAY" {
        wait_until(Duration::from_secs(5), || {
            mtu_ab = route_mtu(a, &b_addr);
            mtu_ab == Some(1472)
        });
    }
    ping.stop();
    let replies = ping
        .stdout_text()
        .lines()
        .filter(|l| l.contains("bytes from"))
        .count();
    Outcome {
        a: a_kind,
        b: b_kind,
        route_ab,
        route_ba,
        to_direct,
        replies,
        a_path,
        b_mapped,
        mtu_ab,
    }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| a | b | a→b path | b→a path | expected | seconds to direct | ping replies |\n|---|---|---|---|---|---:|---:|\n",
    );
    for o in outcomes {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} |",
            o.a.name(),
            o.b.name(),
            o.route_ab,
            o.route_ba,
            expected(o.a, o.b),
            o.to_direct
                .map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64())),
            o.replies
        );
    }
    t
}

#[test]
fn every_pair_of_placements_gets_the_path_the_network_allows() {
    const KINDS: [Kind; 5] = [
        Kind::Underlay,
        Kind::Easy,
        Kind::Hard,
        Kind::Upnp,
        Kind::UdpBlocked,
    ];
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    // Two members of each kind (a pair of the same kind uses both).
    let placed: Vec<Placed> = KINDS
        .iter()
        .flat_map(|k| [place(&lab, *k, 1), place(&lab, *k, 2)])
        .collect();
    let mut homes = vec![lab.home(&ctl_host)];
    homes.extend(placed.iter().map(|p| lab.home(&p.host)));
    make_planet_with_roots(&lab, &[&root1, &root2], &homes);
    let _r1 = Daemon::start(&lab, &root1, "vnet-planet");
    let _r2 = Daemon::start(&lab, &root2, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let members: Vec<Daemon> = placed
        .iter()
        .map(|p| Daemon::start(&lab, &p.host, "vnet-node"))
        .collect();
    ctl.wait_online();
    for m in &members {
        m.wait_online();
    }
    let refs: Vec<&Daemon> = members.iter().collect();
    let (_nwid, ips) = network_of(&ctl, &refs, "matrix");
    let index: HashMap<(Kind, usize), usize> = placed
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.kind, i % 2), i))
        .collect();

    let mut outcomes = Vec::new();
    for (i, &ka) in KINDS.iter().enumerate() {
        for &kb in &KINDS[i..] {
            let a = index[&(ka, 0)];
            let b = if ka == kb {
                index[&(kb, 1)]
            } else {
                index[&(kb, 0)]
            };
            outcomes.push(run_pair(&lab, &members[a], ka, &members[b], kb, &ips[b]));
        }
    }
    let table = table(&outcomes);
    eprintln!("{table}");
    // The table for reports: target/tmp/nat_matrix.md.
    let _ = std::fs::write(
        format!("{}/nat_matrix.md", env!("CARGO_TARGET_TMPDIR")),
        &table,
    );
    for o in &outcomes {
        let want_ab = expected(o.a, o.b);
        let want_ba = expected(o.b, o.a);
        assert!(
            o.route_ab == want_ab && o.route_ba == want_ba,
            "{} – {}: got {} / {}, want {} / {}\n{table}",
            o.a.name(),
            o.b.name(),
            o.route_ab,
            o.route_ba,
            want_ab,
            want_ba
        );
        assert!(
            !o.a_path.starts_with("10.147.17."),
            "{} – {}: a path through the virtual network itself: {}\n{table}",
            o.a.name(),
            o.b.name(),
            o.a_path
        );
        if o.b == Kind::Upnp && o.a == Kind::Hard {
            // From a hard NAT only the gateway's mapping gets through at
            // once (no birthday punch needed): it is advertised and used.
            let mapped = o.b_mapped.as_deref().unwrap_or("none");
            assert_eq!(
                o.a_path,
                mapped,
                "{} – upnp: not through the mapped port\n{table}",
                o.a.name()
            );
        }
        let want_mtu = if o.route_ab == "TCP_RELAY" {
            1232
        } else {
            1472
        };
        assert_eq!(
            o.mtu_ab,
            Some(want_mtu),
            "{} – {}: route MTU over {}\n{table}",
            o.a.name(),
            o.b.name(),
            o.route_ab
        );
        assert!(
            o.replies >= 5,
            "{} – {}: only {} ping replies\n{table}",
            o.a.name(),
            o.b.name(),
            o.replies
        );
    }
}
