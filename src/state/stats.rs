//! Counters since start or the last `TCACHE.STATS RESET`, and the figures
//! `TCACHE.STATS` and `INFO tcache` report.

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

/// Declares the figures once, in the order they are reported, one row each:
/// `"name": counter STATIC` declares `pub static STATIC: Counter`, reset by
/// `reset`; `"name": index field` reports `IndexFigures::field`;
/// `"name": hit_rate` reports the rate of `HITS` against `MISSES`.
/// From the rows come the counters, `reset` and `figures`.
macro_rules! figures {
    (@declare $(#[$doc:meta])* counter $c:ident) => {
        $(#[$doc])*
        pub static $c: Counter = Counter::new();
    };
    (@declare $(#[$doc:meta])* $kind:ident $($arg:ident)?) => {};
    (@reset counter $c:ident) => {
        $c.reset()
    };
    (@reset $kind:ident $($arg:ident)?) => {};
    (@value $ix:ident counter $c:ident) => {
        Figure::Count($c.get())
    };
    (@value $ix:ident index $field:ident) => {
        Figure::Count($ix.$field)
    };
    (@value $ix:ident hit_rate) => {
        Figure::Text(hit_rate(HITS.get(), MISSES.get()))
    };
    ($($(#[$doc:meta])* $name:literal: $kind:ident $($arg:ident)?;)*) => {
        $(figures!(@declare $(#[$doc])* $kind $($arg)?);)*

        /// `TCACHE.STATS RESET`: zeroes every counter (index figures stay).
        pub fn reset() {
            $(figures!(@reset $kind $($arg)?);)*
        }

        /// Every figure with its name, in the documented order. Counters are
        /// written and read on the main thread only, so `hit_rate` agrees with
        /// the `hits` and `misses` beside it.
        pub fn figures(ix: &IndexFigures) -> Vec<(&'static str, Figure)> {
            vec![$(($name, figures!(@value ix $kind $($arg)?)),)*]
        }
    };
}

figures! {
    "hits": counter HITS;
    "misses": counter MISSES;
    "hit_rate": hit_rate;
    "sets": counter SETS;
    /// Writes refused by a quality gate (dry runs with GATE.CHECK not counted).
    "gate_rejections": counter GATE_REJECTIONS;
    /// INVALTAG / INVALPREFIX commands that ran.
    "invalidations": counter INVALIDATIONS;
    /// Entries those commands removed.
    "invalidated_entries": counter INVALIDATED_ENTRIES;
    "entries": index entries;
    "tags": index tags;
    "perm_hits": counter PERM_HITS;
    "perm_misses": counter PERM_MISSES;
    "leases_granted": counter LEASES_GRANTED;
    /// TCACHE.SET ... LEASE refused (nil): lapsed, revoked, invalidated, wrong token.
    "lease_sets_refused": counter LEASE_SETS_REFUSED;
    /// FETCH calls that had to wait for another caller's lease (blocked or told WAIT).
    "waits": counter WAITS;
    /// Blocked FETCH calls that ended by their timeout.
    "wait_timeouts": counter WAIT_TIMEOUTS;
    /// Stale values served by FETCH.
    "stale_served": counter STALE_SERVED;
    "index_bytes": index index_bytes;
    "reclaim_pending": index reclaim_pending;
    /// Dead entries the reclaimer deleted.
    "reclaimed": counter RECLAIMED;
    /// Time slices the reclaimer ran.
    "reclaim_slices": counter RECLAIM_SLICES;
    /// The longest reclaimer slice, in microseconds.
    "reclaim_slice_max_us": counter RECLAIM_SLICE_MAX_US;
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

    #[test]
    fn figure_names_are_distinct_and_index_figures_are_reported() {
        let ix = IndexFigures {
            entries: 11,
            reclaim_pending: 12,
            tags: 13,
            index_bytes: 14,
        };
        let all = figures(&ix);
        let names: std::collections::BTreeSet<_> = all.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), all.len(), "a name reported twice");
        let count = |name: &str| match all.iter().find(|(n, _)| *n == name) {
            Some((_, Figure::Count(v))) => Some(*v),
            _ => None,
        };
        assert_eq!(count("entries"), Some(11));
        assert_eq!(count("reclaim_pending"), Some(12));
        assert_eq!(count("tags"), Some(13));
        assert_eq!(count("index_bytes"), Some(14));
    }
}
