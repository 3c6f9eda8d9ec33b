//! Bridging a LAN into a virtual network, end to end in network namespaces
//! (docs/bridge.md): a gateway member authorized as an active bridge puts its
//! TAP into a Linux bridge with a LAN that runs no vnet; a remote member on
//! the other side of the underlay joins that LAN at layer two (DHCP from the
//! LAN's server, ARP both ways, LAN broadcasts), while a member that is not a
//! bridge cannot send from any MAC but its own.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vnet_tests::daemon::{Daemon, make_planet};
use vnet_tests::netns::{Lab, Node, wait_until};
use vnet_tests::python3;

/// The LAN host (no vnet), on the gateway's bridge.
const LAN_HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 20);
/// The LAN's broadcast address.
const LAN_BROADCAST: &str = "192.168.77.255";
/// The network MTU: the LAN's, so that every frame fits through the bridge.
const MTU: u64 = 1500;

/// Prints every UDP datagram received on port argv[1] as `<payload> <source ip>`.
const UDP_LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(4096)
    print(data.decode(errors="replace"), peer[0], flush=True)
"#;

/// Sends one UDP broadcast: argv[1] = address, argv[2] = port, argv[3] = payload.
const UDP_BROADCAST: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"#;

/// Writes one hand-made Ethernet/IPv4/UDP frame to an interface with a raw
/// socket, whatever its source MAC: argv = iface dst-mac src-mac src-ip dst-ip
/// dst-port payload.
const RAW_UDP_FRAME: &str = r#"
import socket, struct, sys
iface, dst, src, sip, dip, port, payload = sys.argv[1:8]
mac = lambda s: bytes.fromhex(s.replace(":", ""))
data = payload.encode()
udp = struct.pack("!HHHH", 40000, int(port), 8 + len(data), 0) + data
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                 socket.inet_aton(sip), socket.inet_aton(dip))
words = sum(struct.unpack("!10H", ip))
words = (words & 0xFFFF) + (words >> 16)
words = (words & 0xFFFF) + (words >> 16)
ip = ip[:10] + struct.pack("!H", ~words & 0xFFFF) + ip[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
s.send(mac(dst) + mac(src) + b"\x08\x00" + ip + udp)
"#;

/// udhcpc's event script: reports the lease on stdout, configures nothing
/// (the test adds the address itself; the default script rewrites the host's
/// /etc/resolv.conf, which namespaces share).
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n\
    if [ \"$1\" = bound ]; then echo \"LEASE $ip $subnet\"; fi\n\
    exit 0\n";

/// A program from PATH or the sbin directories; a missing one fails the test.
fn required_tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is needed by the bridge test's DHCP half (Debian packages dnsmasq-base \
                 and udhcpc; scripts/install-deps.sh installs them)"
            )
        })
}

/// A root, a controller, a gateway member that is an active bridge with its
/// TAP in `bridge` together with the LAN host `lan`, and further members; a
/// network with no address pool and the LAN's MTU.
struct BridgedLan<'a> {
    nwid: String,
    _root: Daemon<'a>,
    ctl: Daemon<'a>,
    gateway: Daemon<'a>,
    /// The members after the gateway, in the order of their hosts.
    members: Vec<Daemon<'a>>,
    bridge: String,
    lan: Node,
}

