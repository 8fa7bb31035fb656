//! Logical invalidation: which entries of a database are dead, and which are
//! still waiting for the reclaimer to delete them.
//!
//! An invalidation leaves a tombstone: the label (tag or role) or key prefix,
//! with the global sequence number of the invalidation. An entry is dead when
//! one of its labels, or a prefix of its key, was invalidated after the entry
//! was written (its `seq` is lower than the tombstone's). Read paths answer
//! that from the entry alone, so an invalidation is visible to every reader at
//! once, whatever the number of entries it kills.
//!
//! The ids of the dead entries the index still holds wait in `batches` (the
//! invalidated tags' member sets, detached whole from the index) until the
//! reclaimer deletes them. Once every batch is empty no dead entry is left, so
//! the tombstones go too.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use crate::core::slab::Id;
use crate::core::space::Space;

#[derive(Default)]
pub struct Dead {
    tags: HashMap<Box<[u8]>, u64>,
    roles: HashMap<Box<[u8]>, u64>,
    prefixes: Vec<(Box<[u8]>, u64)>,
    /// Disjoint sets of ids of dead entries not yet deleted.
    batches: Vec<RoaringBitmap>,
    pending: usize,
}

/// A tombstone as persisted: label space (`None` for a key prefix), name, sequence.
pub type Tomb = (Option<Space>, Vec<u8>, u64);

impl Dead {
    /// No tombstone: every entry is alive (the read paths' fast check).
    pub fn is_clear(&self) -> bool {
        self.tags.is_empty() && self.roles.is_empty() && self.prefixes.is_empty()
    }

    fn labels(&self, space: Space) -> &HashMap<Box<[u8]>, u64> {
        match space {
            Space::Tags => &self.tags,
            Space::Roles => &self.roles,
        }
    }

    /// Whether an entry written at `seq` under `key` with `labels` is dead.
    pub fn kills<'a>(
        &self,
        key: &[u8],
        space: Space,
        labels: impl Iterator<Item = &'a [u8]>,
        seq: u64,
    ) -> bool {
        if self.is_clear() {
            return false;
        }
        let map = self.labels(space);
        if !map.is_empty()
            && labels
                .into_iter()
                .any(|l| map.get(l).is_some_and(|s| seq < *s))
        {
            return true;
        }
        self.prefixes
            .iter()
            .any(|(p, s)| seq < *s && key.starts_with(p))
    }

    /// Records the invalidation of `name` (a label, or a key prefix when
    /// `space` is `None`) at `seq`.
    pub fn bury(&mut self, space: Option<Space>, name: &[u8], seq: u64) {
        let slot = match space {
            Some(Space::Tags) => self.tags.entry(name.into()).or_insert(0),
            Some(Space::Roles) => self.roles.entry(name.into()).or_insert(0),
            None => match self.prefixes.iter_mut().find(|(p, _)| &p[..] == name) {
                Some((_, s)) => s,
                None => {
                    self.prefixes.push((name.into(), 0));
                    let last = self.prefixes.len() - 1;
                    &mut self.prefixes[last].1
                }
            },
        };
        *slot = (*slot).max(seq);
    }

    /// Queues `ids` for deletion, leaving out any already queued; returns how
    /// many are new.
    pub fn queue(&mut self, mut ids: RoaringBitmap) -> usize {
        for b in &self.batches {
            if ids.is_empty() {
                break;
            }
            ids -= b;
        }
        let n = ids.len() as usize;
        if n > 0 {
            self.pending += n;
            self.batches.push(ids);
        }
        self.settle(usize::MAX);
        n
    }

    /// Queues one id (a dead entry that arrived by RENAME, RESTORE, loading...).
    pub fn queue_one(&mut self, id: Id) {
        if !self.contains(id) {
            self.queue(RoaringBitmap::from_iter([id]));
        }
    }

    pub fn contains(&self, id: Id) -> bool {
        self.batches.iter().any(|b| b.contains(id))
    }

    /// The entry `id` left the database: it no longer waits for deletion.
    pub fn forget(&mut self, id: Id) {
        if self.batches.is_empty() {
            return;
        }
        if let Some(i) = self.batches.iter().position(|b| b.contains(id)) {
            if let Some(b) = self.batches.get_mut(i) {
                b.remove(id);
            }
            self.pending -= 1;
            self.settle(i);
        }
    }

    /// Takes up to `n` ids to delete, the smallest of the first batch (one
    /// range removal, not one removal each). The tombstones stay until
    /// `settle_tombs`, so the entries still read as dead until the caller has
    /// deleted them.
    pub fn pop_some(&mut self, n: usize) -> Vec<Id> {
        let Some(batch) = self.batches.first_mut() else {
            return Vec::new();
        };
        let chunk: Vec<Id> = batch.iter().take(n.max(1)).collect();
        if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
            batch.remove_range(*first..=*last);
        }
        if batch.is_empty() {
            self.batches.remove(0);
        }
        self.pending -= chunk.len();
        chunk
    }

    /// Takes the next id to delete (see `pop_some`).
    #[cfg(test)]
    pub fn pop(&mut self) -> Option<Id> {
        self.pop_some(1).first().copied()
    }

    /// Drops every tombstone once nothing is queued.
    pub fn settle_tombs(&mut self) {
        if self.batches.is_empty() {
            self.tags.clear();
            self.roles.clear();
            self.prefixes.clear();
        }
    }

    /// Drops batch `i` if empty, then settles the tombstones.
    fn settle(&mut self, i: usize) {
        if self.batches.get(i).is_some_and(RoaringBitmap::is_empty) {
            self.batches.remove(i);
        }
        self.settle_tombs();
    }

    /// Dead entries still in the database.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The tombstones, for RDB aux data.
    pub fn tombs(&self) -> Vec<Tomb> {
        let labels = [(Space::Tags, &self.tags), (Space::Roles, &self.roles)];
        let mut out: Vec<Tomb> = labels
            .iter()
            .flat_map(|(space, map)| map.iter().map(|(n, s)| (Some(*space), n.to_vec(), *s)))
            .collect();
        out.extend(self.prefixes.iter().map(|(p, s)| (None, p.to_vec(), *s)));
        out
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let labels = self.tags.keys().chain(self.roles.keys());
        let names: usize = labels
            .chain(self.prefixes.iter().map(|(p, _)| p))
            .map(|n| n.len() + 32)
            .sum();
        names + self.batches.iter().map(bitmap_bytes).sum::<usize>()
    }
}

