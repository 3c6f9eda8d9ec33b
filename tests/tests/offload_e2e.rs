//! Super-frames end to end, in network namespaces, with real TAP offloads
//! (IFF_VNET_HDR, TSO) and real TCP (iperf3): between two members whose
//! TAPs take offloads, both ways; to a member whose TAP does not (it cuts
//! them in software); to a member whose node predates OFFLOAD_FRAME and
//! AES-256-GCM (the sender cuts them, and seals with Salsa20/12 +
//! Poly1305 for it while it seals with AES-256-GCM for the others); and
//! to a member behind a router whose LAN has a smaller MTU (1,300), found
//! by path MTU discovery with no IP fragment on the way; and between two
//! members whose path narrows while they talk.

use std::fs;

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, make_planet, network_of};
use vnet_tests::netns::{Lab, NatKind, Node, Router};

/// Writes `<home>/local.conf` for `host`'s daemon (before it starts).
fn local_conf(lab: &Lab, host: &Node, settings: Value) {
    let conf = json!({ "settings": settings });
    fs::write(lab.home(host).join("local.conf"), conf.to_string()).expect("write local.conf");
}

fn counter(d: &Daemon, name: &str) -> u64 {
    d.json(&["info"])["counters"][name].as_u64().unwrap_or(0)
}

