//! The file store, the default: the controller's files
//! `HOME/controller.d/network/<nwid>.json` for each network and
//! `HOME/controller.d/network/<nwid>/member/<addr>.json` for each member,
//! in the JSON form the API shows (less computed fields).
//!
//! Every write goes through [`write_atomic`] (temp file, fsync, rename, fsync
//! of the directory) and new directories are fsynced into their parents, so
//! a save that returned is durable and a crash leaves the old file or the
//! new one, never a mix. Deleting a network removes its file first (that is
//! the commit point) and then its member directory; a member directory left
//! without its network by a crash in between is removed at the next load.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vnet_node::core::address::Address;
use vnet_node::core::network_id::NetworkId;
use vnet_node::service::atomic_file::{SECRET_FILE_MODE, write_atomic};

use crate::model::{Member, Network};
use crate::store::{Loaded, StoreError, duplicate_ip};
use crate::update::{member_from_stored, network_from_stored};

/// The controller's directory under the node's home.
pub const CONTROLLER_DIR: &str = "controller.d";

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Malformed {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The controller's files under one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    networks: PathBuf,
}

impl FileStore {
    /// The store under `home` (`home/controller.d`; nothing is touched
    /// until a load or save).
    pub fn new(home: &Path) -> Self {
        Self::at(&home.join(CONTROLLER_DIR))
    }

    /// The store in `dir`, a `controller.d` directory (`local.conf`'s
    /// `controllerDbPath`).
    pub fn at(dir: &Path) -> Self {
        Self {
            networks: dir.join("network"),
        }
    }

    /// The file of network `nwid`.
    pub fn network_path(&self, nwid: NetworkId) -> PathBuf {
        self.networks.join(format!("{nwid}.json"))
    }

    /// The file of member `addr` of `nwid`.
    pub fn member_path(&self, nwid: NetworkId, addr: Address) -> PathBuf {
        self.member_dir(nwid).join(format!("{addr}.json"))
    }

    fn network_dir(&self, nwid: NetworkId) -> PathBuf {
        self.networks.join(nwid.to_string())
    }

    fn member_dir(&self, nwid: NetworkId) -> PathBuf {
        self.network_dir(nwid).join("member")
    }

    /// Reads every network and member file. A malformed file (bad JSON, a
    /// bad field, a name that is not an id, an IP held twice in a network)
    /// is an error naming it. Leftover temp files of interrupted writes are
    /// removed, as are member directories whose network file is gone.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let entries = match fs::read_dir(&self.networks) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.networks)(e)),
        };
        let mut networks: Vec<Network> = Vec::new();
        let mut dirs: Vec<(PathBuf, String)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&self.networks))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if remove_if_temp(&path, &name)? {
                continue;
            }
            let file_type = entry.file_type().map_err(io_error(&path))?;
            if file_type.is_dir() {
                dirs.push((path, name));
            } else if let Some(stem) = name.strip_suffix(".json") {
                let nwid: NetworkId = stem.parse().map_err(|e| {
                    malformed(&path, format!("the name is not <network id>.json: {e}"))
                })?;
                let json = read_json(&path)?;
                let network = network_from_stored(nwid, &json)
                    .map_err(|e| malformed(&path, e.to_string()))?;
                networks.push(network);
            }
        }
        networks.sort_by_key(|n| n.id);
        let mut loaded = Vec::with_capacity(networks.len());
        for (path, name) in dirs {
            let known = name
                .parse::<NetworkId>()
                .is_ok_and(|id| networks.iter().any(|n| n.id == id));
            if !known && name.parse::<NetworkId>().is_ok() {
                // The network was deleted and a crash came before its members were.
                fs::remove_dir_all(&path).map_err(io_error(&path))?;
                sync_dir(&self.networks)?;
            }
        }
        for network in networks {
            let members = self.load_members(network.id)?;
            loaded.push((network, members));
        }
        Ok(loaded)
    }

    fn load_members(&self, nwid: NetworkId) -> Result<Vec<Member>, StoreError> {
        let dir = self.member_dir(nwid);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir)(e)),
        };
        let mut members: Vec<(Member, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if remove_if_temp(&path, &name)? {
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let addr: Address = stem
                .parse()
                .map_err(|e| malformed(&path, format!("the name is not <address>.json: {e}")))?;
            let json = read_json(&path)?;
            let member = member_from_stored(nwid, addr, &json)
                .map_err(|e| malformed(&path, e.to_string()))?;
            members.push((member, path));
        }
        members.sort_by_key(|(m, _)| m.address);
        let sorted: Vec<&Member> = members.iter().map(|(m, _)| m).collect();
        if let Some((i, message)) = duplicate_ip(&sorted) {
            return Err(malformed(&members[i].1, message));
        }
        Ok(members.into_iter().map(|(m, _)| m).collect())
    }

    /// Writes a network's file (durable when this returns).
    pub fn save_network(&self, network: &Network) -> Result<(), StoreError> {
        ensure_dir(&self.networks)?;
        write_json(&self.network_path(network.id), &network.to_stored_json())
    }

    /// Writes a member's file (durable when this returns).
    pub fn save_member(&self, member: &Member) -> Result<(), StoreError> {
        let dir = self.member_dir(member.network_id);
        ensure_dir(&dir)?;
        write_json(
            &self.member_path(member.network_id, member.address),
            &member.to_json(),
        )
    }

    /// Removes a network's file, then its members' files.
    pub fn delete_network(&self, nwid: NetworkId) -> Result<(), StoreError> {
        remove_file(&self.network_path(nwid))?;
        let dir = self.network_dir(nwid);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.networks),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&dir)(e)),
        }
    }

    /// Removes a member's file.
    pub fn delete_member(&self, nwid: NetworkId, addr: Address) -> Result<(), StoreError> {
        remove_file(&self.member_path(nwid, addr))
    }
}

