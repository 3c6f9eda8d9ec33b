//! The network-namespace lab itself (vnet_tests::netns): reachability, NAT behaviour, path
//! cuts, processes and cleanup, with plain Linux tools and the `udp-probe` helper. Needs root.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vnet_tests::netns::{Lab, NatKind, Netns, Node, Proc, wait_until};

const PROBE: &str = env!("CARGO_BIN_EXE_udp-probe");
const ECHO_PORT: u16 = 7000;

/// Starts a `udp-probe serve` on `host` and waits until it listens.
fn echo_server(lab: &Lab, host: &Node) -> Proc {
    let p = lab.spawn(host, PROBE, &["serve", &ECHO_PORT.to_string()], &[]);
    assert!(
        wait_until(Duration::from_secs(5), || p
            .stderr_text()
            .contains("listening")),
        "udp-probe serve on {} did not start: {}",
        host.name(),
        p.stderr_text()
    );
    p
}

/// From one UDP socket on `from` bound to `local_port`, asks each server in turn which address
/// it saw; returns those, in order.
fn seen_by(lab: &Lab, from: &Node, local_port: u16, servers: &[&Node]) -> Vec<SocketAddrV4> {
    let dests: Vec<String> = servers
        .iter()
        .map(|s| SocketAddrV4::new(s.ip(), ECHO_PORT).to_string())
        .collect();
    let mut args = vec!["ask".to_string(), local_port.to_string()];
    args.extend(dests.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = lab.exec(from, PROBE, &args);
    assert!(run.ok, "udp-probe ask from {}: {run:?}", from.name());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), servers.len(), "{run:?}");
    lines
        .iter()
        .zip(&dests)
        .map(|(line, dest)| {
            let (asked, seen) = line.split_once(' ').expect("DEST SEEN");
            assert_eq!(asked, dest);
            seen.parse().expect("ip:port")
        })
        .collect()
}

fn routes(lab: &Lab, at: &impl Netns) -> String {
    let run = lab.exec(at, "ip", &["-4", "route", "show"]);
    assert!(run.ok, "{run:?}");
    run.stdout
}

fn netns_names() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn root_links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `pid` is a live process (not gone, not a zombie waiting for its parent).
fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// Nothing with `prefix` is left: no namespace, no link in the root namespace.
fn assert_gone(prefix: &str) {
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(
        !root_links().contains(prefix),
        "links left:\n{}",
        root_links()
    );
}

#[test]
fn public_hosts_ping_each_other_and_nothing_leaves_the_lab() {
    let lab = Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    assert_ne!(a.ip(), b.ip());
    assert!(lab.ping(&a, b.ip()), "a -> b");
    assert!(lab.ping(&b, a.ip()), "b -> a");
    assert!(!a.is_natted());
    assert_eq!(a.public_ip(), a.ip());
    // In TEST-NET-2, with no default route: an outside address is unreachable.
    assert_eq!(a.ip().octets()[..3], [198, 51, 100]);
    assert!(
        !routes(&lab, &a).contains("default"),
        "{}",
        routes(&lab, &a)
    );
    let run = lab.exec(&a, "ping", &["-n", "-c", "1", "-W", "1", "192.0.2.1"]);
    assert!(!run.ok, "a reached an outside address: {run:?}");
    // A host that does not exist does not answer (ping really can fail).
    assert!(!lab.ping(&a, Ipv4Addr::new(198, 51, 100, 250)));
}

#[test]
fn host_behind_easy_nat_is_seen_as_the_router_wan_address() {
    let lab = Lab::new();
    let server = lab.host("server");
    let nat = lab.nat_router("nat", NatKind::Easy);
    let leaf = lab.host_behind("leaf", &nat);
    assert!(leaf.is_natted());
    assert_eq!(leaf.router(), Some("nat"));
    assert_eq!(leaf.public_ip(), nat.wan_ip());
    assert_eq!(leaf.ip().octets()[0], 10);
    assert_ne!(leaf.ip(), nat.wan_ip());

    assert!(lab.ping(&leaf, server.ip()), "leaf -> server");
    let echo = echo_server(&lab, &server);
    let seen = seen_by(&lab, &leaf, 0, &[&server]);
    assert_eq!(*seen[0].ip(), nat.wan_ip(), "server saw {seen:?}");
    assert!(
        echo.stderr_text()
            .contains(&format!("from {}:", nat.wan_ip())),
        "{}",
        echo.stderr_text()
    );

    // The private side is not reachable from the underlay, and the router itself ignores
    // unsolicited packets.
    assert!(!lab.ping(&server, leaf.ip()));
    assert!(!lab.ping(&server, nat.wan_ip()));
    // The leaf's default route goes to its router, the router has none.
    assert!(
        routes(&lab, &leaf).contains(&format!("default via {}", nat.lan_ip())),
        "{}",
        routes(&lab, &leaf)
    );
    assert!(!routes(&lab, &nat).contains("default"));
    let run = lab.exec(&leaf, "ping", &["-n", "-c", "1", "-W", "1", "192.0.2.1"]);
    assert!(!run.ok, "leaf reached an outside address: {run:?}");
}

