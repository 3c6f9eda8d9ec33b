//! What a process uses, read from `/proc`: resident memory and CPU time.

use std::fs;

use anyhow::{Context, bail};

/// Resident memory of `pid`, in KiB (`VmRSS`).
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| path.clone())?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return kb.parse().with_context(|| format!("{path}: VmRSS {kb:?}"));
        }
    }
    bail!("{path}: no VmRSS")
}

/// CPU time `pid` used so far (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| path.clone())?;
    // Fields after the command (which may hold spaces) start after ") ".
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no command field"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        let f = fields.get(i).with_context(|| format!("{path}: short"))?;
        Ok(f.parse::<f64>()?)
    };
    // SAFETY: sysconf reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_figures_are_read() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 100);
        let spin = std::time::Instant::now();
        while spin.elapsed().as_millis() < 50 {}
        assert!(cpu_seconds(pid).unwrap() > 0.0);
    }
}