/// `hosts`: root, controller, gateway, then the other members.
fn bridged_lan<'a>(lab: &'a Lab, hosts: &'a [Node]) -> BridgedLan<'a> {
    let [root_host, ctl_host, gw_host, member_hosts @ ..] = hosts else {
        panic!("root, controller, gateway, members");
    };
    let homes: Vec<PathBuf> = hosts[1..].iter().map(|h| lab.home(h)).collect();
    make_planet(lab, root_host, &homes);
    let root = Daemon::start(lab, root_host, "vnet-planet");
    let ctl = Daemon::start(lab, ctl_host, "vnet-controller");
    let gateway = Daemon::start(lab, gw_host, "vnet-node");
    let members: Vec<Daemon> = member_hosts
        .iter()
        .map(|h| Daemon::start(lab, h, "vnet-node"))
        .collect();
    ctl.wait_online();
    gateway.wait_online();
    members.iter().for_each(Daemon::wait_online);

    // No pool: the LAN's DHCP server, not the controller, numbers the members.
    let run = ctl.cli(&["network", "create", "--name", "lan"]);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("network id")
        .to_string();
    let run = ctl.cli(&["network", "set", &nwid, &format!("mtu={MTU}")]);
    assert!(run.ok, "{run:?}");

    let all: Vec<&Daemon> = std::iter::once(&gateway).chain(&members).collect();
    for m in &all {
        assert_eq!(m.cli(&["join", &nwid]).stdout.trim(), "200 join OK");
    }
    for m in &all {
        let authorized = wait_until(Duration::from_secs(5), || {
            ctl.cli(&["member", "authorize", &nwid, &m.address()]).ok
        });
        assert!(authorized, "{} authorized", m.host.name());
    }
    let run = ctl.cli(&[
        "member",
        "set",
        &nwid,
        &gateway.address(),
        "activeBridge=true",
    ]);
    assert!(run.ok, "{run:?}");
    let listed = ctl.cli(&["member", "list", &nwid]).stdout;
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&gateway.address()) && l.ends_with("BRIDGE")),
        "the gateway is listed as a bridge: {listed}"
    );
    for m in &all {
        assert!(
            wait_until(Duration::from_secs(8), || m.status(&nwid) == "OK"),
            "{}: {:?}",
            m.host.name(),
            m.network_line(&nwid)
        );
        // The TAP takes the network's MTU, the LAN's.
        let tap = tap(m, &nwid);
        let mtu_set = wait_until(Duration::from_secs(5), || {
            link_info(lab, m.host, &tap)["mtu"].as_u64() == Some(MTU)
        });
        assert!(
            mtu_set,
            "{}'s TAP {tap} has MTU {MTU}: {}",
            m.host.name(),
            link_info(lab, m.host, &tap)
        );
    }

    // The LAN goes on the gateway's TAP only once its config makes it a
    // bridge (an earlier config, from its authorization, may be the one it
    // first reported OK with): else a LAN frame is a foreign source.
    let is_bridge = wait_until(Duration::from_secs(8), || {
        gateway
            .json(&["listnetworks"])
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["id"] == nwid.as_str() && n["bridge"] == true)
    });
    assert!(is_bridge, "the gateway's config makes it a bridge");

    // The gateway's LAN: a Linux bridge with its TAP and the LAN host's veth.
    let bridge = format!("{}lan", lab.prefix());
    let gw_tap = tap(&gateway, &nwid);
    for args in [
        vec![
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
        vec!["link", "set", &bridge, "up"],
        vec!["link", "set", &gw_tap, "master", &bridge, "up"],
    ] {
        let run = lab.exec(gw_host, "ip", &args);
        assert!(run.ok, "ip {args:?} on the gateway: {run:?}");
    }
    let lan = lab.host_on_bridge("lan", gw_host, &bridge, LAN_HOST_IP);
    BridgedLan {
        nwid,
        _root: root,
        ctl,
        gateway,
        members,
        bridge,
        lan,
    }
}

/// A member's TAP device on `nwid`.
fn tap(d: &Daemon, nwid: &str) -> String {
    d.network_line(nwid).get(7).cloned().unwrap_or_else(|| {
        panic!(
            "{} has no device: {:?}",
            d.host.name(),
            d.network_line(nwid)
        )
    })
}

/// `ip -j link show dev <dev>`'s object (Null if there is no such link).
fn link_info(lab: &Lab, host: &Node, dev: &str) -> Value {
    let run = lab.exec(host, "ip", &["-j", "link", "show", "dev", dev]);
    serde_json::from_str::<Value>(&run.stdout).unwrap_or(Value::Null)[0].clone()
}

/// The MAC of `dev` in `host`.
fn mac_of(lab: &Lab, host: &Node, dev: &str) -> String {
    link_info(lab, host, dev)["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{dev} in {} has no MAC", host.name()))
        .to_string()
}

