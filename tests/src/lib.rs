//! Helpers for the end-to-end tests: find and run the workspace's binaries.

pub mod daemon;
pub mod delay;
pub mod netns;
pub mod pg_cluster;
pub mod udp_check;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The real python3 executable (not a pyenv shim), so that the lab ends it
/// by its PID; tests use it for raw frames, broadcasts and UDP_SEGMENT.
pub fn python3() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed by the end-to-end tests; scripts/install-deps.sh installs it");
    assert!(out.status.success(), "python3: {out:?}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Path of a workspace binary in the same target profile directory as this test.
///
/// `cargo test --workspace` builds every binary before running any test; run
/// `cargo build --workspace` first when testing this crate alone.
/// `VNET_BIN_DIR` runs the binaries of another build instead (benchmarks
/// that compare two builds with the same test).
pub fn binary(name: &str) -> PathBuf {
    let profile_dir = match std::env::var_os("VNET_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>/<name>
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable sits in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// The result of running a binary: exit success, stdout and stderr as text.
#[derive(Debug)]
pub struct Run {
    /// Whether it exited with status 0.
    pub ok: bool,
    /// Exit code, if any.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs binary `name` with `args` in directory `dir`.
pub fn run_in(dir: &Path, name: &str, args: &[&str]) -> Run {
    Command::new(binary(name))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
        .into()
}

/// The zerotier-idtool vectors in `../shared` (or `VNET_SHARED_DIR`).
pub fn shared_vectors() -> PathBuf {
    let dir = std::env::var_os("VNET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("vectors/zerotier");
    assert!(
        dir.join("README.md").is_file(),
        "{} not found: shared/ must sit beside the checkout (or set VNET_SHARED_DIR)",
        dir.display()
    );
    dir
}
