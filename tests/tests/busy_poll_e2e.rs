//! `busyPollMicros`, end to end in network namespaces: a member that sets it
//! keeps its engine polling while pings flow and sleeps again once they
//! stop; a member that does not sleeps between pings. Judged by the CPU
//! time of each daemon's `vnet-engine` thread (`/proc/PID/task/*/stat`),
//! which is what the setting trades for latency. Needs root and ping.

use std::fs;
use std::net::Ipv4Addr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::json;
use vnet_tests::daemon::{Daemon, make_planet, network_of};
use vnet_tests::netns::wait_until;

/// The busy-poll window member a asks for, µs.
const BUSY_POLL_MICROS: u64 = 100_000;

/// CPU time of `pid`'s engine thread so far (utime + stime), in clock ticks.
fn engine_ticks(pid: u32) -> u64 {
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let dir = task.expect("a thread").path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "vnet-engine" {
            continue;
        }
        let stat = fs::read_to_string(dir.join("stat")).expect("the engine's stat");
        // Fields after the ")" that ends the name: state is the 1st, utime
        // the 12th and stime the 13th.
        let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        return fields[11] + fields[12];
    }
    panic!("daemon {pid} has no vnet-engine thread");
}

/// Share of one core each engine used while `during` ran, in percent.
fn engine_cpu(pids: [u32; 2], during: impl FnOnce()) -> [f64; 2] {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = pids.map(engine_ticks);
    let start = Instant::now();
    during();
    let secs = start.elapsed().as_secs_f64();
    let after = pids.map(engine_ticks);
    [0, 1].map(|i| (after[i] - before[i]) as f64 / hz / secs * 100.0)
}

#[test]
fn a_busy_polling_engine_spins_while_traffic_flows_and_sleeps_after() {
    let lab = vnet_tests::netns::Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let [ha, hb] = ["a", "b"].map(|n| lab.host(n));
    make_planet(
        &lab,
        &root_host,
        &[&ctl_host, &ha, &hb].map(|h| lab.home(h)),
    );
    let conf = json!({ "settings": { "busyPollMicros": BUSY_POLL_MICROS } });
    fs::write(lab.home(&ha).join("local.conf"), conf.to_string()).expect("write local.conf");
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let a = Daemon::start(&lab, &ha, "vnet-node");
    let b = Daemon::start(&lab, &hb, "vnet-node");
    for d in [&ctl, &a, &b] {
        d.wait_online();
    }
    for (d, want) in [(&a, BUSY_POLL_MICROS), (&b, 0)] {
        let status = d.json(&["info"]);
        assert_eq!(
            status["config"]["settings"]["busyPollMicros"].as_u64(),
            Some(want),
            "{status}"
        );
    }
    let (_, ips) = network_of(&ctl, &[&a, &b], "busypoll");
    let ip_b: Ipv4Addr = ips[1].parse().expect("an IPv4 address");
    assert!(
        wait_until(Duration::from_secs(30), || {
            lab.ping(&ha, ip_b);
            a.route_to(&b.address()) == "DIRECT" && b.route_to(&a.address()) == "DIRECT"
        }),
        "a and b never went direct"
    );
    let pids = [a.proc().pid(), b.proc().pid()];

    // Quiet: neither engine polls (a's window closed long ago).
    sleep(Duration::from_secs(1));
    let quiet = engine_cpu(pids, || sleep(Duration::from_secs(2)));
    eprintln!("quiet: engine CPU a {:.0} %, b {:.0} %", quiet[0], quiet[1]);
    assert!(quiet[0] < 25.0, "a polls with no traffic: {quiet:?}");

    // Pings every 50 ms, closer than a's window: a's engine keeps polling
    // between them, b's sleeps.
    let mut answered = false;
    let busy = engine_cpu(pids, || {
        let run = lab.exec(
            &ha,
            "ping",
            &["-n", "-q", "-c", "40", "-i", "0.05", &ip_b.to_string()],
        );
        answered = run.stdout.contains(" 0% packet loss");
    });
    eprintln!("pings: engine CPU a {:.0} %, b {:.0} %", busy[0], busy[1]);
    assert!(answered, "pings from a to b were lost");
    assert!(
        busy[0] > 40.0,
        "a's engine did not keep polling between pings: {busy:?}"
    );
    assert!(
        busy[1] < 20.0,
        "b's engine polled without the setting: {busy:?}"
    );

    // Quiet again: a's engine sleeps once its window has passed.
    sleep(Duration::from_millis(500));
    let after = engine_cpu(pids, || sleep(Duration::from_secs(2)));
    eprintln!("after: engine CPU a {:.0} %, b {:.0} %", after[0], after[1]);
    assert!(after[0] < 25.0, "a kept polling after traffic: {after:?}");
}
