//! Virtual networks end to end, in network namespaces: a root, a
//! vnet-controller and members, driven through vnet-cli.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;
use vnet_tests::daemon::{Daemon, make_planet};
use vnet_tests::netns::{Lab, Node, wait_until};
use vnet_tests::udp_check::link_local;

#[test]
fn join_is_denied_until_authorized_then_configured_cut_off_and_restored_after_restart() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let member_host = lab.host("m1");
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&ctl_host), lab.home(&member_host)],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let mut member = Daemon::start(&lab, &member_host, "vnet-node");
    ctl.wait_online();
    member.wait_online();

    let run = ctl.cli(&[
        "network",
        "create",
        "--name",
        "lab",
        "--pool",
        "10.147.17.10-10.147.17.50",
        "--route",
        "10.147.17.0/24",
    ]);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("network id")
        .to_string();
    assert!(nwid.starts_with(&ctl.address()), "{nwid}");

    let run = member.cli(&["join", &nwid]);
    assert_eq!(run.stdout.trim(), "200 join OK", "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || member.status(&nwid)
            == "ACCESS_DENIED"),
        "ACCESS_DENIED while unauthorized: {:?}",
        member.network_line(&nwid)
    );
    let device = member.network_line(&nwid)[7].clone();
    let link = |d: &str| lab.exec(&member_host, "ip", &["-j", "addr", "show", "dev", d]);
    assert!(!link(&device).ok, "no TAP device while unauthorized");
    let listed = ctl.cli(&["member", "list", &nwid]);
    assert!(
        listed.stdout.contains(&member.address()),
        "the member asked and is listed: {listed:?}"
    );

    let run = ctl.cli(&["member", "authorize", &nwid, &member.address()]);
    assert!(run.ok, "{run:?}");
    let authorized_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || member.status(&nwid) == "OK"),
        "{:?}",
        member.network_line(&nwid)
    );
    let took = authorized_at.elapsed();
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "OK {took:?} after authorization"
    );
    let line = member.network_line(&nwid);
    assert_eq!(line[3], "lab");
    assert_eq!(line[6], "PRIVATE");
    assert_eq!(
        line[8], "10.147.17.10/24",
        "first address of the pool: {line:?}"
    );
    let configured = wait_until(Duration::from_secs(5), || {
        let run = link(&device);
        run.ok && run.stdout.contains("10.147.17.10")
    });
    assert!(
        configured,
        "TAP {device} carries the address: {}",
        link(&device).stdout
    );
    let info: Value = serde_json::from_str(&link(&device).stdout).unwrap();
    assert_eq!(info[0]["address"], line[4], "the TAP has the member MAC");
    assert_eq!(info[0]["mtu"], 2800);
    assert_eq!(member.cli(&["get", &nwid, "status"]).stdout.trim(), "OK");

    // Deauthorize: the controller's next refresh is a denial; the device goes away.
    assert!(
        ctl.cli(&["member", "deauthorize", &nwid, &member.address()])
            .ok
    );
    assert!(
        wait_until(Duration::from_secs(12), || member.status(&nwid)
            == "ACCESS_DENIED"),
        "{:?}",
        member.network_line(&nwid)
    );
    assert!(
        wait_until(Duration::from_secs(3), || !link(&device).ok),
        "TAP removed"
    );

    // Authorized again, and the daemon restarted: the network comes back by itself.
    assert!(
        ctl.cli(&["member", "authorize", &nwid, &member.address()])
            .ok
    );
    assert!(wait_until(Duration::from_secs(5), || member.status(&nwid) == "OK"));
    member.restart();
    member.wait_online();
    assert!(
        wait_until(Duration::from_secs(8), || member.status(&nwid) == "OK"),
        "rejoined after restart"
    );
    assert!(
        wait_until(Duration::from_secs(5), || link(&device).ok),
        "TAP back after restart"
    );
    // Leave: gone, and not rejoined on the next start.
    assert_eq!(member.cli(&["leave", &nwid]).stdout.trim(), "200 leave OK");
    assert!(wait_until(Duration::from_secs(3), || !link(&device).ok));
    assert!(member.network_line(&nwid).is_empty());

    // The controller's scrape carries its own counters beside the node's.
    let scrape = ctl.metrics();
    let value = |name: &str| scrape.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(
        value("vnet_controller_saves_failed_total"),
        Some(0.0),
        "{scrape:?}"
    );
    assert!(value("vnet_received_total").is_some_and(|n| n > 0.0));
}

