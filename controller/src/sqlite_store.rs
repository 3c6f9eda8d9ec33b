//! The SQLite store, the default: `HOME/controller.db`, tables
//! `vnet_network` and `vnet_member` as in the PostgreSQL store, each row one
//! network or member in the JSON form the API shows. Write-ahead log with
//! `synchronous = FULL`: a save returns after its commit is on disk, so an
//! acknowledged API write survives `kill -9` and power loss, and a crash
//! leaves the last commit, never a mix. Chosen over one JSON file per
//! member by `bench/store.sh` at 10,000 members (docs/controller-store.md):
//! three times the saves per second, a sixth of the load time and of the
//! space, the same durability.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;
use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;
use vnet_node::service::atomic_file::SECRET_FILE_MODE;

use crate::model::{Member, Network};
use crate::store::{Loaded, StoreError, assemble_rows};

/// The database file under the node's home.
pub const SQLITE_FILE: &str = "controller.db";
/// How long a save waits for another connection's write (a `copy-store`
/// reading, the sqlite3 shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order (`PRAGMA user_version` records the last one
/// applied). Never edit a released one; add the next.
const MIGRATIONS: &[&str] = &["CREATE TABLE vnet_network (
        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 16),
        controller TEXT NOT NULL CHECK (length(controller) = 10),
        doc TEXT NOT NULL
    ) STRICT;
    CREATE TABLE vnet_member (
        network_id TEXT NOT NULL REFERENCES vnet_network (id) ON DELETE CASCADE,
        address TEXT NOT NULL CHECK (length(address) = 10),
        doc TEXT NOT NULL,
        PRIMARY KEY (network_id, address)
    ) STRICT;"];

/// A controller's state in an SQLite database file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

impl SqliteStore {
    /// Opens (creating it, owner-only, if needed) the database at `path` and
    /// brings its schema up to date; a database newer than this build knows
    /// is refused.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let sql = |e: rusqlite::Error| database_error(path, e);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // The WAL and shared-memory files take the database file's mode.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(SECRET_FILE_MODE)
            .open(path)
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database {
                what: format!("{}: write-ahead log", path.display()),
                message: format!("journal mode is {mode}"),
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(sql)?;
        migrate(&mut conn, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every network and member (of `controller` only, if given).
    pub fn load(&self, controller: Option<Address>) -> Result<Loaded, StoreError> {
        let sql = |e: rusqlite::Error| database_error(&self.path, e);
        let filter = controller.map(|a| a.to_string());
        let tx = self.conn.unchecked_transaction().map_err(sql)?;
        let mut networks = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, doc FROM vnet_network
                     WHERE ?1 IS NULL OR controller = ?1 ORDER BY id",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map([&filter], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(sql)?;
            for row in rows {
                let (id, doc) = row.map_err(sql)?;
                let doc = parse_doc(&doc)
                    .map_err(|m| self.malformed(&format!("vnet_network {id}"), m))?;
                networks.push((id, doc));
            }
        }
        let mut members = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT m.network_id, m.address, m.doc FROM vnet_member m
                     JOIN vnet_network n ON n.id = m.network_id
                     WHERE ?1 IS NULL OR n.controller = ?1
                     ORDER BY m.network_id, m.address",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map([&filter], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(sql)?;
            for row in rows {
                let (nwid, addr, doc) = row.map_err(sql)?;
                let doc = parse_doc(&doc)
                    .map_err(|m| self.malformed(&format!("vnet_member {nwid}/{addr}"), m))?;
                members.push((nwid, addr, doc));
            }
        }
        tx.finish().map_err(sql)?;
        assemble_rows(networks, members, |row, message| {
            self.malformed(row, message)
        })
    }

