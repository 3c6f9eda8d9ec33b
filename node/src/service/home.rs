//! The node's home directory: identity, auth token, port file, planet,
//! moons and local settings. Every write is crash-safe.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::identity::Identity;
use crate::core::world::{World, WorldKind};
use crate::service::atomic_file::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, write_atomic};

/// Why the home directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// A file's content is unusable.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// There is no planet.
    #[error(
        "{0}: no planet file. vnet ships none: make one with `vnet-planet initplanet` and `vnet-planet mkworld`, then copy it here"
    )]
    NoPlanet(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HomeError + '_ {
    move |error| HomeError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Settings from `local.conf`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct LocalConf {
    /// The `settings` object.
    #[serde(default)]
    pub settings: LocalSettings,
}

/// The `settings` object of `local.conf`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalSettings {
    /// UDP and API port, unless given on the command line.
    pub primary_port: Option<u16>,
    /// Ask the LAN's gateway (UPnP IGD, NAT-PMP) to forward a port to us (default on).
    pub port_mapping_enabled: Option<bool>,
    /// Relay through a root over TCP at once, whatever UDP does (default off).
    pub force_tcp_relay: Option<bool>,
}

/// A node's home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// Opens (and creates if needed) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, HomeError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The identity, created on first start (secret 0600, written atomically).
    pub fn load_or_create_identity(&self) -> Result<(Identity, bool), HomeError> {
        let secret = self.path("identity.secret");
        match fs::read_to_string(&secret) {
            Ok(text) => {
                let id: Identity = text.parse().map_err(|e| HomeError::Invalid {
                    path: secret.clone(),
                    problem: format!("{e}"),
                })?;
                if !id.has_secret() {
                    return Err(HomeError::Invalid {
                        path: secret,
                        problem: "holds no secret key".into(),
                    });
                }
                Ok((id, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate();
                write_atomic(&secret, id.to_text(true).as_bytes(), SECRET_FILE_MODE)
                    .map_err(io_error(&secret))?;
                let public = self.path("identity.public");
                write_atomic(&public, id.to_text(false).as_bytes(), PUBLIC_FILE_MODE)
                    .map_err(io_error(&public))?;
                Ok((id, true))
            }
            Err(e) => Err(io_error(&secret)(e)),
        }
    }

    /// The API token, created on first start (0600).
    pub fn load_or_create_token(&self) -> Result<String, HomeError> {
        let path = self.path("authtoken.secret");
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            Ok(_) => Err(HomeError::Invalid {
                path,
                problem: "is empty".into(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let mut random = [0u8; 24];
                getrandom::fill(&mut random).map_err(|e| io_error(&path)(io::Error::other(e)))?;
                let token: String = random
                    .iter()
                    .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                    .collect();
                write_atomic(&path, token.as_bytes(), SECRET_FILE_MODE).map_err(io_error(&path))?;
                Ok(token)
            }
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Writes `vnet.port`.
    pub fn write_port(&self, port: u16) -> Result<(), HomeError> {
        let path = self.path("vnet.port");
        write_atomic(&path, port.to_string().as_bytes(), PUBLIC_FILE_MODE).map_err(io_error(&path))
    }

    /// Reads `local.conf` (absent: defaults).
    pub fn local_conf(&self) -> Result<LocalConf, HomeError> {
        let path = self.path("local.conf");
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| HomeError::Invalid {
                path,
                problem: format!("not valid local.conf JSON: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalConf::default()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Loads the planet (required).
    pub fn load_planet(&self) -> Result<World, HomeError> {
        let path = self.path("planet");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(HomeError::NoPlanet(path)),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let world = World::decode(&bytes).map_err(|e| HomeError::Invalid {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        if world.kind() != WorldKind::Planet || !world.is_self_signed() {
            return Err(HomeError::Invalid {
                path,
                problem: "not a planet whose signature verifies".into(),
            });
        }
        Ok(world)
    }

    /// Saves an updated planet.
    pub fn save_planet(&self, world: &World) -> Result<(), HomeError> {
        let path = self.path("planet");
        write_atomic(&path, &world.encode(), PUBLIC_FILE_MODE).map_err(io_error(&path))
    }

    fn moons_dir(&self) -> PathBuf {
        self.path("moons.d")
    }

    /// Loads `moons.d/*.moon`: the good ones, and for each bad one its error.
    pub fn load_moons(&self) -> (Vec<World>, Vec<HomeError>) {
        let dir = self.moons_dir();
        let mut moons = Vec::new();
        let mut errors = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return (moons, errors);
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "moon"))
            .collect();
        paths.sort();
        for path in paths {
            let loaded = fs::read(&path)
                .map_err(io_error(&path))
                .and_then(|bytes| {
                    World::decode(&bytes).map_err(|e| HomeError::Invalid {
                        path: path.clone(),
                        problem: e.to_string(),
                    })
                })
                .and_then(|w| {
                    if w.kind() == WorldKind::Moon {
                        Ok(w)
                    } else {
                        Err(HomeError::Invalid {
                            path: path.clone(),
                            problem: "is a planet, not a moon".into(),
                        })
                    }
                });
            match loaded {
                Ok(w) => moons.push(w),
                Err(e) => errors.push(e),
            }
        }
        (moons, errors)
    }

    /// The networks joined: `networks.d/<nwid>.conf`.
    pub fn joined_networks(&self) -> Vec<crate::core::network_id::NetworkId> {
        let Ok(entries) = fs::read_dir(self.path("networks.d")) else {
            return Vec::new();
        };
        let mut ids: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".conf")?.parse().ok()
            })
            .collect();
        ids.sort();
        ids
    }

    /// Records a joined network (survives restarts).
    pub fn save_network(&self, nwid: crate::core::network_id::NetworkId) -> Result<(), HomeError> {
        let dir = self.path("networks.d");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(format!("{nwid}.conf"));
        let body = serde_json::json!({ "id": nwid.to_string() }).to_string();
        write_atomic(&path, body.as_bytes(), PUBLIC_FILE_MODE).map_err(io_error(&path))
    }

    /// Forgets a joined network; true if it was recorded.
    pub fn remove_network(
        &self,
        nwid: crate::core::network_id::NetworkId,
    ) -> Result<bool, HomeError> {
        let path = self.path("networks.d").join(format!("{nwid}.conf"));
        let _ = fs::remove_file(self.path("networks.d").join(format!("{nwid}.local.conf")));
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// A joined network's local settings (`networks.d/<nwid>.local.conf`,
    /// JSON); ZeroTier's defaults when the file is missing.
    pub fn network_settings(
        &self,
        nwid: crate::core::network_id::NetworkId,
    ) -> Result<crate::service::managed_routes::NetworkSettings, HomeError> {
        let path = self.path("networks.d").join(format!("{nwid}.local.conf"));
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| HomeError::Invalid {
                path,
                problem: format!("not valid network settings JSON: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Saves a joined network's local settings (atomically).
    pub fn save_network_settings(
        &self,
        nwid: crate::core::network_id::NetworkId,
        settings: &crate::service::managed_routes::NetworkSettings,
    ) -> Result<(), HomeError> {
        let dir = self.path("networks.d");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(format!("{nwid}.local.conf"));
        let body = serde_json::to_string_pretty(settings).unwrap_or_default();
        write_atomic(&path, body.as_bytes(), PUBLIC_FILE_MODE).map_err(io_error(&path))
    }

    /// Saves a moon as `moons.d/<id>.moon`.
    pub fn save_moon(&self, world: &World) -> Result<(), HomeError> {
        let dir = self.moons_dir();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(world.moon_file_name());
        write_atomic(&path, &world.encode(), PUBLIC_FILE_MODE).map_err(io_error(&path))
    }

    /// Removes `moons.d/<id>.moon`; true if it was there.
    pub fn remove_moon(&self, id: u64) -> Result<bool, HomeError> {
        let path = self.moons_dir().join(format!("{id:016x}.moon"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}
