//! A network's device in another network namespace (`vnet-cli join <nwid>
//! --netns <name>`: a container started with `--network none`), the daemon
//! staying in its own: the device, its address and routes live in the
//! container's namespace, the container reaches other members, nothing of
//! the network shows in the daemon's namespace, and leaving removes it.

use std::process::Command;
use std::time::Duration;

use vnet_tests::daemon::{Daemon, make_planet, network_of};
use vnet_tests::netns::{Lab, wait_until};

/// A bare network namespace standing in for a container, deleted when dropped.
struct Container {
    name: String,
}

impl Container {
    fn new(name: String) -> Self {
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip netns add {name}");
        Self { name }
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        Command::new("ip")
            .args(&all)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_network_device_lives_in_the_container_namespace_and_leaves_with_the_network() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let m1_host = lab.host("m1");
    let m2_host = lab.host("m2");
    let ctr = Container::new(format!("{}-ctr", m1_host.ns()));
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&ctl_host), lab.home(&m1_host), lab.home(&m2_host)],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let m1 = Daemon::start(&lab, &m1_host, "vnet-node");
    let m2 = Daemon::start(&lab, &m2_host, "vnet-node");
    for d in [&ctl, &m1, &m2] {
        d.wait_online();
    }
    let (nwid, ips) = network_of(&ctl, &[&m2], "containers");
    let m2_ip = &ips[0];
    let run = ctl.cli(&["member", "authorize", &nwid, &m1.address()]);
    assert!(run.ok, "{run:?}");
    let run = m1.cli(&["join", &nwid, "--netns", &ctr.name]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(15), || m1.status(&nwid) == "OK"),
        "{:?}",
        m1.network_line(&nwid)
    );
    let device = m1.network_line(&nwid)[7].clone();
    let m1_ip = m1.network_line(&nwid)[8].clone();

    // The device and its address are in the container, not beside the daemon.
    let shown = || {
        String::from_utf8_lossy(
            &ctr.exec(&["ip", "-o", "addr", "show", "dev", &device])
                .stdout,
        )
        .to_string()
    };
    assert!(
        wait_until(Duration::from_secs(10), || shown()
            .contains(&format!("inet {m1_ip}"))),
        "{device} in the container: {:?}",
        shown()
    );
    let here = lab.exec(&m1_host, "ip", &["link", "show", "dev", &device]);
    assert!(!here.ok, "no {device} in the daemon's namespace: {here:?}");
    // The network's route is the container's too, and traffic flows.
    let routes = String::from_utf8_lossy(&ctr.exec(&["ip", "-4", "route"]).stdout).to_string();
    assert!(
        routes.contains(&format!("10.147.17.0/24 dev {device}")),
        "{routes}"
    );
    let pinged = wait_until(Duration::from_secs(10), || {
        ctr.exec(&["ping", "-n", "-c", "1", "-W", "1", m2_ip])
            .status
            .success()
    });
    assert!(pinged, "the container reaches member m2 at {m2_ip}");
    let run = lab.exec(
        &m2_host,
        "ping",
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            m1_ip.split('/').next().unwrap_or_default(),
        ],
    );
    assert!(run.ok, "m2 reaches the container: {run:?}");

    // Leaving removes the device from the container.
    let run = m1.cli(&["leave", &nwid]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || !ctr
            .exec(&["ip", "link", "show", "dev", &device])
            .status
            .success()),
        "the device left the container"
    );
}
