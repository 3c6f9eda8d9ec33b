//! Locking the controller shared by the node's packet path and the REST
//! API, so that neither a panic nor a busy writer leaves the other stuck.

use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::controller::Controller;

/// Locks the shared controller, even after a panic elsewhere (every change
/// is committed in memory in one step after it is saved, so the state is
/// never half-changed).
pub fn lock(shared: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks the shared controller if it is free (see [`lock`]); the packet
/// path uses this, so an admin change or a save never stalls traffic.
pub fn try_lock(shared: &Mutex<Controller>) -> Option<MutexGuard<'_, Controller>> {
    match shared.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}
