//! Where the controller keeps its networks and members: [`Store`], an
//! SQLite file under the home (the default, [`SqliteStore`]), JSON files in
//! a `controller.d` directory ([`FileStore`], ZeroTier's layout) or a
//! PostgreSQL database ([`PgStore`]), chosen by `local.conf`'s
//! `controllerDbPath` ([`StoreSpec`], ZeroTier's setting and syntax).
//!
//! Both stores keep each network and member in the JSON form the API shows
//! (less computed fields), so state moves between them unchanged
//! (`vnet-controller copy-store`).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;

use crate::file_store::FileStore;
use crate::model::{Member, Network};
use crate::pg_store::PgStore;
use crate::sqlite_store::{SQLITE_FILE, SqliteStore};
use crate::update::{member_from_stored, network_from_stored};

/// The prefix of a `controllerDbPath` that names a PostgreSQL database.
pub const POSTGRES_PREFIX: &str = "postgres:";
/// The prefix of a `controllerDbPath` that names an SQLite database file.
pub const SQLITE_PREFIX: &str = "sqlite:";

/// A failed load or save, naming the file or the database row.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file that is not a valid network or member.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The database refused or could not be reached.
    #[error("PostgreSQL store: {what}: {message}")]
    Database {
        /// What was being done.
        what: String,
        /// The server's or the client's message.
        message: String,
    },
    /// A database row that is not a valid network or member.
    #[error("PostgreSQL store: {row}: {message}")]
    MalformedRow {
        /// The table and key of the row.
        row: String,
        /// What is wrong.
        message: String,
    },
}

/// Networks and their members, as loaded.
pub type Loaded = Vec<(Network, Vec<Member>)>;

/// The first member (index into `members`, sorted by address) holding an
/// IP an earlier one holds, with the message both stores give.
pub fn duplicate_ip(members: &[&Member]) -> Option<(usize, String)> {
    let mut holders: HashMap<IpAddr, Address> = HashMap::new();
    for (i, member) in members.iter().enumerate() {
        for ip in &member.ip_assignments {
            if let Some(other) = holders.insert(*ip, member.address) {
                return Some((
                    i,
                    format!("ipAssignments: {ip} is also assigned to member {other}"),
                ));
            }
        }
    }
    None
}

/// A database's network rows (id, document) and member rows (network id,
/// address, document), each ordered by key, parsed into networks and their
/// members; a row that does not parse, or a member whose IP another holds,
/// is refused with `malformed(row name, problem)`. The one reading of rows
/// for the SQLite and PostgreSQL stores.
pub fn assemble_rows(
    networks: Vec<(String, Value)>,
    members: Vec<(String, String, Value)>,
    malformed: impl Fn(&str, String) -> StoreError,
) -> Result<Loaded, StoreError> {
    let mut loaded: Loaded = Vec::with_capacity(networks.len());
    for (id, doc) in networks {
        let row = format!("vnet_network {id}");
        let nwid: NetworkId = id
            .parse()
            .map_err(|e| malformed(&row, format!("id: {e}")))?;
        let network =
            network_from_stored(nwid, &doc).map_err(|e| malformed(&row, e.to_string()))?;
        loaded.push((network, Vec::new()));
    }
    let mut i = 0;
    for (nwid, addr, doc) in members {
        let row = format!("vnet_member {nwid}/{addr}");
        // Both lists are ordered by network id: walk them together.
        while loaded.get(i).is_some_and(|(n, _)| n.id.to_string() != nwid) {
            i += 1;
        }
        let Some((network, list)) = loaded.get_mut(i) else {
            return Err(malformed(&row, "its network is not loaded".into()));
        };
        let address: Address = addr
            .parse()
            .map_err(|e| malformed(&row, format!("address: {e}")))?;
        let member = member_from_stored(network.id, address, &doc)
            .map_err(|e| malformed(&row, e.to_string()))?;
        list.push(member);
    }
    for (network, list) in &loaded {
        let sorted: Vec<&Member> = list.iter().collect();
        if let Some((i, message)) = duplicate_ip(&sorted) {
            let row = format!("vnet_member {}/{}", network.id, list[i].address);
            return Err(malformed(&row, message));
        }
    }
    Ok(loaded)
}

/// Where a controller's state lives, as `controllerDbPath` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A `controller.d` directory.
    Files(PathBuf),
    /// A PostgreSQL connection string (libpq's `key=value` form or a
    /// `postgresql://` URL), after `postgres:`.
    Postgres(String),
}

impl StoreSpec {
    /// Parses a `controllerDbPath`: `postgres:<connection string>`,
    /// `sqlite:<file>`, or the path of a `controller.d` directory. Relative
    /// paths are under `home`.
    pub fn parse(text: &str, home: &Path) -> Result<Self, String> {
        if let Some(file) = text.strip_prefix(SQLITE_PREFIX) {
            if file.trim().is_empty() {
                return Err("controllerDbPath: sqlite: names no file".into());
            }
            Ok(Self::Sqlite(home.join(file)))
        } else if let Some(conninfo) = text.strip_prefix(POSTGRES_PREFIX) {
            conninfo.parse::<postgres::Config>().map_err(|e| {
                format!("controllerDbPath: not a PostgreSQL connection string: {e}")
            })?;
            Ok(Self::Postgres(conninfo.to_string()))
        } else if text.trim().is_empty() {
            Err("controllerDbPath: empty".into())
        } else {
            Ok(Self::Files(home.join(text)))
        }
    }

    /// The default: `home/controller.db`.
    pub fn default_for(home: &Path) -> Self {
        Self::Sqlite(home.join(SQLITE_FILE))
    }

