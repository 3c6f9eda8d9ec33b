//! Flow rules end to end: a network whose rules drop TCP to port 22, written
//! in ZeroTier's rules language (`drop ipprotocol tcp and dport 22; accept;`)
//! and set with `vnet-cli network rules`; later replaced by accept-all
//! posted as ZeroTier's JSON to the API, as a UI does. HTTP on 8080 goes through,
//! port 22 does not, the sender counts the drop by rule; the rules changed
//! to accept-all, port 22 opens without a rejoin. (A sender that ignores
//! the rules is stopped by the receiver's own check: proto's switch tests,
//! `a_sender_that_ignores_the_rules_is_stopped_by_the_receiver`.)

use std::time::Duration;

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, PORT, Started, network_of, start_root_controller_members};
use vnet_tests::netns::{Lab, Node, wait_until};
use vnet_tests::udp_check::{UDP_BURST_SENDER, UdpRun, all_arrived};

/// Posts `body` to the controller's API path (as a UI would, with ZeroTier's header).
fn post(lab: &Lab, ctl: &Daemon, host: &Node, path: &str, body: &Value) -> (u16, Value) {
    let token = std::fs::read_to_string(ctl.home.join("authtoken.secret")).expect("token");
    let auth = format!("X-ZT1-Auth: {}", token.trim());
    let url = format!("http://127.0.0.1:{PORT}{path}");
    let text = body.to_string();
    let run = lab.exec(
        host,
        "curl",
        &[
            "-sS",
            "-H",
            &auth,
            "--data-binary",
            &text,
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    let (body, code) = run.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Whether `url` answers an HTTP request from `from` within 3 s.
fn reachable(lab: &Lab, from: &Node, url: &str) -> bool {
    lab.exec(from, "curl", &["-s", "-o", "/dev/null", "-m", "3", url])
        .ok
}

#[test]
fn rules_drop_tcp_22_counted_by_rule_and_change_live() {
    let lab = Lab::new();
    let [root_host, ctl_host, m1_host, m2_host] = ["root", "ctl", "m1", "m2"].map(|n| lab.host(n));
    let Started {
        root: _root,
        ctl,
        members,
    } = start_root_controller_members(&lab, &root_host, &ctl_host, &[&m1_host, &m2_host]);
    let [m1, m2] = [&members[0], &members[1]];
    let (nwid, ips) = network_of(&ctl, &[m1, m2], "rules");
    let m2_ip = &ips[1];
    let net = format!("/controller/network/{nwid}");
    let no_ssh = json!([
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6, "not": false, "or": false},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22, "not": false, "or": false},
        {"type": "ACTION_DROP", "not": false, "or": false},
        {"type": "ACTION_ACCEPT", "not": false, "or": false}
    ]);
    // Written in ZeroTier's rules language, compiled by vnet-cli; a mistake
    // is refused with where it is and what was expected.
    let file = lab.dir().join("no-ssh.ztrules");
    let bad = lab.dir().join("bad.ztrules");
    std::fs::write(&bad, "# typo\ndrop ipprotocol tcp dport 99999;\naccept;\n").expect("write");
    let run = ctl.cli(&["network", "rules", &nwid, bad.to_str().expect("UTF-8")]);
    assert!(
        !run.ok
            && run
                .stderr
                .contains("bad.ztrules: line 2, column 27: expected a port"),
        "{run:?}"
    );
    std::fs::write(
        &file,
        "# no SSH between members\ndrop ipprotocol tcp and dport 22;\naccept;\n",
    )
    .expect("write");
    let run = ctl.cli(&["network", "rules", &nwid, file.to_str().expect("UTF-8")]);
    assert!(run.ok && run.stdout.contains("OK 4 rules"), "{run:?}");
    let shown = ctl.json(&["network", "show", &nwid]);
    assert_eq!(shown["rules"], no_ssh);
    assert!(
        shown["rulesSource"]
            .as_str()
            .unwrap_or("")
            .contains("dport 22"),
        "{shown}"
    );

    // m2 serves HTTP on 22 and on 8080.
    // (Kept: a dropped Proc ends its process.)
    let _servers: Vec<_> = ["22", "8080"]
        .iter()
        .map(|port| {
            let args = ["-m", "http.server", port, "--bind", m2_ip.as_str()];
            lab.spawn(&m2_host, "python3", &args, &[])
        })
        .collect();
    let web = format!("http://{m2_ip}:8080/");
    let ssh = format!("http://{m2_ip}:22/");
    assert!(
        wait_until(Duration::from_secs(15), || reachable(&lab, &m1_host, &web)),
        "8080 passes the rules: {:?} {}",
        lab.exec(&m1_host, "curl", &["-sS", "-m", "3", &web]),
        m1.json(&["listnetworks"])
    );
    // The config with the rules is in once a drop is counted; until then
    // port 22 may still answer.
    let dropped = |d: &Daemon| {
        let v = d.json(&["listnetworks"]);
        v.as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == nwid.as_str()))
            .map(|n| n["counters"]["drops"]["flowRule"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || {
            !reachable(&lab, &m1_host, &ssh) && dropped(m1) > 0
        }),
        "port 22 is dropped by m1's own rules"
    );
    assert!(!reachable(&lab, &m1_host, &ssh));
    assert!(reachable(&lab, &m1_host, &web), "8080 still passes");
    let nets = m1.json(&["listnetworks"]);
    let by_rule = nets
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == nwid.as_str()))
        .map(|n| n["counters"]["droppedByRule"].clone())
        .unwrap_or_default();
    assert!(
        by_rule["2"].as_u64().unwrap_or(0) > 0,
        "counted by rule 2: {by_rule}"
    );

    // Accept-all again: port 22 opens, no rejoin needed.
    let (code, answer) = post(
        &lab,
        &ctl,
        &ctl_host,
        &net,
        &json!({"rules": [{"type": "ACTION_ACCEPT"}]}),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        wait_until(Duration::from_secs(15), || reachable(&lab, &m1_host, &ssh)),
        "port 22 opens once the rules allow it"
    );
}

