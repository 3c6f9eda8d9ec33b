//! Config requests from strangers (issue 10, A8/A10): refused requests store
//! nothing, unauthorized requesters are a bounded in-memory list until an
//! admin acts, and request-decided saves happen off the request path.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use vnet_controller::controller::{MAX_QUEUED_SAVES, PUBLIC_JOINS_PER_MINUTE};
use vnet_controller::node_plugin::{lock, spawn_saver};
use vnet_controller::requesters::{MAX_REQUESTERS_PER_NETWORK, MAX_REQUESTERS_TOTAL};
use vnet_controller::{ConfigDenied, Controller, NodeController};
use vnet_node::core::address::Address;
use vnet_node::core::netconf::NetworkController;
use vnet_node::core::network_id::NetworkId;

const NOW: u64 = 1_700_000_000_000;

fn ctl() -> Address {
    "8056c2e21c".parse().unwrap()
}

fn addr(n: u64) -> Address {
    Address::from_u64(0x01_0000_0000 + n).unwrap()
}

/// A deterministic xorshift sequence (the test must not depend on luck).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn private_network(c: &mut Controller) -> NetworkId {
    c.create_network(
        NOW,
        &json!({"name": "lab",
                "ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.200"}]}),
    )
    .unwrap()
    .id
}

#[test]
fn requests_for_random_network_numbers_create_nothing() {
    let home = tempfile::tempdir().unwrap();
    let mut c = Controller::open(ctl(), home.path()).unwrap();
    let nwid = private_network(&mut c);
    let before = tree(home.path());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut asked = 0;
    while asked < 10_000 {
        let number = (rng.next() & 0xff_ffff) as u32;
        let random = NetworkId::new(ctl(), number);
        if random == nwid {
            continue;
        }
        asked += 1;
        let member = addr(rng.next() & 0xffff_ffff);
        assert_eq!(
            c.request_config(NOW, random, member, None),
            Err(ConfigDenied::NotFound)
        );
    }
    assert_eq!(c.save_requested(NOW, usize::MAX), 0);
    assert_eq!(tree(home.path()), before, "nothing on disk");
    assert_eq!(c.network_ids(), vec![nwid], "no network entry in memory");
    assert_eq!(c.members(nwid).unwrap().len(), 0);
    assert_eq!((c.requester_count(), c.queued_saves()), (0, 0));
    assert_eq!(c.sequence(), 2, "no change recorded since the network");
}

#[test]
fn unauthorized_requesters_stay_at_the_cap_in_memory_only() {
    let home = tempfile::tempdir().unwrap();
    let mut c = Controller::open(ctl(), home.path()).unwrap();
    let nwid = private_network(&mut c);
    let before = tree(home.path());
    for i in 0..10_000 {
        assert_eq!(
            c.request_config(NOW + i, nwid, addr(i), None),
            Err(ConfigDenied::AccessDenied)
        );
        assert!(c.requester_count() <= MAX_REQUESTERS_PER_NETWORK);
    }
    assert_eq!(c.requester_count(), MAX_REQUESTERS_PER_NETWORK);
    assert_eq!(
        c.counters().requesters_evicted,
        10_000 - MAX_REQUESTERS_PER_NETWORK as u64
    );
    // The most recent requesters are listed, as unauthorized members.
    let listed = c.members(nwid).unwrap();
    assert_eq!(listed.len(), MAX_REQUESTERS_PER_NETWORK);
    assert!(listed.iter().all(|m| !m.authorized && m.revision == 0));
    assert_eq!(
        listed[0].address,
        addr(10_000 - MAX_REQUESTERS_PER_NETWORK as u64)
    );
    assert_eq!(
        c.member(nwid, addr(9_999)).unwrap().creation_time,
        NOW + 9_999
    );
    assert_eq!(c.member(nwid, addr(0)), None);
    assert_eq!(tree(home.path()), before, "nothing on disk");
    assert_eq!(c.queued_saves(), 0);

    // Over many networks, the total cap holds.
    let mut nets = vec![nwid];
    for _ in 0..(MAX_REQUESTERS_TOTAL / MAX_REQUESTERS_PER_NETWORK + 2) {
        nets.push(private_network(&mut c));
    }
    for (k, n) in nets.iter().enumerate() {
        for i in 0..MAX_REQUESTERS_PER_NETWORK as u64 {
            let _ = c.request_config(NOW, *n, addr(1_000_000 * (k as u64 + 1) + i), None);
        }
    }
    assert_eq!(c.requester_count(), MAX_REQUESTERS_TOTAL);
}

