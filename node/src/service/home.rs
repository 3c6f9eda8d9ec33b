//! The node's home directory: identity, auth token, port file, planet,
//! moons and local settings. Every write is crash-safe.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::constants::{
    BUSY_POLL_MICROS_MAX, FLUSH_THREADS_MAX, MAX_IDENTITY_CHECKS_PER_SECOND, RELAY_THREADS_MAX,
};
use crate::core::identity::Identity;
use crate::core::node::VerifiedIdentity;
use crate::core::world::{World, WorldKind};
use crate::service::atomic_file::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, write_atomic};
use crate::service::verified_identities::{self, VERIFIED_IDENTITIES_FILE};

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

/// What is wrong with `world`, read from the moon file `path`, if anything:
/// it must be a moon, signed by its own `updatesMustBeSignedBy` key, whose id
/// is one of its roots' addresses, in the file named after that id.
fn moon_file_problem(path: &Path, world: &World) -> Option<String> {
    if world.kind() != WorldKind::Moon {
        return Some("is a planet, not a moon".into());
    }
    let expected = world.moon_file_name();
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        return Some(format!(
            "holds moon {:016x}, so it must be named {expected}",
            world.id()
        ));
    }
    if !world
        .roots()
        .iter()
        .any(|r| r.identity.address().to_u64() == world.id())
    {
        return Some(format!(
            "moon {:016x} has no root with that address",
            world.id()
        ));
    }
    if !world.is_self_signed() {
        return Some("signature does not verify with the moon's own signing key".into());
    }
    None
}

/// Characters of an API token.
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Characters in an API token (24 of 36 symbols: about 124 bits).
const TOKEN_LEN: usize = 24;
/// Random bytes at or above this are thrown away, so every character of the
/// alphabet is equally likely (256 is not a multiple of 36: plain `% 36` would
/// make `a`..`d` more likely than the rest).
const TOKEN_BYTE_LIMIT: u8 = (256 / TOKEN_ALPHABET.len() * TOKEN_ALPHABET.len()) as u8;

/// A new API token from the random bytes `fill` gives, by rejection sampling.
fn new_token<E>(mut fill: impl FnMut(&mut [u8]) -> Result<(), E>) -> Result<String, E> {
    let mut token = String::with_capacity(TOKEN_LEN);
    let mut random = [0u8; 32];
    while token.len() < TOKEN_LEN {
        fill(&mut random)?;
        for c in random.iter().filter_map(|&b| token_char(b)) {
            if token.len() < TOKEN_LEN {
                token.push(c);
            }
        }
    }
    Ok(token)
}

