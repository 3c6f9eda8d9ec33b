//! Reading identities and worlds from command-line arguments and files, as
//! zerotier-idtool does: an argument is either a literal identity or a path.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::identity::{Identity, IdentityError};
use crate::core::world::{World, WorldError};

/// Why an identity argument gave no identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityArgError {
    /// The file could not be read.
    #[error("{path}: cannot read: {error}")]
    Unreadable {
        /// The path given.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The literal or file content is not a valid identity.
    #[error("{source_name}: {error}")]
    Invalid {
        /// The argument or file name.
        source_name: String,
        /// What is wrong.
        error: IdentityError,
    },
}

/// Whether an argument is an identity literal rather than a path (ZeroTier's rule:
/// longer than 32 characters with a `:` right after the 10-digit address).
pub fn is_identity_literal(arg: &str) -> bool {
    arg.len() > 32 && arg.as_bytes().get(10) == Some(&b':')
}

/// Reads an identity from a literal argument or from the file it names.
pub fn read_identity_arg(arg: &str) -> Result<Identity, IdentityArgError> {
    let text = if is_identity_literal(arg) {
        arg.to_string()
    } else {
        fs::read_to_string(arg).map_err(|error| IdentityArgError::Unreadable {
            path: arg.to_string(),
            error,
        })?
    };
    text.parse().map_err(|error| IdentityArgError::Invalid {
        source_name: arg.to_string(),
        error,
    })
}

/// Why a world file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorldFileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {error}")]
    Unreadable {
        /// The path.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The content is not a world.
    #[error("{path}: {error}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong.
        error: WorldError,
    },
}

/// Reads and decodes a world file (planet or moon).
pub fn read_world_file(path: &Path) -> Result<World, WorldFileError> {
    let name = path.display().to_string();
    let bytes = fs::read(path).map_err(|error| WorldFileError::Unreadable {
        path: name.clone(),
        error,
    })?;
    World::decode(&bytes).map_err(|error| WorldFileError::Invalid { path: name, error })
}

/// Wall-clock milliseconds since the Unix epoch (the service's clock, not the core's).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a world was not written.
#[derive(Debug, thiserror::Error)]
pub enum WorldWriteError {
    /// Nodes holding the existing file would refuse the new world as an update.
    #[error(
        "{path}: nodes holding the existing world would refuse this one as an update: {reason} (use --force to overwrite anyway)"
    )]
    WouldBeRefused {
        /// The path.
        path: String,
        /// Why they would refuse it.
        reason: crate::core::world::UpdateRefusal,
    },
    /// The write failed.
    #[error("{path}: cannot write: {error}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// The world already at `path`, if there is one that decodes.
pub fn existing_world(path: &Path) -> Option<World> {
    read_world_file(path).ok()
}

/// Writes a world file crash-safely. If a world with the same id and type is
/// already there, the new one must be a valid update of it (newer, signed by
/// the key the old one names) unless `force`: a world nodes would refuse is
/// almost always a mistake, found much later and far away.
pub fn write_world_file(path: &Path, world: &World, force: bool) -> Result<(), WorldWriteError> {
    let name = path.display().to_string();
    if let Some(old) = existing_world(path)
        && old.id() == world.id()
        && old.kind() == world.kind()
        && !force
    {
        old.check_update(world)
            .map_err(|reason| WorldWriteError::WouldBeRefused {
                path: name.clone(),
                reason,
            })?;
    }
    crate::service::atomic_file::write_atomic(
        path,
        &world.encode(),
        crate::service::atomic_file::PUBLIC_FILE_MODE,
    )
    .map_err(|error| WorldWriteError::Io { path: name, error })
}