/// Heap bytes of a bitmap: its containers' payloads and headers.
fn bitmap_bytes(b: &RoaringBitmap) -> usize {
    let st = b.statistics();
    let payload =
        st.n_bytes_array_containers + st.n_bytes_run_containers + st.n_bytes_bitset_containers;
    payload as usize + st.n_containers as usize * 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l<'a>(v: &'a [&'static str]) -> impl Iterator<Item = &'static [u8]> + Clone + 'a {
        v.iter().map(|s| s.as_bytes())
    }

    #[test]
    fn an_entry_written_before_the_invalidation_is_dead() {
        let mut d = Dead::default();
        assert!(d.is_clear());
        d.bury(Some(Space::Tags), b"a", 10);
        assert!(d.kills(b"k", Space::Tags, l(&["x", "a"]), 9));
        assert!(!d.kills(b"k", Space::Tags, l(&["a"]), 11), "written after");
        assert!(
            !d.kills(b"k", Space::Roles, l(&["a"]), 9),
            "roles are apart"
        );
        assert!(!d.kills(b"k", Space::Tags, l(&["b"]), 1));
        d.bury(None, b"p:", 20);
        assert!(d.kills(b"p:1", Space::Tags, l(&[]), 19));
        assert!(!d.kills(b"q:1", Space::Tags, l(&[]), 19));
        d.bury(Some(Space::Tags), b"a", 5);
        assert!(
            d.kills(b"k", Space::Tags, l(&["a"]), 9),
            "the later seq wins"
        );
        assert_eq!(d.tombs().len(), 2);
    }

    #[test]
    fn batches_stay_disjoint_and_tombstones_go_with_the_last() {
        let mut d = Dead::default();
        d.bury(Some(Space::Tags), b"a", 10);
        assert_eq!(d.queue(RoaringBitmap::from_iter([1, 2, 3])), 3);
        assert_eq!(d.queue(RoaringBitmap::from_iter([3, 4])), 1);
        d.queue_one(4);
        assert_eq!(d.pending(), 4);
        assert!(d.contains(4) && !d.contains(5));
        d.forget(2);
        d.forget(99);
        assert_eq!(d.pending(), 3);
        let mut popped = Vec::new();
        while let Some(id) = d.pop() {
            popped.push(id);
        }
        assert_eq!(popped, vec![1, 3, 4]);
        assert_eq!(d.pending(), 0);
        assert!(!d.is_clear(), "popped entries read as dead until deleted");
        d.settle_tombs();
        assert!(d.is_clear(), "nothing dead is left, so no tombstone");
        assert_eq!(d.heap_bytes(), 0);
        d.bury(Some(Space::Roles), b"r", 30);
        assert_eq!(d.queue(RoaringBitmap::new()), 0);
        assert!(
            d.is_clear(),
            "an invalidation that killed nothing leaves nothing"
        );
    }
}
