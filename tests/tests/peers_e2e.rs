//! vnet-node and vnet-planet end to end, in network namespaces: real
//! daemons, real sockets, real NAT routers (iptables MASQUERADE).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vnet_tests::daemon::{Daemon, PORT, make_planet};
use vnet_tests::netns::{Lab, NatKind, Node, wait_until};
use vnet_tests::{binary, run_in};

/// Pings `to` from `from` until a reply says `want` (DIRECT or RELAY), up to `limit`.
fn ping_until(from: &Daemon, to: &str, want: &str, limit: Duration) -> Option<Value> {
    let mut last = None;
    let ok = wait_until(limit, || {
        let run = from.cli(&["-j", "ping", to, "-c", "1"]);
        if !run.ok {
            return false;
        }
        let reply: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        let hit = reply["route"] == want;
        last = Some(reply);
        hit
    });
    if ok { last } else { None }
}

#[test]
fn root_and_three_nodes_go_direct_and_show_it() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let hosts: Vec<Node> = (1..=3).map(|i| lab.host(&format!("n{i}"))).collect();
    let homes: Vec<PathBuf> = hosts.iter().map(|h| lab.home(h)).collect();
    make_planet(&lab, &root_host, &homes);
    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let nodes: Vec<Daemon> = hosts
        .iter()
        .map(|h| Daemon::start(&lab, h, "vnet-node"))
        .collect();
    for n in &nodes {
        n.wait_online();
    }
    let info = nodes[0].cli(&["info"]);
    assert!(
        info.stdout
            .starts_with(&format!("200 info {} ", nodes[0].address())),
        "{info:?}"
    );
    for target in &nodes[1..] {
        let reply = ping_until(
            &nodes[0],
            &target.address(),
            "DIRECT",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no DIRECT reply from {}", target.address()));
        assert_eq!(reply["path"], format!("{}/{PORT}", target.host.ip()));
    }
    let peers = nodes[0].cli(&["peers"]);
    assert!(peers.ok, "{peers:?}");
    for target in &nodes[1..] {
        let line = peers
            .stdout
            .lines()
            .find(|l| l.starts_with(&target.address()))
            .unwrap_or_else(|| {
                panic!("{} missing from peers:\n{}", target.address(), peers.stdout)
            });
        assert!(line.contains("DIRECT") && line.contains("LEAF"), "{line}");
    }
    let root_line = nodes[0].cli(&["listpeers"]);
    assert!(
        root_line
            .stdout
            .lines()
            .any(|l| l.contains(&root.address()) && l.ends_with("PLANET")),
        "{root_line:?}"
    );
    let status = root.json(&["info"]);
    assert_eq!(status["root"], true);
}

#[test]
fn easy_nats_on_both_sides_upgrade_from_relay_to_direct() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let nat_a = lab.nat_router("nata", NatKind::Easy);
    let nat_b = lab.nat_router("natb", NatKind::Easy);
    let a_host = lab.host_behind("a", &nat_a);
    let b_host = lab.host_behind("b", &nat_b);
    make_planet(&lab, &root_host, &[lab.home(&a_host), lab.home(&b_host)]);
    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let a = Daemon::start(&lab, &a_host, "vnet-node");
    let b = Daemon::start(&lab, &b_host, "vnet-node");
    a.wait_online();
    b.wait_online();
    // The first exchange goes through the root; then the two punch through.
    let reply = ping_until(&a, &b.address(), "DIRECT", Duration::from_secs(5))
        .expect("a DIRECT reply through two easy NATs");
    assert_eq!(
        reply["path"].as_str().unwrap().split('/').next().unwrap(),
        nat_b.wan_ip().to_string()
    );
    let relayed = root.json(&["info"])["counters"]["relayed"]
        .as_u64()
        .unwrap();
    assert!(relayed > 0, "the root relayed the first packets");
    let peer = a.json(&["listpeers"]);
    let b_entry = peer
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == b.address())
        .unwrap()
        .clone();
    assert!(
        b_entry["upgradedAgo"].is_u64(),
        "the API says when the path was upgraded: {b_entry}"
    );
}

