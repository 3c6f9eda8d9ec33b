//! The PostgreSQL store's schema, as numbered migrations applied in order
//! and recorded in `vnet_schema`. Every controller that connects applies
//! what is missing, in one transaction under an advisory lock, so two
//! controllers starting together never apply one twice; a database whose
//! schema is newer than this build knows is refused rather than misread.
//!
//! Hand-written rather than refinery/sqlx-migrate: it is the one table and
//! the lock above, and neither library refuses a newer schema by default.

use postgres::Client;

/// Advisory lock key held while migrating ("vnetmigr").
const MIGRATION_LOCK_KEY: i64 = 0x766e_6574_6d69_6772;

/// The migrations, in order: (version, SQL). Never edit a released one;
/// add the next.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE vnet_network (
        id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
        controller text NOT NULL CHECK (controller ~ '^[0-9a-f]{10}$'),
        doc jsonb NOT NULL
    );
    CREATE INDEX vnet_network_controller ON vnet_network (controller);
    CREATE TABLE vnet_member (
        network_id text NOT NULL REFERENCES vnet_network (id) ON DELETE CASCADE,
        address text NOT NULL CHECK (address ~ '^[0-9a-f]{10}$'),
        doc jsonb NOT NULL,
        PRIMARY KEY (network_id, address)
    );",
)];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The server refused a statement.
    #[error("migrating the schema: {0}")]
    Sql(String),
    /// The database was made by a newer vnet-controller.
    #[error(
        "the database's schema is version {found}, newer than this vnet-controller knows ({known}): upgrade vnet-controller"
    )]
    Newer {
        /// The version found.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
}

/// Brings the schema up to date; returns the versions applied now.
pub fn migrate(client: &mut Client) -> Result<Vec<i32>, MigrationError> {
    let sql = |e: postgres::Error| MigrationError::Sql(crate::pg_store::pg_message(&e));
    let mut tx = client.transaction().map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .map_err(sql)?;
    // No "already exists, skipping" notice in the log at every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(sql)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vnet_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .map_err(sql)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM vnet_schema", &[])
        .map_err(sql)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(MigrationError::Newer {
            found: current,
            known,
        });
    }
    let mut applied = Vec::new();
    for (version, statements) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(statements).map_err(sql)?;
        tx.execute("INSERT INTO vnet_schema (version) VALUES ($1)", &[version])
            .map_err(sql)?;
        applied.push(*version);
    }
    tx.commit().map_err(sql)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (i, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
        }
    }
}
