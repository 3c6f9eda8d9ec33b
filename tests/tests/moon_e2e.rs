//! Moons end to end, in network namespaces: a `vnet-node` on the underlay
//! serves a moon made with the real `vnet-idtool initmoon`/`genmoon`, members
//! behind hard NATs orbit it by seed and are relayed through it (it is their
//! closer root), the planet's root takes over when the moon dies, and the moon
//! answers WHOIS for a member cut off from the planet's root; a member that
//! can reach only the moon joins a network whose controller never heard of
//! the moon and reaches every member (the roots pass on what they cannot
//! answer).
//!
//! The kernel here has no `sch_netem`, so the planet root is made the farther
//! root by [`Delay`]: its UDP answers go through an NFQUEUE whose verdicts this
//! test hands out 30 ms late (plain netfilter, no extra kernel module).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vnet_tests::daemon::{Daemon, PORT, make_planet, network_of, ping_until_via, relayed};
use vnet_tests::delay::Delay;
use vnet_tests::netns::{Lab, NatKind, Node, wait_until};
use vnet_tests::run_in;

/// What the planet's root adds to every UDP datagram it sends.
const ROOT_DELAY: Duration = Duration::from_millis(30);

/// Makes, in `home` (which holds `identity.public`), a moon whose one root is
/// that identity at `endpoint`, with the real `vnet-idtool initmoon` and
/// `genmoon`, and writes it into `home/moons.d/`. Returns the moon's id as
/// `initmoon` prints it (the root's 10-digit address).
fn make_moon(home: &Path, endpoint: &str) -> String {
    let run = run_in(home, "vnet-idtool", &["initmoon", "identity.public"]);
    assert!(run.ok, "initmoon: {run:?}");
    let mut moon: Value = serde_json::from_str(&run.stdout).expect("moon JSON");
    moon["roots"][0]["stableEndpoints"] = serde_json::json!([endpoint]);
    fs::write(
        home.join("moon.json"),
        serde_json::to_string_pretty(&moon).unwrap(),
    )
    .unwrap();
    fs::create_dir_all(home.join("moons.d")).unwrap();
    let run = run_in(
        home,
        "vnet-idtool",
        &["genmoon", "moon.json", "-o", "moons.d"],
    );
    assert!(run.ok, "genmoon: {run:?}");
    let id = moon["id"].as_str().expect("moon id").to_string();
    assert!(
        run.stdout.contains(&format!("000000{id}.moon")),
        "genmoon names the file: {run:?}"
    );
    assert!(home.join(format!("moons.d/000000{id}.moon")).is_file());
    id
}

/// Pings `ip` from `from`'s namespace (one echo, 1 s wait) until one comes
/// back, up to `limit`.
fn ping_ip_until(lab: &Lab, from: &Node, ip: &str, limit: Duration) -> bool {
    wait_until(limit, || {
        lab.exec(from, "ping", &["-n", "-c", "1", "-W", "1", ip]).ok
    })
}

/// Waits until `node` lists the moon `id` as fetched (not waiting), and
/// returns its `listmoons` entry.
fn wait_moon_listed(node: &Daemon, id: &str) -> Value {
    let world = format!("000000{id}");
    let mut entry = Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        let run = node.cli(&["listmoons"]);
        // The JSON array alone, as zerotier-cli prints it.
        let moons: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        if let Some(m) = moons
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == world.as_str()))
        {
            entry = m.clone();
        }
        moons.is_array() && entry["waiting"] == false
    });
    assert!(
        ok,
        "{} does not list moon {world} as fetched: {entry}\n{}",
        node.host.name(),
        node.cli(&["listmoons"]).stdout
    );
    entry
}

/// The line of `vnet-cli peers` for `addr`.
fn peers_line(node: &Daemon, addr: &str) -> String {
    let run = node.cli(&["peers"]);
    assert!(run.ok, "{run:?}");
    run.stdout
        .lines()
        .find(|l| l.starts_with(addr))
        .unwrap_or_else(|| {
            panic!(
                "{addr} not in peers of {}:\n{}",
                node.host.name(),
                run.stdout
            )
        })
        .to_string()
}