/// The network's switch counters of `d` for `nwid` (`listnetworks`).
fn switch_counters(d: &Daemon, nwid: &str) -> Value {
    d.json(&["listnetworks"])
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == nwid))
        .map(|n| n["counters"].clone())
        .unwrap_or_default()
}

#[test]
fn a_tee_rule_sends_copies_to_the_observer() {
    let lab = Lab::new();
    let [root_host, ctl_host, m1_host, m2_host, obs_host] =
        ["root", "ctl", "m1", "m2", "obs"].map(|n| lab.host(n));
    let Started {
        root: _root,
        ctl,
        members,
    } = start_root_controller_members(
        &lab,
        &root_host,
        &ctl_host,
        &[&m1_host, &m2_host, &obs_host],
    );
    let [m1, _, obs] = [&members[0], &members[1], &members[2]];
    let (nwid, ips) = network_of(&ctl, &members.iter().collect::<Vec<_>>(), "tee");
    // tee <length> <member> <matches>: every ICMP frame, whole, to the observer
    // (`icmp` is a keyword: the protocol is `icmp4`, as in ZeroTier).
    let file = lab.dir().join("tee.ztrules");
    let source = format!("tee 0 {} ipprotocol icmp4;\naccept;\n", obs.address());
    std::fs::write(&file, source).expect("write");
    let run = ctl.cli(&["network", "rules", &nwid, file.to_str().expect("UTF-8")]);
    assert!(run.ok, "{run:?}");
    let delivered = |d: &Daemon| switch_counters(d, &nwid)["delivered"].as_u64().unwrap_or(0);
    // The copies start once m1 holds the rules: wait for its first copy.
    let first = wait_until(Duration::from_secs(15), || {
        lab.exec(&m1_host, "ping", &["-c", "1", "-W", "1", &ips[1]]);
        switch_counters(m1, &nwid)["copiesSent"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    assert!(first, "m1 sends copies: {}", switch_counters(m1, &nwid));
    let before = delivered(obs);
    let run = lab.exec(&m1_host, "ping", &["-c", "5", "-i", "0.2", &ips[1]]);
    assert!(run.ok, "the ping itself goes through: {run:?}");
    // 5 requests copied by m1 and 5 replies copied by m2.
    assert!(
        wait_until(Duration::from_secs(5), || delivered(obs) >= before + 10),
        "the observer got the copies: {} then {}",
        before,
        delivered(obs)
    );
    // TCP is not copied.
    let copies = switch_counters(m1, &nwid)["copiesSent"]
        .as_u64()
        .unwrap_or(0);
    let web = format!("http://{}:9/", ips[1]);
    lab.exec(&m1_host, "curl", &["-s", "-m", "1", &web]);
    assert_eq!(
        switch_counters(m1, &nwid)["copiesSent"]
            .as_u64()
            .unwrap_or(0),
        copies
    );

    // WATCH: each frame is copied by both members, the receiver too, so a
    // sender that skipped its rules could not hide it from the observer.
    let source = format!("watch 0 {} ipprotocol icmp4;\naccept;\n", obs.address());
    std::fs::write(&file, source).expect("write");
    let run = ctl.cli(&["network", "rules", &nwid, file.to_str().expect("UTF-8")]);
    assert!(run.ok, "{run:?}");
    let copies_of = |d: &Daemon| {
        switch_counters(d, &nwid)["copiesSent"]
            .as_u64()
            .unwrap_or(0)
    };
    let m2 = &members[1];
    // In on both once one ping makes each copy two frames (under TEE, one).
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (c1, c2) = (copies_of(m1), copies_of(m2));
            lab.exec(&m1_host, "ping", &["-c", "1", "-W", "1", &ips[1]]);
            wait_until(Duration::from_millis(500), || {
                copies_of(m1) >= c1 + 2 && copies_of(m2) >= c2 + 2
            })
        }),
        "both sides copy: m1 {} m2 {}",
        switch_counters(m1, &nwid),
        switch_counters(m2, &nwid)
    );
    let (m1_before, m2_before, obs_before) = (copies_of(m1), copies_of(m2), delivered(obs));
    let run = lab.exec(&m1_host, "ping", &["-c", "5", "-i", "0.2", &ips[1]]);
    assert!(run.ok, "{run:?}");
    // 5 requests and 5 replies, each copied by its sender and its receiver.
    assert!(
        wait_until(Duration::from_secs(5), || delivered(obs) >= obs_before + 20),
        "the observer got both sides' copies: {} then {}; obs {} m1 {} m2 {}",
        obs_before,
        delivered(obs),
        switch_counters(obs, &nwid),
        switch_counters(m1, &nwid),
        switch_counters(m2, &nwid)
    );
    assert_eq!(
        (copies_of(m1) - m1_before, copies_of(m2) - m2_before),
        (10, 10)
    );
}

