//! The setup commands a lab runs (ip, sysctl, iptables), failing loudly.

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Stdio};

pub(super) fn netns_command(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// Runs a setup command; its stdout, or what went wrong.
pub(super) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                format!("`{program}` not found: install it (scripts/install-deps.sh)")
            } else {
                format!("cannot run `{program}`: {e}")
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(super) fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("netns lab: {e}"))
}

/// `ip` with `cmdline` split at whitespace (lab names never contain any).
pub(super) fn ip(cmdline: &str) -> String {
    must("ip", &cmdline.split_whitespace().collect::<Vec<_>>())
}

/// Sets `/proc/sys/<key>` inside `ns` (/proc/sys/net is the opening process's namespace's).
/// The `net/bridge/` keys exist only while br_netfilter is loaded: without it bridged frames
/// skip iptables anyway, so those are skipped when missing.
pub(super) fn sysctl(ns: &str, key: &str, value: &str) {
    let file = format!("/proc/sys/{key}");
    let script = if key.starts_with("net/bridge/") {
        format!("if [ -e {file} ]; then echo {value} > {file}; fi")
    } else {
        format!("echo {value} > {file}")
    };
    must("ip", &["netns", "exec", ns, "sh", "-c", &script]);
}

/// `iptables -w` with `rule` split at whitespace, inside `ns`.
pub(super) fn iptables(ns: &str, rule: &str) {
    must("ip", &iptables_args(ns, rule));
}

/// Whether `rule` (as for [`with_op`]) is present (`iptables -C`).
pub(super) fn iptables_check(ns: &str, rule: &str) -> bool {
    run("ip", &iptables_args(ns, &with_op("-C", rule))).is_ok()
}

pub(super) fn iptables_args<'a>(ns: &'a str, rule: &'a str) -> Vec<&'a str> {
    let mut args = vec!["netns", "exec", ns, "iptables", "-w"];
    args.extend(rule.split_whitespace());
    args
}

/// `rule` is `-t TABLE CHAIN MATCH...`: puts `op` (`-I`, `-D`, `-C`) before the chain.
pub(super) fn with_op(op: &str, rule: &str) -> String {
    let mut words: Vec<&str> = rule.split_whitespace().collect();
    words.insert(2, op);
    words.join(" ")
}