#[test]
fn an_admin_acting_on_a_requester_stores_it_and_a_restart_forgets_the_rest() {
    let home = tempfile::tempdir().unwrap();
    let mut c = Controller::open(ctl(), home.path()).unwrap();
    let nwid = private_network(&mut c);
    for i in 1..=3 {
        assert_eq!(
            c.request_config(NOW + i, nwid, addr(i), None),
            Err(ConfigDenied::AccessDenied)
        );
    }
    let member_file = |a: Address| {
        home.path()
            .join(format!("controller.d/network/{nwid}/member/{a}.json"))
    };
    // Authorizing a listed requester stores it, keeping when it first asked.
    let m = c
        .update_member(NOW + 10, nwid, addr(1), &json!({"authorized": true}))
        .unwrap()
        .clone();
    assert!(m.authorized && m.creation_time == NOW + 1 && m.revision == 1);
    assert!(member_file(addr(1)).exists());
    // Any POST stores it too, unauthorized.
    c.update_member(NOW + 11, nwid, addr(2), &json!({"name": "printer"}))
        .unwrap();
    assert!(member_file(addr(2)).exists());
    assert!(!member_file(addr(3)).exists());
    assert_eq!(c.requester_count(), 1);
    assert_eq!(c.members(nwid).unwrap().len(), 3);
    assert!(c.request_config(NOW + 12, nwid, addr(1), None).is_ok());

    let again = Controller::open(ctl(), home.path()).unwrap();
    let listed: Vec<Address> = again
        .members(nwid)
        .unwrap()
        .iter()
        .map(|m| m.address)
        .collect();
    assert_eq!(listed, vec![addr(1), addr(2)]);
    assert_eq!(again.member(nwid, addr(3)), None, "requester forgotten");
    assert!(again.member(nwid, addr(1)).unwrap().authorized);

    // Deleting a requester forgets it (nothing on disk to remove).
    let mut c = again;
    let _ = c.request_config(NOW, nwid, addr(4), None);
    assert!(!c.delete_member(nwid, addr(4)).unwrap().authorized);
    assert_eq!(c.member(nwid, addr(4)), None);
}

#[test]
fn a_public_network_admits_strangers_at_a_bounded_rate() {
    let home = tempfile::tempdir().unwrap();
    let mut c = Controller::open(ctl(), home.path()).unwrap();
    let nwid = c
        .create_network(NOW, &json!({"private": false}))
        .unwrap()
        .id;
    let mut admitted = 0;
    for i in 0..10_000 {
        match c.request_config(NOW + i, nwid, addr(i), None) {
            Ok(cfg) => {
                assert!(cfg.assigned.is_empty());
                admitted += 1;
            }
            Err(e) => assert_eq!(e, ConfigDenied::Later),
        }
    }
    assert_eq!(admitted, PUBLIC_JOINS_PER_MINUTE);
    assert_eq!(
        c.counters().joins_deferred,
        10_000 - u64::from(PUBLIC_JOINS_PER_MINUTE)
    );
    assert!(c.queued_saves() <= MAX_QUEUED_SAVES);
    // Nothing was written by the requests themselves.
    assert_eq!(c.stored_members(nwid).unwrap().len(), 0);
    assert_eq!(c.save_requested(NOW, usize::MAX), 0);
    assert_eq!(
        c.stored_members(nwid).unwrap().len(),
        PUBLIC_JOINS_PER_MINUTE as usize
    );
    let files = tree(
        &home
            .path()
            .join(format!("controller.d/network/{nwid}/member")),
    );
    assert_eq!(files.len(), PUBLIC_JOINS_PER_MINUTE as usize);
    // A minute later, more are let in.
    assert!(
        c.request_config(NOW + 70_000, nwid, addr(20_000), None)
            .is_ok()
    );
    // An admitted member is answered at once, without a save.
    assert!(c.request_config(NOW + 70_000, nwid, addr(0), None).is_ok());
}

#[test]
fn the_saver_stores_what_requests_decided_and_the_member_is_pushed() {
    let home = tempfile::tempdir().unwrap();
    let mut c = Controller::open(ctl(), home.path()).unwrap();
    let nwid = c
        .create_network(
            NOW,
            &json!({"private": false,
                    "ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.9"}]}),
        )
        .unwrap()
        .id;
    let shared = Arc::new(Mutex::new(c));
    spawn_saver(&shared, || NOW).unwrap();
    let mut node = NodeController::new(shared.clone(), || NOW);
    let first = node.request(nwid, addr(1), None).unwrap();
    assert!(first.assigned.is_empty(), "no address before it is on disk");
    let file = home.path().join(format!(
        "controller.d/network/{nwid}/member/{}.json",
        addr(1)
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut changed = Vec::new();
    while changed.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        changed = node.take_changed();
    }
    assert_eq!(changed, vec![(nwid, addr(1))]);
    assert!(file.exists());
    let pushed = node.request(nwid, addr(1), None).unwrap();
    assert_eq!(pushed.assigned.len(), 1);
    assert!(pushed.revision > first.revision);
}

#[test]
fn a_busy_controller_defers_requests_and_answers_them_later() {
    let mut c = Controller::in_memory(ctl());
    let nwid = private_network(&mut c);
    c.update_member(NOW, nwid, addr(1), &json!({"authorized": true}))
        .unwrap();
    let shared = Arc::new(Mutex::new(c));
    let mut node = NodeController::new(shared.clone(), || NOW);
    assert_eq!(node.known_members(), vec![(nwid, addr(1))]);
    {
        // The API (or the saver) holds the lock during a slow write.
        let _held = lock(&shared);
        let t = Instant::now();
        assert_eq!(node.request(nwid, addr(1), None), Err(ConfigDenied::Later));
        assert!(node.take_changed().is_empty());
        assert!(t.elapsed() < Duration::from_secs(1), "never waits");
    }
    assert_eq!(lock(&shared).counters().requests_deferred_busy, 1);
    assert!(node.counters().contains(&("requestsDeferredBusy", 1)));
    // Once free, the deferred member is reported, to be pushed to.
    assert_eq!(node.take_changed(), vec![(nwid, addr(1))]);
    assert!(node.request(nwid, addr(1), None).is_ok());
}
