//! A network's DNS settings on this host, when its member allows them
//! (`allowDNS=1`, ZeroTier's setting): the servers answer the network's
//! domain. With systemd-resolved they are set on the network's device
//! (`resolvectl dns/domain <device>`: only the domain's names go there);
//! without it a block is kept at the top of `resolv.conf` (local.conf's
//! `resolvConfPath`, default `/etc/resolv.conf`), the domain in `search`.
//! Either is undone when the network leaves, stops being OK, loses its DNS
//! settings or the member turns `allowDNS` off.
//!
//! The resolv.conf file is rewritten in place (not renamed over): it is
//! often a bind mount (containers, `ip netns exec`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::core::netconf::NetworkDns;
use crate::core::network_id::NetworkId;

/// How this host's resolver is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// systemd-resolved, per link.
    Resolved,
    /// A block in this resolv.conf.
    ResolvConf(PathBuf),
}

impl Resolver {
    /// systemd-resolved if it runs here (its D-Bus socket dir exists and
    /// `resolvectl` is installed), else `resolv_conf`.
    pub fn detect(resolv_conf: PathBuf) -> Self {
        let resolved = Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
            && Command::new("resolvectl")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
        if resolved {
            Resolver::Resolved
        } else {
            Resolver::ResolvConf(resolv_conf)
        }
    }

    /// Puts `dns` in force for network `nwid` on `device` (none: takes ours away).
    pub fn apply(&self, nwid: NetworkId, device: &str, dns: Option<&NetworkDns>) -> io::Result<()> {
        match self {
            Resolver::Resolved => match dns {
                Some(d) => {
                    let mut args = vec!["dns".to_string(), device.to_string()];
                    args.extend(d.servers.iter().map(ToString::to_string));
                    resolvectl(&args)?;
                    resolvectl(&["domain".into(), device.into(), d.domain.clone()])
                }
                // The device may be gone already, taking its settings with it.
                None => resolvectl(&["revert".into(), device.into()]).or(Ok(())),
            },
            Resolver::ResolvConf(path) => {
                let before = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(e),
                };
                let after = with_block(&before, nwid, dns);
                if after != before {
                    std::fs::write(path, after)?;
                }
                Ok(())
            }
        }
    }
}

fn resolvectl(args: &[String]) -> io::Result<()> {
    let out = Command::new("resolvectl").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "resolvectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn begin_marker(nwid: NetworkId) -> String {
    format!("# vnet {nwid} begin (managed by vnet-node; removed when the network leaves)")
}

fn end_marker(nwid: NetworkId) -> String {
    format!("# vnet {nwid} end")
}

/// `text` (a resolv.conf) without network `nwid`'s block, then with it at
/// the top when `dns` is some: `search <domain>` and a `nameserver` line per
/// server, so the network's servers are asked first. (A server that does
/// not know a name should answer REFUSED: the C library then asks the next.)
pub fn with_block(text: &str, nwid: NetworkId, dns: Option<&NetworkDns>) -> String {
    let (begin, end) = (begin_marker(nwid), end_marker(nwid));
    let mut kept = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == begin {
            inside = true;
        } else if inside && line == end {
            inside = false;
        } else if !inside {
            kept.push(line);
        }
    }
    let mut out = String::new();
    if let Some(d) = dns {
        out.push_str(&begin);
        out.push('\n');
        out.push_str(&format!("search {}\n", d.domain));
        for s in &d.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        out.push_str(&end);
        out.push('\n');
    }
    for line in kept {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns() -> NetworkDns {
        NetworkDns {
            domain: "vnet.lan".into(),
            servers: vec!["10.147.17.1".parse().unwrap(), "fd00::53".parse().unwrap()],
        }
    }

    #[test]
    fn the_block_goes_on_top_once_and_comes_off_whole() {
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        let other: NetworkId = "8056c2e21c000002".parse().unwrap();
        let host = "nameserver 192.0.2.53\nsearch example.com\n";
        let with = with_block(host, nwid, Some(&dns()));
        assert!(with.starts_with(&begin_marker(nwid)), "{with}");
        assert!(with.contains("\nsearch vnet.lan\nnameserver 10.147.17.1\nnameserver fd00::53\n"));
        assert!(with.ends_with(host), "{with}");
        // Idempotent, and another network's block stays apart.
        assert_eq!(with_block(&with, nwid, Some(&dns())), with);
        let both = with_block(&with, other, Some(&dns()));
        assert_eq!(both.matches("search vnet.lan").count(), 2);
        // Taken away: exactly what was there before.
        assert_eq!(with_block(&with, nwid, None), host);
        assert_eq!(
            with_block(&with_block(&both, nwid, None), other, None),
            host
        );
        assert_eq!(with_block("", nwid, None), "");
    }

    #[test]
    fn a_resolv_conf_file_is_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").unwrap();
        let r = Resolver::ResolvConf(path.clone());
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        r.apply(nwid, "vn0", Some(&dns())).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("search vnet.lan")
        );
        r.apply(nwid, "vn0", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 192.0.2.53\n"
        );
    }
}