#[test]
fn moon_relays_for_natted_orbiters_and_planet_takes_over_when_it_dies() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let moon_host = lab.host("moon");
    let nat_a = lab.nat_router("nata", NatKind::Hard);
    let nat_b = lab.nat_router("natb", NatKind::Hard);
    let a_host = lab.host_behind("a", &nat_a);
    let b_host = lab.host_behind("b", &nat_b);
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&moon_host), lab.home(&a_host), lab.home(&b_host)],
    );
    // The planet's root is the farther one: 30 ms on everything it sends.
    let _delay = Delay::udp_out(&lab, &root_host, PORT, ROOT_DELAY);
    let root = Daemon::start(&lab, &root_host, "vnet-planet");

    // As on a VPS: start vnet-node once for its identity, make the moon of
    // that identity, put it in moons.d, restart.
    let mut moon = Daemon::start(&lab, &moon_host, "vnet-node");
    assert!(
        wait_until(Duration::from_secs(10), || moon
            .home
            .join("identity.public")
            .is_file()),
        "vnet-node made no identity: {}",
        moon.proc().stderr_text()
    );
    moon.wait_online();
    assert_eq!(moon.json(&["info"])["root"], false, "not a root yet");
    let moon_id = make_moon(&moon.home, &format!("{}/{PORT}", moon_host.ip()));
    assert_eq!(moon_id, moon.address(), "the moon is named by its root");
    moon.restart();
    moon.wait_online();
    assert_eq!(
        moon.json(&["info"])["root"],
        true,
        "with its own moon in moons.d, vnet-node acts as a root"
    );
    // As every root, it takes TCP relay connections on its port.
    let listening = lab.exec(&moon_host, "ss", &["-Hltn", &format!("sport = :{PORT}")]);
    assert!(
        listening
            .stdout
            .contains(&format!("{}:{PORT}", moon_host.ip())),
        "the moon listens for TCP relay connections: {listening:?}"
    );

    let a = Daemon::start(&lab, &a_host, "vnet-node");
    let b = Daemon::start(&lab, &b_host, "vnet-node");
    a.wait_online();
    b.wait_online();
    for m in [&a, &b] {
        let run = m.cli(&["orbit", &moon_id, &moon_id]);
        assert_eq!(run.stdout.trim(), "200 orbit OK", "{run:?}");
    }
    for m in [&a, &b] {
        let entry = wait_moon_listed(m, &moon_id);
        assert_eq!(
            entry["roots"][0]["stableEndpoints"],
            serde_json::json!([format!("{}/{PORT}", moon_host.ip())]),
            "{entry}"
        );
        // Saved by the daemon's event task just after it is listed.
        let file = m.home.join(format!("moons.d/000000{moon_id}.moon"));
        assert!(
            wait_until(Duration::from_secs(5), || file.is_file()),
            "the fetched moon is stored"
        );
        let line = peers_line(m, &moon_id);
        assert!(line.contains("MOON"), "{line}");
    }

    // Both members relay through the moon: it is the closer root.
    let (moon_addr, root_addr) = (moon.address(), root.address());
    let (ok, reply) = ping_until_via(&a, &b.address(), &moon_addr, Duration::from_secs(15));
    assert!(
        ok,
        "a never reached b relayed through the moon {moon_addr}: last reply {reply}\nnetcheck:\n{}",
        a.cli(&["netcheck"]).stdout
    );
    let (ok, reply) = ping_until_via(&b, &a.address(), &moon_addr, Duration::from_secs(10));
    assert!(ok, "b → a through the moon: last reply {reply}");
    let netcheck = a.json(&["netcheck"]);
    let latency = |addr: &str| {
        netcheck["roots"]
            .as_array()
            .and_then(|r| r.iter().find(|x| x["address"] == addr))
            .map(|x| x["latency"].clone())
            .unwrap_or(Value::Null)
    };
    assert!(
        latency(&root_addr).as_u64().unwrap_or(0) >= ROOT_DELAY.as_millis() as u64,
        "the planet's root is the farther one: {netcheck}"
    );

    let (moon_before, root_before) = (relayed(&moon), relayed(&root));
    let run = a.cli(&["ping", &b.address(), "-c", "5", "-i", "0.2"]);
    assert!(run.ok, "{run:?}");
    let replies: Vec<&str> = run.stdout.lines().filter(|l| l.contains("seq=")).collect();
    assert!(
        replies.len() >= 4
            && replies
                .iter()
                .all(|l| l.ends_with(&format!("RELAY via {moon_addr}"))),
        "replies relayed by the moon:\n{}",
        run.stdout
    );
    let (moon_after, root_after) = (relayed(&moon), relayed(&root));
    assert!(
        moon_after - moon_before >= 8,
        "the moon relayed both ways of every echo: {moon_before} → {moon_after}"
    );
    assert!(
        root_after - root_before <= 2,
        "the planet's root stayed out of it: {root_before} → {root_after} (moon {moon_before} → {moon_after})"
    );

    // The moon's VPS dies: the planet's root takes over once the moon's path
    // is dead. Relayed packets do not count as sends on the root's path, so
    // that takes the next root keepalive (14 s) plus the 1 s answer timeout.
    let status = moon.proc().kill();
    assert!(!status.success());
    moon.forget_proc();
    let died = Instant::now();
    let (ok, reply) = ping_until_via(&a, &b.address(), &root_addr, Duration::from_secs(20));
    assert!(
        ok,
        "20 s after the moon died a → b is not relayed by the planet's root {root_addr}: last reply {reply}\npeers:\n{}\n{}",
        a.cli(&["peers"]).stdout,
        a.proc().stderr_text()
    );
    eprintln!(
        "relayed by the planet's root {:.1} s after the moon died",
        died.elapsed().as_secs_f64()
    );
    let (ok, reply) = ping_until_via(&b, &a.address(), &root_addr, Duration::from_secs(10));
    assert!(ok, "b → a through the planet's root: last reply {reply}");
    let run = a.cli(&["ping", &b.address(), "-c", "3", "-i", "0.2"]);
    assert!(
        run.stdout
            .lines()
            .filter(|l| l.ends_with(&format!("RELAY via {root_addr}")))
            .count()
            >= 2,
        "{run:?}"
    );
}