/// The link-layer address `host` has for `ip` on `dev`, if it has one.
fn neighbour(lab: &Lab, host: &Node, dev: &str, ip: &str) -> Option<String> {
    let run = lab.exec(host, "ip", &["-j", "neigh", "show", ip, "dev", dev]);
    let v: Value = serde_json::from_str(&run.stdout).ok()?;
    v[0]["lladdr"].as_str().map(str::to_string)
}

/// The switch counters of `nwid` in the member's `GET /network`.
fn counters(d: &Daemon, nwid: &str) -> Value {
    let nets = d.json(&["listnetworks"]);
    nets.as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == nwid))
        .map(|n| n["counters"].clone())
        .unwrap_or_else(|| panic!("{nwid} not in {nets}"))
}

fn count(counters: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(counters, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {path:?} in {counters}"))
}

fn ping(lab: &Lab, from: &Node, to: &str, extra: &[&str]) -> bool {
    let mut args = vec!["-n", "-c", "1", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(to);
    lab.exec(from, "ping", &args).ok
}

/// The remote member's LAN address: a lease from dnsmasq on the LAN through
/// udhcpc, configured on its TAP. Both tools are required: scripts/install-deps.sh
/// installs them (a missing one fails the test, it does not skip the DHCP half).
fn lan_address(lab: &Lab, lan: &Node, remote: &Node, remote_tap: &str) -> String {
    let (dnsmasq, udhcpc) = (required_tool("dnsmasq"), required_tool("udhcpc"));
    let ip = {
        let dir = lab.dir();
        let leases = dir.join("dnsmasq.leases");
        let pid = dir.join("dnsmasq.pid");
        let server = lab.spawn(
            lan,
            dnsmasq,
            &[
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--bind-interfaces",
                &format!("--interface={}", lan.iface()),
                "--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h",
                "--dhcp-authoritative",
                "--log-dhcp",
                &format!("--dhcp-leasefile={}", leases.display()),
                &format!("--pid-file={}", pid.display()),
            ],
            &[],
        );
        let script = dir.join("udhcpc.script");
        std::fs::write(&script, UDHCPC_SCRIPT).expect("write udhcpc script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod udhcpc script");
        // DISCOVER is a broadcast from the member: the switch sends it to the
        // bridge; the OFFER comes back unicast to the member's MAC.
        let run = lab.exec(
            remote,
            udhcpc,
            &[
                "-f",
                "-q",
                "-n",
                "-t",
                "10",
                "-T",
                "2",
                "-i",
                remote_tap,
                "-s",
                &script.to_string_lossy(),
            ],
        );
        let lease = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("LEASE "))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        let Some([ip, subnet]) = lease.as_deref() else {
            panic!(
                "no DHCP lease over the bridge: {run:?}\ndnsmasq:\n{}",
                server.stderr_text()
            );
        };
        assert_eq!(subnet, "255.255.255.0");
        let host: u8 = ip
            .strip_prefix("192.168.77.")
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("lease {ip} is not on the LAN"));
        assert!((100..=150).contains(&host), "lease {ip} from the range");
        eprintln!("the remote member leased {ip} from dnsmasq on the LAN");
        ip.clone()
    };
    let cidr = format!("{ip}/24");
    let run = lab.exec(remote, "ip", &["addr", "add", &cidr, "dev", remote_tap]);
    assert!(run.ok, "{run:?}");
    ip
}