#[test]
fn easy_and_hard_nat_pair_still_reach_each_other() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let nat_a = lab.nat_router("nata", NatKind::Easy);
    let nat_b = lab.nat_router("natb", NatKind::Hard);
    let a_host = lab.host_behind("a", &nat_a);
    let b_host = lab.host_behind("b", &nat_b);
    make_planet(&lab, &root_host, &[lab.home(&a_host), lab.home(&b_host)]);
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let a = Daemon::start(&lab, &a_host, "vnet-node");
    let b = Daemon::start(&lab, &b_host, "vnet-node");
    a.wait_online();
    b.wait_online();
    let ok = wait_until(Duration::from_secs(10), || {
        a.cli(&["ping", &b.address(), "-c", "1"]).ok
    });
    assert!(ok, "a reaches b (relayed if nothing better)");
    let route = a.route_to(&b.address());
    assert!(route == "RELAY" || route == "DIRECT", "{route}");
    let back = b.cli(&["ping", &a.address(), "-c", "2"]);
    assert!(back.ok, "{back:?}");
}

#[test]
fn a_moon_made_with_idtool_is_orbited_by_seed_and_listed() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let moon_host = lab.host("moon");
    let leaf_host = lab.host("leaf");
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&moon_host), lab.home(&leaf_host)],
    );
    // The moon's root is an ordinary vnet-node with its own identity.
    let moon_home = lab.home(&moon_host);
    assert!(
        run_in(
            &moon_home,
            "vnet-idtool",
            &["generate", "identity.secret", "identity.public"]
        )
        .ok
    );
    let run = run_in(&moon_home, "vnet-idtool", &["initmoon", "identity.public"]);
    let mut moon: Value = serde_json::from_str(&run.stdout).unwrap();
    moon["roots"][0]["stableEndpoints"] = serde_json::json!([format!("{}/{PORT}", moon_host.ip())]);
    fs::write(moon_home.join("moon.json"), moon.to_string()).unwrap();
    fs::create_dir_all(moon_home.join("moons.d")).unwrap();
    let run = run_in(
        &moon_home,
        "vnet-idtool",
        &["genmoon", "moon.json", "-o", "moons.d"],
    );
    assert!(run.ok, "{run:?}");
    let moon_id = moon["id"].as_str().unwrap().to_string();

    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let moon_node = Daemon::start(&lab, &moon_host, "vnet-node");
    let leaf = Daemon::start(&lab, &leaf_host, "vnet-node");
    moon_node.wait_online();
    leaf.wait_online();
    assert_eq!(
        moon_node.json(&["info"])["root"],
        true,
        "the moon's node acts as a root"
    );

    let run = leaf.cli(&["orbit", &moon_id, &moon_id]);
    assert_eq!(run.stdout.trim(), "200 orbit OK", "{run:?}");
    let fetched = wait_until(Duration::from_secs(10), || {
        let moons = leaf.json(&["listmoons"]);
        moons.as_array().is_some_and(|a| {
            a.iter()
                .any(|m| m["id"] == format!("000000{moon_id}") && m["waiting"] == false)
        })
    });
    assert!(
        fetched,
        "moon fetched from its seed: {}",
        leaf.cli(&["listmoons"]).stdout
    );
    assert!(
        leaf.home
            .join(format!("moons.d/000000{moon_id}.moon"))
            .is_file(),
        "moon stored"
    );
    let listpeers = leaf.cli(&["listpeers"]);
    assert!(
        listpeers
            .stdout
            .lines()
            .any(|l| l.contains(&moon_id) && l.ends_with("MOON")),
        "{listpeers:?}"
    );
    let run = leaf.cli(&["deorbit", &moon_id]);
    assert_eq!(run.stdout.trim(), "200 deorbit OK", "{run:?}");
    assert!(
        !leaf
            .home
            .join(format!("moons.d/000000{moon_id}.moon"))
            .exists()
    );
}

