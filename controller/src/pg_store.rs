//! The PostgreSQL store: tables `vnet_network` and `vnet_member`
//! ([`crate::pg_migrations`]), each row one network or member in the JSON
//! form the file store writes. A save returns after the server committed
//! it (synchronous commit: durable there), so an acknowledged API write is
//! never lost, whichever controller is active next.
//!
//! The `postgres` client runs its own small tokio runtime and must not be
//! called from inside another, and the controller is called from the API's
//! tasks: so one thread owns the connection and runs each call sent to it.
//! A broken connection is made again at the next call.

use std::sync::mpsc::{Sender, channel, sync_channel};

use postgres::{Client, NoTls};
use serde_json::Value;
use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;

use crate::model::{Member, Network};
use crate::pg_migrations::migrate;
use crate::store::{Loaded, StoreError, assemble_rows};

/// A call run on the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection the store's thread owns.
struct Connection {
    config: postgres::Config,
    client: Option<Client>,
}

impl Connection {
    /// The client, connected again if the last one broke.
    fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.config.connect(NoTls)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }
}

/// The message of a client or server error (the server's own text when
/// there is one: `Display` alone says only "db error").
pub fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

fn database(what: impl Into<String>) -> impl FnOnce(postgres::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Database {
        what,
        message: pg_message(&e),
    }
}

/// A controller's state in a PostgreSQL database.
pub struct PgStore {
    jobs: Sender<Job>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

impl PgStore {
    /// Connects to the database `conninfo` names and brings its schema up
    /// to date.
    pub fn connect(conninfo: &str) -> Result<Self, StoreError> {
        let config: postgres::Config = conninfo
            .parse()
            .map_err(database("reading the connection string"))?;
        let mut connection = Connection {
            config,
            client: None,
        };
        let client = connection.client().map_err(database("connecting"))?;
        let applied = migrate(client).map_err(|e| StoreError::Database {
            what: "schema".into(),
            message: e.to_string(),
        })?;
        if !applied.is_empty() {
            tracing::info!(?applied, "PostgreSQL store: schema migrated");
        }
        let (jobs, incoming) = channel::<Job>();
        std::thread::Builder::new()
            .name("vnet-ctl-pg".into())
            .spawn(move || {
                while let Ok(job) = incoming.recv() {
                    job(&mut connection);
                }
            })
            .map_err(|e| StoreError::Database {
                what: "starting its thread".into(),
                message: e.to_string(),
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the connection's thread and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, result) = sync_channel(1);
        let gone = || StoreError::Database {
            what: what.clone(),
            message: "the connection's thread stopped".into(),
        };
        let job_what = what.clone();
        self.jobs
            .send(Box::new(move |c: &mut Connection| {
                let r = c.client().and_then(f).map_err(database(job_what));
                let _ = reply.send(r);
            }))
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }

    /// Every network and member (of `controller` only, if given).
    pub fn load(&self, controller: Option<Address>) -> Result<Loaded, StoreError> {
        let filter = controller.map(|a| a.to_string());
        let (network_rows, member_rows) = self.call("loading".into(), move |c| {
            let mut tx = c.build_transaction().read_only(true).start()?;
            let networks = tx.query(
                "SELECT id, doc FROM vnet_network
                 WHERE $1::text IS NULL OR controller = $1 ORDER BY id",
                &[&filter],
            )?;
            let members = tx.query(
                "SELECT m.network_id, m.address, m.doc FROM vnet_member m
                 JOIN vnet_network n ON n.id = m.network_id
                 WHERE $1::text IS NULL OR n.controller = $1
                 ORDER BY m.network_id, m.address",
                &[&filter],
            )?;
            tx.commit()?;
            let networks: Vec<(String, Value)> =
                networks.iter().map(|r| (r.get(0), r.get(1))).collect();
            let members: Vec<(String, String, Value)> = members
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            Ok((networks, members))
        })?;
        assemble_rows(network_rows, member_rows, |row, message| {
            StoreError::MalformedRow {
                row: row.to_string(),
                message,
            }
        })
    }

    /// Writes a network.
    pub fn save_network(&self, network: &Network) -> Result<(), StoreError> {
        let id = network.id.to_string();
        let controller = network.id.controller().to_string();
        let doc = network.to_stored_json();
        self.call(format!("saving network {id}"), move |c| {
            c.execute(
                "INSERT INTO vnet_network (id, controller, doc) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
                &[&id, &controller, &doc],
            )
            .map(drop)
        })
    }

    /// Writes a member (its network must be saved already).
    pub fn save_member(&self, member: &Member) -> Result<(), StoreError> {
        let nwid = member.network_id.to_string();
        let addr = member.address.to_string();
        let doc = member.to_json();
        self.call(format!("saving member {nwid}/{addr}"), move |c| {
            c.execute(
                "INSERT INTO vnet_member (network_id, address, doc) VALUES ($1, $2, $3)
                 ON CONFLICT (network_id, address) DO UPDATE SET doc = EXCLUDED.doc",
                &[&nwid, &addr, &doc],
            )
            .map(drop)
        })
    }

    /// Removes a network and (by cascade, in the same statement) its members.
    pub fn delete_network(&self, nwid: NetworkId) -> Result<(), StoreError> {
        let id = nwid.to_string();
        self.call(format!("deleting network {id}"), move |c| {
            c.execute("DELETE FROM vnet_network WHERE id = $1", &[&id])
                .map(drop)
        })
    }

    /// Removes a member.
    pub fn delete_member(&self, nwid: NetworkId, addr: Address) -> Result<(), StoreError> {
        let (nwid, addr) = (nwid.to_string(), addr.to_string());
        self.call(format!("deleting member {nwid}/{addr}"), move |c| {
            c.execute(
                "DELETE FROM vnet_member WHERE network_id = $1 AND address = $2",
                &[&nwid, &addr],
            )
            .map(drop)
        })
    }
}