#[test]
fn remote_member_joins_the_lan_at_layer_two_through_a_bridge_member() {
    let lab = Lab::new();
    let hosts = [
        lab.host("root"),
        lab.host("ctl"),
        lab.host("gw"),
        lab.host("remote"),
    ];
    let net = bridged_lan(&lab, &hosts);
    let (nwid, remote, lan) = (&net.nwid, &net.members[0], &net.lan);
    let remote_host = &hosts[3];
    let remote_tap = tap(remote, nwid);
    let remote_mac = mac_of(&lab, remote_host, &remote_tap);
    let lan_mac = mac_of(&lab, lan, lan.iface());
    let python = python3();

    // DHCP from the LAN's server, across the bridge (or a static address).
    let remote_ip = lan_address(&lab, lan, remote_host, &remote_tap);

    // The remote member reaches the LAN host over the virtual network.
    let lan_ip = LAN_HOST_IP.to_string();
    let pinged = wait_until(Duration::from_secs(15), || {
        ping(&lab, remote_host, &lan_ip, &[])
    });
    assert!(
        pinged,
        "remote pings the LAN host through the bridge; gateway counters {}, remote counters {}",
        counters(&net.gateway, nwid),
        counters(remote, nwid)
    );
    // ARP across: each side has the other's real MAC.
    assert_eq!(
        neighbour(&lab, remote_host, &remote_tap, &lan_ip).as_deref(),
        Some(lan_mac.as_str()),
        "the remote member resolved the LAN host's MAC"
    );
    assert_eq!(
        neighbour(&lab, lan, lan.iface(), &remote_ip).as_deref(),
        Some(remote_mac.as_str()),
        "the LAN host knows the remote member's TAP MAC"
    );
    // The remote member learned the LAN host's MAC behind the gateway; the
    // gateway sent for it.
    let c = counters(remote, nwid);
    assert!(count(&c, &["macsLearned"]) >= 1, "remote: {c}");
    let g = counters(&net.gateway, nwid);
    assert!(count(&g, &["sentUnicast"]) >= 1, "gateway: {g}");
    assert_eq!(count(&g, &["drops", "foreignSource"]), 0, "gateway: {g}");

    // Full-size frames fit: the network MTU is the LAN's.
    let run = lab.exec(
        remote_host,
        "ping",
        &[
            "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", &lan_ip,
        ],
    );
    assert!(run.ok, "1500-byte packets cross the bridge: {run:?}");

    // ARP started on the LAN: the LAN host forgets the member and resolves it again.
    let run = lab.exec(lan, "ip", &["neigh", "flush", "dev", lan.iface()]);
    assert!(run.ok, "{run:?}");
    let pinged = wait_until(Duration::from_secs(10), || ping(&lab, lan, &remote_ip, &[]));
    assert!(
        pinged,
        "the LAN host resolves and pings the remote member; gateway counters {}",
        counters(&net.gateway, nwid)
    );
    assert_eq!(
        neighbour(&lab, lan, lan.iface(), &remote_ip).as_deref(),
        Some(remote_mac.as_str())
    );

    // A broadcast on the LAN reaches the remote member.
    let listener = lab.spawn(
        remote_host,
        &python,
        &["-u", "-c", UDP_LISTENER, "5556"],
        &[],
    );
    let heard = wait_until(Duration::from_secs(10), || {
        let run = lab.exec(
            lan,
            &python,
            &["-c", UDP_BROADCAST, LAN_BROADCAST, "5556", "hello-lan"],
        );
        assert!(run.ok, "broadcast sent: {run:?}");
        std::thread::sleep(Duration::from_millis(200));
        listener
            .stdout_text()
            .contains(&format!("hello-lan {lan_ip}"))
    });
    assert!(
        heard,
        "a LAN broadcast reaches the remote member; it heard {:?}; gateway counters {}",
        listener.stdout_text(),
        counters(&net.gateway, nwid)
    );
}