/// The external ports `leaf` gets when talking to two servers from one socket.
fn mapped_ports(kind: NatKind) -> (Ipv4Addr, u16, Vec<SocketAddrV4>) {
    let lab = Lab::new();
    let s1 = lab.host("s1");
    let s2 = lab.host("s2");
    let nat = lab.nat_router("nat", kind);
    let leaf = lab.host_behind("leaf", &nat);
    let _e1 = echo_server(&lab, &s1);
    let _e2 = echo_server(&lab, &s2);
    let local_port = 40000;
    let seen = seen_by(&lab, &leaf, local_port, &[&s1, &s2]);
    (nat.wan_ip(), local_port, seen)
}

#[test]
fn easy_nat_keeps_one_port_for_every_destination() {
    let (wan, local_port, seen) = mapped_ports(NatKind::Easy);
    for s in &seen {
        assert_eq!(*s.ip(), wan, "{seen:?}");
        assert_eq!(s.port(), local_port, "port-preserving: {seen:?}");
    }
}

#[test]
fn hard_nat_maps_each_destination_to_another_port() {
    let (wan, _, seen) = mapped_ports(NatKind::Hard);
    assert_eq!(*seen[0].ip(), wan, "{seen:?}");
    assert_eq!(*seen[1].ip(), wan, "{seen:?}");
    assert_ne!(
        seen[0].port(),
        seen[1].port(),
        "--random-fully gives each destination its own mapping: {seen:?}"
    );
}

#[test]
fn cut_and_restore_a_path() {
    let lab = Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    let c = lab.host("c");
    let nat = lab.nat_router("nat", NatKind::Easy);
    let leaf = lab.host_behind("leaf", &nat);
    for (x, y) in [(&a, &b), (&a, &c), (&leaf, &a)] {
        assert!(lab.ping(x, y.ip()), "{} -> {}", x.name(), y.name());
    }

    lab.cut(&a, &b);
    lab.cut(&a, &b); // idempotent
    assert!(!lab.ping(&a, b.ip()), "a -> b after cut");
    assert!(!lab.ping(&b, a.ip()), "b -> a after cut");
    assert!(lab.ping(&a, c.ip()), "other paths stay: a -> c");
    assert!(lab.ping(&c, b.ip()), "other paths stay: c -> b");

    lab.cut(&leaf, &a);
    assert!(!lab.ping(&leaf, a.ip()), "leaf -> a after cut");
    assert!(lab.ping(&leaf, c.ip()), "leaf -> c stays");

    lab.restore(&a, &b);
    lab.restore(&a, &b); // idempotent
    lab.restore(&leaf, &a);
    assert!(lab.ping(&a, b.ip()), "a -> b restored");
    assert!(lab.ping(&b, a.ip()), "b -> a restored");
    assert!(lab.ping(&leaf, a.ip()), "leaf -> a restored");

    // One way only: b's packets to a are lost, a's to b arrive (seen by b's echo server).
    let echo = echo_server(&lab, &b);
    lab.block(&b, &a);
    let run = lab.exec(&a, PROBE, &["ask", "0", &format!("{}:{ECHO_PORT}", b.ip())]);
    assert!(!run.ok, "the answer must be lost: {run:?}");
    assert!(
        echo.stderr_text().contains(&format!("from {}:", a.ip())),
        "{}",
        echo.stderr_text()
    );
    lab.unblock(&b, &a);
    assert!(lab.ping(&a, b.ip()));
}

