//! vnet-controller on PostgreSQL (Debian's server, started by the test in
//! the lab's directory): state copied from the default SQLite store into
//! the database and from there into JSON files (`copy-store`), malformed rows and a newer schema refused by name,
//! and high availability: two controllers with one identity, one active,
//! the standby taking over when the active one is killed with `kill -9`
//! under API write load, losing no acknowledged write, members staying OK.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vnet_tests::daemon::{Daemon, make_planet, network_of};
use vnet_tests::netns::{Lab, Node, wait_until};
use vnet_tests::pg_cluster::PgCluster;
use vnet_tests::{Run, binary};

/// Points a home's controller at the database.
fn use_postgres(home: &Path, pg: &PgCluster) {
    fs::create_dir_all(home).expect("home");
    let conf = serde_json::json!({
        "settings": {"controllerDbPath": format!("postgres:{}", pg.conninfo()), "portMappingEnabled": false}
    });
    fs::write(home.join("local.conf"), conf.to_string()).expect("local.conf");
}

/// Whether `from` gets a ping answer from `ip` within 10 s (the first
/// packets to a member wait for its session and address resolution).
fn reaches(lab: &Lab, from: &Node, ip: &str) -> bool {
    let ip = ip.parse().expect("IPv4");
    wait_until(Duration::from_secs(10), || lab.ping(from, ip))
}

/// Whether the daemon's API answers.
fn api_up(d: &Daemon) -> bool {
    d.cli(&["info"]).ok
}

/// `vnet-controller copy-store` in `host`.
fn copy_store(lab: &Lab, host: &Node, from: &str, to: &str) -> Run {
    lab.exec(
        host,
        binary("vnet-controller"),
        &["copy-store", "--from", from, "--to", to],
    )
}

/// The members of `nwid` the controller's API lists.
fn listed_members(ctl: &Daemon, nwid: &str) -> BTreeSet<String> {
    let run = ctl.cli(&["-j", "member", "list", nwid]);
    assert!(run.ok, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    match v {
        Value::Object(map) => map.keys().cloned().collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(|m| m["address"].as_str().map(String::from))
            .collect(),
        other => panic!("member list: {other}"),
    }
}

#[test]
fn state_moves_between_sqlite_postgres_and_files_and_bad_rows_are_refused_by_name() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let pg = PgCluster::start(&lab);
    make_planet(&lab, &root_host, &[lab.home(&ctl_host)]);
    let mut ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    assert!(wait_until(Duration::from_secs(15), || api_up(&ctl)));
    let run = ctl.cli(&[
        "network",
        "create",
        "--name",
        "moved",
        "--pool",
        "10.1.0.10-10.1.0.99",
    ]);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("id")
        .to_string();
    for addr in ["a1b2c3d4e5", "0102030405"] {
        assert!(ctl.cli(&["member", "authorize", &nwid, addr]).ok);
    }
    let before = listed_members(&ctl, &nwid);
    let network_before = ctl.json(&["network", "show", &nwid]);
    ctl.proc().stop();
    ctl.forget_proc();

    // The default SQLite store -> PostgreSQL; a second copy into the now
    // full database is refused.
    let sqlite = format!("sqlite:{}", ctl.home.join("controller.db").display());
    let files = sqlite.as_str();
    let db = format!("postgres:{}", pg.conninfo());
    let run = copy_store(&lab, &ctl_host, files, &db);
    assert!(run.ok, "{run:?}");
    assert!(
        run.stdout.contains("copied 1 network(s) and 2 member(s)"),
        "{run:?}"
    );
    let again = copy_store(&lab, &ctl_host, files, &db);
    assert!(!again.ok);
    assert!(
        again.stderr.contains("already holds 1 network(s)"),
        "{again:?}"
    );
    assert_eq!(pg.psql("SELECT max(version) FROM vnet_schema"), "1");

    // The controller runs on the database and serves the same state.
    use_postgres(&ctl.home, &pg);
    ctl.restart();
    assert!(
        wait_until(Duration::from_secs(15), || api_up(&ctl)),
        "{}",
        ctl.proc().stderr_text()
    );
    assert_eq!(listed_members(&ctl, &nwid), before);
    assert_eq!(ctl.json(&["network", "show", &nwid]), network_before);
    // A write lands in the database.
    assert!(ctl.cli(&["member", "authorize", &nwid, "1122334455"]).ok);
    assert_eq!(
        pg.psql(&format!(
            "SELECT doc->>'authorized' FROM vnet_member WHERE network_id = '{nwid}' AND address = '1122334455'"
        )),
        "true"
    );
    ctl.proc().stop();
    ctl.forget_proc();

    // PostgreSQL -> files: the same members, the same network.
    let back = lab.dir().join("back.d");
    let run = copy_store(&lab, &ctl_host, &db, back.to_str().unwrap());
    assert!(run.ok, "{run:?}");
    assert!(
        run.stdout.contains("copied 1 network(s) and 3 member(s)"),
        "{run:?}"
    );
    let back_network: Value = serde_json::from_str(
        &fs::read_to_string(back.join(format!("network/{nwid}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(back_network["name"], "moved");
    assert_eq!(
        fs::read_dir(back.join(format!("network/{nwid}/member")))
            .unwrap()
            .count(),
        3
    );

    // A malformed row is refused naming it; the controller does not start.
    pg.psql(&format!(
        "UPDATE vnet_member SET doc = '{{\"authorized\": null}}' WHERE network_id = '{nwid}' AND address = '0102030405'"
    ));
    ctl.restart();
    let status = ctl.proc().wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| !s.success()),
        "it must refuse to start"
    );
    let log = ctl.proc().stderr_text();
    assert!(
        log.contains(&format!("vnet_member {nwid}/0102030405: authorized")),
        "{log}"
    );
    ctl.forget_proc();
    pg.psql(&format!(
        "UPDATE vnet_member SET doc = '{{\"authorized\": true}}' WHERE network_id = '{nwid}' AND address = '0102030405'"
    ));

    // A schema newer than this build is refused, not misread.
    pg.psql("INSERT INTO vnet_schema (version) VALUES (99)");
    ctl.restart();
    let status = ctl.proc().wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| !s.success()));
    let log = ctl.proc().stderr_text();
    assert!(log.contains("schema is version 99, newer than"), "{log}");
    ctl.forget_proc();
}

