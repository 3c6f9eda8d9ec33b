//! The systemd units in `dist/systemd/`: hardened, with exactly the
//! capabilities each daemon needs (CAP_NET_ADMIN for vnet-node and
//! vnet-controller, none for vnet-planet), and accepted by
//! `systemd-analyze verify` (a missing systemd-analyze is a failure); with
//! file descriptor and thread limits (`LimitNOFILE=`, `TasksMax=`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vnet_node::core::constants::TCP_RELAY_MAX_CONNECTIONS;

/// A unit file: section → key → every value given, in order.
type Unit = HashMap<String, HashMap<String, Vec<String>>>;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd")
}

/// Minimal INI parsing, as systemd reads units: `[Section]`, `Key=Value`,
/// `#`/`;` comments, a key given again adds a value.
fn parse(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=Value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        assert!(
            !line.ends_with('\\'),
            "line {}: no continuations here",
            n + 1
        );
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

fn load(name: &str) -> Unit {
    let path = dist().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text)
}

/// The one value of `[Service] key` (the last one, as systemd keeps for a
/// single-valued setting).
fn service<'a>(unit: &'a Unit, key: &str) -> &'a str {
    unit.get("Service")
        .and_then(|s| s.get(key))
        .and_then(|v| v.last())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("[Service] {key}= missing"))
}