#[test]
fn spawned_processes_run_in_the_namespace_and_stop() {
    let lab = Lab::new();
    let h = lab.host("h");
    let echo = echo_server(&lab, &h);
    let pid = echo.pid();
    // The PID is the program's own (`ip netns exec` execs it), inside h's namespace.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "udp-probe"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert!(echo.is_running());
    assert!(echo.stderr_text().contains("listening on 0.0.0.0:7000"));
    let status = echo.stop();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(!echo.is_running());
    assert!(!process_exists(pid));
    assert_eq!(
        echo.stop().signal(),
        Some(libc::SIGTERM),
        "stop is idempotent"
    );

    // A process that ignores SIGTERM is killed after the grace period.
    let stubborn = lab.spawn(
        &h,
        "sh",
        &["-c", "trap '' TERM; echo ready >&2; exec sleep 1000"],
        &[("VNET_TEST_VAR", "x")],
    );
    assert!(wait_until(Duration::from_secs(5), || stubborn
        .stderr_text()
        .contains("ready")));
    let t = Instant::now();
    let status = stubborn.stop();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );

    // Environment and stdout reach the process and its log.
    let env = lab.spawn(
        &h,
        "sh",
        &["-c", "echo \"var=$VNET_TEST_VAR\""],
        &[("VNET_TEST_VAR", "42")],
    );
    assert!(
        env.wait_timeout(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    assert_eq!(env.stdout_text(), "var=42\n");

    // Dropping a Proc ends it.
    let p = lab.spawn(&h, "sleep", &["1000"], &[]);
    let pid = p.pid();
    assert!(process_exists(pid));
    drop(p);
    assert!(!process_exists(pid));

    // exec reports failures and output.
    let run = lab.exec(&h, "sh", &["-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((run.ok, run.code), (false, Some(3)));
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("out\n", "err\n")
    );
}

#[test]
fn dropping_the_lab_removes_everything() {
    let lab = Lab::new();
    let prefix = lab.prefix().to_string();
    let a = lab.host("a");
    let nat = lab.nat_router("nat", NatKind::Hard);
    let leaf = lab.host_behind("leaf", &nat);
    let p = lab.spawn(&leaf, "sleep", &["1000"], &[]);
    // A process forked off and not tracked by any Proc is ended too.
    let run = lab.exec(&a, "sh", &["-c", "sleep 1000 >/dev/null 2>&1 & echo $!"]);
    let orphan: u32 = run.stdout.trim().parse().expect("pid");
    let dir = lab.dir().to_path_buf();
    assert_eq!(lab.namespaces().len(), 4);
    assert!(
        netns_names()
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .count()
            == 4,
        "{:?}",
        netns_names()
    );
    assert!(process_exists(orphan));
    let pid = p.pid();
    drop(lab);
    assert_gone(&prefix);
    assert!(!process_exists(orphan), "forked process still running");
    assert!(!p.is_running());
    assert!(!process_exists(pid));
    assert!(!dir.exists(), "temp dir removed");
    drop(p); // after the lab: nothing left to do
}

#[test]
fn a_panicking_test_still_cleans_up_and_keeps_logs() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new();
        let h = lab.host("h");
        let nat = lab.nat_router("nat", NatKind::Easy);
        let _leaf = lab.host_behind("leaf", &nat);
        let p = lab.spawn(
            &h,
            "sh",
            &["-c", "echo about to fail >&2; exec sleep 1000"],
            &[],
        );
        assert!(wait_until(Duration::from_secs(5), || p
            .stderr_text()
            .contains("about")));
        *seen.lock().unwrap() = Some((lab.prefix().to_string(), lab.dir().to_path_buf(), p.pid()));
        panic!("deliberate failure inside a lab");
    }));
    assert!(result.is_err());
    let (prefix, dir, pid) = seen.lock().unwrap().take().unwrap();
    assert_gone(&prefix);
    assert!(!process_exists(pid));
    assert!(dir.is_dir(), "logs are kept after a panic");
    let logs: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(!logs.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_lab_left_by_a_killed_test_process_is_reaped() {
    // Fake what a killed test leaves: a state file naming a dead owner, and its namespace.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // Not a real prefix (those have a digit after "vt"), and this process's own.
    let prefix = &format!("vtz{:04}", std::process::id() % 10000);
    let ns = format!("{prefix}-x");
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .output();
    std::fs::create_dir_all("/run/vnet-tests").unwrap();
    std::fs::write(
        format!("/run/vnet-tests/{prefix}"),
        format!("{dead_pid} 1\n"),
    )
    .unwrap();
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success()
    );
    assert!(netns_names().contains(&ns));
    let _lab = Lab::new();
    assert_gone(prefix);
    assert!(!Path::new(&format!("/run/vnet-tests/{prefix}")).exists());
}
