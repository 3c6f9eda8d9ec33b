//! Port mapping against a real gateway: miniupnpd (UPnP IGD or NAT-PMP) on a lab router, the
//! node's port mapper in `port-map-probe` behind it, a host on the underlay sending to the
//! router's WAN address. Needs root, miniupnpd-nftables and nftables.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;
use vnet_tests::netns::{Lab, Node, Proc, Router, wait_for, wait_until};

const PROBE: &str = env!("CARGO_BIN_EXE_port-map-probe");
const PORT: u16 = 40123;

/// The JSON after the first stdout line starting with `tag `, if printed yet.
fn line_json(p: &Proc, tag: &str) -> Option<Value> {
    let out = p.stdout_text();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))?;
    Some(serde_json::from_str(line).expect("JSON after the tag"))
}

/// miniupnpd's DNAT rules, as `nft` lists them.
fn dnat_rules(lab: &Lab, router: &Router) -> String {
    let run = lab.exec(
        router,
        "nft",
        &["list", "chain", "inet", "filter", "prerouting_miniupnpd"],
    );
    assert!(run.ok, "nft list: {run:?}");
    run.stdout
}

/// Sends datagrams from `from` to `to` until `probe` prints `GOT`; whether it did in time.
fn deliver(lab: &Lab, from: &Node, to: Ipv4Addr, port: u16, probe: &Proc) -> bool {
    let script = format!("echo -n hello-from-wan > /dev/udp/{to}/{port}");
    wait_until(Duration::from_secs(5), || {
        lab.exec(from, "bash", &["-c", &script]);
        probe.stdout_text().contains("GOT hello-from-wan")
    })
}

/// The whole cycle with one protocol: map, receive through the mapping, unmap on SIGTERM.
fn map_receive_unmap(upnp: bool, natpmp: bool, protocol: &str) {
    let lab = Lab::new();
    let (router, _miniupnpd) = lab.upnp_router("gw", upnp, natpmp);
    let leaf = lab.host_behind("leaf", &router);
    let outside = lab.host("outside");

    let probe = lab.spawn(&leaf, PROBE, &[&PORT.to_string()], &[]);
    let state =
        wait_for(Duration::from_secs(15), || line_json(&probe, "MAPPED")).unwrap_or_else(|| {
            panic!(
                "not mapped; stdout:\n{}\nstderr:\n{}",
                probe.stdout_text(),
                probe.stderr_text()
            )
        });
    assert_eq!(state["enabled"], true, "{state}");
    assert_eq!(state["protocol"], protocol, "{state}");
    assert_eq!(state["gateway"], router.lan_ip().to_string(), "{state}");
    // The port is free at the gateway, so it is kept.
    assert_eq!(state["externalPort"], PORT, "{state}");
    assert_eq!(
        state["internal"],
        format!("{}:{PORT}", leaf.ip()),
        "{state}"
    );
    assert_eq!(state["leaseSeconds"], 3600, "{state}");
    // miniupnpd reports its configured placeholder, not the real WAN address: the node must
    // not trust it (the protocol core pairs the port with what the roots observe).
    assert_eq!(state["externalIp"], "100.128.0.1", "{state}");
    assert!(state["error"].is_null(), "{state}");
    assert!(
        dnat_rules(&lab, &router).contains(&format!("dport {PORT}")),
        "no DNAT rule for {PORT}:\n{}",
        dnat_rules(&lab, &router)
    );

    assert!(
        deliver(&lab, &outside, router.wan_ip(), PORT, &probe),
        "datagram to {}:{PORT} not received through the mapping; stdout:\n{}",
        router.wan_ip(),
        probe.stdout_text()
    );

    // SIGTERM: the mapper removes the mapping before the probe exits.
    let status = probe.stop();
    assert!(
        status.success(),
        "probe exit {status}; stderr:\n{}",
        probe.stderr_text()
    );
    assert!(
        probe.stdout_text().contains("STOPPED"),
        "{}",
        probe.stdout_text()
    );
    let rules = dnat_rules(&lab, &router);
    assert!(
        !rules.contains(&format!("dport {PORT}")),
        "DNAT rule left after shutdown:\n{rules}"
    );

    // And nothing is forwarded any more: a listener on the same port hears nothing.
    let listener = lab.spawn(
        &leaf,
        env!("CARGO_BIN_EXE_udp-probe"),
        &["serve", &PORT.to_string()],
        &[],
    );
    assert!(wait_until(Duration::from_secs(5), || listener
        .stderr_text()
        .contains("listening")));
    for _ in 0..3 {
        let script = format!("echo -n late > /dev/udp/{}/{PORT}", router.wan_ip());
        lab.exec(&outside, "bash", &["-c", &script]);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !listener.stderr_text().contains("from"),
        "datagram still forwarded after unmapping: {}",
        listener.stderr_text()
    );
}

