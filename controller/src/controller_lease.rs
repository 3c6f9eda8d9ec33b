//! High availability with the PostgreSQL store: several vnet-controllers
//! with one identity share one database, and exactly one of them, the
//! holder of a session-level advisory lock keyed by the controller's
//! address, is active. The others wait as standbys, offline (two nodes
//! with one address online would fight over its paths), and the first to
//! get the lock loads the state and comes online.
//!
//! The lock is released when the holder's session ends: at once when its
//! process dies (the kernel closes the socket), and after
//! [`LEASE_IDLE_SESSION_TIMEOUT`] of silence when its machine or network
//! does (the server ends idle sessions; the holder pings every
//! [`LEASE_PING_INTERVAL`]). A holder whose pings stop succeeding for
//! [`LEASE_LOST_AFTER`], shorter than that timeout, gives up first, so
//! two controllers are never active together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use vnet_node::core::address::Address;

use crate::pg_store::pg_message;
use crate::store::StoreError;

/// The high 16 bits of the lock key ("vn"); the low 40 are the address.
const LEASE_KEY_PREFIX: i64 = 0x766e << 48;
/// How often a standby tries to take the lock.
pub const LEASE_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often the holder proves its session alive.
pub const LEASE_PING_INTERVAL: Duration = Duration::from_secs(1);
/// The holder gives up when no ping succeeded for this long.
pub const LEASE_LOST_AFTER: Duration = Duration::from_secs(3);
/// The server ends a session silent for this long, releasing its lock.
pub const LEASE_IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// A standby waits this long before connecting again after an error.
const LEASE_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// The advisory lock key of controller `address`.
pub fn lease_key(address: Address) -> i64 {
    LEASE_KEY_PREFIX | address.to_u64() as i64
}

/// Called once when the lease is lost, with why.
pub type OnLeaseLost = Arc<dyn Fn(String) + Send + Sync>;

/// Waits (as a standby, for as long as it takes, riding out database
/// outages) until this process holds controller `address`'s lease, then
/// keeps it in threads of its own; `on_lost` runs if it is lost. Only a
/// connection string that does not parse is an error.
pub fn hold_lease(
    conninfo: &str,
    address: Address,
    on_lost: OnLeaseLost,
) -> Result<(), StoreError> {
    let mut config: postgres::Config =
        conninfo
            .parse()
            .map_err(|e: postgres::Error| StoreError::Database {
                what: "reading the connection string".into(),
                message: pg_message(&e),
            })?;
    config.connect_timeout(LEASE_LOST_AFTER);
    let key = lease_key(address);
    let mut said_standby = false;
    let client = loop {
        match try_lock(&config, key) {
            Ok(Some(client)) => break client,
            Ok(None) => {
                if !said_standby {
                    tracing::info!(
                        %address,
                        "standby: another vnet-controller with this identity is active; waiting for its lease"
                    );
                    said_standby = true;
                }
            }
            Err(e) => {
                tracing::warn!("controller lease: {}; trying again", pg_message(&e));
                std::thread::sleep(LEASE_RETRY_INTERVAL);
            }
        }
    };
    tracing::info!(%address, "holding the controller lease: active");
    keep(client, on_lost).map_err(|e| StoreError::Database {
        what: "starting the lease threads".into(),
        message: e.to_string(),
    })
}

/// Connects and polls for the lock until it is taken (the client holding
/// it) or an error ends the session.
fn try_lock(config: &postgres::Config, key: i64) -> Result<Option<Client>, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    let timeout_ms = LEASE_IDLE_SESSION_TIMEOUT.as_millis().to_string();
    // PostgreSQL 14 and newer; older servers keep a dead holder's lock until
    // TCP gives up on it.
    if let Err(e) = client.batch_execute(&format!("SET idle_session_timeout = {timeout_ms}")) {
        tracing::warn!(
            "controller lease: no idle_session_timeout: {}",
            pg_message(&e)
        );
    }
    for _ in 0..20 {
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .get(0);
        if taken {
            return Ok(Some(client));
        }
        std::thread::sleep(LEASE_POLL_INTERVAL);
    }
    Ok(None)
}

/// Pings on the lock's session every [`LEASE_PING_INTERVAL`]; a watchdog
/// calls `on_lost` when a ping fails or none succeeded for
/// [`LEASE_LOST_AFTER`] (a ping can hang on a dead network).
fn keep(mut client: Client, on_lost: OnLeaseLost) -> std::io::Result<()> {
    let start = Instant::now();
    let last_ok_ms = Arc::new(AtomicU64::new(0));
    let pinger_ok = last_ok_ms.clone();
    let pinger_lost = on_lost.clone();
    std::thread::Builder::new()
        .name("vnet-ctl-lease".into())
        .spawn(move || {
            loop {
                std::thread::sleep(LEASE_PING_INTERVAL);
                if let Err(e) = client.batch_execute("SELECT 1") {
                    pinger_lost(format!("its database session failed: {}", pg_message(&e)));
                    return;
                }
                pinger_ok.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        })?;
    std::thread::Builder::new()
        .name("vnet-ctl-lease-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(LEASE_PING_INTERVAL);
                let silent =
                    start.elapsed() - Duration::from_millis(last_ok_ms.load(Ordering::Relaxed));
                if silent > LEASE_LOST_AFTER {
                    on_lost(format!("no answer from the database for {silent:?}"));
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_address_and_the_holder_gives_up_before_the_server_releases() {
        let a: Address = "8056c2e21c".parse().unwrap();
        let b: Address = "8056c2e21d".parse().unwrap();
        assert_ne!(lease_key(a), lease_key(b));
        assert_eq!(lease_key(a) & 0xff_ffff_ffff, 0x80_56c2_e21c);
        assert!(LEASE_LOST_AFTER + LEASE_PING_INTERVAL < LEASE_IDLE_SESSION_TIMEOUT);
    }
}
