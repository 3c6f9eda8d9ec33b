//! Super-frames end to end, in network namespaces, with real TAP offloads
//! (IFF_VNET_HDR, TSO) and real TCP (iperf3): between two members whose
//! TAPs take offloads, both ways; to a member whose TAP does not (it cuts
//! them in software); to a member whose node predates OFFLOAD_FRAME and
//! AES-256-GCM (the sender cuts them, and seals with Salsa20/12 +
//! Poly1305 for it while it seals with AES-256-GCM for the others); and
//! to a member behind a router whose LAN has a smaller MTU (1,300), found
//! by path MTU discovery with no IP fragment on the way; and between two
//! members whose path narrows while they talk. UDP super-frames (USO, from
//! a socket sending with `UDP_SEGMENT`) go whole to members that announce
//! UDP segmentation, and are cut by the sender for one that does not; small
//! datagrams of one flow read together are joined into one super-frame by
//! the sender, and those that arrive together into one TAP write where the
//! TAP takes USO, and every one arrives as it was sent.

use std::fs;

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, Started, make_planet, network_of, start_root_controller_members};
use vnet_tests::netns::{Lab, NatKind, Node, Router};
use vnet_tests::udp_check::{UDP_BURST_SENDER, UdpRun, all_arrived, link_local};

/// Writes `<home>/local.conf` for `host`'s daemon (before it starts).
fn local_conf(lab: &Lab, host: &Node, settings: Value) {
    let conf = json!({ "settings": settings });
    fs::write(lab.home(host).join("local.conf"), conf.to_string()).expect("write local.conf");
}

fn counter(d: &Daemon, name: &str) -> u64 {
    d.json(&["info"])["counters"][name].as_u64().unwrap_or(0)
}

