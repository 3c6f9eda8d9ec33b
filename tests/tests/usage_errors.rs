//! Every vnet binary refuses a bad command line with exit status 2 and says
//! why on stderr; `vnet-cli -v` prints the version, as `zerotier-cli -v`.

use std::process::Command;

use vnet_tests::binary;

#[test]
fn usage_errors_exit_2_in_all_five_binaries() {
    for name in [
        "vnet-cli",
        "vnet-node",
        "vnet-controller",
        "vnet-idtool",
        "vnet-planet",
    ] {
        let out = Command::new(binary(name))
            .arg("--no-such-flag")
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("--no-such-flag"), "{name}: {stderr}");
    }
}

#[test]
fn vnet_cli_v_prints_the_version() {
    for flag in ["-v", "-V", "--version"] {
        let out = Command::new(binary("vnet-cli")).arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("vnet-cli {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

/// `--help` starts by saying what the tool is, in its user's words (not the
/// library crate's description, not a plan).
#[test]
fn help_says_what_each_tool_is() {
    for (name, says) in [
        ("vnet-cli", "Control a running vnet-node"),
        ("vnet-node", "vnet node daemon"),
        ("vnet-controller", "controller"),
        ("vnet-idtool", "identity"),
        ("vnet-planet", "serve as a root"),
    ] {
        let out = Command::new(binary(name)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let first = help.lines().next().unwrap_or_default();
        assert!(first.contains(says), "{name}: {first}");
        for stale in ["later", "protocol core"] {
            assert!(!first.contains(stale), "{name}: {first}");
        }
    }
}
