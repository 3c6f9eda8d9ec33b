//! Join keys (Headscale's pre-auth keys) end to end, in network namespaces:
//! the admin creates a key (`vnet-cli network key create`), a node joins
//! with it (`vnet-cli join <nwid> --key`) and is authorized at first
//! contact; a single-use key used once is refused to the next node with a
//! log line on the controller; a revoked key is refused; a member that
//! joined with an ephemeral key is removed once it has been offline for the
//! controller's `ephemeralMemberTimeoutSeconds`.

use std::fs;
use std::time::Duration;

use vnet_tests::daemon::{Daemon, make_planet};
use vnet_tests::netns::{Lab, wait_until};

/// The ephemeral timeout the controller runs with here (members of a
/// stopped node are gone after this long without a request).
const EPHEMERAL_TIMEOUT_S: u64 = 15;

/// `network key create` and the key it printed (its second line).
fn create_key(ctl: &Daemon, nwid: &str, flags: &[&str]) -> (String, String) {
    let mut args = vec!["network", "key", "create", nwid];
    args.extend_from_slice(flags);
    let run = ctl.cli(&args);
    assert!(run.ok, "{run:?}");
    let mut lines = run.stdout.lines();
    let id = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(5))
        .expect("key id")
        .to_string();
    let key = lines.next().expect("the key").trim().to_string();
    assert!(key.starts_with(&format!("vnk_{id}_")), "{run:?}");
    (id, key)
}

#[test]
fn join_keys_authorize_once_expire_by_revocation_and_ephemeral_members_leave() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let hosts = [lab.host("a"), lab.host("b"), lab.host("c")];
    let mut homes = vec![lab.home(&ctl_host)];
    homes.extend(hosts.iter().map(|h| lab.home(h)));
    make_planet(&lab, &root_host, &homes);
    let conf =
        format!(r#"{{"settings": {{"ephemeralMemberTimeoutSeconds": {EPHEMERAL_TIMEOUT_S}}}}}"#);
    fs::write(lab.home(&ctl_host).join("local.conf"), conf).expect("local.conf");
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let [a, b, mut c] = hosts
        .each_ref()
        .map(|h| Daemon::start(&lab, h, "vnet-node"));
    for d in [&ctl, &a, &b, &c] {
        d.wait_online();
    }
    let run = ctl.cli(&[
        "network",
        "create",
        "--name",
        "keys",
        "--pool",
        "10.147.17.10-10.147.17.50",
        "--route",
        "10.147.17.0/24",
    ]);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("id")
        .to_string();

    // A single-use key authorizes a at first contact: no admin step.
    let (id, key) = create_key(&ctl, &nwid, &[]);
    let run = a.cli(&["join", &nwid, "--key", &key]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(15), || a.status(&nwid) == "OK"),
        "a joins with the key: {:?}",
        a.network_line(&nwid)
    );
    let shown = ctl.json(&["member", "show", &nwid, &a.address()]);
    assert_eq!(shown["authorized"], true, "{shown}");
    let keys = ctl.json(&["network", "key", "list", &nwid]);
    assert_eq!(keys[0]["state"], "used", "{keys}");
    assert_eq!(keys[0]["usedBy"][0], a.address(), "{keys}");
    assert!(
        keys[0].get("hash").is_none(),
        "the list shows no hash: {keys}"
    );

    // Used: b is refused, and the controller says why in its log.
    let run = b.cli(&["join", &nwid, "--key", &key]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(10), || b.status(&nwid)
            == "ACCESS_DENIED"),
        "{:?}",
        b.network_line(&nwid)
    );
    let why = format!(
        "member {} presented join key {id}: already used",
        b.address()
    );
    assert!(
        wait_until(Duration::from_secs(5), || ctl
            .proc()
            .stderr_text()
            .contains(&why)),
        "controller log says {why:?}"
    );
    assert!(
        !ctl.proc().stderr_text().contains(&key[13..]),
        "the secret is never logged"
    );

    // A revoked key is refused too (b tries a fresh key revoked before use).
    let (revoked_id, revoked) = create_key(&ctl, &nwid, &["--reusable", "--expires", "1h"]);
    let run = ctl.cli(&["network", "key", "revoke", &nwid, &revoked_id]);
    assert!(run.ok, "{run:?}");
    let run = b.cli(&["join", &nwid, "--key", &revoked]);
    assert!(run.ok, "{run:?}");
    let why = format!("presented join key {revoked_id}: revoked");
    assert!(
        wait_until(Duration::from_secs(10), || ctl
            .proc()
            .stderr_text()
            .contains(&why)),
        "controller log says {why:?}"
    );
    assert_eq!(b.status(&nwid), "ACCESS_DENIED");

    // Ephemeral: c joins, is marked so, and is removed once offline.
    let (_, ephemeral) = create_key(&ctl, &nwid, &["--ephemeral", "--reusable"]);
    let run = c.cli(&["join", &nwid, "--key", &ephemeral]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(15), || c.status(&nwid) == "OK"),
        "{:?}",
        c.network_line(&nwid)
    );
    let c_addr = c.address();
    let listed = |ctl: &Daemon| ctl.cli(&["member", "list", &nwid]).stdout;
    let shown = ctl.json(&["member", "show", &nwid, &c_addr]);
    assert_eq!(shown["ephemeral"], true, "{shown}");
    // Online, it stays past the timeout: it is told to ask often enough.
    std::thread::sleep(Duration::from_secs(EPHEMERAL_TIMEOUT_S + 2));
    assert_eq!(c.status(&nwid), "OK");
    let shown = ctl.json(&["member", "show", &nwid, &c_addr]);
    assert_eq!(
        shown["authorized"], true,
        "an online ephemeral member stays: {shown}"
    );
    c.proc().kill();
    c.forget_proc();
    assert!(
        wait_until(Duration::from_secs(EPHEMERAL_TIMEOUT_S + 10), || !listed(
            &ctl
        )
        .contains(&c_addr)),
        "the ephemeral member is removed once offline: {}",
        listed(&ctl)
    );
    // The others stay.
    assert!(listed(&ctl).contains(&a.address()));
    let log = ctl.proc().stderr_text();
    assert!(
        log.contains(&format!("ephemeral member {c_addr} removed")),
        "{log}"
    );
}
