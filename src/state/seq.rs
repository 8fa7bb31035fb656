//! The global write sequence: each write gets the next number. Entries carry
//! it; loading and replication move the counter past every number seen.
//!
//! Numbers that arrive from outside (payloads, RDB, replicated commands) are
//! checked against `MAX_SEQ` before they get here, so the counter stays far
//! below `u64::MAX`; `next` saturates anyway rather than wrap.

use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::core::entry::MAX_SEQ;

static SEQ: AtomicU64 = AtomicU64::new(0);

pub fn next() -> u64 {
    let prev = SEQ
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_add(1))
        })
        .unwrap_or(u64::MAX);
    prev.saturating_add(1)
}

/// Moves the counter to at least `seen`; `false` (and no change) when `seen`
/// is past `MAX_SEQ`.
#[must_use]
pub fn observe(seen: u64) -> bool {
    if seen > MAX_SEQ {
        return false;
    }
    SEQ.fetch_max(seen, Ordering::Relaxed);
    true
}