/// A root, a controller, two members on a private network, both authorized.
fn two_members<'a>(lab: &'a Lab, hosts: &'a [Node; 4]) -> (Vec<Daemon<'a>>, String) {
    let [root_host, ctl_host, a_host, b_host] = hosts;
    make_planet(
        lab,
        root_host,
        &[lab.home(ctl_host), lab.home(a_host), lab.home(b_host)],
    );
    let root = Daemon::start(lab, root_host, "vnet-planet");
    let ctl = Daemon::start(lab, ctl_host, "vnet-controller");
    let a = Daemon::start(lab, a_host, "vnet-node");
    let b = Daemon::start(lab, b_host, "vnet-node");
    for d in [&ctl, &a, &b] {
        d.wait_online();
    }
    let run = ctl.cli(&[
        "network",
        "create",
        "--name",
        "lab",
        "--pool",
        "10.147.17.10-10.147.17.50",
        "--route",
        "10.147.17.0/24",
    ]);
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("network id")
        .to_string();
    for m in [&a, &b] {
        assert_eq!(m.cli(&["join", &nwid]).stdout.trim(), "200 join OK");
    }
    for m in [&a, &b] {
        assert!(wait_until(Duration::from_secs(5), || {
            ctl.cli(&["member", "authorize", &nwid, &m.address()]).ok
        }));
    }
    for m in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(8), || m.status(&nwid) == "OK"),
            "{:?}",
            m.network_line(&nwid)
        );
    }
    (vec![root, ctl, a, b], nwid)
}

