//! Processes a lab starts in its namespaces, and how they are stopped.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A background process in a namespace, from [`Lab::spawn`]. Dropping it stops it
/// (SIGTERM, up to [`STOP_GRACE`], then SIGKILL).
pub struct Proc {
    pub(super) inner: Arc<Mutex<ProcInner>>,
}

pub(super) struct ProcInner {
    pub(super) child: Child,
    pub(super) label: String,
    pub(super) stdout: PathBuf,
    pub(super) stderr: PathBuf,
    /// Set once reaped: from then on its PID is no longer ours to signal.
    pub(super) status: Option<ExitStatus>,
}

impl ProcInner {
    /// The exit status if it has ended (reaping it).
    pub(super) fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `sig` if it has not ended (and so its PID is still its own).
    pub(super) fn signal(&mut self, sig: i32) {
        if self.poll().is_none() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    pub(super) fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.poll() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn kill_and_wait(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        if self.status.is_none() {
            self.status = Some(self.child.wait().expect("wait for killed process"));
        }
        self.status.expect("reaped")
    }
}

impl Proc {
    fn lock(&self) -> MutexGuard<'_, ProcInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its PID (the program's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.lock().child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        self.lock().poll().is_none()
    }

    /// Its exit status if it has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().poll()
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; returns how it ended. Once ended,
    /// returns the same status again.
    pub fn stop(&self) -> ExitStatus {
        let mut p = self.lock();
        p.signal(libc::SIGTERM);
        match p.wait_until(Instant::now() + STOP_GRACE) {
            Some(status) => status,
            None => p.kill_and_wait(),
        }
    }

    /// SIGKILL now; returns how it ended.
    pub fn kill(&self) -> ExitStatus {
        self.lock().kill_and_wait()
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) if it is still running.
    pub fn signal(&self, sig: i32) {
        self.lock().signal(sig);
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        self.lock().wait_until(Instant::now() + timeout)
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        read_lossy(&self.lock().stdout)
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        read_lossy(&self.lock().stderr)
    }

    /// Its stdout log file.
    pub fn stdout_path(&self) -> PathBuf {
        self.lock().stdout.clone()
    }

    /// Its stderr log file.
    pub fn stderr_path(&self) -> PathBuf {
        self.lock().stderr.clone()
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.lock();
        f.debug_struct("Proc")
            .field("label", &p.label)
            .field("pid", &p.child.id())
            .field("status", &p.status)
            .finish()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
