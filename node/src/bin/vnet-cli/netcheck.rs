//! `netcheck`: where this node stands behind its NAT.

use std::io::Write;

use vnet_node::service::api_types::Netcheck;

use crate::Invocation;
use crate::client::Method;
use crate::failure::Failure;
use crate::output::or_dash;

/// `GET /netcheck`, printed as findings and one line per root.
pub fn run(call: &Invocation, out: &mut dyn Write) -> Result<(), Failure> {
    let answer = call.request(Method::Get, "/netcheck", None)?;
    call.print(out, &answer, format_netcheck)
}

/// `200 netcheck`, then one `key: value` line per finding and one line per root.
pub fn format_netcheck(report: &Netcheck) -> String {
    let mapping = match report.mapping.as_deref() {
        Some("none") => "none (no NAT: the roots see an interface address)",
        Some("endpointIndependent") => "endpoint-independent (easy NAT: hole punching works)",
        Some("endpointDependent") => {
            "endpoint-dependent (hard NAT: a new port per destination; birthday punch or relay)"
        }
        _ => "unknown (fewer than two roots answered over UDP)",
    };
    let udp = if report.udp {
        "works"
    } else if report.force_tcp_relay {
        "not used (forceTcpRelay)"
    } else if report.udp_blocked {
        "BLOCKED (no root answers over UDP)"
    } else {
        "no answer yet"
    };
    let relay = if report.tcp_relay {
        "TCP (packets go through a root over TCP)"
    } else {
        "UDP"
    };
    let pm = &report.port_mapping;
    let mapping_line = if !pm.enabled {
        "off (portMappingEnabled=false)".to_string()
    } else {
        match pm.protocol.as_deref() {
            Some(protocol) => format!(
                "{} {} (advertised as {})",
                protocol.to_uppercase(),
                match (pm.external_ip.as_deref(), pm.external_port) {
                    (Some(ip), Some(p)) => format!("{ip}/{p}"),
                    (None, Some(p)) => format!("?/{p}"),
                    _ => "-".to_string(),
                },
                report.mapped_endpoint.as_deref().unwrap_or("-"),
            ),
            None => match pm.error.as_deref() {
                Some(e) => format!("none ({e})"),
                None => "searching".to_string(),
            },
        }
    };
    let mut out = format!(
        "200 netcheck
udp: {udp}
mapping: {mapping}
relay: {relay}
portmap: {mapping_line}
"
    );
    for root in &report.roots {
        let latency = match root.latency {
            Some(n) => format!("{n} ms"),
            None => "-".to_string(),
        };
        let via = match (root.udp, root.tcp) {
            (true, _) => "udp",
            (false, true) => "tcp",
            _ => "unreachable",
        };
        out.push_str(&format!(
            "root {} {} reflected={} latency={} via={}\n",
            or_dash(root.address.as_deref()),
            or_dash(root.role.as_deref()),
            root.reflected.as_deref().unwrap_or("-"),
            latency,
            via
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn report(v: Value) -> Netcheck {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn netcheck_lines() {
        let report_ = report(json!({
            "mapping": "endpointDependent",
            "udp": true,
            "udpBlocked": false,
            "tcpRelay": false,
            "forceTcpRelay": false,
            "mappedEndpoint": "198.51.100.7/20100",
            "portMapping": { "enabled": true, "protocol": "upnp", "externalIp": null, "externalPort": 20100 },
            "roots": [
                { "address": "1111111111", "role": "PLANET", "reflected": "198.51.100.7/41000", "latency": 3, "udp": true, "tcp": false },
                { "address": "2222222222", "role": "MOON", "reflected": null, "latency": null, "udp": false, "tcp": true }
            ]
        }));
        let text = format_netcheck(&report_);
        assert_eq!(
            text,
            "200 netcheck\n\
             udp: works\n\
             mapping: endpoint-dependent (hard NAT: a new port per destination; birthday punch or relay)\n\
             relay: UDP\n\
             portmap: UPNP ?/20100 (advertised as 198.51.100.7/20100)\n\
             root 1111111111 PLANET reflected=198.51.100.7/41000 latency=3 ms via=udp\n\
             root 2222222222 MOON reflected=- latency=- via=tcp\n"
        );
        let blocked = report(
            json!({ "udp": false, "udpBlocked": true, "tcpRelay": true, "portMapping": { "enabled": false } }),
        );
        let text = format_netcheck(&blocked);
        assert!(text.contains("udp: BLOCKED"), "{text}");
        assert!(text.contains("relay: TCP"), "{text}");
        assert!(text.contains("portmap: off"), "{text}");
    }

    #[test]
    fn port_mapping_lines() {
        let failed = report(json!({"portMapping": {"enabled": true, "protocol": null,
            "error": "no UPnP or NAT-PMP gateway found"}}));
        assert!(
            format_netcheck(&failed)
                .contains("\nportmap: none (no UPnP or NAT-PMP gateway found)\n")
        );
        let searching = report(json!({"portMapping": {"enabled": true}}));
        assert!(format_netcheck(&searching).contains("\nportmap: searching\n"));
        let mapped = report(
            json!({"portMapping": {"enabled": true, "protocol": "natpmp",
            "externalIp": "203.0.113.9", "externalPort": 20001}}),
        );
        assert!(
            format_netcheck(&mapped)
                .contains("\nportmap: NATPMP 203.0.113.9/20001 (advertised as -)\n")
        );
    }
}
