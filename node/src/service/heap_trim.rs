//! Gives the allocator's free memory back to the kernel now and then.
//!
//! A root's tables grow in bursts (thousands of HELLOs at a restart, the
//! relay table rebuilt four times a second) and glibc keeps what such a
//! burst freed inside its heaps: without a trim, a root that settled at
//! 5,000 peers held a quarter more resident memory than its live data.

use std::time::{Duration, Instant};

/// How often the engine trims the heap.
pub const HEAP_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// When the heap was last trimmed.
#[derive(Debug)]
pub struct HeapTrim {
    last: Instant,
}

impl HeapTrim {
    /// Starts counting at `now`.
    pub fn new(now: Instant) -> Self {
        Self { last: now }
    }

    /// Trims if [`HEAP_TRIM_INTERVAL`] has passed since the last trim.
    pub fn maybe_trim(&mut self, now: Instant) {
        if now.duration_since(self.last) < HEAP_TRIM_INTERVAL {
            return;
        }
        self.last = now;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