#[test]
fn a_member_that_reaches_only_the_moon_joins_and_reaches_everyone() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let moon_host = lab.host("moon");
    let ctl_host = lab.host("ctl");
    let x_host = lab.host("x");
    let p_host = lab.host("p");
    make_planet(
        &lab,
        &root_host,
        &[
            lab.home(&moon_host),
            lab.home(&ctl_host),
            lab.home(&x_host),
            lab.home(&p_host),
        ],
    );
    let moon_home = lab.home(&moon_host);
    let run = run_in(
        &moon_home,
        "vnet-idtool",
        &["generate", "identity.secret", "identity.public"],
    );
    assert!(run.ok, "{run:?}");
    let moon_id = make_moon(&moon_home, &format!("{}/{PORT}", moon_host.ip()));
    // x orbits the moon the way a user does without a seed: the .moon file
    // copied into moons.d. Nobody else orbits it.
    let moon_file = format!("moons.d/000000{moon_id}.moon");
    let x_home = lab.home(&x_host);
    fs::create_dir_all(x_home.join("moons.d")).unwrap();
    fs::copy(moon_home.join(&moon_file), x_home.join(&moon_file)).unwrap();
    // A firewall lets x talk to the moon and nothing else.
    for other in [&root_host, &ctl_host, &p_host] {
        lab.cut(&x_host, other);
    }

    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let moon = Daemon::start(&lab, &moon_host, "vnet-node");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let p = Daemon::start(&lab, &p_host, "vnet-node");
    let x = Daemon::start(&lab, &x_host, "vnet-node");
    for d in [&moon, &ctl, &p, &x] {
        d.wait_online();
    }
    assert_eq!(moon.json(&["info"])["root"], true);
    let line = peers_line(&x, &moon_id);
    assert!(line.contains("MOON"), "{line}");

    // x joins and gets its config: its request goes to the moon, which
    // relays it through the planet's root to the controller; the answer
    // comes back the same way.
    let (nwid, ips) = network_of(&ctl, &[&p, &x], "moononly");
    let (p_ip, x_ip) = (&ips[0], &ips[1]);
    assert!(
        ping_ip_until(&lab, &x_host, p_ip, Duration::from_secs(20)),
        "x cannot ping p ({p_ip}) over {nwid}\nx peers:\n{}\nmoon: {}\nroot: {}",
        x.cli(&["peers"]).stdout,
        moon.json(&["info"])["counters"],
        root.json(&["info"])["counters"]
    );
    assert!(
        ping_ip_until(&lab, &p_host, x_ip, Duration::from_secs(10)),
        "p cannot ping x ({x_ip}) over {nwid}"
    );
    let run = lab.exec(
        &x_host,
        "ping",
        &["-n", "-c", "5", "-i", "0.2", "-W", "2", p_ip],
    );
    assert!(run.ok, "x → p, 5 pings: {run:?}");
    // p never heard of the moon; x never reached the planet's root: each
    // root relayed, and one of them asked the other who someone was.
    let p_peers = p.cli(&["peers"]).stdout;
    assert!(
        !p_peers.lines().any(|l| l.starts_with(&moon_id)),
        "p does not know the moon:\n{p_peers}"
    );
    let (mc, rc) = (
        moon.json(&["info"])["counters"].clone(),
        root.json(&["info"])["counters"].clone(),
    );
    let n = |c: &Value, k: &str| c[k].as_u64().unwrap_or_else(|| panic!("no {k} in {c}"));
    assert!(n(&mc, "relayed") >= 10, "moon relayed: {mc}");
    assert!(n(&rc, "relayed") >= 10, "root relayed: {rc}");
    assert!(
        n(&mc, "whoisPassedOn") + n(&rc, "whoisPassedOn") >= 1,
        "no root passed a WHOIS on: moon {mc} root {rc}"
    );
}