/// Removes `path` if its name is one of [`write_atomic`]'s temp files
/// (`.<name>.tmp-<hex>`); whether it was.
fn remove_if_temp(path: &Path, name: &str) -> Result<bool, StoreError> {
    if name.starts_with('.') && name.contains(".tmp-") {
        fs::remove_file(path).map_err(io_error(path))?;
        Ok(true)
    } else {
        Ok(false)
    }
}

fn read_json(path: &Path) -> Result<Value, StoreError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(path, format!("not JSON: {e}")))
}

fn write_json(path: &Path, value: &Value) -> Result<(), StoreError> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    write_atomic(path, text.as_bytes(), SECRET_FILE_MODE).map_err(io_error(path))
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().expect("store paths have parents")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Creates `dir` and any missing parents, each fsynced into its parent so
/// the new entries survive a crash.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_error(dir)(e)),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Network, Member, Member) {
        crate::store::sample_state()
    }

    /// Every file and directory under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn round_trip_and_layout() {
        let home = tempfile::tempdir().unwrap();
        let store = FileStore::new(home.path());
        assert_eq!(store.load().unwrap(), Vec::new());
        let (n, a, b) = sample();
        store.save_network(&n).unwrap();
        store.save_member(&a).unwrap();
        store.save_member(&b).unwrap();
        assert_eq!(
            tree(home.path()),
            [
                "controller.d",
                "controller.d/network",
                "controller.d/network/8056c2e21c000001",
                "controller.d/network/8056c2e21c000001.json",
                "controller.d/network/8056c2e21c000001/member",
                "controller.d/network/8056c2e21c000001/member/0102030405.json",
                "controller.d/network/8056c2e21c000001/member/a1b2c3d4e5.json",
            ]
        );
        // Reloading gives exactly what was saved (members sorted by address).
        let fresh = FileStore::new(home.path());
        assert_eq!(
            fresh.load().unwrap(),
            vec![(n.clone(), vec![b.clone(), a.clone()])]
        );
        // Overwrites replace; no temp file remains.
        let mut a2 = a.clone();
        a2.revision = 3;
        a2.active_bridge = true;
        store.save_member(&a2).unwrap();
        assert_eq!(
            fresh.load().unwrap(),
            vec![(n.clone(), vec![b.clone(), a2])]
        );
        assert!(tree(home.path()).iter().all(|p| !p.contains(".tmp-")));
        // Deleting a member, then the network (with its member files).
        store.delete_member(n.id, b.address).unwrap();
        assert_eq!(fresh.load().unwrap()[0].1.len(), 1);
        store.delete_network(n.id).unwrap();
        assert_eq!(tree(home.path()), ["controller.d", "controller.d/network"]);
        assert_eq!(fresh.load().unwrap(), Vec::new());
        // Deleting what is not there is fine.
        store.delete_network(n.id).unwrap();
        store.delete_member(n.id, b.address).unwrap();
    }

    #[test]
    fn crash_leftovers_are_cleaned_and_the_acknowledged_state_loads() {
        let home = tempfile::tempdir().unwrap();
        let store = FileStore::new(home.path());
        let (n, a, _) = sample();
        store.save_network(&n).unwrap();
        store.save_member(&a).unwrap();
        // A crash in the middle of later writes leaves temp files with partial
        // contents beside the acknowledged files.
        let net_dir = home.path().join("controller.d/network");
        fs::write(
            net_dir.join(".8056c2e21c000001.json.tmp-00aa"),
            b"{\"name\": \"half",
        )
        .unwrap();
        let member_dir = net_dir.join("8056c2e21c000001/member");
        fs::write(member_dir.join(".a1b2c3d4e5.json.tmp-00bb"), b"").unwrap();
        // And a network deleted just before its member directory went.
        fs::create_dir_all(net_dir.join("8056c2e21c000002/member")).unwrap();
        fs::write(
            net_dir.join("8056c2e21c000002/member/a1b2c3d4e5.json"),
            b"{}",
        )
        .unwrap();
        assert_eq!(store.load().unwrap(), vec![(n, vec![a])]);
        assert_eq!(
            tree(home.path()),
            [
                "controller.d",
                "controller.d/network",
                "controller.d/network/8056c2e21c000001",
                "controller.d/network/8056c2e21c000001.json",
                "controller.d/network/8056c2e21c000001/member",
                "controller.d/network/8056c2e21c000001/member/a1b2c3d4e5.json",
            ]
        );
    }

    #[test]
    fn malformed_files_are_refused_by_name() {
        let (n, a, b) = sample();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("8056c2e21c000001.json", b"{not json".to_vec(), "not JSON"),
            (
                "8056c2e21c000001.json",
                br#"{"mtu": 5}"#.to_vec(),
                "mtu: expected an integer",
            ),
            (
                "8056c2e21c000001.json",
                br#"{"id": "8056c2e21c000009"}"#.to_vec(),
                "id: is \"8056c2e21c000009\"",
            ),
            (
                "office.json",
                b"{}".to_vec(),
                "the name is not <network id>.json",
            ),
            (
                "8056c2e21c000001/member/a1b2c3d4e5.json",
                br#"{"authorized": null}"#.to_vec(),
                "authorized: expected true or false",
            ),
            (
                "8056c2e21c000001/member/zz.json",
                b"{}".to_vec(),
                "the name is not <address>.json",
            ),
            (
                "8056c2e21c000001/member/0102030405.json",
                br#"{"ipAssignments": ["10.0.0.1"]}"#.to_vec(),
                "ipAssignments: 10.0.0.1 is also assigned to member 0102030405",
            ),
        ];
        for (file, contents, message) in cases {
            let home = tempfile::tempdir().unwrap();
            let store = FileStore::new(home.path());
            store.save_network(&n).unwrap();
            store.save_member(&a).unwrap();
            store.save_member(&b).unwrap();
            let path = home.path().join("controller.d/network").join(file);
            fs::write(&path, contents).unwrap();
            let e = store.load().unwrap_err().to_string();
            let expected_path = if file.contains("0102030405") {
                // The duplicate is reported on the later member by address.
                home.path()
                    .join("controller.d/network/8056c2e21c000001/member/a1b2c3d4e5.json")
            } else {
                path
            };
            assert!(
                e.starts_with(&format!("{}: ", expected_path.display())),
                "{e}"
            );
            assert!(e.contains(message), "{e} should contain {message}");
        }
    }

    #[test]
    fn files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let store = FileStore::new(home.path());
        let (n, a, _) = sample();
        store.save_network(&n).unwrap();
        store.save_member(&a).unwrap();
        for p in [store.network_path(n.id), store.member_path(n.id, a.address)] {
            assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