/// One iperf3 TCP run of 2 s from `client` to `server_ip` (reversed: the
/// server sends); the bits per second received.
fn iperf(lab: &Lab, client: &Node, server: &Node, server_ip: &str, reverse: bool) -> f64 {
    let _server = lab.spawn(server, "iperf3", &["-s", "-1", "-B", server_ip], &[]);
    let mut args = vec![
        "-c",
        server_ip,
        "-t",
        "2",
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if reverse {
        args.push("-R");
    }
    let mut last = None;
    let ran = vnet_tests::netns::wait_until(std::time::Duration::from_secs(10), || {
        let r = lab.exec(client, "iperf3", &args);
        let ok = r.ok && !r.stdout.contains("\"error\"");
        last = Some(r);
        ok
    });
    let run = last.expect("iperf3 ran");
    assert!(ran, "iperf3 to {server_ip}: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("iperf3 JSON");
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3's report: {}", run.stdout))
}

#[test]
fn super_frames_cross_both_ways_and_reach_members_without_offloads() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let [ha, hb, hc, hd] = ["a", "b", "c", "d"].map(|n| lab.host(n));
    // e sits behind a router whose LAN carries at most 1,300 bytes.
    let router = lab.nat_router("re", NatKind::Easy);
    let he = lab.host_behind("e", &router);
    narrow_lan(&lab, &router, &he, 1300);
    make_planet(
        &lab,
        &root_host,
        &[&ctl_host, &ha, &hb, &hc, &hd, &he].map(|h| lab.home(h)),
    );
    local_conf(&lab, &hc, json!({ "tapOffload": false }));
    local_conf(
        &lab,
        &hd,
        json!({ "offloadFrames": false, "aesGcm": false }),
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let members = [&ha, &hb, &hc, &hd, &he].map(|h| Daemon::start(&lab, h, "vnet-node"));
    for d in std::iter::once(&ctl).chain(&members) {
        d.wait_online();
    }
    let [a, b, c, d, e] = &members;
    let (_, ips) = network_of(&ctl, &[a, b, c, d, e], "offload");

    // a <-> b: both TAPs take offloads; TCP goes as whole super-frames.
    let bps = iperf(&lab, &ha, &hb, &ips[1], false);
    assert!(bps > 0.0);
    assert!(counter(a, "superFramesSent") > 0, "a sent super-frames");
    assert!(counter(b, "superFramesReceived") > 0, "b took them whole");
    assert!(counter(a, "sealedAesGcm") > 0, "a sealed with AES-256-GCM");
    assert!(counter(b, "openedAesGcm") > 0, "b opened AES-256-GCM");
    eprintln!(
        "a -> b with offloads: {:.0} Mbit/s (debug build)",
        bps / 1e6
    );
    let bps = iperf(&lab, &ha, &hb, &ips[1], true);
    assert!(bps > 0.0);
    assert!(
        counter(b, "superFramesSent") > 0,
        "b sent super-frames back"
    );
    assert!(counter(a, "superFramesReceived") > 0);

    // a -> c: c's TAP takes no offloads, so c cuts what it receives; TCP
    // (which checks every segment's checksum) goes through.
    let before = counter(c, "superFramesReceived");
    let bps = iperf(&lab, &ha, &hc, &ips[2], false);
    assert!(bps > 0.0);
    assert!(
        counter(c, "superFramesReceived") > before,
        "c got super-frames"
    );
    // c -> a: c's kernel makes no super-frames.
    let sent_before = counter(c, "superFramesSent");
    assert!(iperf(&lab, &ha, &hc, &ips[2], true) > 0.0);
    assert_eq!(counter(c, "superFramesSent"), sent_before);

    // a -> d: d never announced OFFLOAD_FRAME, so a cuts the super-frames
    // itself and d only ever sees ordinary frames.
    let bps = iperf(&lab, &ha, &hd, &ips[3], false);
    assert!(bps > 0.0);
    assert!(counter(a, "superFramesCut") > 0, "a cut super-frames for d");
    assert_eq!(counter(d, "superFramesReceived"), 0);
    // d announced no AES-256-GCM, so nothing sealed with it reached it.
    assert_eq!(counter(d, "openedAesGcm"), 0);
    assert_eq!(counter(d, "sealedAesGcm"), 0);
    assert!(iperf(&lab, &ha, &hd, &ips[3], true) > 0.0, "d -> a");

    // a <-> e across the narrow LAN: path MTU discovery finds 1,272-byte
    // datagrams (1,300 less IPv4 and UDP headers) both ways, the sockets
    // forbid IP fragmentation, and TCP goes through both ways.
    let (addr_a, addr_b, addr_e) = (a.address(), b.address(), e.address());
    assert!(iperf(&lab, &ha, &he, &ips[4], false) > 0.0, "a -> e");
    assert!(iperf(&lab, &ha, &he, &ips[4], true) > 0.0, "e -> a");
    assert_eq!(a.route_to(&addr_e), "DIRECT");
    assert_eq!(a.path_mtu_to(&addr_e), Some(1272), "a's path to e");
    assert_eq!(e.path_mtu_to(&addr_a), Some(1272), "e's path to a");
    for (host, name) in [(&ha, "a"), (&he, "e")] {
        assert_eq!(
            ip_fragments_received(&lab, host),
            0,
            "{name} got IP fragments"
        );
    }
    assert!(counter(a, "pathMtuProbesAnswered") > 0);

    // a <-> b: the whole 1,500-byte Ethernet MTU.
    assert_eq!(a.path_mtu_to(&addr_b), Some(1472), "a's path to b");
    assert_eq!(b.path_mtu_to(&addr_a), Some(1472), "b's path to a");

    // e's LAN narrows to 1,280 while a and e talk: the next confirmation of
    // 1,272 is lost, both fall back to the base and find 1,252, and TCP
    // flows on, still without an IP fragment.
    narrow_lan(&lab, &router, &he, 1280);
    let narrowed = vnet_tests::netns::wait_until(std::time::Duration::from_secs(30), || {
        // Traffic keeps the peers in use (probes go only to peers in use).
        lab.exec(&ha, "ping", &["-c", "1", "-W", "1", &ips[4]]);
        a.path_mtu_to(&addr_e) == Some(1252) && e.path_mtu_to(&addr_a) == Some(1252)
    });
    assert!(
        narrowed,
        "a -> e {:?}, e -> a {:?}",
        a.path_mtu_to(&addr_e),
        e.path_mtu_to(&addr_a)
    );
    assert!(counter(a, "pathMtuLowered") >= 1);
    assert!(
        iperf(&lab, &ha, &he, &ips[4], false) > 0.0,
        "a -> e narrowed"
    );
    assert!(
        iperf(&lab, &ha, &he, &ips[4], true) > 0.0,
        "e -> a narrowed"
    );
    for (host, name) in [(&ha, "a"), (&he, "e")] {
        assert_eq!(
            ip_fragments_received(&lab, host),
            0,
            "{name} got IP fragments"
        );
    }
}

/// Sets the MTU of every LAN-side interface of `router` and of `host`'s.
fn narrow_lan(lab: &Lab, router: &Router, host: &Node, mtu: u32) {
    let narrow = format!(
        "for i in $(ip -o link show | awk -F': ' '{{print $2}}' | cut -d@ -f1); do \
         [ \"$i\" = lo ] || [ \"$i\" = {} ] || ip link set dev \"$i\" mtu {mtu} || exit 1; done",
        router.wan_iface()
    );
    assert!(
        lab.exec(router, "sh", &["-c", &narrow]).ok,
        "narrow the LAN"
    );
    let mtu = mtu.to_string();
    let set = lab.exec(
        host,
        "ip",
        &["link", "set", "dev", host.iface(), "mtu", &mtu],
    );
    assert!(set.ok, "{set:?}");
}

/// IP fragments that reached `host` (its namespace's `ReasmReqds`).
fn ip_fragments_received(lab: &Lab, host: &Node) -> u64 {
    let snmp = lab.exec(host, "cat", &["/proc/net/snmp"]);
    assert!(snmp.ok, "{snmp:?}");
    let mut lines = snmp.stdout.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (
        lines.next().expect("Ip header"),
        lines.next().expect("Ip values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ReasmReqds")
        .and_then(|(_, v)| v.parse().ok())
        .expect("ReasmReqds")
}

/// Sends `sends` UDP_SEGMENT (GSO) writes of `per_send` datagrams of `size`
/// bytes each: argv = ip, port, sends, per_send, size.
const UDP_GSO_SENDER: &str = r#"
import socket, sys, time
ip, port, sends, per_send, size = sys.argv[1], *map(int, sys.argv[2:6])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, size)  # SOL_UDP, UDP_SEGMENT
for n in range(sends):
    buf = b"".join(
        i.to_bytes(4, "big") + bytes((i + j) % 251 for j in range(size - 4))
        for i in range(n * per_send, (n + 1) * per_send))
    s.sendto(buf, (ip, port))
    time.sleep(0.005)
"#;

/// Root, controller and members a, b, c (its TAP without offloads) and d
/// (no OFFLOAD_FRAME) on `hosts`, all online and joined to a network named
/// `name`; its id and the members' addresses in order.
fn members_with_and_without_offloads<'a>(
    lab: &'a Lab,
    hosts: [&'a Node; 6],
    name: &str,
) -> (Started<'a>, String, Vec<String>) {
    let [root, ctl, a, b, c, d] = hosts;
    local_conf(lab, c, json!({ "tapOffload": false }));
    local_conf(lab, d, json!({ "offloadFrames": false }));
    let started = start_root_controller_members(lab, root, ctl, &[a, b, c, d]);
    let (nwid, ips) = network_of(
        &started.ctl,
        &started.members.iter().collect::<Vec<_>>(),
        name,
    );
    (started, nwid, ips)
}

#[test]
fn udp_super_frames_cross_whole_and_are_cut_for_members_that_cannot_take_them() {
    const SENDS: usize = 50;
    const PER_SEND: usize = 20;
    const SIZE: usize = 1000;
    let lab = Lab::new();
    let [root_host, ctl_host, ha, hb, hc, hd] =
        ["root", "ctl", "a", "b", "c", "d"].map(|n| lab.host(n));
    let (started, _, ips) =
        members_with_and_without_offloads(&lab, [&root_host, &ctl_host, &ha, &hb, &hc, &hd], "uso");
    let members = &started.members;
    let a = &members[0];
    let total = SENDS * PER_SEND;

    // a sends 1,000 datagrams of 1,000 bytes to each of b, c and d in 50
    // UDP_SEGMENT writes; every datagram must arrive once and intact (the
    // kernel drops one whose UDP checksum is wrong).
    let mut deltas = Vec::new();
    for (i, (host, name)) in [(&hb, "b"), (&hc, "c"), (&hd, "d")].into_iter().enumerate() {
        let ip = &ips[i + 1];
        let to = &members[i + 1];
        let port = 6000 + i as u16;
        let before = (
            counter(a, "superFramesSent"),
            counter(a, "superFramesCut"),
            counter(to, "superFramesReceived"),
        );
        let out = UdpRun {
            from: &ha,
            to: host,
            ip,
            port,
            sender: UDP_GSO_SENDER,
            sender_args: &[SENDS, PER_SEND, SIZE].map(|n| n.to_string()),
            count: total,
            size: SIZE,
        }
        .run(&lab);
        assert_eq!(
            out,
            all_arrived(total),
            "{name} got every datagram once, intact and in order"
        );
        deltas.push((
            name,
            counter(a, "superFramesSent") - before.0,
            counter(a, "superFramesCut") - before.1,
            counter(to, "superFramesReceived") - before.2,
        ));
    }
    eprintln!("(member, a's super-frames sent, a's cut, member's received): {deltas:?}");
    let [
        (_, sent_b, cut_b, got_b),
        (_, sent_c, _, got_c),
        (_, _, cut_d, got_d),
    ] = deltas[..]
    else {
        panic!("three members");
    };
    // b and c announced UDP segmentation: the super-frames went whole (c's
    // TAP takes no offloads, so c cut them itself on the way in).
    assert!(sent_b > 0 && got_b > 0, "whole to b");
    assert_eq!(cut_b, 0, "nothing cut for b");
    assert!(sent_c > 0 && got_c > 0, "whole to c");
    // d takes no OFFLOAD_FRAME: a cut them and d saw only ordinary frames.
    assert!(cut_d > 0, "a cut for d");
    assert_eq!(got_d, 0, "d got no super-frame");
}

#[test]
fn small_datagrams_of_a_flow_join_on_both_sides_and_arrive_as_sent() {
    const BURSTS: usize = 100;
    const PER_BURST: usize = 40;
    const SIZE: usize = 200;
    let lab = Lab::new();
    let [root_host, ctl_host, ha, hb, hc, hd] =
        ["root", "ctl", "a", "b", "c", "d"].map(|n| lab.host(n));
    let (started, nwid, ips) = members_with_and_without_offloads(
        &lab,
        [&root_host, &ctl_host, &ha, &hb, &hc, &hd],
        "join",
    );
    let members = &started.members;
    let a = &members[0];
    let total = BURSTS * PER_BURST;

    // a sends 4,000 datagrams of 200 bytes, in bursts of 40, to b (whose
    // TAP takes USO), to c (whose TAP takes no offloads) and to d (which
    // takes no OFFLOAD_FRAME): each must arrive once, intact and in order.
    let mut joined = Vec::new();
    for (i, (host, name)) in [(&hb, "b"), (&hc, "c"), (&hd, "d")].into_iter().enumerate() {
        let ip = &ips[i + 1];
        let to = &members[i + 1];
        let port = 6100 + i as u16;
        let names = [
            "udpJoinedReads",
            "udpDatagramsJoinedRead",
            "superFramesCut",
            "udpJoinedWrites",
            "udpDatagramsJoined",
        ];
        let before = names.map(|n| (counter(a, n), counter(to, n)));
        let out = UdpRun {
            from: &ha,
            to: host,
            ip,
            port,
            sender: UDP_BURST_SENDER,
            sender_args: &[BURSTS, PER_BURST, SIZE].map(|n| n.to_string()),
            count: total,
            size: SIZE,
        }
        .run(&lab);
        assert_eq!(
            out,
            all_arrived(total),
            "{name} got every datagram once, intact and in order"
        );
        let [reads, read_datagrams, cut, writes, written_datagrams] = std::array::from_fn(|k| {
            let (a0, to0) = before[k];
            // a's own counters for what it read and cut; the member's for
            // what it wrote.
            if k < 3 {
                counter(a, names[k]) - a0
            } else {
                counter(to, names[k]) - to0
            }
        });
        joined.push((name, reads, read_datagrams, cut, writes, written_datagrams));
    }
    eprintln!(
        "(member, a's joined reads, their datagrams, a's cut super-frames, \
         member's joined writes, their datagrams): {joined:?}"
    );
    let [
        (_, reads_b, datagrams_b, cut_b, _, _),
        (_, reads_c, _, cut_c, writes_c, _),
        (_, reads_d, _, cut_d, writes_d, datagrams_d),
    ] = joined[..]
    else {
        panic!("three members");
    };
    // a joined what it read from its TAP and sent the runs whole to b and c.
    for (name, reads, cut) in [("b", reads_b, cut_b), ("c", reads_c, cut_c)] {
        assert!(reads > 0, "a joined datagrams for {name}");
        assert_eq!(cut, 0, "nothing cut for {name}");
    }
    assert!(
        datagrams_b >= 2 * reads_b && datagrams_b <= total as u64,
        "each joined read carried 2 or more of the datagrams sent"
    );
    // c's TAP takes no USO: it cut the runs itself and joined nothing.
    assert_eq!(writes_c, 0, "c joins nothing");
    // d takes no OFFLOAD_FRAME: a cut its runs, and d joined the datagrams
    // again on the way into its TAP.
    assert!(reads_d > 0 && cut_d > 0, "a joined, then cut for d");
    assert!(
        writes_d > 0 && datagrams_d >= 2 * writes_d,
        "d joined datagrams into its TAP writes"
    );

    // The same over IPv6, to b's link-local address: a joins and sends the
    // runs whole, b writes them as IPv6 USO super-frames.
    let b = &members[1];
    let device = b.network_line(&nwid)[7].clone();
    let ll_b = link_local(&lab, &hb, &device);
    assert!(
        ll_b.starts_with("fe80"),
        "b has a link-local address: {ll_b:?}"
    );
    let reads_before = counter(a, "udpJoinedReads");
    let received_before = counter(b, "superFramesReceived");
    let out = UdpRun {
        from: &ha,
        to: &hb,
        ip: &format!("{ll_b}%{device}"),
        port: 6110,
        sender: UDP_BURST_SENDER,
        sender_args: &[BURSTS, PER_BURST, SIZE].map(|n| n.to_string()),
        count: total,
        size: SIZE,
    }
    .run(&lab);
    assert_eq!(
        out,
        all_arrived(total),
        "b got every IPv6 datagram once, intact and in order"
    );
    assert!(
        counter(a, "udpJoinedReads") > reads_before,
        "a joined IPv6 datagrams"
    );
    assert!(
        counter(b, "superFramesReceived") > received_before,
        "b took them whole"
    );
}
