//! Invalidation and reclaim: tombstones, dead entries and their queue.

use std::collections::BTreeSet;

use roaring::RoaringBitmap;

use super::{DbIndex, Id, Key, Space};
use crate::core::dead::Dead;

impl DbIndex {
    /// Invalidates `names` at `seq` in O(1) per name: each one's member set
    /// leaves the index whole and waits for the reclaimer, and a tombstone makes
    /// every entry in it dead for readers at once. Returns the entries killed.
    pub fn invalidate(&mut self, space: Space, names: &[&[u8]], seq: u64) -> usize {
        let mut all = RoaringBitmap::new();
        for name in names {
            self.dead.bury(Some(space), name, seq);
            let Some(set) = self.space_mut(space).remove(*name) else {
                continue;
            };
            self.memberships -= set.len() as usize;
            self.name_bytes -= name.len();
            if set.len() > all.len() {
                let mut set = set.into_bitmap();
                std::mem::swap(&mut set, &mut all);
                all |= set;
            } else {
                set.add_to(&mut all);
            }
        }
        let killed = self.dead.queue(all);
        self.debug_check();
        killed
    }

    /// Invalidates every entry under `prefix` at `seq`; `ids` are theirs
    /// (from `prefix_ids`). Returns the entries killed.
    pub fn invalidate_prefix(&mut self, prefix: &[u8], ids: Vec<Id>, seq: u64) -> usize {
        self.dead.bury(None, prefix, seq);
        let killed = self.dead.queue(ids.into_iter().collect());
        self.debug_check();
        killed
    }

    /// Replays a persisted or replicated tombstone (no entries are queued
    /// here: loading queues each dead entry as it arrives).
    pub fn bury(&mut self, space: Option<Space>, name: &[u8], seq: u64) {
        self.dead.bury(space, name, seq);
    }

    pub fn dead(&self) -> &Dead {
        &self.dead
    }

    /// Takes about `n` dead entries off the reclaim queue (none: done).
    pub fn pop_dead(&mut self, n: usize) -> Vec<Key> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && self.dead.pending() > 0 {
            let ids = self.dead.pop_some(n - out.len());
            out.extend(
                ids.iter()
                    .filter_map(|id| self.ids.get(*id))
                    .map(|rec| rec.key.clone()),
            );
        }
        self.debug_check();
        out
    }

    /// Queues entry `id` for the reclaimer: it was killed before it arrived
    /// (its `killed` mark). Returns whether it was indexed.
    pub fn mark_dead(&mut self, id: Id) -> bool {
        let known = self.ids.get(id).is_some();
        if known {
            self.dead.queue_one(id);
        }
        self.debug_check();
        known
    }

    /// Forgets the tombstones once the reclaimer has deleted every dead entry.
    pub fn settle_tombs(&mut self) {
        self.dead.settle_tombs();
    }

    /// Keys of the dead entries still in the database.
    pub fn dead_keys(&self) -> BTreeSet<Vec<u8>> {
        self.keys
            .iter()
            .filter(|(_, id)| self.dead.contains(**id))
            .map(|(k, _)| k.bytes().to_vec())
            .collect()
    }
}
