//! A restarted root readmits the peers it knew without hashing their
//! identities again (its `verified-identities` file) and within seconds (it
//! greets them at their last paths), end to end in network namespaces; a
//! damaged file is refused naming it, and the root still runs.

use std::fs;
use std::time::{Duration, Instant};

use vnet_tests::daemon::{Daemon, make_planet_with_roots};
use vnet_tests::netns::{Lab, wait_until};

/// A root counter from `vnet-cli info`.
fn counter(root: &Daemon, name: &str) -> u64 {
    root.json(&["info"])["counters"][name].as_u64().unwrap_or(0)
}

/// Whether `root` has heard from every one of `members` (on some path).
fn knows_all(root: &Daemon, members: &[String]) -> bool {
    let peers = root.json(&["listpeers"]);
    let Some(peers) = peers.as_array() else {
        return false;
    };
    members.iter().all(|m| {
        peers.iter().any(|p| {
            p["address"] == m.as_str()
                && p["paths"]
                    .as_array()
                    .is_some_and(|x| x.iter().any(|path| !path["lastReceive"].is_null()))
        })
    })
}

#[test]
fn a_restarted_root_readmits_known_peers_without_hashing_them() {
    let lab = Lab::new();
    let root1 = lab.host("root1");
    let root2 = lab.host("root2");
    let hosts: Vec<_> = (1..=3).map(|i| lab.host(&format!("m{i}"))).collect();
    let homes: Vec<_> = hosts.iter().map(|h| lab.home(h)).collect();
    make_planet_with_roots(&lab, &[&root1, &root2], &homes);
    let mut roots = [
        Daemon::start(&lab, &root1, "vnet-planet"),
        Daemon::start(&lab, &root2, "vnet-planet"),
    ];
    let members: Vec<Daemon> = hosts
        .iter()
        .map(|h| Daemon::start(&lab, h, "vnet-node"))
        .collect();
    for d in roots.iter().chain(&members) {
        d.wait_online();
    }
    let addresses: Vec<String> = members.iter().map(Daemon::address).collect();
    for r in &roots {
        assert!(
            wait_until(Duration::from_secs(15), || knows_all(r, &addresses)),
            "a root does not see every member"
        );
        assert!(counter(r, "identityChecks") >= 3);
    }

    // root1 stops cleanly (it writes what it verified, with each member's
    // last path) and starts again: it greets the members at once, long
    // before their next keepalive (14 s) would have brought them back.
    roots[0].restart();
    let restarted = Instant::now();
    roots[0].wait_online();
    assert!(
        wait_until(Duration::from_secs(5), || knows_all(&roots[0], &addresses)),
        "the restarted root1 does not hear from every member within 5 s"
    );
    eprintln!(
        "root1 heard from every member {:.1} s after its restart",
        restarted.elapsed().as_secs_f64()
    );
    let file = lab.home(&root1).join("verified-identities");
    let text = fs::read_to_string(&file).expect("root1 kept its verified identities");
    for a in &addresses {
        assert!(text.contains(a.as_str()), "{a} missing from {text}");
    }
    // root2 stops, its file is damaged, it starts again.
    roots[1].proc().stop();
    roots[1].forget_proc();
    let file2 = lab.home(&root2).join("verified-identities");
    let mut damaged = fs::read_to_string(&file2).expect("root2 kept its verified identities");
    damaged.push_str("0123456789:0:zz 5\n");
    fs::write(&file2, damaged).expect("damage the file");
    roots[1].restart();

    for r in &roots {
        r.wait_online();
        assert!(
            wait_until(Duration::from_secs(30), || knows_all(r, &addresses)),
            "a restarted root does not get every member back"
        );
    }
    assert_eq!(
        counter(&roots[0], "identityChecks"),
        0,
        "root1 hashed a known identity again"
    );
    assert!(
        counter(&roots[1], "identityChecks") >= 3,
        "root2 started without its refused file, so it checks everyone"
    );
    let log = roots[1].proc().stderr_text();
    assert!(
        log.contains("verified-identities") && log.contains("line"),
        "the refusal names the file and the line: {log}"
    );
    for m in &members {
        m.wait_online();
    }
}