/// Every value of `[Service] key` split into words.
fn words(unit: &Unit, key: &str) -> Vec<String> {
    unit.get("Service")
        .and_then(|s| s.get(key))
        .map(|v| {
            v.iter()
                .flat_map(|x| x.split_whitespace().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What every unit must have, whatever daemon it runs.
fn assert_hardened(name: &str, unit: &Unit) {
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(service(unit, key), want, "{name}: {key}");
    }
    let families = words(unit, "RestrictAddressFamilies");
    for family in ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"] {
        assert!(
            families.iter().any(|f| f == family),
            "{name}: RestrictAddressFamilies lacks {family}: {families:?}"
        );
    }
    assert!(
        families
            .iter()
            .all(|f| ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"].contains(&f.as_str())),
        "{name}: RestrictAddressFamilies allows more: {families:?}"
    );
    assert!(
        unit.get("Install")
            .and_then(|s| s.get("WantedBy"))
            .is_some_and(|v| v.iter().any(|x| x == "multi-user.target")),
        "{name}: [Install] WantedBy=multi-user.target"
    );
    assert_bounded(name, unit);
}

/// File descriptors enough for a root's TCP relay connections (one socket
/// each) with room to spare, and a fixed cap on threads.
fn assert_bounded(name: &str, unit: &Unit) {
    let nofile: u64 = service(unit, "LimitNOFILE")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: LimitNOFILE= not one number: {e}"));
    let relay = TCP_RELAY_MAX_CONNECTIONS as u64;
    assert!(
        (4 * relay..=1 << 20).contains(&nofile),
        "{name}: LimitNOFILE={nofile}, want at least 4 x {relay} relay connections"
    );
    let tasks: u64 = service(unit, "TasksMax")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: TasksMax= not one number: {e}"));
    assert!(
        (16..=256).contains(&tasks),
        "{name}: TasksMax={tasks}, want 16 to 256"
    );
}

/// vnet-node and vnet-controller: exactly CAP_NET_ADMIN, /dev/net/tun only,
/// a dedicated user, state in /var/lib/vnet.
fn assert_tap_daemon(name: &str, program: &str) {
    let unit = load(name);
    assert_hardened(name, &unit);
    assert_eq!(
        words(&unit, "AmbientCapabilities"),
        ["CAP_NET_ADMIN"],
        "{name}"
    );
    assert_eq!(
        words(&unit, "CapabilityBoundingSet"),
        ["CAP_NET_ADMIN"],
        "{name}"
    );
    assert_eq!(service(&unit, "DevicePolicy"), "closed", "{name}");
    assert_eq!(
        words(&unit, "DeviceAllow"),
        ["/dev/net/tun", "rw"],
        "{name}"
    );
    assert_ne!(
        unit["Service"].get("PrivateDevices").and_then(|v| v.last()),
        Some(&"yes".to_string()),
        "{name}: PrivateDevices=yes would hide /dev/net/tun"
    );
    assert_eq!(service(&unit, "User"), "vnet", "{name}");
    assert_eq!(service(&unit, "StateDirectory"), "vnet", "{name}");
    assert_eq!(
        service(&unit, "ExecStart"),
        format!("/usr/local/bin/{program} -d /var/lib/vnet -p 9993"),
        "{name}"
    );
}

#[test]
fn node_unit_is_hardened_with_only_cap_net_admin() {
    assert_tap_daemon("vnet-node.service", "vnet-node");
}

#[test]
fn controller_unit_is_hardened_with_only_cap_net_admin() {
    assert_tap_daemon("vnet-controller.service", "vnet-controller");
    // Both use /var/lib/vnet and port 9993: never at once.
    let unit = load("vnet-controller.service");
    assert!(
        unit["Unit"]
            .get("Conflicts")
            .is_some_and(|v| v.iter().any(|x| x.contains("vnet-node.service"))),
        "vnet-controller.service conflicts with vnet-node.service"
    );
}

#[test]
fn planet_unit_is_hardened_with_no_capabilities() {
    let name = "vnet-planet.service";
    let unit = load(name);
    assert_hardened(name, &unit);
    assert_eq!(
        unit["Service"].get("CapabilityBoundingSet"),
        Some(&vec![String::new()]),
        "{name}: CapabilityBoundingSet= empty"
    );
    assert!(
        words(&unit, "AmbientCapabilities").is_empty(),
        "{name}: no ambient capabilities"
    );
    assert_eq!(service(&unit, "DynamicUser"), "yes", "{name}");
    // A root's threads never grow with connections or peers.
    assert_eq!(service(&unit, "TasksMax"), "64", "{name}");
    assert_eq!(service(&unit, "PrivateDevices"), "yes", "{name}");
    assert_eq!(service(&unit, "StateDirectory"), "vnet-planet", "{name}");
    assert_eq!(
        service(&unit, "ExecStart"),
        "/usr/local/bin/vnet-planet serve -d /var/lib/vnet-planet -p 9993",
        "{name}"
    );
}

#[test]
fn parser_reads_repeated_and_empty_keys() {
    let unit = parse(
        "# comment\n[Unit]\nDescription=x\n\n[Service]\nCapabilityBoundingSet=\nDeviceAllow=/dev/a r\nDeviceAllow=/dev/b rw\n",
    );
    assert_eq!(unit["Service"]["CapabilityBoundingSet"], [""]);
    assert_eq!(words(&unit, "DeviceAllow"), ["/dev/a", "r", "/dev/b", "rw"]);
    assert_eq!(service(&unit, "DeviceAllow"), "/dev/b rw");
}

/// `systemd-analyze verify` on each unit, with ExecStart pointed at the
/// binaries of this build (verify wants an executable there). Without
/// systemd-analyze it fails: scripts/install-deps.sh installs it.
#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let version = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "systemd-analyze is needed (Debian package systemd, see scripts/install-deps.sh): {version:?}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for (name, program) in [
        ("vnet-node.service", "vnet-node"),
        ("vnet-controller.service", "vnet-controller"),
        ("vnet-planet.service", "vnet-planet"),
    ] {
        let text = fs::read_to_string(dist().join(name)).expect("unit");
        let bin = vnet_tests::binary(program);
        let text = text.replace(
            &format!("/usr/local/bin/{program}"),
            bin.to_str().expect("UTF-8 path"),
        );
        let path = dir.path().join(name);
        fs::write(&path, text).expect("write unit");
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status
    );
    // verify exits 0 on some warnings: none may name our units.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("vnet-")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns:\n{stderr}");
}