#[test]
fn moon_answers_whois() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let moon_host = lab.host("moon");
    let a_host = lab.host("a");
    let b_host = lab.host("b");
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&moon_host), lab.home(&a_host), lab.home(&b_host)],
    );
    let moon_home = lab.home(&moon_host);
    let run = run_in(
        &moon_home,
        "vnet-idtool",
        &["generate", "identity.secret", "identity.public"],
    );
    assert!(run.ok, "{run:?}");
    let moon_id = make_moon(&moon_home, &format!("{}/{PORT}", moon_host.ip()));

    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let moon = Daemon::start(&lab, &moon_host, "vnet-node");
    let a = Daemon::start(&lab, &a_host, "vnet-node");
    let b = Daemon::start(&lab, &b_host, "vnet-node");
    for d in [&moon, &a, &b] {
        d.wait_online();
    }
    for m in [&a, &b] {
        let run = m.cli(&["orbit", &moon_id, &moon_id]);
        assert_eq!(run.stdout.trim(), "200 orbit OK", "{run:?}");
    }
    for m in [&a, &b] {
        wait_moon_listed(m, &moon_id);
        let line = peers_line(m, &moon_id);
        assert!(line.contains("MOON"), "{line}");
    }
    let b_addr = b.address();
    assert!(
        a.json(&["listpeers"])
            .as_array()
            .is_some_and(|p| p.iter().all(|x| x["address"] != b_addr.as_str())),
        "a knows nothing of b yet"
    );

    // The planet's root is gone for a: only the moon can tell it who b is.
    lab.cut(&a_host, &root_host);
    let root_addr = root.address();
    let cut_off = wait_until(Duration::from_secs(20), || {
        let n = a.json(&["netcheck"]);
        n["roots"].as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x["address"] == root_addr.as_str() && x["udp"] == false)
        })
    });
    assert!(
        cut_off,
        "a never saw the planet's root unreachable after the cut:\n{}",
        a.cli(&["netcheck"]).stdout
    );
    let started = Instant::now();
    let ok = wait_until(Duration::from_secs(15), || {
        a.cli(&["ping", &b_addr, "-c", "1"]).ok
    });
    assert!(
        ok,
        "a, cut off from the planet's root, never reached b (WHOIS through the moon): peers\n{}\nlog:\n{}",
        a.cli(&["peers"]).stdout,
        a.proc().stderr_text()
    );
    eprintln!(
        "a reached b {:.1} s after its first try",
        started.elapsed().as_secs_f64()
    );
    let b_entry = a.json(&["listpeers"]);
    let b_entry = b_entry
        .as_array()
        .and_then(|p| p.iter().find(|x| x["address"] == b_addr.as_str()))
        .cloned()
        .expect("b is now a peer of a");
    assert_eq!(
        b_entry["role"], "LEAF",
        "b's identity came from the moon: {b_entry}"
    );
    let run = a.cli(&["ping", &b_addr, "-c", "3", "-i", "0.2"]);
    assert!(run.ok, "{run:?}");
    let back = b.cli(&["ping", &a.address(), "-c", "2", "-i", "0.2"]);
    assert!(back.ok, "{back:?}");
}
