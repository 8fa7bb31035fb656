//! The live indexes of every database, in module memory.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::core::entry::Entry;
use crate::core::index::{DbIndex, Space};
use crate::state::per_db::PerDb;
use crate::state::stats::IndexFigures;

static INDEXES: PerDb<DbIndex> = PerDb::new();

/// False only when no database holds a tombstone: lets every read skip the
/// dead-entry check. Set by each invalidation, cleared by the reclaimer.
static ANY_TOMBS: AtomicBool = AtomicBool::new(false);

/// Some database may hold tombstones from now on.
pub fn note_tombs() {
    ANY_TOMBS.store(true, Ordering::Relaxed);
}

/// Clears the flag if no database holds a tombstone; returns whether any does.
pub fn recheck_tombs() -> bool {
    let any = INDEXES
        .with_all(|all| all.iter().any(|ix| !ix.dead().is_clear()))
        .unwrap_or(true);
    ANY_TOMBS.store(any, Ordering::Relaxed);
    any
}

/// Some database may hold a tombstone.
pub fn any_tombs() -> bool {
    ANY_TOMBS.load(Ordering::Relaxed)
}

/// Whether entry `e` stored under `key` in database `db` was killed by an
/// invalidation (and waits for the reclaimer): every read path treats it as
/// missing.
pub fn is_dead(db: i32, key: &[u8], e: &Entry) -> bool {
    if e.killed.get() {
        return true;
    }
    if !ANY_TOMBS.load(Ordering::Relaxed) {
        return false;
    }
    with_db(db, |ix| ix.dead().kills(key, e.space(), e.tags(), e.seq)).unwrap_or(false)
}

/// Runs `f` on the index of database `db`; `None` if the index is busy.
pub fn with_db<R>(db: i32, f: impl FnOnce(&mut DbIndex) -> R) -> Option<R> {
    INDEXES.with(db, f)
}

/// Forgets database `db`, or every database when `db` is -1 (FLUSHDB/FLUSHALL).
pub fn clear(db: i32) {
    INDEXES.clear(db);
}

/// SWAPDB a b.
pub fn swap(a: i32, b: i32) {
    INDEXES.swap(a, b);
}

/// Index updates lost to re-entrancy; `TCACHE.VERIFY` reports any.
pub fn lost_updates() -> u64 {
    INDEXES.lost.load(std::sync::atomic::Ordering::Relaxed)
}

/// Number of databases that hold an index (some possibly empty).
pub fn db_count() -> usize {
    INDEXES.with_all(|all| all.len()).unwrap_or(0)
}

pub fn figures() -> IndexFigures {
    INDEXES
        .with_all(|all| IndexFigures {
            entries: all.iter().map(|ix| ix.live_len() as u64).sum(),
            reclaim_pending: all.iter().map(|ix| ix.dead().pending() as u64).sum(),
            tags: all.iter().map(|ix| ix.tag_count() as u64).sum(),
            index_bytes: all.iter().map(|ix| ix.heap_bytes() as u64).sum(),
        })
        .unwrap_or(IndexFigures {
            entries: 0,
            reclaim_pending: 0,
            tags: 0,
            index_bytes: 0,
        })
}

/// Databases with dead entries waiting for the reclaimer.
pub fn pending_dbs() -> Vec<i32> {
    INDEXES
        .with_all(|all| {
            (0..all.len())
                .filter(|i| all[*i].dead().pending() > 0)
                .filter_map(|i| i32::try_from(i).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every tombstone with its database, for RDB aux data.
pub fn tombs() -> Vec<(i32, Option<Space>, Vec<u8>, u64)> {
    INDEXES
        .with_all(|all| {
            let mut out = Vec::new();
            for (db, ix) in all.iter().enumerate() {
                let Ok(db) = i32::try_from(db) else { continue };
                out.extend(ix.dead().tombs().into_iter().map(|(s, n, q)| (db, s, n, q)));
            }
            out
        })
        .unwrap_or_default()
}

/// Replays a loaded tombstone.
pub fn bury(db: i32, space: Option<Space>, name: &[u8], seq: u64) {
    with_db(db, |ix| ix.bury(space, name, seq));
    note_tombs();
}

/// Indexes entry `e`, which arrived under `key` without a TCACHE.SET (APPLY,
/// RENAME/MOVE/COPY, RESTORE, loading): remembers its id and, if it was
/// killed before it came (its `killed` mark or a pending tombstone), queues it
/// for the reclaimer. Returns whether it is dead; `None` if the index is busy
/// (or full).
pub fn index_arrival(db: i32, key: &[u8], e: &Entry, expire_at_ms: i64) -> Option<bool> {
    let at = with_db(db, |ix| {
        let mut at = ix.insert(key, e.space(), e.tags(), expire_at_ms, e.seq)?;
        if e.killed.get() {
            at.dead = ix.mark_dead(at.id);
        }
        Some(at)
    })??;
    e.index_id.set(at.id);
    Some(at.dead)
}