    /// A name for logs and messages that shows no password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(file) => format!("SQLite database {}", file.display()),
            Self::Files(dir) => dir.display().to_string(),
            Self::Postgres(conninfo) => match conninfo.parse::<postgres::Config>() {
                Ok(c) => {
                    let db = c.get_dbname().unwrap_or("(default database)");
                    format!("PostgreSQL database {db}")
                }
                Err(_) => "PostgreSQL".into(),
            },
        }
    }
}

/// The controller's store.
#[derive(Debug)]
pub enum Store {
    /// An SQLite database file.
    Sqlite(SqliteStore),
    /// Files under `controller.d`.
    Files(FileStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

impl Store {
    /// The file store under `home` (`home/controller.d`).
    pub fn new(home: &Path) -> Self {
        Self::Files(FileStore::new(home))
    }

    /// Every network and member (of controller `controller` only, in a
    /// database that several controllers share). A malformed file or row
    /// is an error naming it.
    pub fn load(&self, controller: Option<Address>) -> Result<Loaded, StoreError> {
        match self {
            Self::Sqlite(s) => s.load(controller),
            Self::Files(s) => s.load(),
            Self::Postgres(s) => s.load(controller),
        }
    }

    /// Writes a network (durable when this returns).
    pub fn save_network(&self, network: &Network) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.save_network(network),
            Self::Files(s) => s.save_network(network),
            Self::Postgres(s) => s.save_network(network),
        }
    }

    /// Writes a member (durable when this returns).
    pub fn save_member(&self, member: &Member) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.save_member(member),
            Self::Files(s) => s.save_member(member),
            Self::Postgres(s) => s.save_member(member),
        }
    }

    /// Removes a network and its members.
    pub fn delete_network(&self, nwid: NetworkId) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.delete_network(nwid),
            Self::Files(s) => s.delete_network(nwid),
            Self::Postgres(s) => s.delete_network(nwid),
        }
    }

    /// Removes a member.
    pub fn delete_member(&self, nwid: NetworkId, addr: Address) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.delete_member(nwid, addr),
            Self::Files(s) => s.delete_member(nwid, addr),
            Self::Postgres(s) => s.delete_member(nwid, addr),
        }
    }
}

/// A network and two members, one authorized with an address, for the
/// stores' tests.
#[cfg(test)]
pub(crate) fn sample_state() -> (Network, Member, Member) {
    use crate::update::{member_update, network_update};
    use serde_json::json;
    let nwid = NetworkId::new("8056c2e21c".parse().unwrap(), 1);
    let mut n = network_update(
        &Network::new(nwid, 100),
        &json!({"name": "office", "routes": [{"target": "10.0.0.0/24"}],
                "ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.9"}]}),
    )
    .unwrap();
    n.revision = 4;
    let (_, key) = crate::join_keys::JoinKey::create(
        [3; 20],
        crate::join_keys::KeyOptions {
            reusable: true,
            ephemeral: true,
            expires_at_ms: Some(9_000),
        },
        100,
    );
    n.join_keys.push(key);
    let mut a = member_update(
        &Member::new(n.id, "a1b2c3d4e5".parse().unwrap(), 101),
        &json!({"authorized": true, "ipAssignments": ["10.0.0.1"]}),
        102,
    )
    .unwrap();
    a.revision = 2;
    a.identity = Some(format!("a1b2c3d4e5:0:{}", "ab".repeat(64)));
    a.versions = Some(vnet_node::core::message::Versions {
        protocol: 1,
        major: 0,
        minor: 1,
        revision: 9,
    });
    a.advertised_routes = vec!["192.168.31.0/24".parse().unwrap()];
    a.approved_routes = vec!["192.168.31.0/24".parse().unwrap()];
    a.ephemeral = true;
    let mut b = Member::new(n.id, "0102030405".parse().unwrap(), 103);
    b.revision = 1;
    (n, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_db_path_names_files_or_postgres() {
        let home = Path::new("/var/lib/vnet");
        assert_eq!(
            StoreSpec::parse("controller.d", home),
            Ok(StoreSpec::Files(home.join("controller.d")))
        );
        assert_eq!(
            StoreSpec::parse("/srv/ctl", home),
            Ok(StoreSpec::Files("/srv/ctl".into()))
        );
        let pg = StoreSpec::parse(
            "postgres:host=/run/postgresql dbname=vnet password=s3cret",
            home,
        )
        .unwrap();
        assert_eq!(
            pg,
            StoreSpec::Postgres("host=/run/postgresql dbname=vnet password=s3cret".into())
        );
        assert_eq!(pg.describe(), "PostgreSQL database vnet");
        assert!(!pg.describe().contains("s3cret"));
        let url = StoreSpec::parse("postgres:postgresql://vnet@db.example/vnet", home).unwrap();
        assert!(matches!(url, StoreSpec::Postgres(_)));
        let e = StoreSpec::parse("postgres:host=x port=notaport", home).unwrap_err();
        assert!(e.starts_with("controllerDbPath: not a PostgreSQL"), "{e}");
        assert!(StoreSpec::parse(" ", home).is_err());
        assert_eq!(
            StoreSpec::parse("sqlite:ctl.db", home),
            Ok(StoreSpec::Sqlite(home.join("ctl.db")))
        );
        assert!(StoreSpec::parse("sqlite:", home).is_err());
        assert_eq!(
            StoreSpec::default_for(home),
            StoreSpec::Sqlite(home.join("controller.db"))
        );
    }
}
