//! The global write sequence: each write gets the next number. Entries carry
//! it; loading and replication move the counter past every number seen.

use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

pub fn next() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed) + 1
}

pub fn observe(seen: u64) {
    SEQ.fetch_max(seen, Ordering::Relaxed);
}
