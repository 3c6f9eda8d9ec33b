//! Staying connected when the network misbehaves, end to end in network namespaces: NAT state
//! flushed mid-transfer, both roots restarted, random packet loss, a firewall that drops all
//! UDP and is then opened, `forceTcpRelay`, port mapping through a real UPnP gateway, and the
//! NAT-mapping verdict of `vnet-cli netcheck`. Needs root, conntrack, nftables, iperf3 and
//! miniupnpd-nftables. Measured figures are printed to stderr (`--nocapture`).

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, make_planet_with_roots, network_of};
use vnet_tests::netns::{Lab, NatKind, Node, Router, wait_for, wait_until};

/// Seconds since the epoch: the clock `ping -D` stamps its replies with.
fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Writes `<home>/local.conf` for `host`'s daemon (before it starts).
fn local_conf(lab: &Lab, host: &Node, settings: Value) {
    let conf = json!({ "settings": settings });
    fs::write(lab.home(host).join("local.conf"), conf.to_string()).expect("write local.conf");
}

/// Makes a planet with `roots` (two: nodes tell easy from hard NAT by comparing them), starts
/// them as `vnet-planet`, then starts every `(host, program)` and waits until it is ONLINE.
fn boot<'a>(
    lab: &'a Lab,
    roots: [&'a Node; 2],
    nodes: &[(&'a Node, &'static str)],
) -> (Vec<Daemon<'a>>, Vec<Daemon<'a>>) {
    let homes: Vec<_> = nodes.iter().map(|(h, _)| lab.home(*h)).collect();
    make_planet_with_roots(lab, &roots, &homes);
    let root_daemons: Vec<Daemon> = roots
        .iter()
        .map(|r| Daemon::start(lab, r, "vnet-planet"))
        .collect();
    let daemons: Vec<Daemon> = nodes
        .iter()
        .map(|(h, program)| Daemon::start(lab, h, program))
        .collect();
    for d in &daemons {
        d.wait_online();
    }
    (root_daemons, daemons)
}

/// Pings `ip` from `from` (every 200 ms, in the background) until `from`'s route to `to`
/// is `want` (and, if `both`, `to`'s route back too), for at most `timeout`; whether it was.
fn settle(
    lab: &Lab,
    from: &Daemon,
    to: &Daemon,
    ip: &str,
    want: &str,
    both: bool,
    timeout: Duration,
) -> bool {
    let _ping = lab.spawn(from.host, "ping", &["-n", "-i", "0.2", "-W", "1", ip], &[]);
    let (from_addr, to_addr) = (from.address(), to.address());
    wait_until(timeout, || {
        from.route_to(&to_addr) == want && (!both || to.route_to(&from_addr) == want)
    })
}

/// Replies in `ping` output (duplicates not counted).
fn replies(out: &str) -> usize {
    out.lines()
        .filter(|l| l.contains("bytes from") && !l.contains("DUP!"))
        .count()
}

/// The `[epoch]` stamps of the replies in `ping -D` output, in order.
fn reply_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.contains("bytes from") && !l.contains("DUP!"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// The longest time without a reply between `start` and `end` (epoch seconds), and where it
/// began: the gaps between consecutive replies, and from the last reply to `end`.
fn longest_gap(times: &[f64], start: f64, end: f64) -> (f64, f64) {
    let mut prev = start;
    let mut worst = (0.0, start);
    for &t in times.iter().filter(|&&t| t >= start && t <= end) {
        if t - prev > worst.0 {
            worst = (t - prev, prev);
        }
        prev = t;
    }
    if end - prev > worst.0 {
        worst = (end - prev, prev);
    }
    worst
}

/// `conntrack -F` in each router: every NAT mapping and every firewall state forgotten.
fn flush_conntrack(lab: &Lab, routers: &[&Router]) {
    for r in routers {
        let run = lab.exec(*r, "conntrack", &["-F"]);
        assert!(run.ok, "conntrack -F in {}: {run:?}", r.name());
    }
}

/// The port of an `ip/port` endpoint.
fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once('/')?.1.parse().ok()
}

