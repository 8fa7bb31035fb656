//! The live indexes of every database, in module memory.
//!
//! Only the Redis main thread touches them (commands and keyspace callbacks run
//! under the server lock). Keyspace callbacks run synchronously inside the
//! commands that cause them, so nobody may hold the lock while calling into
//! Redis in a way that deletes or writes a key: `try_lock` turns such a bug into
//! a counted, reported failure instead of a deadlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::core::index::DbIndex;
use crate::stats::IndexFigures;

static INDEXES: Mutex<Vec<DbIndex>> = Mutex::new(Vec::new());

/// Index updates lost to re-entrancy; `TCACHE.VERIFY` reports any.
pub static LOST_UPDATES: AtomicU64 = AtomicU64::new(0);

fn lock() -> Option<MutexGuard<'static, Vec<DbIndex>>> {
    match INDEXES.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => {
            LOST_UPDATES.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn slot(all: &mut Vec<DbIndex>, db: i32) -> Option<&mut DbIndex> {
    let i = usize::try_from(db).ok()?;
    if all.len() <= i {
        all.resize_with(i + 1, DbIndex::default);
    }
    all.get_mut(i)
}

/// Runs `f` on the index of database `db`; `None` if the index is busy.
pub fn with_db<R>(db: i32, f: impl FnOnce(&mut DbIndex) -> R) -> Option<R> {
    let mut all = lock()?;
    slot(&mut all, db).map(f)
}

/// Forgets database `db`, or every database when `db` is -1 (FLUSHDB/FLUSHALL).
pub fn clear(db: i32) {
    if let Some(mut all) = lock() {
        if db < 0 {
            all.clear();
        } else if let Some(ix) = slot(&mut all, db) {
            *ix = DbIndex::default();
        }
    }
}

/// SWAPDB a b.
pub fn swap(a: i32, b: i32) {
    if let Some(mut all) = lock() {
        let (Ok(a), Ok(b)) = (usize::try_from(a), usize::try_from(b)) else {
            return;
        };
        let need = a.max(b) + 1;
        if all.len() < need {
            all.resize_with(need, DbIndex::default);
        }
        all.swap(a, b);
    }
}

/// Number of databases that hold an index (some possibly empty).
pub fn db_count() -> usize {
    lock().map(|all| all.len()).unwrap_or(0)
}

pub fn figures() -> IndexFigures {
    let mut f = IndexFigures {
        entries: 0,
        tags: 0,
        index_bytes: 0,
    };
    if let Some(all) = lock() {
        for ix in all.iter() {
            f.entries += ix.len() as u64;
            f.tags += ix.tag_count() as u64;
            f.index_bytes += ix.heap_bytes() as u64;
        }
    }
    f
}
