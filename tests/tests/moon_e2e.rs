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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use vnet_tests::daemon::{Daemon, PORT, make_planet, network_of};
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

/// `vnet-cli -j ping <to> -c 1` until a reply comes back by `route` through
/// `root`, up to `limit`; returns the last reply seen (the matching one, or
/// the last other one) and whether it matched.
fn ping_until_via(from: &Daemon, to: &str, root: &str, limit: Duration) -> (bool, Value) {
    let mut last = Value::Null;
    let ok = wait_until(limit, || {
        let run = from.cli(&["-j", "ping", to, "-c", "1"]);
        last = serde_json::from_str(&run.stdout).unwrap_or_else(
            |_| serde_json::json!({"error": run.stderr.trim(), "stdout": run.stdout.trim()}),
        );
        run.ok && last["route"] == "RELAY" && last["root"] == root
    });
    (ok, last)
}

/// The `relayed` counter of a daemon.
fn relayed(d: &Daemon) -> u64 {
    d.json(&["info"])["counters"]["relayed"]
        .as_u64()
        .expect("counters.relayed")
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
        // "200 listmoons" and then the JSON array.
        let json = run.stdout.split_once('\n').map_or("", |(_, rest)| rest);
        let moons: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        if let Some(m) = moons
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == world.as_str()))
        {
            entry = m.clone();
        }
        run.stdout.starts_with("200 listmoons") && entry["waiting"] == false
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

/// Delays every UDP datagram a host sends from a port: an iptables rule in
/// its namespace sends them to an NFQUEUE, and a thread of this test, bound
/// to that queue inside the namespace, accepts each one `delay` after it
/// came. With `--queue-bypass`, packets pass undelayed if the thread is gone.
struct Delay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The queue number (queues are per namespace).
const QUEUE: u16 = 7;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;

impl Delay {
    fn udp_out(lab: &Lab, host: &Node, port: &str, delay: Duration) -> Delay {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns_path = format!("/run/netns/{}", host.ns());
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let fd = match nfqueue_open(&ns_path) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                nfqueue_delay_loop(fd, delay, &stop);
                unsafe { libc::close(fd) };
            })
        };
        ready_rx
            .recv()
            .expect("delay thread")
            .unwrap_or_else(|e| panic!("NFQUEUE delay in {}: {e}", host.name()));
        let queue = QUEUE.to_string();
        let run = lab.exec(
            host,
            "iptables",
            &[
                "-w",
                "-I",
                "OUTPUT",
                "-p",
                "udp",
                "--sport",
                port,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
        );
        assert!(run.ok, "iptables NFQUEUE rule: {run:?}");
        Delay {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One netlink message: header, nfgenmsg (family, version 0, queue id), attributes.
fn nfq_message(kind: u16, flags: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&QUEUE.to_be_bytes());
    for (t, data) in attrs {
        let len = 4 + data.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    m
}

fn nl_send(fd: i32, msg: &[u8]) -> Result<(), String> {
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(format!("send: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sends a request with NLM_F_ACK and checks the kernel's answer.
fn nl_request(fd: i32, msg: &[u8]) -> Result<(), String> {
    nl_send(fd, msg)?;
    let mut buf = [0u8; 4096];
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(format!("recv ack: {}", std::io::Error::last_os_error()));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let error = i32::from_ne_bytes(buf[16..20].try_into().unwrap());
    if kind != libc::NLMSG_ERROR as u16 || error != 0 {
        return Err(format!(
            "netlink answered type {kind} error {}",
            std::io::Error::from_raw_os_error(-error)
        ));
    }
    Ok(())
}

/// Enters the namespace at `ns_path` (this thread only), opens a netfilter
/// netlink socket and binds it to [`QUEUE`], copying only metadata.
fn nfqueue_open(ns_path: &str) -> Result<i32, String> {
    let ns = fs::File::open(ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
    use std::os::fd::AsRawFd as _;
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    let bound = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if bound != 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    let ack = libc::NLM_F_ACK as u16;
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
    let cmd = [NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8];
    nl_request(
        fd,
        &nfq_message(
            NFQNL_MSG_CONFIG,
            ack,
            libc::AF_UNSPEC as u8,
            &[(NFQA_CFG_CMD, &cmd)],
        ),
    )?;
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; }
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    nl_request(
        fd,
        &nfq_message(
            NFQNL_MSG_CONFIG,
            ack,
            libc::AF_UNSPEC as u8,
            &[(NFQA_CFG_PARAMS, &params)],
        ),
    )?;
    Ok(fd)
}

/// Collects queued packets' ids and accepts each `delay` after it came,
/// until `stop`; then accepts whatever still waits.
fn nfqueue_delay_loop(fd: i32, delay: Duration, stop: &AtomicBool) {
    let mut waiting: std::collections::VecDeque<(Instant, u32)> = Default::default();
    let mut buf = vec![0u8; 65536];
    let verdict = |id: u32| {
        // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
        let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        let _ = nl_send(
            fd,
            &nfq_message(
                NFQNL_MSG_VERDICT,
                0,
                libc::AF_UNSPEC as u8,
                &[(NFQA_VERDICT_HDR, &hdr)],
            ),
        );
    };
    loop {
        let now = Instant::now();
        while waiting.front().is_some_and(|(due, _)| *due <= now) {
            let (_, id) = waiting.pop_front().expect("front");
            verdict(id);
        }
        if stop.load(Ordering::Relaxed) {
            for (_, id) in waiting.drain(..) {
                verdict(id);
            }
            return;
        }
        let wait_ms = waiting.front().map_or(50, |(due, _)| {
            due.saturating_duration_since(now).as_millis().clamp(1, 50) as i32
        });
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, wait_ms) } <= 0 {
            continue;
        }
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let came = Instant::now();
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= 20 {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
            if len < 20 || len > msgs.len() {
                break;
            }
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                let mut attrs = &msgs[20..len];
                while attrs.len() >= 4 {
                    let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                    let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                    if alen < 4 || alen > attrs.len() {
                        break;
                    }
                    if atype == NFQA_PACKET_HDR && alen >= 8 {
                        let id = u32::from_be_bytes(attrs[4..8].try_into().unwrap());
                        waiting.push_back((came + delay, id));
                    }
                    attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
                }
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}