/// A peer's entry in `listpeers -j`.
fn peer_json(d: &Daemon, addr: &str) -> Value {
    d.json(&["listpeers"])
        .as_array()
        .and_then(|a| a.iter().find(|p| p["address"] == addr).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn conntrack_flush_mid_transfer_recovers_within_two_seconds() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    let ra = lab.nat_router("ra", NatKind::Easy);
    let rb = lab.nat_router("rb", NatKind::Easy);
    let ha = lab.host_behind("a", &ra);
    let hb = lab.host_behind("b", &rb);
    let (_roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[
            (&ctl_host, "vnet-controller"),
            (&ha, "vnet-node"),
            (&hb, "vnet-node"),
        ],
    );
    let (ctl, a, b) = (&d[0], &d[1], &d[2]);
    let (_nwid, ips) = network_of(ctl, &[a, b], "resilience");
    let ip_b = &ips[1];
    let (a_addr, b_addr) = (a.address(), b.address());
    assert!(
        settle(&lab, a, b, ip_b, "DIRECT", true, Duration::from_secs(20)),
        "easy–easy never DIRECT: {} / {}",
        a.route_to(&b_addr),
        b.route_to(&a_addr)
    );
    let path_before = peer_json(a, &b_addr)["paths"].clone();

    // ~8 s of pings every 50 ms; every NAT mapping is forgotten after ~2 s.
    let ping = lab.spawn(
        &ha,
        "ping",
        &["-n", "-D", "-i", "0.05", "-W", "1", ip_b],
        &[],
    );
    let start = epoch();
    std::thread::sleep(Duration::from_secs(2));
    let flushed = epoch();
    flush_conntrack(&lab, &[&ra, &rb]);
    let mut routes = Vec::new();
    while epoch() - start < 8.0 {
        routes.push((epoch() - flushed, a.route_to(&b_addr), b.route_to(&a_addr)));
        std::thread::sleep(Duration::from_millis(200));
    }
    ping.stop();
    let end = epoch();
    let out = ping.stdout_text();
    let times = reply_times(&out);
    let (gap, gap_at) = longest_gap(&times, start + 0.5, end);
    let routes_seen: Vec<String> = routes
        .iter()
        .map(|(t, ab, ba)| format!("{t:+.1}s {ab}/{ba}"))
        .collect();
    eprintln!(
        "conntrack flush (ping): {} replies in {:.1} s, longest gap {gap:.3} s starting {:+.3} s \
         from the flush; routes a→b/b→a after it: {}",
        times.len(),
        end - start,
        gap_at - flushed,
        routes_seen.join(", ")
    );
    assert!(
        gap <= 2.0,
        "longest gap without replies {gap:.3} s (starting {:+.3} s from the flush) > 2 s\n\
         paths before: {path_before}\npaths now: {}\nroutes: {routes_seen:?}",
        gap_at - flushed,
        peer_json(a, &b_addr)["paths"]
    );
    assert!(
        lab.exec(&ha, "ping", &["-n", "-c", "3", "-W", "2", ip_b])
            .ok,
        "no answer after the flush"
    );
    // Re-punched: DIRECT again (both ways) within 20 s.
    let t = Instant::now();
    assert!(
        settle(&lab, a, b, ip_b, "DIRECT", true, Duration::from_secs(20)),
        "not DIRECT again 20 s after the flush: {} / {}; paths: {}",
        a.route_to(&b_addr),
        b.route_to(&a_addr),
        peer_json(a, &b_addr)["paths"]
    );
    eprintln!(
        "conntrack flush: DIRECT both ways {:.1} s after the check began",
        t.elapsed().as_secs_f64()
    );

    // A TCP stream across a flush: it must finish and carry data.
    let server = lab.spawn(&hb, "iperf3", &["-s", "-1"], &[]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            lab.exec(&hb, "ss", &["-Hltn", "sport = :5201"])
                .stdout
                .contains("5201")
        }),
        "iperf3 server not listening: {}",
        server.stderr_text()
    );
    let run = std::thread::scope(|s| {
        let client = s.spawn(|| lab.exec(&ha, "iperf3", &["-c", ip_b, "-t", "8", "-J"]));
        std::thread::sleep(Duration::from_secs(2));
        flush_conntrack(&lab, &[&ra, &rb]);
        client.join().expect("iperf3 client thread")
    });
    assert!(run.ok, "iperf3 across a conntrack flush failed: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("iperf3 JSON");
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let worst_interval = report["intervals"]
        .as_array()
        .map(|iv| {
            iv.iter()
                .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                .fold(f64::INFINITY, f64::min)
        })
        .unwrap_or(0.0);
    eprintln!(
        "conntrack flush (iperf3): {received} bytes received in 8 s, slowest 1 s interval \
         {:.2} Mbit/s",
        worst_interval / 1e6
    );
    assert!(received > 0, "iperf3 moved no data: {}", run.stdout);
}

