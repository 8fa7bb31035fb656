//! The lease tables of every database (primary-local, main thread only), token
//! minting, and the stampede counters.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::core::lease::{Lease, LeaseTable, Refusal};
use crate::state::per_db::PerDb;

static TABLES: PerDb<LeaseTable> = PerDb::new();

fn with<R>(db: i32, f: impl FnOnce(&mut LeaseTable) -> R) -> Option<R> {
    TABLES.with(db, f)
}

/// A token nobody can guess: SipHash under keys drawn from the OS at start,
/// over the key name and a counter. A token is only valid for its own key.
fn mint(key: &[u8]) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.get_or_init(RandomState::new).hash_one((key, n))
}

pub fn format_token(t: u64) -> String {
    format!("{t:016x}")
}

pub fn parse_token(b: &[u8]) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

/// The live lease on `key`, if any.
pub fn active(db: i32, key: &[u8], now_ms: i64) -> Option<Lease> {
    with(db, |t| t.active(key, now_ms)).flatten()
}

/// Grants a new lease on `key`; the caller checked there is none.
pub fn grant(db: i32, key: &[u8], seq: u64, expires_at_ms: i64) -> Option<Lease> {
    let token = mint(key);
    crate::state::stats::LEASES_GRANTED.incr();
    with(db, |t| t.grant(key, token, seq, expires_at_ms))
}

pub fn revoke(db: i32, key: &[u8]) {
    with(db, |t| t.revoke(key));
}

pub fn note_tags(db: i32, tags: &[&[u8]], seq: u64) {
    with(db, |t| t.note_tag_invalidation(tags, seq));
}

pub fn note_prefix(db: i32, prefix: &[u8], seq: u64) {
    with(db, |t| t.note_prefix_invalidation(prefix, seq));
}

pub fn redeem(
    db: i32,
    key: &[u8],
    token: &[u8],
    tags: &[&[u8]],
    now_ms: i64,
) -> Result<(), Refusal> {
    let verdict = match parse_token(token) {
        Some(tok) => {
            with(db, |t| t.redeem(key, tok, tags, now_ms)).unwrap_or(Err(Refusal::NoLease))
        }
        None => Err(Refusal::WrongToken),
    };
    if verdict.is_err() {
        crate::state::stats::LEASE_SETS_REFUSED.incr();
    }
    verdict
}

pub fn prune(db: i32, now_ms: i64) {
    with(db, |t| t.prune(now_ms));
}

/// FLUSHDB / FLUSHALL (-1).
pub fn clear(db: i32) {
    TABLES.clear(db);
}

pub fn swap(a: i32, b: i32) {
    TABLES.swap(a, b);
}
