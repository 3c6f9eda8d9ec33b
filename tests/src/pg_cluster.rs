//! A throwaway PostgreSQL server (Debian's packages) for one test: its own
//! cluster in the lab's directory, run as the `postgres` user, listening on
//! a Unix socket only (no TCP port at all: namespaces share the file
//! system, so controllers in any lab host reach it). Dropping it stops the
//! server (immediate shutdown, then SIGKILL by PID if needed); the lab
//! removes its directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::{Lab, wait_until};

/// The database the controllers use.
pub const DATABASE: &str = "vnet";

/// A running PostgreSQL server.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("runuser {}: {e}", program.display()))
}

impl PgCluster {
    /// Makes a cluster under the lab's directory, starts it and creates
    /// [`DATABASE`]. Panics (the test fails) without PostgreSQL's server.
    pub fn start(lab: &Lab) -> Self {
        let bin = server_bin_dir().expect(
            "PostgreSQL's server is not installed (/usr/lib/postgresql/<version>/bin/initdb): \
             run scripts/install-deps.sh",
        );
        // The lab's directory is private (0700): let postgres through to its own.
        fs::set_permissions(lab.dir(), fs::Permissions::from_mode(0o711)).expect("chmod lab dir");
        let dir = lab.dir().join("pg");
        fs::create_dir_all(&dir).expect("pg dir");
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success());
        let cluster = Self { bin, dir };
        let data = cluster.dir.join("data");
        let out = as_postgres(
            &cluster.bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("UTF-8"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {out:?}");
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=on",
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        let out = as_postgres(
            &cluster.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("UTF-8"),
                "-o",
                &options,
                "-l",
                log.to_str().expect("UTF-8"),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {out:?}\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        let out = as_postgres(
            &cluster.bin.join("createdb"),
            &["-h", cluster.dir.to_str().expect("UTF-8"), DATABASE],
        );
        assert!(out.status.success(), "createdb: {out:?}");
        cluster
    }

    /// The connection string of [`DATABASE`] (libpq `key=value` form).
    pub fn conninfo(&self) -> String {
        format!(
            "host={} user=postgres dbname={DATABASE}",
            self.dir.display()
        )
    }

    /// Runs one SQL command with psql; its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", self.dir.to_str().expect("UTF-8"), "-U", "postgres"])
            .args(["-d", DATABASE, "-XAtc", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pid = self.postmaster_pid();
        let data = self.dir.join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        if let Some(pid) = pid {
            // SAFETY: kill(2) with a PID read from the server's own pid file.
            let alive = || unsafe { libc::kill(pid, 0) } == 0;
            if !wait_until(Duration::from_secs(5), || !alive()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}