#[test]
fn restarted_root_is_rekeyed_and_nodes_recover() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    let re1 = lab.nat_router("re1", NatKind::Easy);
    let re2 = lab.nat_router("re2", NatKind::Easy);
    let rh1 = lab.nat_router("rh1", NatKind::Hard);
    let rh2 = lab.nat_router("rh2", NatKind::Hard);
    let he1 = lab.host_behind("e1", &re1);
    let he2 = lab.host_behind("e2", &re2);
    let hh1 = lab.host_behind("h1", &rh1);
    let hh2 = lab.host_behind("h2", &rh2);
    let (mut roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[
            (&ctl_host, "vnet-controller"),
            (&he1, "vnet-node"),
            (&he2, "vnet-node"),
            (&hh1, "vnet-node"),
            (&hh2, "vnet-node"),
        ],
    );
    let (ctl, e1, e2, h1, h2) = (&d[0], &d[1], &d[2], &d[3], &d[4]);
    let (_nwid, ips) = network_of(ctl, &[e1, e2, h1, h2], "resilience");
    let (ip_e2, ip_h2) = (&ips[1], &ips[3]);
    assert!(
        settle(
            &lab,
            e1,
            e2,
            ip_e2,
            "DIRECT",
            false,
            Duration::from_secs(20)
        ),
        "easy–easy not DIRECT: {}",
        e1.route_to(&e2.address())
    );
    // Hard–hard stays relayed through a root.
    assert!(
        settle(&lab, h1, h2, ip_h2, "RELAY", true, Duration::from_secs(20)),
        "hard–hard not RELAY: {}",
        h1.route_to(&h2.address())
    );
    assert!(
        lab.exec(&hh1, "ping", &["-n", "-c", "3", "-W", "2", ip_h2])
            .ok,
        "hard–hard relayed ping fails before the restart"
    );

    // Relayed and direct traffic all along; both roots crash and come back 3 s later with
    // the same identity but no memory of anyone (no sessions, no paths).
    let relayed = lab.spawn(&hh1, "ping", &["-n", "-D", "-i", "0.2", ip_h2], &[]);
    let direct = lab.spawn(&he1, "ping", &["-n", "-D", "-i", "0.2", ip_e2], &[]);
    std::thread::sleep(Duration::from_secs(1));
    for r in roots.iter_mut() {
        r.proc().kill();
        r.forget_proc();
    }
    let killed = epoch();
    std::thread::sleep(Duration::from_secs(3));
    for r in roots.iter_mut() {
        r.restart();
    }
    let restarted = epoch();

    // Every member says HELLO to both restarted roots (a new session with each, younger than
    // the restart) and is ONLINE again.
    let members = [e1, e2, h1, h2];
    let root_addrs: Vec<String> = roots.iter().map(Daemon::address).collect();
    let mut rekeyed: Vec<Option<f64>> = vec![None; members.len()];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && rekeyed.iter().any(Option::is_none) {
        for (i, m) in members.iter().enumerate() {
            if rekeyed[i].is_some() {
                continue;
            }
            let since_ms = ((epoch() - restarted) * 1000.0) as u64;
            let peers = m.json(&["listpeers"]);
            let fresh = root_addrs.iter().all(|r| {
                peers.as_array().into_iter().flatten().any(|p| {
                    p["address"] == r.as_str()
                        && p["sessionAge"].as_u64().is_some_and(|age| age < since_ms)
                })
            });
            if fresh && m.cli(&["info"]).stdout.contains("ONLINE") {
                rekeyed[i] = Some(epoch() - restarted);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rekey_text: Vec<String> = members
        .iter()
        .zip(&rekeyed)
        .map(|(m, t)| {
            format!(
                "{} {}",
                m.host.name(),
                t.map_or("never".to_string(), |t| format!("{t:.1} s"))
            )
        })
        .collect();
    eprintln!("root restart: re-keyed with both roots and ONLINE: {rekey_text:?}");
    assert!(
        rekeyed.iter().all(Option::is_some),
        "not every member re-keyed with both roots 15 s after they restarted: {rekey_text:?}
{}",
        members
            .iter()
            .map(|m| format!("{}: {}\n", m.host.name(), m.json(&["listpeers"])))
            .collect::<String>()
    );
    // The relayed pair's traffic comes back through the restarted roots.
    let first_relayed = wait_for(Duration::from_secs(15), || {
        reply_times(&relayed.stdout_text())
            .into_iter()
            .find(|&t| t > restarted)
    });
    std::thread::sleep(Duration::from_secs(2));
    relayed.stop();
    direct.stop();
    let relayed_out = relayed.stdout_text();
    let direct_times = reply_times(&direct.stdout_text());
    let (direct_gap, _) = longest_gap(&direct_times, killed - 1.0, epoch() - 0.5);
    eprintln!(
        "root restart: relayed h1→h2 replies again {} after the restart ({} replies in all); \
         direct e1→e2 longest gap {direct_gap:.2} s",
        first_relayed.map_or("never".to_string(), |t| format!("{:.1} s", t - restarted)),
        replies(&relayed_out),
    );
    let first_relayed = first_relayed.unwrap_or_else(|| {
        panic!(
            "hard–hard relayed traffic not back 15 s after the roots restarted; routes {} / {}\n\
             h1 peer entry: {}\nroot1 log:\n{}",
            h1.route_to(&h2.address()),
            h2.route_to(&h1.address()),
            peer_json(h1, &h2.address()),
            roots[0].proc().stderr_text()
        )
    });
    assert!(first_relayed - restarted <= 15.0);
    for (from, to, ip) in [(&he1, e2, ip_e2), (&hh1, h2, ip_h2)] {
        assert!(
            lab.exec(from, "ping", &["-n", "-c", "3", "-W", "2", ip]).ok,
            "{} cannot reach {} after the roots restarted",
            from.name(),
            to.host.name()
        );
    }
    assert_eq!(h1.route_to(&h2.address()), "RELAY");
}

#[test]
fn ten_percent_loss_stays_connected() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    let ra = lab.nat_router("ra", NatKind::Easy);
    let rb = lab.nat_router("rb", NatKind::Easy);
    let ha = lab.host_behind("a", &ra);
    let hb = lab.host_behind("b", &rb);
    let (_roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[
            (&ctl_host, "vnet-controller"),
            (&ha, "vnet-node"),
            (&hb, "vnet-node"),
        ],
    );
    let (ctl, a, b) = (&d[0], &d[1], &d[2]);
    let (_nwid, ips) = network_of(ctl, &[a, b], "resilience");
    let ip_b = &ips[1];
    let b_addr = b.address();
    assert!(
        settle(&lab, a, b, ip_b, "DIRECT", true, Duration::from_secs(20)),
        "easy–easy not DIRECT before the loss"
    );
    // Each router loses 10 % of what comes in from the internet (its WAN): a round trip
    // crosses two lossy hops, so about 81 % of pings are answered. (Dropping in both
    // directions at both routers would be four hops, 0.9^4 ≈ 66 %.)
    for r in [&ra, &rb] {
        let script = format!(
            "nft add table inet loss && \
             nft add chain inet loss lossy '{{ type filter hook forward priority 0; }}' && \
             nft add rule inet loss lossy iifname \"{}\" numgen random mod 100 '<' 10 counter drop",
            r.wan_iface()
        );
        let run = lab.exec(r, "sh", &["-c", &script]);
        assert!(run.ok, "nft loss rule in {}: {run:?}", r.name());
    }
    let run = lab.exec(
        &ha,
        "ping",
        &["-n", "-c", "100", "-i", "0.1", "-W", "2", ip_b],
    );
    let got = replies(&run.stdout);
    let route = a.route_to(&b_addr);
    // What each router dropped (the rule's counter).
    let drops: Vec<String> = [&ra, &rb]
        .iter()
        .map(|r| {
            let out = lab
                .exec(*r, "nft", &["list", "table", "inet", "loss"])
                .stdout;
            let packets = out
                .split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .unwrap_or("?")
                .to_string();
            format!("{} dropped {packets}", r.name())
        })
        .collect();
    eprintln!(
        "10 % loss per router (inbound): {got}/100 replies; route a→b {route}, b→a {}; {}",
        b.route_to(&a.address()),
        drops.join(", ")
    );
    assert!(
        got >= 60,
        "only {got}/100 replies under 10 % loss\n{}",
        run.stdout
    );
    assert!(
        route == "DIRECT" || route == "RELAY",
        "a lost its peer under loss: route {route}; {}",
        peer_json(a, &b_addr)
    );
    assert!(
        a.cli(&["info"]).stdout.contains("ONLINE"),
        "a not ONLINE under loss"
    );
}

#[test]
fn udp_blocked_node_relays_over_tcp_then_returns_to_udp() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    let fw = lab.nat_router("fw", NatKind::Easy);
    lab.block_udp(&fw);
    let ha = lab.host_behind("a", &fw);
    let hb = lab.host("b");
    let (_roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[
            (&ctl_host, "vnet-controller"),
            (&ha, "vnet-node"),
            (&hb, "vnet-node"),
        ],
    );
    let (ctl, a, b) = (&d[0], &d[1], &d[2]);
    let (_nwid, ips) = network_of(ctl, &[a, b], "resilience");
    let ip_b = &ips[1];
    let b_addr = b.address();

    let check = wait_for(Duration::from_secs(10), || {
        let nc = a.json(&["netcheck"]);
        (nc["udpBlocked"] == true && nc["tcpRelay"] == true).then_some(nc)
    });
    assert!(
        check.is_some(),
        "netcheck does not say UDP blocked / TCP relay: {}",
        a.json(&["netcheck"])
    );
    let text = a.cli(&["netcheck"]).stdout;
    assert!(text.contains("udp: BLOCKED"), "{text}");
    assert!(text.contains("relay: TCP"), "{text}");
    assert!(
        settle(
            &lab,
            a,
            b,
            ip_b,
            "TCP_RELAY",
            false,
            Duration::from_secs(10)
        ),
        "route a→b is {}, not TCP_RELAY",
        a.route_to(&b_addr)
    );
    let run = lab.exec(
        &ha,
        "ping",
        &["-n", "-c", "5", "-i", "0.2", "-W", "2", ip_b],
    );
    assert!(
        replies(&run.stdout) >= 3,
        "pings over TCP relay: {}",
        run.stdout
    );
    let cli_ping = a.cli(&["ping", &b_addr, "-c", "2"]);
    assert!(
        cli_ping.stdout.contains("TCP_RELAY"),
        "vnet-cli ping: {cli_ping:?}"
    );

    // The firewall opens: back to UDP by itself, then a direct path.
    let _traffic = lab.spawn(&ha, "ping", &["-n", "-i", "0.2", ip_b], &[]);
    let run = lab.exec(
        &fw,
        "iptables",
        &["-w", "-D", "FORWARD", "-p", "udp", "-j", "DROP"],
    );
    assert!(run.ok, "{run:?}");
    let t0 = Instant::now();
    let back_to_udp = wait_for(Duration::from_secs(15), || {
        let info = a.json(&["info"]);
        let nc = a.json(&["netcheck"]);
        (info["tcpRelay"] == false && nc["udp"] == true).then(|| t0.elapsed())
    });
    let direct = wait_for(Duration::from_secs(15), || {
        (a.route_to(&b_addr) == "DIRECT").then(|| t0.elapsed())
    });
    eprintln!(
        "udp unblocked: back to UDP after {}, DIRECT after {}",
        back_to_udp.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
        direct.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    assert!(
        back_to_udp.is_some(),
        "still on TCP 15 s after UDP opened: info {} netcheck {}",
        a.json(&["info"]),
        a.json(&["netcheck"])
    );
    assert!(
        direct.is_some(),
        "route a→b {} 15 s after UDP opened: {}",
        a.route_to(&b_addr),
        peer_json(a, &b_addr)
    );
    let text = a.cli(&["netcheck"]).stdout;
    assert!(text.contains("udp: works"), "{text}");
    assert!(text.contains("relay: UDP"), "{text}");
    assert!(
        lab.exec(&ha, "ping", &["-n", "-c", "3", "-W", "2", ip_b])
            .ok
    );
}

#[test]
fn force_tcp_relay_setting_is_honoured() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let ctl_host = lab.host("ctl");
    let ha = lab.host("a");
    let hb = lab.host("b");
    local_conf(&lab, &ha, json!({ "forceTcpRelay": true }));
    let (_roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[
            (&ctl_host, "vnet-controller"),
            (&ha, "vnet-node"),
            (&hb, "vnet-node"),
        ],
    );
    let (ctl, a, b) = (&d[0], &d[1], &d[2]);
    let info = a.json(&["info"]);
    assert_eq!(info["config"]["settings"]["forceTcpRelay"], true, "{info}");
    assert_eq!(info["tcpRelay"], true, "{info}");
    let (_nwid, ips) = network_of(ctl, &[a, b], "resilience");
    let ip_b = &ips[1];
    let b_addr = b.address();
    // The first route a→b is already through TCP: UDP works, but is not used.
    let run = lab.exec(
        &ha,
        "ping",
        &["-n", "-c", "5", "-i", "0.2", "-W", "2", ip_b],
    );
    assert!(replies(&run.stdout) >= 3, "pings: {}", run.stdout);
    assert_eq!(
        a.route_to(&b_addr),
        "TCP_RELAY",
        "{}",
        peer_json(a, &b_addr)
    );
    let cli_ping = a.cli(&["ping", &b_addr, "-c", "2"]);
    assert!(
        cli_ping.stdout.contains("TCP_RELAY"),
        "vnet-cli ping: {cli_ping:?}"
    );
    // And it stays so (no return to UDP, whose probes would answer).
    let _traffic = lab.spawn(&ha, "ping", &["-n", "-i", "0.2", ip_b], &[]);
    let mut seen = Vec::new();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_secs(1));
        seen.push(a.route_to(&b_addr));
    }
    assert!(
        seen.iter().all(|r| r == "TCP_RELAY"),
        "route a→b over 12 s: {seen:?}"
    );
    let nc = a.json(&["netcheck"]);
    assert_eq!(nc["forceTcpRelay"], true, "{nc}");
    assert_eq!(nc["tcpRelay"], true, "{nc}");
    let text = a.cli(&["netcheck"]).stdout;
    assert!(text.contains("relay: TCP"), "{text}");
    let peer = peer_json(a, &b_addr);
    let sockets: Vec<&str> = peer["paths"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|x| x["preferred"] == true)
                .filter_map(|x| x["socket"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        sockets.iter().all(|s| *s == "tcp"),
        "a prefers a non-TCP path to b: {peer}"
    );
    eprintln!(
        "forceTcpRelay: a→b {seen:?}; b→a {}",
        b.route_to(&a.address())
    );
}