#[test]
fn the_standby_takes_over_within_10_s_of_kill_9_under_write_load_losing_no_acknowledged_write() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let a_host = lab.host("ctla");
    let b_host = lab.host("ctlb");
    let m_hosts = [lab.host("m1"), lab.host("m2")];
    let pg = PgCluster::start(&lab);
    make_planet(
        &lab,
        &root_host,
        &[
            lab.home(&a_host),
            lab.home(&b_host),
            lab.home(&m_hosts[0]),
            lab.home(&m_hosts[1]),
        ],
    );
    use_postgres(&lab.home(&a_host), &pg);
    use_postgres(&lab.home(&b_host), &pg);
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let mut a = Daemon::start(&lab, &a_host, "vnet-controller");
    a.wait_online();
    // The standby has the same identity.
    for file in ["identity.secret", "identity.public"] {
        fs::copy(a.home.join(file), lab.home(&b_host).join(file)).expect("copy identity");
    }
    let mut b = Daemon::start(&lab, &b_host, "vnet-controller");
    assert_eq!(b.address(), a.address());
    assert!(
        wait_until(Duration::from_secs(15), || b
            .proc()
            .stderr_text()
            .contains("standby")),
        "{}",
        b.proc().stderr_text()
    );
    assert!(!api_up(&b), "a standby is offline: no API, no node");
    let members: Vec<Daemon> = m_hosts
        .iter()
        .map(|h| Daemon::start(&lab, h, "vnet-node"))
        .collect();
    for m in &members {
        m.wait_online();
    }
    let (nwid, ips) = network_of(&a, &[&members[0], &members[1]], "ha");
    assert!(reaches(&lab, &m_hosts[0], &ips[1]), "m0 -> {}", ips[1]);

    // API writes, one after another, to whichever controller answers.
    let stop = AtomicBool::new(false);
    let acked_by_a = AtomicUsize::new(0);
    let acked_by_b = AtomicUsize::new(0);
    let acked = Mutex::new(Vec::<String>::new());
    let cli = binary("vnet-cli");
    let (failover, refused) = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let addr = format!("1{i:09x}");
                for (d, count) in [(&a, &acked_by_a), (&b, &acked_by_b)] {
                    let home = d.home.to_str().unwrap();
                    let args = ["-D", home, "member", "authorize", &nwid, &addr];
                    if lab.exec(d.host, &cli, &args).ok {
                        count.fetch_add(1, Ordering::Relaxed);
                        acked.lock().unwrap().push(addr.clone());
                        break;
                    }
                }
            }
        });
        assert!(
            wait_until(Duration::from_secs(30), || acked_by_a
                .load(Ordering::Relaxed)
                >= 20),
            "writes to the active controller"
        );
        a.proc().kill();
        let killed = Instant::now();
        let online = wait_until(Duration::from_secs(20), || {
            b.cli(&["info"]).stdout.contains("ONLINE")
        });
        let failover = killed.elapsed();
        assert!(
            online,
            "the standby never came online:\n{}",
            b.proc().stderr_text()
        );
        let b_writes = wait_until(Duration::from_secs(20), || {
            acked_by_b.load(Ordering::Relaxed) >= 10
        });
        stop.store(true, Ordering::Relaxed);
        (failover, !b_writes)
    });
    assert!(!refused, "the new active controller takes writes");
    eprintln!(
        "failover: standby ONLINE {failover:?} after kill -9; {} writes acknowledged by the first, {} by the second",
        acked_by_a.load(Ordering::Relaxed),
        acked_by_b.load(Ordering::Relaxed)
    );
    assert!(
        failover <= Duration::from_secs(10),
        "failover took {failover:?}"
    );

    // No acknowledged write is lost: the new active lists each, and so does the database.
    let acked = acked.into_inner().unwrap();
    let listed = listed_members(&b, &nwid);
    let stored: BTreeSet<String> = pg
        .psql(&format!(
            "SELECT address FROM vnet_member WHERE network_id = '{nwid}' AND doc->>'authorized' = 'true'"
        ))
        .lines()
        .map(String::from)
        .collect();
    for addr in &acked {
        assert!(listed.contains(addr), "acknowledged {addr} is not listed");
        assert!(stored.contains(addr), "acknowledged {addr} is not stored");
    }

    // Members stay OK and keep talking, and the new active's changes reach them.
    for m in &members {
        assert_eq!(m.status(&nwid), "OK");
    }
    assert!(reaches(&lab, &m_hosts[0], &ips[1]), "m0 -> {}", ips[1]);
    assert!(b.cli(&["network", "set", &nwid, "name=ha-b"]).ok);
    assert!(
        wait_until(Duration::from_secs(10), || members[0].network_line(&nwid)
            [3]
            == "ha-b"),
        "{:?}",
        members[0].network_line(&nwid)
    );
    assert!(reaches(&lab, &m_hosts[1], &ips[0]), "m1 -> {}", ips[0]);

    // The first comes back as a standby. The active one fences itself (exit
    // code 3) when its lease session is cut, and the first takes over again.
    a.forget_proc();
    a.restart();
    assert!(
        wait_until(Duration::from_secs(15), || a
            .proc()
            .stderr_text()
            .contains("standby")),
        "{}",
        a.proc().stderr_text()
    );
    assert!(!api_up(&a));
    let cut = pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    );
    assert_eq!(cut, "1", "one lease is held");
    let cut_at = Instant::now();
    let status = b.proc().wait_timeout(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(3),
        "{}",
        b.proc().stderr_text()
    );
    assert!(b.proc().stderr_text().contains("lost the controller lease"));
    b.forget_proc();
    assert!(
        wait_until(Duration::from_secs(10), || a
            .cli(&["info"])
            .stdout
            .contains("ONLINE")),
        "{}",
        a.proc().stderr_text()
    );
    eprintln!(
        "lease cut: the other controller ONLINE {:?} later",
        cut_at.elapsed()
    );
    assert!(listed_members(&a, &nwid).is_superset(&acked.iter().cloned().collect()));
    assert!(a.cli(&["network", "set", &nwid, "name=ha-a"]).ok);
    assert!(
        wait_until(Duration::from_secs(10), || members[1].network_line(&nwid)
            [3]
            == "ha-a"),
        "{:?}",
        members[1].network_line(&nwid)
    );
    assert!(reaches(&lab, &m_hosts[0], &ips[1]), "m0 -> {}", ips[1]);
}