    /// Writes a network (durable when this returns).
    pub fn save_network(&self, network: &Network) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO vnet_network (id, controller, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                (
                    network.id.to_string(),
                    network.id.controller().to_string(),
                    network.to_stored_json().to_string(),
                ),
            )
            .map(drop)
            .map_err(|e| database_error(&self.path, e))
    }

    /// Writes a member (its network must be saved already; durable when
    /// this returns).
    pub fn save_member(&self, member: &Member) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO vnet_member (network_id, address, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (network_id, address) DO UPDATE SET doc = excluded.doc",
                (
                    member.network_id.to_string(),
                    member.address.to_string(),
                    member.to_json().to_string(),
                ),
            )
            .map(drop)
            .map_err(|e| database_error(&self.path, e))
    }

    /// Removes a network and (by cascade, in the same statement) its members.
    pub fn delete_network(&self, nwid: NetworkId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM vnet_network WHERE id = ?1", [nwid.to_string()])
            .map(drop)
            .map_err(|e| database_error(&self.path, e))
    }

    /// Removes a member.
    pub fn delete_member(&self, nwid: NetworkId, addr: Address) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM vnet_member WHERE network_id = ?1 AND address = ?2",
                [nwid.to_string(), addr.to_string()],
            )
            .map(drop)
            .map_err(|e| database_error(&self.path, e))
    }

    fn malformed(&self, row: &str, message: impl Into<String>) -> StoreError {
        StoreError::MalformedRow {
            row: format!("{}: {row}", self.path.display()),
            message: message.into(),
        }
    }
}

fn parse_doc(doc: &str) -> Result<Value, String> {
    serde_json::from_str(doc).map_err(|e| format!("not JSON: {e}"))
}

fn database_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Database {
        what: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Applies the migrations not yet applied, in one transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |e: rusqlite::Error| database_error(path, e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let current: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .optional()
        .map_err(sql)?
        .unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Database {
            what: path.display().to_string(),
            message: format!(
                "the database's schema is version {current}, newer than this vnet-controller knows ({known}): upgrade vnet-controller"
            ),
        });
    }
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(statements).map_err(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Network, Member, Member) {
        crate::store::sample_state()
    }

    #[test]
    fn round_trip_owner_only_and_filtered_by_controller() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(SQLITE_FILE);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load(None).unwrap(), Vec::new());
        let (n, a, b) = sample();
        store.save_network(&n).unwrap();
        store.save_member(&a).unwrap();
        store.save_member(&b).unwrap();
        let other = Network::new(NetworkId::new("1122334455".parse().unwrap(), 1), 5);
        store.save_network(&other).unwrap();
        drop(store);
        let fresh = SqliteStore::open(&path).unwrap();
        let mine = Some("8056c2e21c".parse().unwrap());
        assert_eq!(
            fresh.load(mine).unwrap(),
            vec![(n.clone(), vec![b.clone(), a.clone()])]
        );
        assert_eq!(fresh.load(None).unwrap().len(), 2);
        let mut a2 = a.clone();
        a2.revision = 3;
        fresh.save_member(&a2).unwrap();
        fresh.delete_member(n.id, b.address).unwrap();
        assert_eq!(fresh.load(mine).unwrap(), vec![(n.clone(), vec![a2])]);
        fresh.delete_network(n.id).unwrap();
        assert_eq!(fresh.load(mine).unwrap(), Vec::new());
        let rows: i64 = fresh
            .conn
            .query_row("SELECT count(*) FROM vnet_member", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "members go with their network");
        for file in [path.clone(), path.with_extension("db-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }

    #[test]
    fn malformed_rows_and_newer_schemas_are_refused_by_name() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(SQLITE_FILE);
        let (n, a, b) = sample();
        let cases = [
            (
                "UPDATE vnet_member SET doc = '{\"authorized\": []}' WHERE address = 'a1b2c3d4e5'",
                "vnet_member 8056c2e21c000001/a1b2c3d4e5: authorized: expected true or false",
            ),
            (
                "UPDATE vnet_member SET doc = '{not json' WHERE address = 'a1b2c3d4e5'",
                "vnet_member 8056c2e21c000001/a1b2c3d4e5: not JSON",
            ),
            (
                "UPDATE vnet_network SET doc = '{\"mtu\": 5}'",
                "vnet_network 8056c2e21c000001: mtu",
            ),
            (
                "UPDATE vnet_member SET doc = '{\"ipAssignments\": [\"10.0.0.1\"]}' WHERE address = '0102030405'",
                "vnet_member 8056c2e21c000001/a1b2c3d4e5: ipAssignments: 10.0.0.1 is also assigned to member 0102030405",
            ),
        ];
        for (update, message) in cases {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("db-wal"));
            let store = SqliteStore::open(&path).unwrap();
            store.save_network(&n).unwrap();
            store.save_member(&a).unwrap();
            store.save_member(&b).unwrap();
            store.conn.execute_batch(update).unwrap();
            let e = store.load(None).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(message), "{e} should contain {message}");
        }
        let store = SqliteStore::open(&path).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let e = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("schema is version 99, newer than"), "{e}");
    }
}