#[test]
fn port_mapping_setting_and_netcheck_report_the_gateway() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let (gw1, _upnpd1) = lab.upnp_router("gw1", true, false);
    let (gw2, _upnpd2) = lab.upnp_router("gw2", true, false);
    let h1 = lab.host_behind("m1", &gw1);
    let h2 = lab.host_behind("m2", &gw2);
    local_conf(&lab, &h2, json!({ "portMappingEnabled": false }));
    let (_roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[(&h1, "vnet-node"), (&h2, "vnet-node")],
    );
    let (m1, m2) = (&d[0], &d[1]);

    let ruleset = |r: &Router| {
        let run = lab.exec(r, "nft", &["list", "ruleset"]);
        assert!(run.ok, "{run:?}");
        run.stdout
    };
    let info = wait_for(Duration::from_secs(20), || {
        let info = m1.json(&["info"]);
        (info["portMapping"]["protocol"] == "upnp" && info["mappedEndpoint"].is_string())
            .then_some(info)
    })
    .unwrap_or_else(|| panic!("m1 not mapped through UPnP: {}", m1.json(&["info"])));
    let port = info["portMapping"]["externalPort"]
        .as_u64()
        .unwrap_or_else(|| panic!("no externalPort: {info}"));
    assert_eq!(info["portMapping"]["enabled"], true, "{info}");
    assert_eq!(
        info["mappedEndpoint"],
        format!("{}/{port}", gw1.wan_ip()),
        "{info}"
    );
    assert_eq!(
        info["config"]["settings"]["portMappingEnabled"], true,
        "{info}"
    );
    let text = m1.cli(&["netcheck"]).stdout;
    assert!(text.contains("portmap: UPNP"), "{text}");
    assert!(text.contains(&format!("{}/{port}", gw1.wan_ip())), "{text}");
    let rules = ruleset(&gw1);
    assert!(
        rules.contains(&format!("dport {port}")),
        "no DNAT rule for {port} in gw1:\n{rules}"
    );

    // A clean stop removes the mapping.
    assert!(m1.proc().stop().success(), "m1 clean stop");
    let gone = wait_until(Duration::from_secs(5), || {
        !ruleset(&gw1).contains(&format!("dport {port}"))
    });
    assert!(
        gone,
        "DNAT rule for {port} left after a clean stop:\n{}",
        ruleset(&gw1)
    );

    // Mapping disabled: nothing asked of the gateway, nothing advertised.
    let info2 = m2.json(&["info"]);
    assert_eq!(info2["portMapping"]["enabled"], false, "{info2}");
    assert!(info2["mappedEndpoint"].is_null(), "{info2}");
    assert_eq!(
        info2["config"]["settings"]["portMappingEnabled"], false,
        "{info2}"
    );
    let text2 = m2.cli(&["netcheck"]).stdout;
    assert!(text2.contains("portmap: off"), "{text2}");
    let rules2 = lab
        .exec(
            &gw2,
            "nft",
            &["list", "chain", "inet", "filter", "prerouting_miniupnpd"],
        )
        .stdout;
    assert!(
        !rules2.contains("dnat"),
        "gw2 has a mapping although m2 disabled port mapping:\n{rules2}"
    );
    eprintln!("port mapping: m1 mapped {}", info["mappedEndpoint"]);
}