/// The token character a random byte stands for; `None` for the bytes that
/// would make some characters likelier than others.
fn token_char(b: u8) -> Option<char> {
    (b < TOKEN_BYTE_LIMIT)
        .then(|| char::from(TOKEN_ALPHABET[usize::from(b) % TOKEN_ALPHABET.len()]))
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
    /// Identity checks (memory-hard hashes of unknown identities) per second,
    /// node-wide (default 20, 1 to 1,000).
    pub identity_checks_per_second: Option<u32>,
    /// Open TAP devices with offloads: TCP super-frames and partial
    /// checksums from and to the kernel (default on).
    pub tap_offload: Option<bool>,
    /// Announce and send OFFLOAD_FRAME to peers that take it (default on;
    /// off, the node behaves as one from before offloads).
    pub offload_frames: Option<bool>,
    /// Announce AES-256-GCM and seal with it to peers that announced it too
    /// (default on; off, every packet is Salsa20/12 + Poly1305).
    pub aes_gcm: Option<bool>,
    /// On a root: threads that relay for others besides the engine, sharing
    /// its UDP port (0 to `RELAY_THREADS_MAX`; default one per core beyond
    /// the first, at most `RELAY_THREADS_MAX_DEFAULT`).
    pub relay_threads: Option<usize>,
    /// On a member: threads that send the engine's datagrams and write its
    /// TAP frames (0 to `FLUSH_THREADS_MAX`; default one per core beyond
    /// two, at most `FLUSH_THREADS_MAX_DEFAULT`; 0: the engine does).
    pub flush_threads: Option<usize>,
    /// On a member: after a frame to or from a TAP device, the engine keeps
    /// polling without sleeping for this many microseconds (0 to
    /// `BUSY_POLL_MICROS_MAX`; default 0, it sleeps at once): lower latency
    /// for a core kept busy.
    pub busy_poll_micros: Option<u64>,
    /// vnet-controller's store (ZeroTier's setting): absent, the files in
    /// `controller.d`; a path, another `controller.d` directory;
    /// `postgres:<connection string>`, a PostgreSQL database.
    pub controller_db_path: Option<String>,
    /// vnet-controller: how long a member authorized by an ephemeral join
    /// key may go without asking for its config (members ask every 120 s)
    /// before it is removed (default 1,800 s).
    pub ephemeral_member_timeout_seconds: Option<u64>,
    /// Where a network's DNS settings go (with `allowDNS=1`) when
    /// systemd-resolved does not run (default `/etc/resolv.conf`).
    pub resolv_conf_path: Option<std::path::PathBuf>,
    /// Client networks the local API also answers (ZeroTier's setting): with
    /// any, the API listens on every address, not only 127.0.0.1, and
    /// refuses clients outside these networks and loopback (the token is
    /// required from all).
    pub allow_management_from: Option<Vec<crate::core::ip_prefix::Cidr>>,
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
                let id = Identity::generate(&mut super::os_rng());
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
                let token =
                    new_token(getrandom::fill).map_err(|e| io_error(&path)(io::Error::other(e)))?;
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
            Ok(text) => {
                let conf: LocalConf =
                    serde_json::from_str(&text).map_err(|e| HomeError::Invalid {
                        path: path.clone(),
                        problem: format!("not valid local.conf JSON: {e}"),
                    })?;
                if let Some(n) = conf.settings.identity_checks_per_second
                    && !(1..=MAX_IDENTITY_CHECKS_PER_SECOND).contains(&n)
                {
                    return Err(HomeError::Invalid {
                        path,
                        problem: format!(
                            "identityChecksPerSecond {n} is not within 1..={MAX_IDENTITY_CHECKS_PER_SECOND}"
                        ),
                    });
                }
                if let Some(n) = conf.settings.relay_threads
                    && n > RELAY_THREADS_MAX
                {
                    return Err(HomeError::Invalid {
                        path,
                        problem: format!("relayThreads {n} is not within 0..={RELAY_THREADS_MAX}"),
                    });
                }
                if let Some(n) = conf.settings.flush_threads
                    && n > FLUSH_THREADS_MAX
                {
                    return Err(HomeError::Invalid {
                        path,
                        problem: format!("flushThreads {n} is not within 0..={FLUSH_THREADS_MAX}"),
                    });
                }
                if let Some(n) = conf.settings.busy_poll_micros
                    && n > BUSY_POLL_MICROS_MAX
                {
                    return Err(HomeError::Invalid {
                        path,
                        problem: format!(
                            "busyPollMicros {n} is not within 0..={BUSY_POLL_MICROS_MAX}"
                        ),
                    });
                }
                Ok(conf)
            }
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

    /// Reads `verified-identities` (absent: none); a file that does not
    /// parse is refused naming it, its line and the problem.
    pub fn load_verified_identities(&self) -> Result<Vec<VerifiedIdentity>, HomeError> {
        let path = self.path(VERIFIED_IDENTITIES_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => verified_identities::decode(&text).map_err(|e| HomeError::Invalid {
                path,
                problem: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Writes `verified-identities` atomically (oldest first), readable by
    /// the daemon alone: it says where each peer was reached.
    pub fn save_verified_identities(&self, list: &[VerifiedIdentity]) -> Result<(), HomeError> {
        let path = self.path(VERIFIED_IDENTITIES_FILE);
        let text = verified_identities::encode(list);
        write_atomic(&path, text.as_bytes(), SECRET_FILE_MODE).map_err(io_error(&path))
    }

    /// Loads `moons.d/*.moon`: the good ones, and for each bad one its error
    /// (see [`moon_file_problem`]: a file is trusted no more than a moon
    /// received from the network).
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
                    moon_file_problem(&path, &w).map_or(Ok(w), |problem| {
                        Err(HomeError::Invalid {
                            path: path.clone(),
                            problem,
                        })
                    })
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
        // Owner-only: it may hold a join key.
        write_atomic(&path, body.as_bytes(), SECRET_FILE_MODE).map_err(io_error(&path))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` (repeated) as the random source.
    fn token_from(bytes: &[u8]) -> String {
        let mut it = bytes.iter().copied().cycle();
        new_token(|buf: &mut [u8]| {
            buf.iter_mut().for_each(|b| *b = it.next().unwrap());
            Ok::<(), ()>(())
        })
        .unwrap()
    }

    #[test]
    fn token_bytes_past_the_last_whole_alphabet_are_rejected() {
        assert_eq!(TOKEN_BYTE_LIMIT, 252);
        // 252..=255 would map to a..d under plain modulo: they must be skipped.
        let token = token_from(&[252, 253, 254, 255, 0, 35, 36, 251]);
        assert_eq!(token, "a9a9".repeat(6));
        assert_eq!(token.len(), TOKEN_LEN);
    }

    #[test]
    fn every_token_character_is_equally_likely() {
        // Every character must stand for exactly 7 byte values (modulo bias gives a..d 8, the rest 7).
        let mut counts = [0usize; 36];
        for c in (0..=255u8).filter_map(token_char) {
            counts[TOKEN_ALPHABET
                .iter()
                .position(|&a| char::from(a) == c)
                .unwrap()] += 1;
        }
        assert_eq!(counts, [7; 36]);
        // And a token made from every byte value in turn is the same 7-fold
        // cycle: nothing but the mapping above decides a character.
        let all: Vec<u8> = (0..=255).collect();
        let token = token_from(&all);
        assert_eq!(token, "abcdefghijklmnopqrstuvwx");
    }

    #[test]
    fn identity_check_budget_out_of_range_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let conf = dir.path().join("local.conf");
        fs::write(&conf, r#"{"settings": {"identityChecksPerSecond": 50}}"#).unwrap();
        let read = home.local_conf().unwrap();
        assert_eq!(read.settings.identity_checks_per_second, Some(50));
        for bad in ["0", "1001"] {
            let text = format!(r#"{{"settings": {{"identityChecksPerSecond": {bad}}}}}"#);
            fs::write(&conf, text).unwrap();
            let err = home.local_conf().unwrap_err().to_string();
            assert!(err.contains("local.conf"), "{err}");
            assert!(err.contains("identityChecksPerSecond"), "{err}");
        }
    }

    #[test]
    fn verified_identities_are_kept_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        assert!(home.load_verified_identities().unwrap().is_empty());
        use crate::core::rng::SeedableRng;
        let mut rng = crate::core::rng::NodeRng::seed_from_u64(4);
        let list = vec![VerifiedIdentity {
            identity: Identity::generate(&mut rng).to_public(),
            hello_timestamp_ms: 7,
            last_path: Some("192.0.2.1:9993".parse().unwrap()),
        }];
        home.save_verified_identities(&list).unwrap();
        let path = dir.path().join(VERIFIED_IDENTITIES_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(home.load_verified_identities().unwrap(), list);
        fs::write(&path, "garbage").unwrap();
        let err = home.load_verified_identities().unwrap_err().to_string();
        assert!(err.contains("verified-identities"), "{err}");
    }

    #[test]
    fn relay_threads_out_of_range_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let conf = dir.path().join("local.conf");
        fs::write(&conf, r#"{"settings": {"relayThreads": 0}}"#).unwrap();
        assert_eq!(home.local_conf().unwrap().settings.relay_threads, Some(0));
        fs::write(&conf, r#"{"settings": {"flushThreads": 64}}"#).unwrap();
        assert_eq!(home.local_conf().unwrap().settings.flush_threads, Some(64));
        fs::write(&conf, r#"{"settings": {"flushThreads": 65}}"#).unwrap();
        let err = home.local_conf().unwrap_err().to_string();
        assert!(err.contains("flushThreads 65"), "{err}");
        fs::write(&conf, r#"{"settings": {"relayThreads": 65}}"#).unwrap();
        let err = home.local_conf().unwrap_err().to_string();
        assert!(err.contains("local.conf"), "{err}");
        assert!(err.contains("relayThreads 65"), "{err}");
        for bad in ["-1", "\"two\""] {
            let text = format!(r#"{{"settings": {{"relayThreads": {bad}}}}}"#);
            fs::write(&conf, text).unwrap();
            let err = home.local_conf().unwrap_err().to_string();
            assert!(err.contains("local.conf"), "{bad}: {err}");
        }
    }

    #[test]
    fn busy_poll_micros_out_of_range_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let conf = dir.path().join("local.conf");
        fs::write(&conf, r#"{"settings": {"busyPollMicros": 1000000}}"#).unwrap();
        assert_eq!(
            home.local_conf().unwrap().settings.busy_poll_micros,
            Some(1_000_000)
        );
        fs::write(&conf, r#"{"settings": {"busyPollMicros": 1000001}}"#).unwrap();
        let err = home.local_conf().unwrap_err().to_string();
        assert!(err.contains("local.conf"), "{err}");
        assert!(err.contains("busyPollMicros 1000001"), "{err}");
        for bad in ["-1", "0.5", "\"fast\""] {
            let text = format!(r#"{{"settings": {{"busyPollMicros": {bad}}}}}"#);
            fs::write(&conf, text).unwrap();
            let err = home.local_conf().unwrap_err().to_string();
            assert!(err.contains("local.conf"), "{bad}: {err}");
        }
    }

    fn zerotier_vector(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/tests/vectors/zerotier");
        fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn moons_on_disk_must_verify_and_be_named_for_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let moons = dir.path().join("moons.d");
        fs::create_dir_all(&moons).unwrap();
        // Good: the moon zerotier-idtool made, under its own name.
        fs::write(
            moons.join("0000005b51b6c335.moon"),
            zerotier_vector("0000005b51b6c335.moon"),
        )
        .unwrap();
        // One bit of an endpoint's port flipped: structurally valid.
        fs::write(
            moons.join("0000005d4d6e8499.moon"),
            zerotier_vector("0000005d4d6e8499.tampered-moon"),
        )
        .unwrap();
        // A good moon under another moon's name.
        fs::write(
            moons.join("00000000deadbeef.moon"),
            zerotier_vector("0000005d4d6e8499.moon"),
        )
        .unwrap();
        let (loaded, errors) = home.load_moons();
        assert_eq!(
            loaded.iter().map(World::id).collect::<Vec<_>>(),
            [0x5b51b6c335]
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("00000000deadbeef.moon")
                && messages[0].contains("holds moon 0000005d4d6e8499"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("0000005d4d6e8499.moon")
                && messages[1].contains("signature does not verify"),
            "{messages:?}"
        );
    }

    #[test]
    fn a_created_token_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let token = home.load_or_create_token().unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.bytes().all(|b| TOKEN_ALPHABET.contains(&b)));
        assert_eq!(home.load_or_create_token().unwrap(), token);
    }
}
