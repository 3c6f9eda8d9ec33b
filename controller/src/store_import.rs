//! Moving a home from the JSON files (`controller.d`, the default store
//! before SQLite) into `controller.db`, once, at the first start of a
//! controller that uses the default store. The copy is written to a
//! temporary database, read back and compared, and only then renamed into
//! place; the files are then kept, renamed `controller.d.imported`. A crash
//! at any point leaves either the files in use (the import runs again) or
//! the database in place (the files are ignored, with a warning).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::file_store::{CONTROLLER_DIR, FileStore, io_error, sync_dir};
use crate::sqlite_store::{SQLITE_FILE, SqliteStore};
use crate::store::StoreError;

/// What an import did: networks and members moved, and where the files went.
#[derive(Debug, PartialEq, Eq)]
pub struct Imported {
    /// Networks moved.
    pub networks: usize,
    /// Members moved.
    pub members: usize,
    /// The files' new name.
    pub kept_at: PathBuf,
}

/// Imports `home/controller.d` into `home/controller.db` if there are
/// files and no database yet; `None` when there was nothing to do.
pub fn import_file_store(home: &Path) -> Result<Option<Imported>, StoreError> {
    let dir = home.join(CONTROLLER_DIR);
    let db = home.join(SQLITE_FILE);
    if !dir.join("network").is_dir() {
        return Ok(None);
    }
    if db.exists() {
        tracing::warn!(
            "{} is not used: {} holds the controller's state (imported before)",
            dir.display(),
            db.display()
        );
        return Ok(None);
    }
    let loaded = FileStore::at(&dir).load()?;
    let tmp = home.join(format!("{SQLITE_FILE}.import"));
    for leftover in [tmp.clone(), wal_of(&tmp), shm_of(&tmp)] {
        match fs::remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&leftover)(e)),
        }
    }
    let members = {
        let store = SqliteStore::open(&tmp)?;
        let mut members = 0;
        for (network, list) in &loaded {
            store.save_network(network)?;
            for m in list {
                store.save_member(m)?;
                members += 1;
            }
        }
        if store.load(None)? != loaded {
            return Err(StoreError::Database {
                what: tmp.display().to_string(),
                message: "the imported database does not read back as the files".into(),
            });
        }
        members
        // Closing the last connection checkpoints the log into the file.
    };
    fs::rename(&tmp, &db).map_err(io_error(&db))?;
    sync_dir(home)?;
    let kept_at = free_name(home, "controller.d.imported");
    fs::rename(&dir, &kept_at).map_err(io_error(&kept_at))?;
    sync_dir(home)?;
    Ok(Some(Imported {
        networks: loaded.len(),
        members,
        kept_at,
    }))
}

fn wal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

fn shm_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-shm", db.display()))
}

/// `home/name`, or `home/name.N` for the first N free.
fn free_name(home: &Path, name: &str) -> PathBuf {
    let first = home.join(name);
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| home.join(format!("{name}.{n}")))
        .find(|p| !p.exists())
        .expect("a free name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Member, Network};
    use crate::update::member_update;
    use serde_json::json;
    use vnet_node::core::network_id::NetworkId;

    #[test]
    fn files_move_into_the_database_once_and_are_kept_aside() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            import_file_store(home.path()).unwrap(),
            None,
            "nothing to import"
        );
        let files = FileStore::new(home.path());
        let nwid = NetworkId::new("8056c2e21c".parse().unwrap(), 1);
        let network = Network::new(nwid, 1);
        files.save_network(&network).unwrap();
        let member = member_update(
            &Member::new(nwid, "a1b2c3d4e5".parse().unwrap(), 2),
            &json!({"authorized": true, "ipAssignments": ["10.0.0.1"]}),
            3,
        )
        .unwrap();
        files.save_member(&member).unwrap();
        // A crash during an earlier import left a partial database.
        fs::write(home.path().join("controller.db.import"), b"partial").unwrap();
        let done = import_file_store(home.path()).unwrap().unwrap();
        assert_eq!((done.networks, done.members), (1, 1));
        assert_eq!(done.kept_at, home.path().join("controller.d.imported"));
        assert!(!home.path().join("controller.d").exists());
        assert!(!home.path().join("controller.db.import").exists());
        let db = SqliteStore::open(&home.path().join(SQLITE_FILE)).unwrap();
        assert_eq!(db.load(None).unwrap(), vec![(network, vec![member])]);
        drop(db);
        // Files that reappear beside the database are left alone.
        fs::create_dir_all(home.path().join("controller.d/network")).unwrap();
        assert_eq!(import_file_store(home.path()).unwrap(), None);
        assert!(home.path().join("controller.d/network").exists());
    }

    #[test]
    fn a_malformed_file_stops_the_import_naming_it_and_changes_nothing() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("controller.d/network");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("8056c2e21c000001.json"), b"{oops").unwrap();
        let e = import_file_store(home.path()).unwrap_err().to_string();
        assert!(e.contains("8056c2e21c000001.json: not JSON"), "{e}");
        assert!(!home.path().join(SQLITE_FILE).exists());
        assert!(dir.join("8056c2e21c000001.json").exists());
    }
}
