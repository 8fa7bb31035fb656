//! Leases (stampede protection and stale-set protection), one table per
//! database, in primary-local memory (never persisted or replicated).
//!
//! A lease is granted on a miss (or to the one refresher of a stale entry). The
//! holder computes the value and stores it with `TCACHE.SET ... LEASE token`,
//! which is refused when, since the grant: the key was deleted or overwritten,
//! a tag of the SET (or a prefix of the key) was invalidated, or the lease
//! lapsed. Whatever the outcome, presenting the right token ends the lease, so
//! the next FETCH can get a fresh one.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    /// Write sequence at grant: invalidations with a larger sequence refuse the SET.
    pub issued_seq: u64,
    pub expires_at_ms: i64,
}

/// Why a lease SET was refused (for tests and logs; the client just sees nil).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NoLease,
    WrongToken,
    Lapsed,
    TagInvalidated,
    PrefixInvalidated,
}

#[derive(Default)]
pub struct LeaseTable {
    leases: HashMap<Vec<u8>, Lease>,
    /// tag -> sequence of its last invalidation, kept only while leases exist.
    tag_invals: HashMap<Vec<u8>, u64>,
    prefix_invals: Vec<(Vec<u8>, u64)>,
}

impl LeaseTable {
    /// The lease on `key` that has not lapsed.
    pub fn active(&self, key: &[u8], now_ms: i64) -> Option<Lease> {
        self.leases
            .get(key)
            .copied()
            .filter(|l| now_ms < l.expires_at_ms)
    }

    pub fn grant(&mut self, key: &[u8], token: u64, seq: u64, expires_at_ms: i64) -> Lease {
        let lease = Lease {
            token,
            issued_seq: seq,
            expires_at_ms,
        };
        self.leases.insert(key.to_vec(), lease);
        lease
    }

    /// The key was deleted or overwritten: its lease (if any) is void.
    pub fn revoke(&mut self, key: &[u8]) {
        if !self.leases.is_empty() {
            self.leases.remove(key);
        }
    }

    pub fn note_tag_invalidation(&mut self, tags: &[&[u8]], seq: u64) {
        if self.leases.is_empty() {
            return;
        }
        for t in tags {
            self.tag_invals.insert(t.to_vec(), seq);
        }
    }

    pub fn note_prefix_invalidation(&mut self, prefix: &[u8], seq: u64) {
        if !self.leases.is_empty() {
            self.prefix_invals.push((prefix.to_vec(), seq));
        }
    }

    /// Checks `token` for a SET of `key` carrying `tags`; a matching token ends
    /// the lease whatever the verdict.
    pub fn redeem(
        &mut self,
        key: &[u8],
        token: u64,
        tags: &[&[u8]],
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let lease = *self.leases.get(key).ok_or(Refusal::NoLease)?;
        if lease.token != token {
            return Err(Refusal::WrongToken);
        }
        self.leases.remove(key);
        let verdict = if now_ms >= lease.expires_at_ms {
            Err(Refusal::Lapsed)
        } else if tags.iter().any(|t| {
            self.tag_invals
                .get(*t)
                .is_some_and(|s| *s > lease.issued_seq)
        }) {
            Err(Refusal::TagInvalidated)
        } else if self
            .prefix_invals
            .iter()
            .any(|(p, s)| *s > lease.issued_seq && key.starts_with(p))
        {
            Err(Refusal::PrefixInvalidated)
        } else {
            Ok(())
        };
        self.prune(now_ms);
        verdict
    }

    /// Drops lapsed leases and invalidation records no outstanding lease needs.
    pub fn prune(&mut self, now_ms: i64) {
        self.leases.retain(|_, l| now_ms < l.expires_at_ms);
        match self.leases.values().map(|l| l.issued_seq).min() {
            None => {
                self.tag_invals.clear();
                self.prefix_invals.clear();
            }
            Some(oldest) => {
                self.tag_invals.retain(|_, s| *s > oldest);
                self.prefix_invals.retain(|(_, s)| *s > oldest);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lease_per_key_until_it_lapses() {
        let mut t = LeaseTable::default();
        assert_eq!(t.active(b"k", 0), None);
        t.grant(b"k", 7, 1, 100);
        assert_eq!(t.active(b"k", 99).map(|l| l.token), Some(7));
        assert_eq!(t.active(b"k", 100), None, "lapsed at its deadline");
    }

    #[test]
    fn redeem_accepts_the_token_once() {
        let mut t = LeaseTable::default();
        t.grant(b"k", 7, 1, 100);
        assert_eq!(t.redeem(b"k", 8, &[], 10), Err(Refusal::WrongToken));
        assert_eq!(t.redeem(b"other", 7, &[], 10), Err(Refusal::NoLease));
        assert_eq!(t.redeem(b"k", 7, &[], 10), Ok(()));
        assert_eq!(t.redeem(b"k", 7, &[], 10), Err(Refusal::NoLease));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn invalidation_after_grant_refuses_and_ends_the_lease() {
        let mut t = LeaseTable::default();
        t.grant(b"k", 7, 5, 100);
        t.grant(b"j", 8, 5, 100);
        t.note_tag_invalidation(&[b"old"], 4);
        t.note_tag_invalidation(&[b"t"], 6);
        assert_eq!(
            t.redeem(b"k", 7, &[b"old"], 10),
            Ok(()),
            "before the grant: fine"
        );
        assert_eq!(
            t.redeem(b"j", 8, &[b"x", b"t"], 10),
            Err(Refusal::TagInvalidated)
        );
        assert_eq!(t.active(b"j", 10), None, "a fresh FETCH gets a new lease");
    }

    #[test]
    fn prefix_invalidation_and_revoke_and_lapse_refuse() {
        let mut t = LeaseTable::default();
        t.grant(b"user:1", 1, 5, 100);
        t.note_prefix_invalidation(b"user:", 6);
        assert_eq!(
            t.redeem(b"user:1", 1, &[], 10),
            Err(Refusal::PrefixInvalidated)
        );
        t.grant(b"k", 2, 9, 100);
        t.revoke(b"k");
        assert_eq!(t.redeem(b"k", 2, &[], 10), Err(Refusal::NoLease));
        t.grant(b"k", 3, 9, 100);
        assert_eq!(t.redeem(b"k", 3, &[], 100), Err(Refusal::Lapsed));
    }

    #[test]
    fn records_are_pruned_when_no_lease_needs_them() {
        let mut t = LeaseTable::default();
        t.note_tag_invalidation(&[b"t"], 1);
        assert!(t.tag_invals.is_empty(), "nothing recorded without leases");
        t.grant(b"a", 1, 5, 100);
        t.grant(b"b", 2, 10, 50);
        t.note_tag_invalidation(&[b"t1"], 7);
        t.note_tag_invalidation(&[b"t2"], 11);
        t.prune(60);
        assert_eq!(t.len(), 1);
        assert_eq!(t.tag_invals.len(), 2);
        t.prune(100);
        assert!(t.tag_invals.is_empty() && t.prefix_invals.is_empty());
    }
}