#[test]
fn garbage_datagrams_are_counted_and_the_node_keeps_working_then_stops_cleanly() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let a_host = lab.host("a");
    let b_host = lab.host("b");
    make_planet(&lab, &root_host, &[lab.home(&a_host), lab.home(&b_host)]);
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let a = Daemon::start(&lab, &a_host, "vnet-node");
    let b = Daemon::start(&lab, &b_host, "vnet-node");
    a.wait_online();
    b.wait_online();
    // a knows b (and holds a session with it) first, so a forged packet
    // "from b" reaches the MAC check.
    assert!(a.cli(&["ping", &b.address(), "-c", "1"]).ok);
    // Junk, a truncated header, and a forged packet with a valid-looking header.
    let target = format!("/dev/udp/{}/{PORT}", a_host.ip());
    let b_addr = b.address();
    let a_addr = a.address();
    // Through dd, so the packet leaves in one write (one datagram): printf
    // may flush at a newline byte, and addresses can hold 0x0a.
    let forged = format!(
        "printf '\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07{}{}\\x08{}\\x0c' \
         | dd bs=4096 iflag=fullblock status=none > {target}",
        hex_escape(&a_addr),
        hex_escape(&b_addr),
        "\\x55".repeat(16)
    );
    for script in [
        // 0xff at byte 13 makes a fragment, and total 0xff is impossible.
        format!("head -c 3000 /dev/zero | tr '\\0' '\\377' > {target}"),
        format!("printf 'hello' > {target}"),
    ] {
        let run = lab.exec(&b_host, "bash", &["-c", &script]);
        assert!(run.ok, "{run:?}");
    }
    // The forged one again each round (a datagram may be lost on a loaded machine).
    let counted = wait_until(Duration::from_secs(5), || {
        let run = lab.exec(&b_host, "bash", &["-c", &forged]);
        assert!(run.ok, "{run:?}");
        let c = &a.json(&["info"])["counters"];
        c["droppedMalformed"].as_u64().unwrap_or(0) >= 2
            && c["droppedBadMac"].as_u64().unwrap_or(0) >= 1
    });
    assert!(counted, "{}", a.json(&["info"])["counters"]);
    assert!(a.cli(&["ping", &b_addr, "-c", "1"]).ok, "still works");
    let status = a.proc().stop();
    assert!(
        status.success(),
        "SIGTERM is a clean exit: {status:?}\n{}",
        a.proc().stderr_text()
    );
    assert!(a.proc().stderr_text().contains("stopped"));
}

fn hex_escape(address: &str) -> String {
    address
        .as_bytes()
        .chunks(2)
        .map(|pair| format!("\\x{}", std::str::from_utf8(pair).unwrap()))
        .collect()
}

