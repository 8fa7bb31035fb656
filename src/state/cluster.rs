//! The cluster-wide invalidations this node coordinates (each with its blocked
//! client) and the requests it applied for other coordinators. Main thread only.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::core::cluster::{Applied, OpId, OpKind, Progress, Recent};

/// One cluster-wide command in flight on its coordinator.
pub struct Pending {
    pub op: OpId,
    pub kind: OpKind,
    pub user: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub progress: Progress,
    pub deadline_ms: i64,
    pub timeout_ms: i64,
    pub last_sent_ms: i64,
    /// The blocked client's handle (a `RedisModuleBlockedClient` address).
    pub client: usize,
}

#[derive(Default)]
pub struct Coordinator {
    pub pending: HashMap<u64, Pending>,
    pub next: u64,
    pub applied: Applied,
    /// A resend timer is scheduled.
    pub ticking: bool,
    pub recent: Recent,
}

static STATE: Mutex<Option<Coordinator>> = Mutex::new(None);

/// Runs `f` on the state. Callbacks run on the main thread one at a time, so
/// the lock is never contended; a poisoned lock (a panic caught in `f`) is
/// taken over as it is.
pub fn with<R>(f: impl FnOnce(&mut Coordinator) -> R) -> R {
    let mut g: MutexGuard<'_, Option<Coordinator>> =
        STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Coordinator::default))
}

/// For INFO: (commands this node coordinates that wait for confirmations,
/// requests of other coordinators it remembers, recent invalidation names
/// kept for entries in flight). Never waits for the lock.
pub fn figures() -> (usize, usize, usize) {
    STATE
        .try_lock()
        .ok()
        .and_then(|g| {
            g.as_ref()
                .map(|c| (c.pending.len(), c.applied.len(), c.recent.len()))
        })
        .unwrap_or((0, 0, 0))
}
