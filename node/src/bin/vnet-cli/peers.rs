//! `listpeers` and `peers`: the peers this node knows, one line or one table
//! row each.

use std::io::Write;

use vnet_node::service::api_types::{Peer, PeerPath};

use crate::Invocation;
use crate::client::Method;
use crate::failure::Failure;
use crate::output::{number_or_dash, or_dash};

/// How the peers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `listpeers`: zerotier-cli's lines.
    Lines,
    /// `peers`: an aligned table.
    Table,
}

/// `GET /peer`, printed in `layout`.
pub fn run(call: &Invocation, out: &mut dyn Write, layout: Layout) -> Result<(), Failure> {
    let answer = call.request(Method::Get, "/peer", None)?;
    match layout {
        Layout::Lines => call.print(out, &answer, |peers: &Vec<Peer>| format_listpeers(peers)),
        Layout::Table => call.print(out, &answer, |peers: &Vec<Peer>| format_peers(peers)),
    }
}

/// Whether packets can go over the path now.
fn usable(path: &PeerPath) -> bool {
    path.active && !path.expired
}

/// zerotier-cli's lines: a header, then
/// `200 listpeers <addr> <path> <latency> <version> <role>` per peer, where
/// path is the one traffic takes (the preferred active one, else the first
/// active one) as `ip/port;msSinceLastSend;msSinceLastRecv`, or `-`.
pub fn format_listpeers(peers: &[Peer]) -> String {
    let mut out = String::from("200 listpeers <ztaddr> <path> <latency> <version> <role>\n");
    for peer in peers {
        let path = best_path(peer).map_or_else(
            || "-".to_string(),
            |p| {
                format!(
                    "{};{};{}",
                    or_dash(p.address.as_deref()),
                    number_or_dash(p.last_send),
                    number_or_dash(p.last_receive)
                )
            },
        );
        out.push_str(&format!(
            "200 listpeers {} {path} {} {} {}\n",
            or_dash(peer.address.as_deref()),
            number_or_dash(peer.latency),
            or_dash(peer.version.as_deref()),
            or_dash(peer.role.as_deref())
        ));
    }
    out
}

/// The path a peer's traffic goes over: the preferred active one, else the
/// first active one.
fn best_path(peer: &Peer) -> Option<&PeerPath> {
    peer.paths
        .iter()
        .find(|p| usable(p) && p.preferred)
        .or_else(|| peer.paths.iter().find(|p| usable(p)))
}

/// `200 peers`, then an aligned table
/// `<address> <ver> <role> <lat> <link> <lastTX> <lastRX> <path>`.
pub fn format_peers(peers: &[Peer]) -> String {
    const HEADER: [&str; 8] = [
        "<address>",
        "<ver>",
        "<role>",
        "<lat>",
        "<link>",
        "<lastTX>",
        "<lastRX>",
        "<path>",
    ];
    // Right-aligned: the numeric columns.
    const RIGHT: [bool; 8] = [false, false, false, true, false, true, true, false];
    let mut rows: Vec<[String; 8]> = vec![HEADER.map(String::from)];
    for peer in peers {
        let link = match peer.route.as_deref() {
            Some("DIRECT") => "DIRECT",
            Some("TCP_RELAY") => "TCP_RELAY",
            _ => "RELAY",
        };
        let (tx, rx, path) = match best_path(peer) {
            Some(p) => (
                number_or_dash(p.last_send),
                number_or_dash(p.last_receive),
                or_dash(p.address.as_deref()).to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        rows.push([
            or_dash(peer.address.as_deref()).to_string(),
            or_dash(peer.version.as_deref()).to_string(),
            or_dash(peer.role.as_deref()).to_string(),
            number_or_dash(peer.latency),
            link.to_string(),
            tx,
            rx,
            path,
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::from("200 peers\n");
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            if i == 7 {
                line.push_str(cell);
            } else if RIGHT[i] {
                line.push_str(&format!("{cell:>w$}", w = widths[i]));
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn peers(v: Value) -> Vec<Peer> {
        serde_json::from_value(v).unwrap()
    }

    fn sample_peers() -> Vec<Peer> {
        peers(json!([
            {
                "address": "8056c2e21c", "latency": 12, "role": "PLANET", "version": "0.1.0",
                "route": "DIRECT", "relay": null, "session": true, "sessionAge": 5000,
                "upgradedAgo": null,
                "paths": [
                    {"address": "10.0.0.9/9993", "lastSend": 900, "lastReceive": 1000,
                     "active": false, "expired": true, "preferred": false, "latency": -1},
                    {"address": "203.0.113.5/9993", "lastSend": 120, "lastReceive": 130,
                     "active": true, "expired": false, "preferred": true, "latency": 12},
                    {"address": "[2001:db8::1]/9993", "lastSend": 4000, "lastReceive": null,
                     "active": true, "expired": false, "preferred": false, "latency": 15}
                ]
            },
            {
                "address": "a1b2c3d4e5", "latency": -1, "role": "LEAF", "version": null,
                "route": "RELAY", "relay": "8056c2e21c", "session": false, "sessionAge": null,
                "upgradedAgo": null, "paths": []
            }
        ]))
    }

    #[test]
    fn listpeers_lines() {
        assert_eq!(
            format_listpeers(&sample_peers()),
            "200 listpeers <ztaddr> <path> <latency> <version> <role>\n\
             200 listpeers 8056c2e21c 203.0.113.5/9993;120;130 12 0.1.0 PLANET\n\
             200 listpeers a1b2c3d4e5 - -1 - LEAF\n"
        );
        assert_eq!(
            format_listpeers(&[]),
            "200 listpeers <ztaddr> <path> <latency> <version> <role>\n"
        );
    }

    #[test]
    fn peers_table() {
        let table = format_peers(&sample_peers());
        let expected = "200 peers\n\
            <address>  <ver> <role> <lat> <link> <lastTX> <lastRX> <path>\n\
            8056c2e21c 0.1.0 PLANET    12 DIRECT      120      130 203.0.113.5/9993\n\
            a1b2c3d4e5 -     LEAF      -1 RELAY         -        - -\n";
        assert_eq!(table, expected);
        assert_eq!(
            format_peers(&[]),
            "200 peers\n<address> <ver> <role> <lat> <link> <lastTX> <lastRX> <path>\n"
        );
    }

    #[test]
    fn peers_table_falls_back_to_an_unpreferred_active_path() {
        let peers = peers(
            json!([{"address": "0123456789", "latency": 3, "role": "LEAF",
            "version": "0.1.0", "route": "DIRECT", "paths": [
                {"address": "192.0.2.1/9993", "lastSend": 1, "lastReceive": 2, "active": true,
                 "expired": false, "preferred": false}]}]),
        );
        let table = format_peers(&peers);
        assert!(
            table
                .lines()
                .nth(2)
                .unwrap()
                .ends_with(" 1        2 192.0.2.1/9993"),
            "{table}"
        );
    }
}