#[test]
fn ipv6_roots_work_and_the_api_wants_its_token() {
    let lab = Lab::new();
    let host = lab.host("h");
    let root_home = lab.home(&host).join("root");
    let node_home = lab.home(&host).join("node");
    fs::create_dir_all(&root_home).unwrap();
    fs::create_dir_all(&node_home).unwrap();
    assert!(
        run_in(
            &root_home,
            "vnet-idtool",
            &["generate", "identity.secret", "identity.public"]
        )
        .ok
    );
    let run = run_in(
        &root_home,
        "vnet-planet",
        &["initplanet", "identity.public"],
    );
    let mut json: Value = serde_json::from_str(&run.stdout).unwrap();
    json["roots"][0]["stableEndpoints"] = serde_json::json!(["::1/9993"]);
    fs::write(root_home.join("planet.json"), json.to_string()).unwrap();
    assert!(
        run_in(
            &root_home,
            "vnet-planet",
            &["mkworld", "planet.json", "-o", "planet"]
        )
        .ok
    );
    fs::copy(root_home.join("planet"), node_home.join("planet")).unwrap();
    let root_str = root_home.to_str().unwrap();
    let node_str = node_home.to_str().unwrap();
    let _root = lab.spawn(
        &host,
        binary("vnet-planet"),
        &["serve", "-d", root_str, "-p", "9993"],
        &[],
    );
    let node = lab.spawn(
        &host,
        binary("vnet-node"),
        &["-d", node_str, "-p", "9994"],
        &[],
    );
    let cli = |args: &[&str]| {
        let mut all = vec!["-D", node_str];
        all.extend_from_slice(args);
        lab.exec(&host, binary("vnet-cli"), &all)
    };
    let online = wait_until(Duration::from_secs(10), || {
        cli(&["info"]).stdout.contains("ONLINE")
    });
    assert!(
        online,
        "online through an IPv6 root: {}",
        node.stderr_text()
    );
    // Every path, not only the one listpeers' line shows (that may be IPv4).
    let peers = cli(&["-j", "listpeers"]).stdout;
    assert!(peers.contains("::1/9993"), "{peers}");
    // The API: no token, 401; token in the header, 200; token in the URL
    // (it would end up in logs), 401; a Host that is not the loopback (DNS
    // rebinding), 403.
    let token = fs::read_to_string(node_home.join("authtoken.secret")).unwrap();
    let token = token.trim();
    let http = |path: &str, headers: &str| {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/9994; printf 'GET {path} HTTP/1.0\\r\\n{headers}\\r\\n' >&3; head -n 1 <&3"
        );
        lab.exec(&host, "bash", &["-c", &script]).stdout
    };
    let local = "Host: 127.0.0.1:9994\\r\\n";
    let auth = format!("X-VNet-Auth: {token}\\r\\n");
    assert!(
        http("/status", local).contains(" 401 "),
        "{}",
        http("/status", local)
    );
    assert!(http("/status", &format!("{local}{auth}")).contains(" 200 "));
    assert!(http(&format!("/status?auth={token}"), local).contains(" 401 "));
    assert!(http("/status", "X-VNet-Auth: wrong\\r\\n").contains(" 403 "));
    let rebound = format!("Host: evil.example:9994\\r\\n{auth}");
    assert!(http("/status", &rebound).contains(" 403 "));
}

#[test]
fn tap_device_is_created_and_configured_over_netlink() {
    let lab = Lab::new();
    let host = lab.host("h");
    let nwid = "5b51b6c335000001";
    let member = "0a0b0c0d0e";
    let probe = lab.spawn(
        &host,
        binary("tap-probe"),
        &[nwid, member, "10.147.17.5/24", "2800"],
        &[],
    );
    let ready = wait_until(Duration::from_secs(10), || {
        probe.stdout_text().contains("READY")
    });
    assert!(ready, "tap-probe: {}", probe.stderr_text());
    let line = probe.stdout_text();
    let mut words = line.split_whitespace().skip(1);
    let (device, mac) = (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    );
    // "vn" and the network id's last 10 hex digits.
    assert_eq!(device, "vnc335000001");
    let show = lab.exec(&host, "ip", &["-j", "addr", "show", "dev", &device]);
    let info: Value = serde_json::from_str(&show.stdout).unwrap();
    let link = &info[0];
    assert_eq!(link["address"], mac);
    assert_eq!(link["mtu"], 2800);
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let v4: Vec<String> = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(
        v4,
        vec!["10.147.17.5/24"],
        "exactly one IPv4 address after applying twice"
    );
    // The kernel's ARP request for a neighbour comes out of the TAP.
    let _ = lab.exec(&host, "ping", &["-c", "1", "-W", "1", "10.147.17.9"]);
    let arp = wait_until(Duration::from_secs(5), || {
        probe.stdout_text().contains("FRAME 42 0806")
    });
    assert!(
        arp,
        "ARP request read from the TAP: {}",
        probe.stdout_text()
    );
}
