//! `GET /metrics`: the node's counters, table sizes, peers by route and (on
//! a controller) the controller's counters, in the OpenMetrics text format
//! Prometheus scrapes, encoded by `prometheus-client`.
//!
//! Every counter of `GET /status` is here under its snake_case name with the
//! prefix `vnet_` (`received` is `vnet_received_total`); the `dropped…`
//! counters are one family, `vnet_dropped_total{reason="bad_mac"}`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::core::node::{Counters, PeerStatus, TableSizes};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reports.
pub struct MetricsSnapshot {
    /// The node's counters.
    pub counters: Counters,
    /// The sizes of its bounded tables.
    pub tables: TableSizes,
    /// Its peers.
    pub peers: Vec<PeerStatus>,
    /// The controller's counters, on a controller.
    pub controller: Option<Vec<(&'static str, u64)>>,
    /// Whether a UPnP or NAT-PMP mapping is in place.
    pub port_mapped: bool,
}

type Labels = Vec<(String, String)>;

/// `receivedBytes` → `received_bytes`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every number in `value` with its path (`reassembly.completed` →
/// `reassembly_completed`).
fn numbers(prefix: &str, value: &Value, out: &mut Vec<(String, u64)>) {
    match value {
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.push((prefix.to_string(), n));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    snake_case(k)
                } else {
                    format!("{prefix}_{}", snake_case(k))
                };
                numbers(&name, v, out);
            }
        }
        _ => {}
    }
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// `DIRECT` → `direct` (the routes of `GET /peer`).
fn route_label(route: &str) -> String {
    route.to_ascii_lowercase()
}

/// The snapshot as OpenMetrics text.
pub fn render(snapshot: &MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("vnet");

    let mut node = Vec::new();
    numbers(
        "",
        &serde_json::to_value(&snapshot.counters).unwrap_or(Value::Null),
        &mut node,
    );
    let dropped = Family::<Labels, Counter>::default();
    for (name, value) in node {
        match name.strip_prefix("dropped_") {
            Some(reason) => {
                dropped
                    .get_or_create(&vec![("reason".into(), reason.into())])
                    .inc_by(value);
            }
            None => registry.register(
                name.clone(),
                format!("The node's `{name}` counter (docs/API.md, GET /status)"),
                counter(value),
            ),
        }
    }
    registry.register(
        "dropped",
        "Datagrams and frames dropped, by reason (GET /status counters dropped…)",
        dropped,
    );

    let mut tables = Vec::new();
    numbers(
        "",
        &serde_json::to_value(snapshot.tables).unwrap_or(Value::Null),
        &mut tables,
    );
    let table_entries = Family::<Labels, Gauge>::default();
    for (table, size) in tables {
        table_entries
            .get_or_create(&vec![("table".into(), table)])
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }
    registry.register(
        "table_entries",
        "Entries in each table a stranger can make grow (each bounded)",
        table_entries,
    );

    let peers = Family::<Labels, Gauge>::default();
    for route in ["direct", "relay", "tcp_relay", "none"] {
        let _ = peers.get_or_create(&vec![("route".into(), route.into())]);
    }
    for p in &snapshot.peers {
        peers
            .get_or_create(&vec![("route".into(), route_label(p.route))])
            .inc();
    }
    registry.register("peers", "Peers, by the route traffic takes", peers);
    registry.register(
        "port_mapped",
        "1 while a UPnP or NAT-PMP port mapping is in place",
        gauge(u64::from(snapshot.port_mapped)),
    );

    if let Some(controller) = &snapshot.controller {
        let sub = registry.sub_registry_with_prefix("controller");
        for (name, value) in controller {
            let name = snake_case(name);
            sub.register(
                name.clone(),
                format!("The controller's `{name}` counter"),
                counter(*value),
            );
        }
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_drops_tables_peers_and_controller_are_rendered() {
        let counters = Counters {
            received: 7,
            received_bytes: 700,
            dropped_bad_mac: 3,
            ..Counters::default()
        };
        let tables = TableSizes {
            peers: 2,
            ..TableSizes::default()
        };
        let text = render(&MetricsSnapshot {
            counters,
            tables,
            peers: Vec::new(),
            controller: Some(vec![("configsPushed", 5)]),
            port_mapped: true,
        })
        .unwrap();
        for line in [
            "vnet_received_total 7",
            "vnet_received_bytes_total 700",
            "vnet_dropped_total{reason=\"bad_mac\"} 3",
            "vnet_dropped_total{reason=\"replay\"} 0",
            "vnet_table_entries{table=\"peers\"} 2",
            "vnet_peers{route=\"direct\"} 0",
            "vnet_port_mapped 1",
            "vnet_controller_configs_pushed_total 5",
            "# TYPE vnet_received counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
