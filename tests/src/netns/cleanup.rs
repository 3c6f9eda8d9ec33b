//! Finding and removing what a lab (or a killed test process's lab) left:
//! namespaces, their processes, links in the root namespace.

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

pub(super) fn check_privileges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "netns lab: the end-to-end network tests make network namespaces and must run as root \
         (euid is {euid}); run them as root, e.g. `sudo -E cargo test -p vnet-tests`"
    );
    if let Err(e) = run("ip", &["netns", "list"]) {
        panic!("netns lab: `ip netns` does not work here: {e} (install iproute2)");
    }
}

pub(super) fn list_netns() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub(super) fn netns_pids(ns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGTERM to every process in `namespaces`, up to `grace` to exit, then SIGKILL.
pub(super) fn kill_all_in(namespaces: &[String], grace: Duration) {
    let all = || -> Vec<i32> { namespaces.iter().flat_map(|ns| netns_pids(ns)).collect() };
    let pids = all();
    if pids.is_empty() {
        return;
    }
    for pid in pids {
        // SAFETY: kill(2); these processes run in namespaces this lab made.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if wait_until(grace, || all().is_empty()) {
        return;
    }
    for pid in all() {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    wait_until(Duration::from_secs(1), || all().is_empty());
}

/// Stops every process: SIGTERM to all, up to `grace` for all, then SIGKILL.
pub(super) fn stop_all(procs: &[Arc<Mutex<ProcInner>>], grace: Duration) {
    let running =
        |p: &Arc<Mutex<ProcInner>>| p.lock().unwrap_or_else(|e| e.into_inner()).poll().is_none();
    for p in procs {
        p.lock()
            .unwrap_or_else(|e| e.into_inner())
            .signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(running) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in procs {
        p.lock().unwrap_or_else(|e| e.into_inner()).kill_and_wait();
    }
}

/// Deletes links in the root namespace whose name starts with `prefix`; returns their names.
pub(super) fn remove_root_links(prefix: &str) -> Vec<String> {
    let links: Vec<String> = run("ip", &["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            // "3: name@peer: <...> ..."
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_string())
        })
        .filter(|name| name.starts_with(prefix))
        .collect();
    for link in &links {
        let _ = run("ip", &["link", "del", link]);
    }
    links
}

/// The start time (clock ticks since boot) of process `pid`, if it exists.
pub(super) fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name start at field 3; starttime is field 22.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Removes the namespaces (and their processes) of labs whose test process is gone.
pub(super) fn reap_stale_labs() {
    let Ok(entries) = fs::read_dir(STATE_DIR) else {
        return;
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let prefix = entry.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        let owner = text.split_once(' ').and_then(|(pid, start)| {
            Some((
                pid.trim().parse::<u32>().ok()?,
                start.trim().parse::<u64>().ok()?,
            ))
        });
        let dead = match owner {
            Some((pid, start)) => process_start(pid) != Some(start),
            // Being written right now, or garbage: stale only once old.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60))
                .unwrap_or(false),
        };
        if dead {
            stale.push((prefix, entry.path()));
        }
    }
    if stale.is_empty() {
        return;
    }
    let all = list_netns();
    for (prefix, file) in stale {
        let namespaces: Vec<String> = all
            .iter()
            .filter(|ns| ns.starts_with(&format!("{prefix}-")))
            .cloned()
            .collect();
        kill_all_in(&namespaces, Duration::from_secs(1));
        for ns in &namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        remove_root_links(&prefix);
        // Several test processes may reap at once: only the one that removes the record says so.
        if fs::remove_file(file).is_ok() {
            eprintln!(
                "netns lab: removed lab {prefix} of a test process that is gone ({} namespaces)",
                namespaces.len()
            );
        }
    }
}