#[test]
fn non_bridge_member_cannot_spoof_a_lan_mac() {
    let lab = Lab::new();
    let hosts = [
        lab.host("root"),
        lab.host("ctl"),
        lab.host("gw"),
        lab.host("mallory"),
    ];
    let net = bridged_lan(&lab, &hosts);
    let (nwid, mallory, lan) = (&net.nwid, &net.members[0], &net.lan);
    let mallory_host = &hosts[3];
    let mallory_tap = tap(mallory, nwid);
    let mallory_mac = mac_of(&lab, mallory_host, &mallory_tap);
    let lan_mac = mac_of(&lab, lan, lan.iface());
    let python = python3();
    let listed = net.ctl.cli(&["member", "list", nwid]).stdout;
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&mallory.address()) && !l.ends_with("BRIDGE")),
        "mallory is no bridge: {listed}"
    );
    assert!(
        link_info(&lab, &hosts[2], &net.bridge)["ifname"].is_string(),
        "the LAN bridge exists"
    );

    let listener = lab.spawn(lan, &python, &["-u", "-c", UDP_LISTENER, "5555"], &[]);
    let lan_ip = LAN_HOST_IP.to_string();
    let frame = |src: &str, payload: &str| {
        let run = lab.exec(
            mallory_host,
            &python,
            &[
                "-c",
                RAW_UDP_FRAME,
                &mallory_tap,
                &lan_mac,
                src,
                "192.168.77.66",
                &lan_ip,
                "5555",
                payload,
            ],
        );
        assert!(run.ok, "frame written to mallory's TAP: {run:?}");
    };
    // Forged: a MAC of the LAN's kind, and the LAN host's own MAC.
    let forged = ["02:77:77:00:00:66", lan_mac.as_str()];
    let before = count(&counters(mallory, nwid), &["drops", "foreignSource"]);
    for src in forged {
        frame(src, "spoofed");
    }
    let dropped = wait_until(Duration::from_secs(5), || {
        count(&counters(mallory, nwid), &["drops", "foreignSource"]) >= before + 2
    });
    let c = counters(mallory, nwid);
    assert!(
        dropped,
        "mallory's switch drops both forged frames as foreignSource: {c}"
    );
    // The same frame from mallory's own MAC gets through (unknown unicast to
    // the bridge): the path works, only the forged source was the problem.
    let honest = wait_until(Duration::from_secs(10), || {
        frame(&mallory_mac, "honest");
        std::thread::sleep(Duration::from_millis(300));
        listener.stdout_text().contains("honest")
    });
    assert!(
        honest,
        "an honest frame reaches the LAN host; mallory {}, gateway {}",
        counters(mallory, nwid),
        counters(&net.gateway, nwid)
    );
    // Forged again after the path is known to work: still nothing.
    for src in forged {
        frame(src, "spoofed");
    }
    std::thread::sleep(Duration::from_secs(1));
    let heard = listener.stdout_text();
    assert!(
        !heard.contains("spoofed"),
        "the LAN host never saw a forged frame: {heard:?}"
    );
    let c = counters(mallory, nwid);
    assert!(
        count(&c, &["drops", "foreignSource"]) >= before + 4,
        "every forged frame counted: {c}"
    );
    // The gateway saw nothing forged either (its inbound check would have
    // counted spoofedSource) and learned no MAC behind mallory.
    let g = counters(&net.gateway, nwid);
    assert_eq!(count(&g, &["drops", "spoofedSource"]), 0, "gateway: {g}");
}

/// A DHCP lease is the member's own business: a new config from the
/// controller (here a rename) must leave it on the TAP.
#[test]
fn leased_lan_address_survives_a_network_config_change() {
    let lab = Lab::new();
    let hosts = [
        lab.host("root"),
        lab.host("ctl"),
        lab.host("gw"),
        lab.host("remote"),
    ];
    let net = bridged_lan(&lab, &hosts);
    let (nwid, remote, lan) = (&net.nwid, &net.members[0], &net.lan);
    let remote_host = &hosts[3];
    let remote_tap = tap(remote, nwid);
    let ip = lan_address(&lab, lan, remote_host, &remote_tap);
    let lan_ip = LAN_HOST_IP.to_string();
    assert!(wait_until(Duration::from_secs(15), || ping(
        &lab,
        remote_host,
        &lan_ip,
        &[]
    )));
    let run = net.ctl.cli(&["network", "set", nwid, "name=renamed"]);
    assert!(run.ok, "{run:?}");
    assert!(wait_until(Duration::from_secs(10), || {
        remote.network_line(nwid).get(3).map(String::as_str) == Some("renamed")
    }));
    std::thread::sleep(Duration::from_secs(1));
    let addrs = lab
        .exec(
            remote_host,
            "ip",
            &["-4", "addr", "show", "dev", &remote_tap],
        )
        .stdout;
    assert!(
        addrs.contains(&format!("{ip}/24")),
        "the lease {ip} is still on {remote_tap} after a new config: {addrs}"
    );
    // The gateway's TAP is still a port of the LAN bridge.
    let gw_tap = tap(&net.gateway, nwid);
    assert_eq!(
        link_info(&lab, &hosts[2], &gw_tap)["master"].as_str(),
        Some(net.bridge.as_str())
    );
    assert!(
        ping(&lab, remote_host, &lan_ip, &[]),
        "still reaches the LAN"
    );
}