#[test]
fn netcheck_tells_easy_from_hard() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let re = lab.nat_router("re", NatKind::Easy);
    let rh = lab.nat_router("rh", NatKind::Hard);
    let he = lab.host_behind("e", &re);
    let hh = lab.host_behind("h", &rh);
    let (_roots, d) = boot(
        &lab,
        [&root1, &root2],
        &[(&he, "vnet-node"), (&hh, "vnet-node")],
    );
    let (easy, hard) = (&d[0], &d[1]);

    for (node, router, mapping, same_port) in [
        (easy, &re, "endpointIndependent", true),
        (hard, &rh, "endpointDependent", false),
    ] {
        let name = node.host.name();
        let nc = wait_for(Duration::from_secs(15), || {
            let nc = node.json(&["netcheck"]);
            let roots = nc["roots"].as_array()?;
            let complete = roots.len() == 2
                && roots.iter().all(|r| {
                    r["reflected"].is_string() && r["latency"].is_number() && r["udp"] == true
                });
            (nc["mapping"] != "unknown" && complete).then_some(nc)
        })
        .unwrap_or_else(|| panic!("{name}: netcheck incomplete: {}", node.json(&["netcheck"])));
        assert_eq!(nc["mapping"], mapping, "{name}: {nc}");
        assert_eq!(nc["udp"], true, "{name}: {nc}");
        assert_eq!(nc["udpBlocked"], false, "{name}: {nc}");
        let reflected: Vec<&str> = nc["roots"]
            .as_array()
            .expect("roots")
            .iter()
            .map(|r| r["reflected"].as_str().expect("reflected"))
            .collect();
        for r in &reflected {
            assert!(
                r.starts_with(&format!("{}/", router.wan_ip())),
                "{name}: reflected {r} is not the router's WAN address"
            );
        }
        let ports: Vec<u16> = reflected.iter().filter_map(|r| port_of(r)).collect();
        assert_eq!(ports.len(), 2, "{name}: {nc}");
        assert_eq!(
            ports[0] == ports[1],
            same_port,
            "{name}: reflected ports {ports:?}"
        );
        let info = node.json(&["info"]);
        assert_eq!(info["natMapping"], mapping, "{name}: {info}");

        let text = node.cli(&["netcheck"]).stdout;
        let root_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("root ")).collect();
        assert_eq!(root_lines.len(), 2, "{name}: {text}");
        for l in &root_lines {
            assert!(l.ends_with("via=udp"), "{name}: {l}");
            assert!(
                l.contains(" ms via=") && !l.contains("latency=-"),
                "{name}: {l}"
            );
            assert!(l.contains("reflected=198.51.100."), "{name}: {l}");
        }
        let want = if same_port {
            "mapping: endpoint-independent"
        } else {
            "mapping: endpoint-dependent"
        };
        assert!(text.contains(want), "{name}: {text}");
        eprintln!("netcheck {name}: {} {reflected:?}", nc["mapping"]);
    }
}