#[test]
fn upnp_maps_forwards_and_unmaps() {
    map_receive_unmap(true, false, "upnp");
}

#[test]
fn natpmp_maps_forwards_and_unmaps() {
    map_receive_unmap(false, true, "natpmp");
}

#[test]
fn no_gateway_reports_error_quickly() {
    let lab = Lab::new();
    let router = lab.nat_router("plain", vnet_tests::netns::NatKind::Easy);
    let leaf = lab.host_behind("leaf", &router);
    let started = Instant::now();
    let probe = lab.spawn(&leaf, PROBE, &[&PORT.to_string()], &[]);
    let error = wait_for(Duration::from_secs(10), || {
        let out = probe.stdout_text();
        out.lines()
            .filter_map(|l| l.strip_prefix("STATE "))
            .map(|j| serde_json::from_str::<Value>(j).expect("JSON state"))
            .find(|s| !s["error"].is_null())
    })
    .unwrap_or_else(|| {
        panic!(
            "no error published; stdout:\n{}\nstderr:\n{}",
            probe.stdout_text(),
            probe.stderr_text()
        )
    });
    let took = started.elapsed();
    eprintln!("error published after {took:?}: {error}");
    assert!(took < Duration::from_secs(8), "error took {took:?}");
    let text = error["error"].as_str().expect("error text");
    assert!(text.contains("no UPnP or NAT-PMP gateway found"), "{error}");
    assert_eq!(error["enabled"], true, "{error}");
    assert!(error["externalPort"].is_null(), "{error}");
    assert!(!probe.stdout_text().contains("MAPPED"));
    // Waiting out the backoff must not hold up shutdown.
    let t = Instant::now();
    let status = probe.stop();
    assert!(status.success(), "probe exit {status}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
}

/// The mapping is renewed before its lease ends, with either protocol, and
/// still forwards after the first lease would have run out.
fn renewed_before_the_lease_ends(upnp: bool, natpmp: bool) {
    const LEASE_S: u32 = 4;
    let lab = Lab::new();
    let (router, _miniupnpd) = lab.upnp_router("gw", upnp, natpmp);
    let leaf = lab.host_behind("leaf", &router);
    let outside = lab.host("outside");
    let probe = lab.spawn(
        &leaf,
        PROBE,
        &[&PORT.to_string(), &LEASE_S.to_string()],
        &[],
    );
    let mapped_at = Instant::now();
    let state = wait_for(Duration::from_secs(15), || line_json(&probe, "MAPPED"))
        .unwrap_or_else(|| panic!("not mapped: {}", probe.stderr_text()));
    assert_eq!(state["leaseSeconds"], LEASE_S, "{state}");
    // Renewed at half the lease: two renewals within about 2 leases.
    let renewed = wait_until(Duration::from_secs(u64::from(LEASE_S) * 3), || {
        probe
            .stdout_text()
            .lines()
            .filter_map(|l| l.strip_prefix("STATE "))
            .filter_map(|j| serde_json::from_str::<Value>(j).ok())
            .any(|s| s["renewals"].as_u64().is_some_and(|n| n >= 2))
    });
    assert!(
        renewed,
        "no two renewals: {}\n{}",
        probe.stdout_text(),
        probe.stderr_text()
    );
    assert!(mapped_at.elapsed() > Duration::from_secs(u64::from(LEASE_S)));
    // Past the first lease, the gateway still forwards.
    assert!(
        deliver(&lab, &outside, router.wan_ip(), PORT, &probe),
        "not forwarded after the first lease: {}",
        probe.stderr_text()
    );
}

#[test]
fn upnp_mapping_is_renewed_before_its_lease_ends() {
    renewed_before_the_lease_ends(true, false);
}

#[test]
fn natpmp_mapping_is_renewed_before_its_lease_ends() {
    renewed_before_the_lease_ends(false, true);
}
