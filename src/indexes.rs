//! The live indexes of every database, in module memory.

use crate::core::index::DbIndex;
use crate::per_db::PerDb;
use crate::stats::IndexFigures;

static INDEXES: PerDb<DbIndex> = PerDb::new();

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
            entries: all.iter().map(|ix| ix.len() as u64).sum(),
            tags: all.iter().map(|ix| ix.tag_count() as u64).sum(),
            index_bytes: all.iter().map(|ix| ix.heap_bytes() as u64).sum(),
        })
        .unwrap_or(IndexFigures {
            entries: 0,
            tags: 0,
            index_bytes: 0,
        })
}
