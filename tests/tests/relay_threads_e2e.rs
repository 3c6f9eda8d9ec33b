//! A root's relay threads, end to end in network namespaces: two members
//! behind hard NATs (relayed for good) talk through roots running three relay
//! threads each; the threads carry the traffic (the roots' counters say so),
//! a UDP stream arrives in order, and a TCP stream flows. Needs root,
//! nftables and iperf3.

use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, make_planet_with_roots, network_of};
use vnet_tests::netns::{Lab, NatKind, Node, wait_until};

/// Relay threads each root runs in this test.
const RELAY_THREADS: u64 = 3;

/// Writes `<home>/local.conf` for `host`'s daemon (before it starts).
fn local_conf(lab: &Lab, host: &Node, settings: Value) {
    let conf = json!({ "settings": settings });
    fs::write(lab.home(host).join("local.conf"), conf.to_string()).expect("write local.conf");
}

/// A root counter from `GET /status`.
fn counter(root: &Daemon, name: &str) -> u64 {
    root.json(&["info"])["counters"][name].as_u64().unwrap_or(0)
}

/// Waits for an iperf3 server on `host`.
fn iperf3_server(lab: &Lab, host: &Node) -> vnet_tests::netns::Proc {
    let server = lab.spawn(host, "iperf3", &["-s", "-1"], &[]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            lab.exec(host, "ss", &["-Hltn", "sport = :5201"])
                .stdout
                .contains("5201")
        }),
        "iperf3 server not listening: {}",
        server.stderr_text()
    );
    server
}

#[test]
fn relay_threads_carry_relayed_traffic_in_order() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    let ra = lab.nat_router("rha", NatKind::Hard);
    let rb = lab.nat_router("rhb", NatKind::Hard);
    let ha = lab.host_behind("ha", &ra);
    let hb = lab.host_behind("hb", &rb);
    // A source IP is steered to socket (IP mod group size) of a root's
    // group; socket 0 is the engine's. At least one member must land on a
    // thread for the test to mean anything.
    let group = u32::try_from(RELAY_THREADS + 1).expect("small");
    let on_thread: Vec<bool> = [&ra, &rb]
        .iter()
        .map(|r| u32::from(r.wan_ip()) % group != 0)
        .collect();
    assert!(
        on_thread.iter().any(|t| *t),
        "both NATs' public IPs ({}, {}) steer to the engine's socket",
        ra.wan_ip(),
        rb.wan_ip()
    );
    let homes = vec![lab.home(&ctl_host), lab.home(&ha), lab.home(&hb)];
    make_planet_with_roots(&lab, &[&root1, &root2], &homes);
    for root in [&root1, &root2] {
        local_conf(&lab, root, json!({ "relayThreads": RELAY_THREADS }));
    }
    let roots = [
        Daemon::start(&lab, &root1, "vnet-planet"),
        Daemon::start(&lab, &root2, "vnet-planet"),
    ];
    for r in &roots {
        r.wait_online();
        let status = r.json(&["info"]);
        assert_eq!(
            status["config"]["settings"]["relayThreads"].as_u64(),
            Some(RELAY_THREADS),
            "{status}"
        );
    }
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let a = Daemon::start(&lab, &ha, "vnet-node");
    let b = Daemon::start(&lab, &hb, "vnet-node");
    for d in [&ctl, &a, &b] {
        d.wait_online();
    }
    let (_nwid, ips) = network_of(&ctl, &[&a, &b], "relaythreads");
    let ip_b: Ipv4Addr = ips[1].parse().expect("an IPv4 address");
    assert!(
        wait_until(Duration::from_secs(20), || lab.ping(&ha, ip_b)),
        "a cannot reach b over the network"
    );
    assert_eq!(a.route_to(&b.address()), "RELAY");
    assert_eq!(b.route_to(&a.address()), "RELAY");
    // The streams go from the member a relay thread reads.
    let (tx, rx, rx_ip) = if on_thread[0] {
        (&ha, &hb, &ips[1])
    } else {
        (&hb, &ha, &ips[0])
    };

    // A UDP stream, datagrams numbered by iperf3: none may arrive out of order.
    let _server = iperf3_server(&lab, rx);
    let run = lab.exec(
        tx,
        "iperf3",
        &[
            "-c", rx_ip, "-u", "-b", "200M", "-l", "1200", "-t", "4", "-J",
        ],
    );
    assert!(run.ok, "iperf3 UDP failed: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("iperf3 JSON");
    let udp = &report["end"]["streams"][0]["udp"];
    let packets = udp["packets"].as_u64().unwrap_or(0);
    let out_of_order = udp["out_of_order"].as_u64();
    let lost = udp["lost_percent"].as_f64().unwrap_or(100.0);
    eprintln!("relayed UDP: {packets} datagrams, {out_of_order:?} out of order, {lost:.2} % lost");
    assert!(packets > 10_000, "{udp}");
    assert_eq!(out_of_order, Some(0), "reordered through the relay: {udp}");
    assert!(lost < 20.0, "{udp}");

    // A TCP stream through the threads.
    let _server = iperf3_server(&lab, rx);
    let run = lab.exec(tx, "iperf3", &["-c", rx_ip, "-t", "3", "-J"]);
    assert!(run.ok, "iperf3 TCP failed: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("iperf3 JSON");
    let received = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let retransmits = report["end"]["sum_sent"]["retransmits"].as_u64();
    eprintln!(
        "relayed TCP: {:.0} Mbit/s, {retransmits:?} retransmits",
        received / 1e6
    );
    assert!(
        received > 10e6,
        "relayed TCP barely moved: {received} bit/s"
    );

    // The threads did the relaying (counted within the table's refresh).
    std::thread::sleep(Duration::from_millis(600));
    let by_threads: u64 = roots.iter().map(|r| counter(r, "relayedByThreads")).sum();
    let relayed: u64 = roots.iter().map(|r| counter(r, "relayed")).sum();
    eprintln!("roots relayed {relayed} datagrams, {by_threads} by relay threads");
    assert!(
        by_threads > packets / 2,
        "threads relayed {by_threads} of {relayed} (UDP datagrams sent: {packets})"
    );
}
