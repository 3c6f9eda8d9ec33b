//! DNS for members end to end, in network namespaces: the controller
//! pushes ZeroTier's `dns` (domain and servers); a member with
//! `allowDNS=1` puts it in force (here the resolv.conf fallback: each
//! namespace's `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts
//! over `/etc/resolv.conf`) and takes it away with `allowDNS=0`; member
//! names resolve (`getent hosts m2.<domain>`, `dig`) through the
//! controller's member-name responder on its own address in the network.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use vnet_tests::daemon::{Started, network_of, start_root_controller_members};
use vnet_tests::netns::{Lab, Node, wait_until};

const DOMAIN: &str = "vnet.lan";

/// `/etc/netns/<ns>/resolv.conf` for one namespace, made before its
/// daemon starts (so `ip netns exec` mounts it) and removed when dropped.
struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    fn new(host: &Node) -> Self {
        let dir = PathBuf::from("/etc/netns").join(host.ns());
        fs::create_dir_all(&dir).expect("/etc/netns/<ns>");
        // A host resolver that no one answers for (nothing leaves the lab).
        fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.53\n").expect("resolv.conf");
        Self { dir }
    }

    fn text(&self) -> String {
        fs::read_to_string(self.dir.join("resolv.conf")).unwrap_or_default()
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn member_names_resolve_through_the_pushed_dns_settings() {
    let lab = Lab::new();
    let [root_host, ctl_host, m1_host, m2_host] = ["root", "ctl", "m1", "m2"].map(|n| lab.host(n));
    let conf = NetnsResolvConf::new(&m1_host);
    let Started {
        root: _root,
        ctl,
        members,
    } = start_root_controller_members(&lab, &root_host, &ctl_host, &[&m1_host, &m2_host]);
    let [m1, m2] = [&members[0], &members[1]];
    // The controller is a member too: it answers names on its address.
    let (nwid, ips) = network_of(&ctl, &[&ctl, m1, m2], "names");
    let (ctl_ip, m2_ip) = (&ips[0], &ips[2]);
    let run = ctl.cli(&["member", "set", &nwid, &m2.address(), "name=M2"]);
    assert!(run.ok, "{run:?}");
    let setting = format!("dns={DOMAIN},{ctl_ip}");
    let run = ctl.cli(&["network", "set", &nwid, &setting]);
    assert!(run.ok, "{run:?}");

    // Pushed: the member sees it, but without allowDNS nothing changes.
    assert!(
        wait_until(Duration::from_secs(10), || m1
            .cli(&["get", &nwid, "dns"])
            .stdout
            .contains(DOMAIN)),
        "{:?}",
        m1.cli(&["get", &nwid, "dns"])
    );
    assert!(!conf.text().contains(DOMAIN), "{}", conf.text());

    // The responder answers (dig, straight at it).
    let server = format!("@{ctl_ip}");
    let name = format!("m2.{DOMAIN}");
    let dug = || {
        lab.exec(
            &m1_host,
            "dig",
            &[&server, &name, "A", "+short", "+time=1", "+tries=1"],
        )
        .stdout
    };
    assert!(
        wait_until(Duration::from_secs(10), || dug().trim() == m2_ip),
        "dig {name}: {:?}",
        dug()
    );
    let by_address = format!("{}.{DOMAIN}", m2.address());
    let run = lab.exec(
        &m1_host,
        "dig",
        &[&server, &by_address, "+short", "+time=1", "+tries=1"],
    );
    assert_eq!(run.stdout.trim(), m2_ip, "{run:?}");
    let run = lab.exec(
        &m1_host,
        "dig",
        &[&server, &format!("nobody.{DOMAIN}"), "+time=1", "+tries=1"],
    );
    assert!(run.stdout.contains("NXDOMAIN"), "{run:?}");
    let run = lab.exec(
        &m1_host,
        "dig",
        &[&server, "example.com", "+time=1", "+tries=1"],
    );
    assert!(
        run.stdout.contains("REFUSED"),
        "names outside the domain are refused: {run:?}"
    );

    // allowDNS=1: the settings are in force, and names resolve as any name.
    let run = m1.cli(&["set", &nwid, "allowDNS=1"]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || conf
            .text()
            .contains(&format!("search {DOMAIN}\nnameserver {ctl_ip}\n"))),
        "{}",
        conf.text()
    );
    assert!(
        conf.text().ends_with("nameserver 192.0.2.53\n"),
        "{}",
        conf.text()
    );
    let resolved = || lab.exec(&m1_host, "getent", &["hosts", &name]).stdout;
    assert!(
        wait_until(Duration::from_secs(10), || resolved()
            .starts_with(&format!("{m2_ip} "))),
        "getent hosts {name}: {:?}",
        resolved()
    );
    // The search domain: the bare name resolves too.
    let run = lab.exec(&m1_host, "getent", &["hosts", "m2"]);
    assert!(run.stdout.starts_with(&format!("{m2_ip} ")), "{run:?}");

    // allowDNS=0 takes it away, leaving the file as it was.
    let run = m1.cli(&["set", &nwid, "allowDNS=0"]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || conf.text()
            == "nameserver 192.0.2.53\n"),
        "{}",
        conf.text()
    );
}
