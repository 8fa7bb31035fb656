//! Counters since start or the last `TCACHE.STATS RESET`.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn max(&self, n: u64) {
        self.0.fetch_max(n, Ordering::Relaxed);
    }

    pub fn incr(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

pub static HITS: Counter = Counter::new();
pub static MISSES: Counter = Counter::new();
pub static SETS: Counter = Counter::new();
/// INVALTAG / INVALPREFIX commands that ran.
pub static INVALIDATIONS: Counter = Counter::new();
/// Entries those commands removed.
pub static INVALIDATED_ENTRIES: Counter = Counter::new();
/// Writes refused by a quality gate (dry runs with GATE.CHECK not counted).
pub static GATE_REJECTIONS: Counter = Counter::new();
pub static PERM_HITS: Counter = Counter::new();
pub static PERM_MISSES: Counter = Counter::new();
pub static LEASES_GRANTED: Counter = Counter::new();
/// TCACHE.SET ... LEASE refused (nil): lapsed, revoked, invalidated, wrong token.
pub static LEASE_SETS_REFUSED: Counter = Counter::new();
/// FETCH calls that had to wait for another caller's lease (blocked or told WAIT).
pub static WAITS: Counter = Counter::new();
/// Blocked FETCH calls that ended by their timeout.
pub static WAIT_TIMEOUTS: Counter = Counter::new();
/// Stale values served by FETCH.
pub static STALE_SERVED: Counter = Counter::new();
/// Dead entries the reclaimer deleted.
pub static RECLAIMED: Counter = Counter::new();
/// Time slices the reclaimer ran.
pub static RECLAIM_SLICES: Counter = Counter::new();
/// The longest reclaimer slice, in microseconds.
pub static RECLAIM_SLICE_MAX_US: Counter = Counter::new();

const RESETTABLE: [&Counter; 16] = [
    &RECLAIM_SLICE_MAX_US,
    &RECLAIM_SLICES,
    &RECLAIMED,
    &LEASES_GRANTED,
    &LEASE_SETS_REFUSED,
    &WAITS,
    &WAIT_TIMEOUTS,
    &STALE_SERVED,
    &HITS,
    &MISSES,
    &SETS,
    &INVALIDATIONS,
    &INVALIDATED_ENTRIES,
    &GATE_REJECTIONS,
    &PERM_HITS,
    &PERM_MISSES,
];

pub fn reset() {
    RESETTABLE.iter().for_each(|c| c.reset());
}

/// `"90.91%"`, or `"0.00%"` before any read.
pub fn hit_rate(hits: u64, misses: u64) -> String {
    let total = hits + misses;
    if total == 0 {
        return "0.00%".into();
    }
    format!("{:.2}%", hits as f64 * 100.0 / total as f64)
}

/// One figure of the statistics, in the order they are reported.
pub enum Figure {
    Count(u64),
    Text(String),
}

/// Index figures, computed from the indexes.
pub struct IndexFigures {
    pub entries: u64,
    /// Entries killed by an invalidation, not yet deleted by the reclaimer.
    pub reclaim_pending: u64,
    pub tags: u64,
    pub index_bytes: u64,
}

pub fn figures(ix: &IndexFigures) -> Vec<(&'static str, Figure)> {
    let (h, m) = (HITS.get(), MISSES.get());
    vec![
        ("hits", Figure::Count(h)),
        ("misses", Figure::Count(m)),
        ("hit_rate", Figure::Text(hit_rate(h, m))),
        ("sets", Figure::Count(SETS.get())),
        ("gate_rejections", Figure::Count(GATE_REJECTIONS.get())),
        ("invalidations", Figure::Count(INVALIDATIONS.get())),
        (
            "invalidated_entries",
            Figure::Count(INVALIDATED_ENTRIES.get()),
        ),
        ("entries", Figure::Count(ix.entries)),
        ("tags", Figure::Count(ix.tags)),
        ("perm_hits", Figure::Count(PERM_HITS.get())),
        ("perm_misses", Figure::Count(PERM_MISSES.get())),
        ("leases_granted", Figure::Count(LEASES_GRANTED.get())),
        (
            "lease_sets_refused",
            Figure::Count(LEASE_SETS_REFUSED.get()),
        ),
        ("waits", Figure::Count(WAITS.get())),
        ("wait_timeouts", Figure::Count(WAIT_TIMEOUTS.get())),
        ("stale_served", Figure::Count(STALE_SERVED.get())),
        ("index_bytes", Figure::Count(ix.index_bytes)),
        ("reclaim_pending", Figure::Count(ix.reclaim_pending)),
        ("reclaimed", Figure::Count(RECLAIMED.get())),
        ("reclaim_slices", Figure::Count(RECLAIM_SLICES.get())),
        (
            "reclaim_slice_max_us",
            Figure::Count(RECLAIM_SLICE_MAX_US.get()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_formats_two_decimals() {
        assert_eq!(hit_rate(10, 1), "90.91%");
        assert_eq!(hit_rate(0, 0), "0.00%");
        assert_eq!(hit_rate(1, 0), "100.00%");
    }
}
