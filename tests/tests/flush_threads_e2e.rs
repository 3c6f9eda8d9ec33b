//! A member's flush threads, end to end in network namespaces: two members
//! on one LAN, each running three flush threads, move TCP (four streams,
//! both ways) and a UDP flood; the threads carry the traffic (the members'
//! counters say so), no session packet arrives after a later one of its
//! session, and no UDP datagram arrives out of order. Needs root and iperf3.

use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, make_planet, network_of};
use vnet_tests::netns::{Lab, Node, wait_until};

/// Flush threads each member runs in this test.
const FLUSH_THREADS: u64 = 3;

/// Writes `<home>/local.conf` for `host`'s daemon (before it starts).
fn local_conf(lab: &Lab, host: &Node, settings: Value) {
    let conf = json!({ "settings": settings });
    fs::write(lab.home(host).join("local.conf"), conf.to_string()).expect("write local.conf");
}

/// A counter from `GET /status`.
fn counter(d: &Daemon, name: &str) -> u64 {
    d.json(&["info"])["counters"][name].as_u64().unwrap_or(0)
}

/// One iperf3 run from `client` to `server_ip` with `extra` arguments; its
/// JSON report.
fn iperf(lab: &Lab, client: &Node, server: &Node, server_ip: &str, extra: &[&str]) -> Value {
    let _server = lab.spawn(server, "iperf3", &["-s", "-1", "-B", server_ip], &[]);
    let mut args = vec![
        "-c",
        server_ip,
        "-t",
        "3",
        "-J",
        "--connect-timeout",
        "3000",
    ];
    args.extend_from_slice(extra);
    let mut last = None;
    let ran = wait_until(Duration::from_secs(10), || {
        let r = lab.exec(client, "iperf3", &args);
        let ok = r.ok && !r.stdout.contains("\"error\"");
        last = Some(r);
        ok
    });
    let run = last.expect("iperf3 ran");
    assert!(ran, "iperf3 {extra:?} to {server_ip}: {run:?}");
    serde_json::from_str(&run.stdout).expect("iperf3 JSON")
}

#[test]
fn flush_threads_carry_a_members_traffic_without_reordering() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let [ha, hb] = ["a", "b"].map(|n| lab.host(n));
    make_planet(
        &lab,
        &root_host,
        &[&ctl_host, &ha, &hb].map(|h| lab.home(h)),
    );
    for h in [&ha, &hb] {
        local_conf(&lab, h, json!({ "flushThreads": FLUSH_THREADS }));
    }
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let a = Daemon::start(&lab, &ha, "vnet-node");
    let b = Daemon::start(&lab, &hb, "vnet-node");
    for d in [&ctl, &a, &b] {
        d.wait_online();
    }
    for d in [&a, &b] {
        let status = d.json(&["info"]);
        assert_eq!(
            status["config"]["settings"]["flushThreads"].as_u64(),
            Some(FLUSH_THREADS),
            "{status}"
        );
    }
    let (_, ips) = network_of(&ctl, &[&a, &b], "flushthreads");
    let ip_b: Ipv4Addr = ips[1].parse().expect("an IPv4 address");
    assert!(
        wait_until(Duration::from_secs(20), || lab.ping(&ha, ip_b)),
        "a cannot reach b over the network"
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            lab.ping(&ha, ip_b);
            a.route_to(&b.address()) == "DIRECT" && b.route_to(&a.address()) == "DIRECT"
        }),
        "a and b never went direct"
    );
    let late_before = [counter(&a, "receivedLate"), counter(&b, "receivedLate")];
    let flushed_before = [
        counter(&a, "flushedByThreads"),
        counter(&b, "flushedByThreads"),
    ];

    // Four TCP streams each way.
    for reverse in [false, true] {
        let mut extra = vec!["-P", "4"];
        if reverse {
            extra.push("-R");
        }
        let report = iperf(&lab, &ha, &hb, &ips[1], &extra);
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        eprintln!(
            "4 TCP streams{}: {:.0} Mbit/s, {:?} retransmits (debug build)",
            if reverse { " reversed" } else { "" },
            bps / 1e6,
            report["end"]["sum_sent"]["retransmits"].as_u64()
        );
        assert!(bps > 0.0, "{report}");
    }

    // A UDP flood, datagrams numbered by iperf3: none may arrive out of order.
    let report = iperf(&lab, &ha, &hb, &ips[1], &["-u", "-b", "0", "-l", "1200"]);
    let udp = &report["end"]["streams"][0]["udp"];
    let packets = udp["packets"].as_u64().unwrap_or(0);
    let out_of_order = udp["out_of_order"].as_u64();
    eprintln!(
        "UDP flood: {packets} datagrams, {out_of_order:?} out of order, {:.1} % lost",
        udp["lost_percent"].as_f64().unwrap_or(100.0)
    );
    assert!(packets > 1_000, "{udp}");
    assert_eq!(
        out_of_order,
        Some(0),
        "reordered by the flush threads: {udp}"
    );

    for (i, d) in [&a, &b].into_iter().enumerate() {
        let flushed = counter(d, "flushedByThreads") - flushed_before[i];
        let late = counter(d, "receivedLate") - late_before[i];
        eprintln!("member {i}: {flushed} outboxes flushed by threads, {late} packets late");
        assert!(flushed > 0, "member {i}: the flush threads carried nothing");
        assert_eq!(late, 0, "member {i}: session packets arrived out of order");
    }
}