/// The flow rules' counters of `d` for `nwid`: drops by rule, in all.
fn dropped_by_rules(d: &Daemon, nwid: &str) -> u64 {
    switch_counters(d, nwid)["drops"]["flowRule"]
        .as_u64()
        .unwrap_or(0)
}

/// ZeroTier's two classic uses of tags and capabilities in one network:
/// members of different departments (a tag) never talk, and a new SSH
/// connection is let through only when its sender holds the `superuser`
/// capability. Both are granted by the controller (posted as a UI does) and
/// travel in the members' signed certificates; the receiver checks them.
#[test]
fn departments_by_tag_and_ssh_only_for_the_superuser_capability() {
    let lab = Lab::new();
    let [root_host, ctl_host] = ["root", "ctl"].map(|n| lab.host(n));
    let hosts = ["admin", "user", "server", "eng"].map(|n| lab.host(n));
    let Started {
        root: _root,
        ctl,
        members,
    } = start_root_controller_members(&lab, &root_host, &ctl_host, &hosts.each_ref());
    let refs: Vec<&Daemon> = members.iter().collect();
    let (nwid, ips) = network_of(&ctl, &refs, "teams");
    let [admin, user, server, eng] = [&members[0], &members[1], &members[2], &members[3]];
    let [admin_host, user_host, _, eng_host] = [&hosts[0], &hosts[1], &hosts[2], &hosts[3]];
    let server_ip = &ips[2];

    let file = lab.dir().join("teams.ztrules");
    std::fs::write(
        &file,
        "# Departments by tag, SSH for superusers (ZeroTier's examples)\n\
         tag department\n  id 1000\n  enum 100 sales\n  enum 200 engineering\n;\n\
         cap superuser\n  id 2000\n  accept ipprotocol tcp and dport 22;\n;\n\
         # Members of different departments never talk\n\
         drop not tdiff department 0;\n\
         # SSH: only a capability accepts it\n\
         break ipprotocol tcp and dport 22;\n\
         accept;\n",
    )
    .expect("write");
    let run = ctl.cli(&["network", "rules", &nwid, file.to_str().expect("UTF-8")]);
    assert!(
        run.ok && run.stdout.contains("1 capabilities, 1 tags"),
        "{run:?}"
    );
    let shown = ctl.json(&["network", "show", &nwid]);
    assert_eq!(shown["capabilities"][0]["id"], 2000, "{shown}");
    assert_eq!(shown["tags"][0]["id"], 1000, "{shown}");
    // Grants, as ZeroUI and ztnet post them.
    for (member, body) in [
        (
            admin,
            json!({"tags": [[1000, 100]], "capabilities": [2000]}),
        ),
        (user, json!({"tags": [[1000, 100]]})),
        (server, json!({"tags": [[1000, 100]]})),
        (eng, json!({"tags": [[1000, 200]]})),
    ] {
        let path = format!("/controller/network/{nwid}/member/{}", member.address());
        let (code, answer) = post(&lab, &ctl, &ctl_host, &path, &body);
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["tags"], body["tags"], "{answer}");
    }

    let _servers: Vec<_> = ["22", "8080"]
        .iter()
        .map(|port| {
            let args = ["-m", "http.server", port, "--bind", server_ip.as_str()];
            lab.spawn(&hosts[2], "python3", &args, &[])
        })
        .collect();
    let web = format!("http://{server_ip}:8080/");
    let ssh = format!("http://{server_ip}:22/");
    // A member sees what its certificate grants it (`listnetworks -j`).
    let granted = |d: &Daemon| {
        d.json(&["listnetworks"])
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == nwid.as_str()))
            .map(|n| (n["tags"].clone(), n["capabilities"].clone()))
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(15), || granted(admin)
            == (json!([[1000, 100]]), json!([2000]))),
        "{:?}",
        granted(admin)
    );
    // The superuser reaches port 22 once the configs with grants are in.
    assert!(
        wait_until(Duration::from_secs(20), || reachable(
            &lab, admin_host, &ssh
        )),
        "the superuser reaches SSH: {} / {}",
        switch_counters(admin, &nwid),
        switch_counters(server, &nwid)
    );
    assert!(reachable(&lab, user_host, &web), "a colleague reaches 8080");
    assert!(
        wait_until(Duration::from_secs(10), || !reachable(
            &lab, user_host, &ssh
        )),
        "SSH without the capability is dropped"
    );
    assert!(
        dropped_by_rules(user, &nwid) > 0,
        "counted by the user's rules"
    );
    // Another department reaches nothing of sales, not even by ARP.
    let before = dropped_by_rules(server, &nwid) + dropped_by_rules(eng, &nwid);
    assert!(
        wait_until(Duration::from_secs(10), || !reachable(&lab, eng_host, &web)),
        "engineering is kept out of sales"
    );
    let ping = lab.exec(eng_host, "ping", &["-c", "2", "-W", "1", server_ip]);
    assert!(!ping.ok, "{ping:?}");
    assert!(
        dropped_by_rules(server, &nwid) + dropped_by_rules(eng, &nwid) > before,
        "the drops are counted by rule"
    );

    // The capability taken away: the next certificate lacks it, and SSH
    // closes for the admin too; moving the engineer to sales opens 8080
    // (both with vnet-cli this time).
    for (member, setting) in [(admin, "capabilities="), (eng, "tags=1000:100")] {
        let run = ctl.cli(&["member", "set", &nwid, &member.address(), setting]);
        assert!(run.ok, "{run:?}");
    }
    assert!(
        wait_until(Duration::from_secs(20), || !reachable(
            &lab, admin_host, &ssh
        )),
        "SSH closes once the capability is gone"
    );
    assert!(
        wait_until(Duration::from_secs(20), || reachable(&lab, eng_host, &web)),
        "the engineer moved to sales reaches 8080"
    );
}