/// One iperf3 TCP run of 2 s from `client` to `server_ip` (reversed: the
/// server sends); the bits per second received.
fn iperf(lab: &Lab, client: &Node, server: &Node, server_ip: &str, reverse: bool) -> f64 {
    let _server = lab.spawn(server, "iperf3", &["-s", "-1", "-B", server_ip], &[]);
    let mut args = vec![
        "-c",
        server_ip,
        "-t",
        "2",
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if reverse {
        args.push("-R");
    }
    let mut last = None;
    let ran = vnet_tests::netns::wait_until(std::time::Duration::from_secs(10), || {
        let r = lab.exec(client, "iperf3", &args);
        let ok = r.ok && !r.stdout.contains("\"error\"");
        last = Some(r);
        ok
    });
    let run = last.expect("iperf3 ran");
    assert!(ran, "iperf3 to {server_ip}: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("iperf3 JSON");
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3's report: {}", run.stdout))
}

#[test]
fn super_frames_cross_both_ways_and_reach_members_without_offloads() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let [ha, hb, hc, hd] = ["a", "b", "c", "d"].map(|n| lab.host(n));
    // e sits behind a router whose LAN carries at most 1,300 bytes.
    let router = lab.nat_router("re", NatKind::Easy);
    let he = lab.host_behind("e", &router);
    narrow_lan(&lab, &router, &he, 1300);
    make_planet(
        &lab,
        &root_host,
        &[&ctl_host, &ha, &hb, &hc, &hd, &he].map(|h| lab.home(h)),
    );
    local_conf(&lab, &hc, json!({ "tapOffload": false }));
    local_conf(
        &lab,
        &hd,
        json!({ "offloadFrames": false, "aesGcm": false }),
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let members = [&ha, &hb, &hc, &hd, &he].map(|h| Daemon::start(&lab, h, "vnet-node"));
    for d in std::iter::once(&ctl).chain(&members) {
        d.wait_online();
    }
    let [a, b, c, d, e] = &members;
    let (_, ips) = network_of(&ctl, &[a, b, c, d, e], "offload");

    // a <-> b: both TAPs take offloads; TCP goes as whole super-frames.
    let bps = iperf(&lab, &ha, &hb, &ips[1], false);
    assert!(bps > 0.0);
    assert!(counter(a, "superFramesSent") > 0, "a sent super-frames");
    assert!(counter(b, "superFramesReceived") > 0, "b took them whole");
    assert!(counter(a, "sealedAesGcm") > 0, "a sealed with AES-256-GCM");
    assert!(counter(b, "openedAesGcm") > 0, "b opened AES-256-GCM");
    eprintln!(
        "a -> b with offloads: {:.0} Mbit/s (debug build)",
        bps / 1e6
    );
    let bps = iperf(&lab, &ha, &hb, &ips[1], true);
    assert!(bps > 0.0);
    assert!(
        counter(b, "superFramesSent") > 0,
        "b sent super-frames back"
    );
    assert!(counter(a, "superFramesReceived") > 0);

    // a -> c: c's TAP takes no offloads, so c cuts what it receives; TCP
    // (which checks every segment's checksum) goes through.
    let before = counter(c, "superFramesReceived");
    let bps = iperf(&lab, &ha, &hc, &ips[2], false);
    assert!(bps > 0.0);
    assert!(
        counter(c, "superFramesReceived") > before,
        "c got super-frames"
    );
    // c -> a: c's kernel makes no super-frames.
    let sent_before = counter(c, "superFramesSent");
    assert!(iperf(&lab, &ha, &hc, &ips[2], true) > 0.0);
    assert_eq!(counter(c, "superFramesSent"), sent_before);

    // a -> d: d never announced OFFLOAD_FRAME, so a cuts the super-frames
    // itself and d only ever sees ordinary frames.
    let bps = iperf(&lab, &ha, &hd, &ips[3], false);
    assert!(bps > 0.0);
    assert!(counter(a, "superFramesCut") > 0, "a cut super-frames for d");
    assert_eq!(counter(d, "superFramesReceived"), 0);
    // d announced no AES-256-GCM, so nothing sealed with it reached it.
    assert_eq!(counter(d, "openedAesGcm"), 0);
    assert_eq!(counter(d, "sealedAesGcm"), 0);
    assert!(iperf(&lab, &ha, &hd, &ips[3], true) > 0.0, "d -> a");

    // a <-> e across the narrow LAN: path MTU discovery finds 1,272-byte
    // datagrams (1,300 less IPv4 and UDP headers) both ways, the sockets
    // forbid IP fragmentation, and TCP goes through both ways.
    let (addr_a, addr_b, addr_e) = (a.address(), b.address(), e.address());
    assert!(iperf(&lab, &ha, &he, &ips[4], false) > 0.0, "a -> e");
    assert!(iperf(&lab, &ha, &he, &ips[4], true) > 0.0, "e -> a");
    assert_eq!(a.route_to(&addr_e), "DIRECT");
    assert_eq!(a.path_mtu_to(&addr_e), Some(1272), "a's path to e");
    assert_eq!(e.path_mtu_to(&addr_a), Some(1272), "e's path to a");
    for (host, name) in [(&ha, "a"), (&he, "e")] {
        assert_eq!(
            ip_fragments_received(&lab, host),
            0,
            "{name} got IP fragments"
        );
    }
    assert!(counter(a, "pathMtuProbesAnswered") > 0);

    // a <-> b: the whole 1,500-byte Ethernet MTU.
    assert_eq!(a.path_mtu_to(&addr_b), Some(1472), "a's path to b");
    assert_eq!(b.path_mtu_to(&addr_a), Some(1472), "b's path to a");

    // e's LAN narrows to 1,280 while a and e talk: the next confirmation of
    // 1,272 is lost, both fall back to the base and find 1,252, and TCP
    // flows on, still without an IP fragment.
    narrow_lan(&lab, &router, &he, 1280);
    let narrowed = vnet_tests::netns::wait_until(std::time::Duration::from_secs(30), || {
        // Traffic keeps the peers in use (probes go only to peers in use).
        lab.exec(&ha, "ping", &["-c", "1", "-W", "1", &ips[4]]);
        a.path_mtu_to(&addr_e) == Some(1252) && e.path_mtu_to(&addr_a) == Some(1252)
    });
    assert!(
        narrowed,
        "a -> e {:?}, e -> a {:?}",
        a.path_mtu_to(&addr_e),
        e.path_mtu_to(&addr_a)
    );
    assert!(counter(a, "pathMtuLowered") >= 1);
    assert!(
        iperf(&lab, &ha, &he, &ips[4], false) > 0.0,
        "a -> e narrowed"
    );
    assert!(
        iperf(&lab, &ha, &he, &ips[4], true) > 0.0,
        "e -> a narrowed"
    );
    for (host, name) in [(&ha, "a"), (&he, "e")] {
        assert_eq!(
            ip_fragments_received(&lab, host),
            0,
            "{name} got IP fragments"
        );
    }
}

/// Sets the MTU of every LAN-side interface of `router` and of `host`'s.
fn narrow_lan(lab: &Lab, router: &Router, host: &Node, mtu: u32) {
    let narrow = format!(
        "for i in $(ip -o link show | awk -F': ' '{{print $2}}' | cut -d@ -f1); do \
         [ \"$i\" = lo ] || [ \"$i\" = {} ] || ip link set dev \"$i\" mtu {mtu} || exit 1; done",
        router.wan_iface()
    );
    assert!(
        lab.exec(router, "sh", &["-c", &narrow]).ok,
        "narrow the LAN"
    );
    let mtu = mtu.to_string();
    let set = lab.exec(
        host,
        "ip",
        &["link", "set", "dev", host.iface(), "mtu", &mtu],
    );
    assert!(set.ok, "{set:?}");
}

/// IP fragments that reached `host` (its namespace's `ReasmReqds`).
fn ip_fragments_received(lab: &Lab, host: &Node) -> u64 {
    let snmp = lab.exec(host, "cat", &["/proc/net/snmp"]);
    assert!(snmp.ok, "{snmp:?}");
    let mut lines = snmp.stdout.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (
        lines.next().expect("Ip header"),
        lines.next().expect("Ip values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ReasmReqds")
        .and_then(|(_, v)| v.parse().ok())
        .expect("ReasmReqds")
}