fn virtual_ip(d: &Daemon, nwid: &str) -> String {
    d.network_line(nwid)[8]
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn two_members_ping_and_transfer_over_the_virtual_network() {
    let lab = Lab::new();
    let hosts = [
        lab.host("root"),
        lab.host("ctl"),
        lab.host("a"),
        lab.host("b"),
    ];
    let (daemons, nwid) = two_members(&lab, &hosts);
    let (a, b) = (&daemons[2], &daemons[3]);
    let ip_b = virtual_ip(b, &nwid);
    let ip_a = virtual_ip(a, &nwid);
    assert_ne!(ip_a, ip_b);
    let pinged = wait_until(Duration::from_secs(10), || {
        lab.exec(&hosts[2], "ping", &["-n", "-c", "1", "-W", "1", &ip_b])
            .ok
    });
    assert!(
        pinged,
        "a pings b over the virtual network; a's log:\n{}",
        a.proc().stderr_text()
    );
    let run = lab.exec(&hosts[3], "ping", &["-n", "-c", "3", "-i", "0.2", &ip_a]);
    assert!(run.ok, "b pings a: {run:?}");
    // The switch's counters (drops by reason included) are in the API.
    let nets: Value = serde_json::from_str(&a.cli(&["-j", "listnetworks"]).stdout).unwrap();
    let counters = &nets[0]["counters"];
    assert!(counters["sentUnicast"].as_u64().unwrap() > 0, "{counters}");
    assert!(counters["delivered"].as_u64().unwrap() > 0, "{counters}");
    assert!(counters["drops"].is_object(), "{counters}");
    // A TCP transfer, MTU-sized frames fragmented over UDP.
    let _server = lab.spawn(&hosts[3], "iperf3", &["-s", "-B", &ip_b], &[]);
    let mut last = None;
    let sent = wait_until(Duration::from_secs(10), || {
        let r = lab.exec(&hosts[2], "iperf3", &["-c", &ip_b, "-t", "2", "-J"]);
        // With -J, iperf3 reports "connection refused" in the JSON and exits 0.
        let ok = r.ok && !r.stdout.contains("\"error\"");
        last = Some(r);
        ok
    });
    let run = last.unwrap();
    assert!(sent, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3's report: {}", run.stdout));
    assert!(bps > 0.0, "data went through");
    eprintln!(
        "iperf3 over vnet in the test lab (debug build): {:.0} Mbit/s",
        bps / 1e6
    );
}

#[test]
fn pre_authorized_member_joins_fast_ipv6_works_and_deauthorized_member_is_cut_off() {
    let lab = Lab::new();
    let hosts = [
        lab.host("root"),
        lab.host("ctl"),
        lab.host("a"),
        lab.host("b"),
    ];
    let c_host = lab.host("c");
    let (daemons, nwid) = two_members(&lab, &hosts);
    fs::copy(
        lab.home(&hosts[0]).join("planet"),
        lab.home(&c_host).join("planet"),
    )
    .unwrap();
    let (ctl, a, b) = (&daemons[1], &daemons[2], &daemons[3]);
    let mut c = Daemon::start(&lab, &c_host, "vnet-node");
    c.wait_online();
    let ip_a = virtual_ip(a, &nwid);
    let device = a.network_line(&nwid)[7].clone();

    // Join speed: c is authorized before it asks; from `join` to its first ping of a.
    assert!(ctl.cli(&["member", "authorize", &nwid, &c.address()]).ok);
    let start = Instant::now();
    assert_eq!(c.cli(&["join", &nwid]).stdout.trim(), "200 join OK");
    let pinged = wait_until(Duration::from_secs(10), || {
        lab.exec(&c_host, "ping", &["-n", "-c", "1", "-W", "1", &ip_a])
            .ok
    });
    assert!(pinged, "pre-authorized member reaches a");
    eprintln!(
        "join speed (vnet-cli join -> first ping): {} ms",
        start.elapsed().as_millis()
    );
    // Cold start with the network already joined.
    c.restart();
    let start = Instant::now();
    let pinged = wait_until(Duration::from_secs(15), || {
        lab.exec(&c_host, "ping", &["-n", "-c", "1", "-W", "1", &ip_a])
            .ok
    });
    assert!(pinged, "after a cold start");
    eprintln!(
        "cold start (daemon start -> first ping): {} ms",
        start.elapsed().as_millis()
    );

    // IPv6: neighbour discovery between link-local addresses works.
    let ll_a = link_local(&lab, &hosts[2], &device);
    assert!(
        ll_a.starts_with("fe80"),
        "a has a link-local address: {ll_a:?}"
    );
    let target = format!("{ll_a}%{device}");
    let pinged6 = wait_until(Duration::from_secs(10), || {
        lab.exec(
            &c_host,
            "ping",
            &["-6", "-n", "-c", "1", "-W", "1", &target],
        )
        .ok
    });
    assert!(
        pinged6,
        "IPv6 ping over the virtual network (neighbour discovery)"
    );

    // Deauthorized: b is cut off (its device goes, and a no longer reaches it) well within 30 s.
    let ip_b = virtual_ip(b, &nwid);
    assert!(
        lab.exec(&hosts[2], "ping", &["-n", "-c", "1", "-W", "1", &ip_b])
            .ok
    );
    assert!(ctl.cli(&["member", "deauthorize", &nwid, &b.address()]).ok);
    let start = Instant::now();
    let cut = wait_until(Duration::from_secs(30), || {
        !lab.exec(&hosts[2], "ping", &["-n", "-c", "1", "-W", "1", &ip_b])
            .ok
    });
    assert!(cut, "b cut off within 30 s");
    eprintln!(
        "deauthorized member cut off after {} ms",
        start.elapsed().as_millis()
    );
    assert!(wait_until(Duration::from_secs(5), || b.status(&nwid)
        == "ACCESS_DENIED"));
    // The others still talk.
    assert!(
        lab.exec(&c_host, "ping", &["-n", "-c", "1", "-W", "1", &ip_a])
            .ok
    );
}

#[test]
fn controller_killed_mid_flight_loses_no_acknowledged_change() {
    let lab = Lab::new();
    let hosts = [
        lab.host("root"),
        lab.host("ctl"),
        lab.host("a"),
        lab.host("b"),
    ];
    let (mut daemons, nwid) = two_members(&lab, &hosts);
    // Acknowledged changes, then kill -9 at once.
    assert!(
        daemons[1]
            .cli(&["network", "set", &nwid, "name=renamed"])
            .ok
    );
    let b = daemons[3].address();
    assert!(daemons[1].cli(&["member", "deauthorize", &nwid, &b]).ok);
    daemons[1].proc().signal(9);
    assert!(
        daemons[1]
            .proc()
            .wait_timeout(Duration::from_secs(5))
            .is_some()
    );
    daemons[1].forget_proc();
    daemons[1].restart();
    daemons[1].wait_online();
    let ctl = &daemons[1];
    let shown = ctl.cli(&["-j", "network", "show", &nwid]);
    let network: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(network["name"], "renamed", "{shown:?}");
    let member: Value =
        serde_json::from_str(&ctl.cli(&["-j", "member", "show", &nwid, &b]).stdout).unwrap();
    assert_eq!(member["authorized"], false);
    let a = daemons[2].address();
    let member: Value =
        serde_json::from_str(&ctl.cli(&["-j", "member", "show", &nwid, &a]).stdout).unwrap();
    assert_eq!(member["authorized"], true);
    assert_eq!(member["ipAssignments"][0], "10.147.17.10");
    // The members see the restarted controller's answers.
    assert!(wait_until(Duration::from_secs(10), || daemons[3]
        .status(&nwid)
        == "ACCESS_DENIED"));
    assert!(wait_until(Duration::from_secs(10), || {
        daemons[2].network_line(&nwid).get(3).map(String::as_str) == Some("renamed")
    }));
}

/// Every row of the controller's database (`HOME/controller.db`, read
/// while it runs: write-ahead log), as "table key doc", sorted.
fn stored_rows(home: &std::path::Path) -> Vec<String> {
    use rusqlite::{Connection, OpenFlags};
    let db =
        Connection::open_with_flags(home.join("controller.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("controller.db");
    let mut rows = Vec::new();
    for sql in [
        "SELECT 'network ' || id || ' ' || doc FROM vnet_network",
        "SELECT 'member ' || network_id || '/' || address || ' ' || doc FROM vnet_member",
    ] {
        let mut stmt = db.prepare(sql).expect("query");
        let found = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .expect("rows")
            .map(|r| r.expect("row"));
        rows.extend(found);
    }
    rows.sort();
    rows
}

#[test]
fn requests_for_random_networks_and_unauthorized_requests_leave_the_store_unchanged() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let rogue_host = lab.host("rogue");
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&ctl_host), lab.home(&rogue_host)],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let mut ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let rogue = Daemon::start(&lab, &rogue_host, "vnet-node");
    ctl.wait_online();
    rogue.wait_online();
    let (nwid, _) = vnet_tests::daemon::network_of(&ctl, &[], "private");
    let before = stored_rows(&ctl.home);
    assert!(
        before
            .iter()
            .any(|r| r.starts_with(&format!("network {nwid} "))),
        "{before:?}"
    );

    // The rogue asks for 100 random network numbers of this controller (each
    // asked again every 2 s), and for the private network it is not in.
    let random: Vec<String> = (1..=100u32)
        .map(|i| format!("{}{:06x}", ctl.address(), (i * 7_919 + 12_345) & 0xff_ffff))
        .filter(|n| *n != nwid)
        .collect();
    for n in random.iter().chain(std::iter::once(&nwid)) {
        let run = rogue.cli(&["join", n]);
        assert_eq!(run.stdout.trim(), "200 join OK", "{run:?}");
    }
    assert!(
        wait_until(Duration::from_secs(15), || random
            .iter()
            .all(|n| rogue.status(n) == "NOT_FOUND")),
        "every random network is NOT_FOUND: {}",
        rogue.cli(&["listnetworks"]).stdout
    );
    assert!(wait_until(Duration::from_secs(5), || rogue.status(&nwid)
        == "ACCESS_DENIED"));
    // Let them ask again a few times.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(stored_rows(&ctl.home), before, "the store unchanged");
    let networks = ctl.json(&["network", "list"]);
    assert_eq!(
        networks.to_string().matches(&ctl.address()).count(),
        1,
        "{networks}"
    );

    let status = ctl.json(&["info"]);
    assert_eq!(
        status["controllerCounters"]["requestersEvicted"], 0,
        "controller counters in /status: {status}"
    );

    // The unauthorized requester is listed, like a member, unauthorized.
    let r = rogue.address();
    let listed = ctl.cli(&["member", "list", &nwid]);
    assert!(listed.stdout.contains(&r), "{listed:?}");
    let shown = ctl.json(&["member", "show", &nwid, &r]);
    assert_eq!(shown["authorized"], false, "{shown}");

    // A restart forgets it (nothing was stored); it asks again and is listed again.
    ctl.restart();
    ctl.wait_online();
    assert_eq!(
        stored_rows(&ctl.home),
        before,
        "the store unchanged after restart"
    );
    assert!(
        wait_until(Duration::from_secs(10), || ctl
            .cli(&["member", "list", &nwid])
            .stdout
            .contains(&r)),
        "listed again once it asked"
    );
    // Authorized by the admin: stored, and configured.
    assert!(ctl.cli(&["member", "authorize", &nwid, &r]).ok);
    let stored = stored_rows(&ctl.home);
    assert!(
        stored
            .iter()
            .any(|row| row.starts_with(&format!("member {nwid}/{r} "))),
        "{stored:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || rogue.status(&nwid) == "OK"));
}

#[test]
fn a_public_network_member_is_stored_once_and_gets_its_address_pushed() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let member_host = lab.host("m1");
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&ctl_host), lab.home(&member_host)],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let member = Daemon::start(&lab, &member_host, "vnet-node");
    ctl.wait_online();
    member.wait_online();
    let run = ctl.cli(&[
        "network",
        "create",
        "--name",
        "open",
        "--private",
        "false",
        "--pool",
        "10.147.18.10-10.147.18.50",
        "--route",
        "10.147.18.0/24",
    ]);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("id")
        .to_string();
    let start = Instant::now();
    assert_eq!(member.cli(&["join", &nwid]).stdout.trim(), "200 join OK");
    assert!(
        wait_until(Duration::from_secs(8), || member
            .network_line(&nwid)
            .get(8)
            .map(String::as_str)
            == Some("10.147.18.10/24")),
        "address pushed once stored: {:?}",
        member.network_line(&nwid)
    );
    eprintln!("public join -> address: {} ms", start.elapsed().as_millis());
    let a = member.address();
    let stored = stored_rows(&ctl.home);
    assert!(
        stored
            .iter()
            .any(|row| row.starts_with(&format!("member {nwid}/{a} "))),
        "stored: {stored:?}"
    );
    let shown = ctl.json(&["member", "show", &nwid, &a]);
    assert_eq!(shown["authorized"], true, "{shown}");
    assert_eq!(shown["ipAssignments"][0], "10.147.18.10", "{shown}");
}
