//! port-map-probe: runs the node's port mapper for one UDP socket, for the port-mapping tests.
//!
//! ```text
//! port-map-probe PORT    bind UDP 0.0.0.0:PORT, map it at the gateway (UPnP, else NAT-PMP)
//! ```
//!
//! Prints, one line each on stdout:
//! - `STATE <json>` for every state the mapper publishes (a `PortMappingState`);
//! - `MAPPED <json>` the first time the state has an external port;
//! - `GOT <text>` for the first datagram received on the socket;
//! - `STOPPED` once SIGTERM has stopped the mapper (which removes the mapping); exits 0.
//!
//! Logs of the mapper go to stderr (`RUST_LOG`, default `debug` for the mapper).

use std::process::ExitCode;

use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use vnet_node::service::port_mapping::{
    PortMappingState, REQUESTED_LEASE, run_port_mapper_with_lease,
};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vnet_node::service::port_mapping=debug".into()),
        )
        .init();
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: port-map-probe PORT [LEASE_SECONDS]");
        return ExitCode::FAILURE;
    };
    // A short lease makes renewals happen within a test.
    let lease = std::env::args()
        .nth(2)
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(REQUESTED_LEASE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(probe(port, lease)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("port-map-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(port: u16, lease: u32) -> Result<(), String> {
    let sock = UdpSocket::bind(("0.0.0.0", port))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    // Before the mapper starts, so that a SIGTERM right after MAPPED is never missed.
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let (state_tx, mut state_rx) = watch::channel(PortMappingState::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mapper = tokio::spawn(run_port_mapper_with_lease(port, lease, state_tx, stop_rx));
    let mut mapped = false;
    let mut got = false;
    let mut buf = [0u8; 1500];
    loop {
        tokio::select! {
            changed = state_rx.changed() => {
                if changed.is_err() {
                    return Err("port mapper ended by itself".into());
                }
                let s = state_rx.borrow_and_update().clone();
                let json = serde_json::to_string(&s).expect("state as JSON");
                println!("STATE {json}");
                if s.external_port.is_some() && !mapped {
                    mapped = true;
                    println!("MAPPED {json}");
                }
            }
            r = sock.recv_from(&mut buf), if !got => {
                let (n, from) = r.map_err(|e| format!("recv: {e}"))?;
                got = true;
                eprintln!("datagram from {from}");
                println!("GOT {}", String::from_utf8_lossy(&buf[..n]));
            }
            _ = sigterm.recv() => break,
        }
    }
    let _ = stop_tx.send(true);
    mapper.await.map_err(|e| format!("port mapper: {e}"))?;
    println!("STOPPED");
    Ok(())
}