#[test]
fn a_size_rule_judges_joined_datagrams_one_by_one() {
    let lab = Lab::new();
    let [root_host, ctl_host, m1_host, m2_host] = ["root", "ctl", "m1", "m2"].map(|n| lab.host(n));
    let Started {
        root: _root,
        ctl,
        members,
    } = start_root_controller_members(&lab, &root_host, &ctl_host, &[&m1_host, &m2_host]);
    let [m1, m2] = [&members[0], &members[1]];
    let (nwid, ips) = network_of(&ctl, &[m1, m2], "sizes");
    // Frames above 1,000 bytes (after the Ethernet header) are dropped.
    let file = lab.dir().join("small-only.ztrules");
    std::fs::write(&file, "drop framesize 1001-65535;\naccept;\n").expect("write");
    let run = ctl.cli(&["network", "rules", &nwid, file.to_str().expect("UTF-8")]);
    assert!(run.ok, "{run:?}");
    // Both members hold the rules once a big ping is dropped by rule.
    assert!(
        wait_until(Duration::from_secs(15), || {
            lab.exec(
                &m1_host,
                "ping",
                &["-c", "1", "-W", "1", "-s", "1200", &ips[1]],
            );
            dropped_by_rules(m1, &nwid) > 0
        }),
        "m1 drops big frames by rule: {}",
        switch_counters(m1, &nwid)
    );
    let joined = |d: &Daemon| {
        d.json(&["info"])["counters"]["udpDatagramsJoinedRead"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = joined(m1);
    // 4,000 datagrams of 200 bytes in bursts of 40: m1 joins them into
    // super-frames of over 1,000 bytes, yet each datagram is small and
    // passes.
    let (bursts, per_burst, size) = (100, 40, 200);
    let out = UdpRun {
        from: &m1_host,
        to: &m2_host,
        ip: &ips[1],
        port: 6200,
        sender: UDP_BURST_SENDER,
        sender_args: &[bursts, per_burst, size].map(|n: usize| n.to_string()),
        count: bursts * per_burst,
        size,
    }
    .run(&lab);
    assert_eq!(
        out,
        all_arrived(bursts * per_burst),
        "every small datagram passed the rule"
    );
    assert!(joined(m1) > before, "m1 joined datagrams on the way");
    // A datagram above the limit is still dropped, on its own: 10 more
    // drops by rule on m1.
    let drops = dropped_by_rules(m1, &nwid);
    let sent = lab.exec(
        &m1_host,
        vnet_tests::python3(),
        &["-c", UDP_BURST_SENDER, &ips[1], "6201", "2", "5", "1200"],
    );
    assert!(sent.ok, "{sent:?}");
    assert!(
        wait_until(Duration::from_secs(5), || dropped_by_rules(m1, &nwid)
            >= drops + 10),
        "big datagrams dropped by rule: {} then {}",
        drops,
        dropped_by_rules(m1, &nwid)
    );
    // A super-frame straddling the limit: sent with UDP_SEGMENT at 1,100
    // bytes, each write is three datagrams above the limit and a last one
    // of 300 below it, one USO super-frame on m1's TAP. Judged whole it
    // passed or dropped all four; cut, only each last one passes (the
    // listener counts a 1,100-byte one as bad).
    let split = |d: &Daemon| {
        d.json(&["info"])["counters"]["superFramesSplitByRules"]
            .as_u64()
            .unwrap_or(0)
    };
    let split_before = split(m1);
    let writes = 50;
    let out = UdpRun {
        from: &m1_host,
        to: &m2_host,
        ip: &ips[1],
        port: 6202,
        sender: STRADDLING_SENDER,
        sender_args: &[writes.to_string()],
        count: writes,
        size: 300,
    }
    .run(&lab);
    assert_eq!(
        out,
        all_arrived(writes),
        "only each write's last datagram passed"
    );
    assert!(
        split(m1) >= split_before + writes as u64,
        "m1 cut its super-frames for the rules: {} then {}",
        split_before,
        split(m1)
    );
}

/// Sends `argv[3]` writes with `UDP_SEGMENT` at 1,100 bytes, 5 ms apart:
/// three datagrams of zeros, then one of 300 bytes that the listener
/// (`udp_check::UDP_COUNTER`, size 300) checks: argv = ip, port, writes.
const STRADDLING_SENDER: &str = r#"
import socket, sys, time
ip, port, writes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1100)  # SOL_UDP, UDP_SEGMENT
s.connect((ip, port))
for i in range(writes):
    last = i.to_bytes(4, "big") + bytes((i + j) % 251 for j in range(296))
    s.send(bytes(3 * 1100) + last)
    time.sleep(0.005)
"#;
