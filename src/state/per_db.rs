//! State kept per database in module memory (the indexes, the lease tables),
//! following FLUSHDB/FLUSHALL and SWAPDB.
//!
//! Only the Redis main thread touches it (commands and callbacks run under the
//! server lock). Keyspace callbacks run synchronously inside the commands that
//! cause them, so nobody may hold the lock while calling into Redis in a way
//! that deletes or writes a key: `try_lock` turns such a bug into a counted,
//! reported failure instead of a deadlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

pub struct PerDb<T> {
    dbs: Mutex<Vec<T>>,
    /// Accesses refused because the state was already in use (re-entrancy).
    pub lost: AtomicU64,
}

impl<T: Default> PerDb<T> {
    pub const fn new() -> PerDb<T> {
        PerDb {
            dbs: Mutex::new(Vec::new()),
            lost: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Vec<T>>> {
        match self.dbs.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Runs `f` on the state of database `db`; `None` if it is busy.
    pub fn with<R>(&self, db: i32, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let i = usize::try_from(db).ok()?;
        let mut all = self.lock()?;
        if all.len() <= i {
            all.resize_with(i + 1, T::default);
        }
        all.get_mut(i).map(f)
    }

    /// Runs `f` on every database's state.
    pub fn with_all<R>(&self, f: impl FnOnce(&[T]) -> R) -> Option<R> {
        self.lock().map(|all| f(&all))
    }

    /// Forgets database `db`, or every database when `db` is -1 (FLUSHDB/FLUSHALL).
    pub fn clear(&self, db: i32) {
        if db < 0 {
            if let Some(mut all) = self.lock() {
                all.clear();
            }
        } else {
            self.with(db, |t| *t = T::default());
        }
    }

    /// SWAPDB a b.
    pub fn swap(&self, a: i32, b: i32) {
        let (Ok(a), Ok(b)) = (usize::try_from(a), usize::try_from(b)) else {
            return;
        };
        if let Some(mut all) = self.lock() {
            let need = a.max(b) + 1;
            if all.len() < need {
                all.resize_with(need, T::default);
            }
            all.swap(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_separate_cleared_and_swapped() {
        let p: PerDb<Vec<u8>> = PerDb::new();
        p.with(0, |v| v.push(1));
        p.with(3, |v| v.push(3));
        p.swap(0, 3);
        assert_eq!(p.with(0, |v| v.clone()), Some(vec![3]));
        assert_eq!(p.with(3, |v| v.clone()), Some(vec![1]));
        p.clear(3);
        assert_eq!(p.with(3, |v| v.len()), Some(0));
        p.clear(-1);
        assert_eq!(p.with_all(|all| all.len()), Some(0));
        assert_eq!(p.with(-2, |_| ()), None);
    }

    #[test]
    fn reentrant_access_is_refused_and_counted() {
        let p: PerDb<u8> = PerDb::new();
        let inner = p.with(0, |_| p.with(0, |_| ()));
        assert_eq!(inner, Some(None));
        assert_eq!(p.lost.load(Ordering::Relaxed), 1);
    }
}
