//! A real root's TCP relay under a connection flood, in network namespaces:
//! 1,000 connections from one address cost the root neither a thread nor a
//! file descriptor each, are refused and counted, and a node that relays
//! over TCP (`forceTcpRelay`) from another address still comes online and is
//! answered meanwhile. Needs root (namespaces). The figures are printed to
//! stderr (`--nocapture`).

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, PORT, make_planet};
use vnet_tests::netns::{Lab, in_netns, wait_until};

/// Connections the attacker opens from its one address.
const FLOOD_CONNECTIONS: usize = 1_000;
/// Most file descriptors the flood may add to the root (it admits 8).
const MAX_EXTRA_FDS: usize = 100;

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Threads: in /proc/{pid}/status"))
}

/// Lets this process hold the flood's sockets (1,000 and then some).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let want = 4 * FLOOD_CONNECTIONS as libc::rlim_t;
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            lim.rlim_max = lim.rlim_max.max(want);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "cannot raise RLIMIT_NOFILE to {want}"
            );
        }
    }
}

/// Opens `n` connections to `to`, sending nothing: those made, and how
/// many attempts were reset at once (a root that refuses a connection
/// resets it, sometimes before `connect` returns).
fn flood(to: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::new();
    let mut reset = 0;
    for _ in 0..n {
        match TcpStream::connect_timeout(&to, Duration::from_secs(3)) {
            Ok(s) => held.push(s),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => reset += 1,
            Err(e) => panic!("connection {} to {to}: {e}", held.len() + reset + 1),
        }
    }
    (held, reset)
}

/// The root's TCP relay counters (`tcpRelayStats` in `GET /status`).
fn relay_stats(root: &Daemon) -> Value {
    let info = root.json(&["info"]);
    assert!(info["tcpRelayStats"].is_object(), "{info}");
    info["tcpRelayStats"].clone()
}

fn count(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {stats}"))
}

#[test]
fn a_connection_flood_from_one_address_costs_the_root_no_threads_and_few_fds() {
    raise_fd_limit();
    let lab = Lab::new();
    let root_host = lab.host("root");
    let node_host = lab.host("a");
    let attacker = lab.host("x");
    let conf = json!({ "settings": { "forceTcpRelay": true } });
    fs::write(lab.home(&node_host).join("local.conf"), conf.to_string()).expect("local.conf");
    make_planet(&lab, &root_host, &[lab.home(&node_host)]);
    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let pid = root.proc().pid();
    assert!(
        wait_until(Duration::from_secs(15), || root.cli(&["info"]).ok),
        "root API not up:\n{}",
        root.proc().stderr_text()
    );
    let relay: SocketAddr = format!("{}:{PORT}", root_host.ip()).parse().expect("addr");
    // Settled: the figures to compare with.
    std::thread::sleep(Duration::from_secs(1));
    let (idle_fds, idle_threads) = (fds(pid), threads(pid));

    // 1,000 idle connections from one address, held.
    let started = Instant::now();
    let (held, reset) = in_netns(attacker.ns(), move || flood(relay, FLOOD_CONNECTIONS));
    let opened = held.len() + reset;
    let flood_secs = started.elapsed().as_secs_f64();
    let (flood_fds, flood_threads) = (fds(pid), threads(pid));
    eprintln!(
        "root after {opened} TCP relay connections from one IP ({} connected, \
         {reset} reset during connect; {flood_secs:.1} s): \
         fds {idle_fds} -> {flood_fds}, threads {idle_threads} -> {flood_threads}",
        held.len()
    );
    assert!(
        flood_fds < idle_fds + MAX_EXTRA_FDS,
        "fds {idle_fds} -> {flood_fds}"
    );
    assert_eq!(flood_threads, idle_threads, "threads grew with connections");
    // Every connection is refused and counted, but the few the per-address
    // limit lets in: open, or already closed for sending no HELLO when the
    // flood took long (the root may still be taking the last ones from its
    // backlog).
    let counted = wait_until(Duration::from_secs(10), || {
        let stats = relay_stats(&root);
        count(&stats, "connectionsRefusedPerIp")
            + count(&stats, "connectionsOpen")
            + count(&stats, "closedNoHello")
            >= opened as u64
    });
    let stats = relay_stats(&root);
    assert!(counted, "refusals not counted: {stats}");
    assert!(count(&stats, "connectionsOpen") <= 8, "{stats}");
    assert_eq!(count(&stats, "connectionsRefused"), 0, "{stats}");

    // Meanwhile the attacker keeps at it, and a node relaying over TCP from
    // another address comes online through that root.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let attack = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        let ns = attacker.ns().to_string();
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                while !stop.load(Ordering::Relaxed) {
                    let (conns, _) = flood(relay, FLOOD_CONNECTIONS);
                    rounds.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(500));
                    drop(conns);
                }
            })
        })
    };
    let node = Daemon::start(&lab, &node_host, "vnet-node");
    let mut max_fds = 0;
    let mut max_threads = 0;
    let online = wait_until(Duration::from_secs(30), || {
        max_fds = max_fds.max(fds(pid));
        max_threads = max_threads.max(threads(pid));
        node.cli(&["info"]).stdout.contains("ONLINE")
    });
    assert!(
        online,
        "node not ONLINE during the flood; root: {}\nnode log:\n{}",
        root.json(&["info"]),
        node.proc().stderr_text()
    );
    let info = node.json(&["info"]);
    assert_eq!(info["tcpRelay"], true, "{info}");
    let root_addr = root.address();
    let ping = node.cli(&["ping", &root_addr, "-c", "3"]);
    assert!(ping.ok, "ping the root during the flood: {ping:?}");
    assert!(ping.stdout.contains("TCP_RELAY"), "{ping:?}");
    max_fds = max_fds.max(fds(pid));
    max_threads = max_threads.max(threads(pid));
    stop.store(true, Ordering::Relaxed);
    attack.join().expect("attacker");
    eprintln!(
        "during {} more flood rounds with a node online over TCP: root fds at most {max_fds}, \
         threads at most {max_threads}",
        rounds.load(Ordering::Relaxed)
    );
    assert!(rounds.load(Ordering::Relaxed) >= 1, "the flood went on");
    // The node's own connection, the API's and a few flood ones in passing.
    assert!(
        max_fds < idle_fds + MAX_EXTRA_FDS,
        "fds {idle_fds} -> {max_fds}"
    );
    assert_eq!(max_threads, idle_threads, "threads grew with connections");

    // The first flood's connections the root took (8), still held open,
    // never say HELLO: the root closes them within 5 s of their connect
    // and counts them; the node's connection stays.
    let closed = wait_until(Duration::from_secs(15), || {
        count(&relay_stats(&root), "closedNoHello") >= 8
    });
    let stats = relay_stats(&root);
    assert!(closed, "held connections not closed for no HELLO: {stats}");
    drop(held);
    let settled = wait_until(Duration::from_secs(15), || {
        count(&relay_stats(&root), "connectionsOpen") == 1
    });
    let stats = relay_stats(&root);
    assert!(settled, "connections left open: {stats}");
    assert!(count(&stats, "closedNoHello") >= 8, "{stats}");
    assert!(
        node.cli(&["ping", &root_addr, "-c", "1"]).ok,
        "node answered after the flood"
    );
    eprintln!("root TCP relay counters: {stats}");
}
