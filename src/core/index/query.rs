//! Reads: counts, the keys of labels and prefixes, TAGCARD and TAGSCAN.

use std::ops::Bound;

use roaring::RoaringBitmap;

use super::record::is_live;
use super::{DbIndex, Id, Key, Space};

impl DbIndex {
    /// Entries not killed by an invalidation (expired ones included).
    pub fn live_len(&self) -> usize {
        self.keys.len() - self.dead.pending()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }

    /// Every key of permission entries.
    pub fn keys_in_space(&self, space: Space) -> Vec<Key> {
        self.ids
            .iter()
            .filter(|(id, rec)| rec.space() == space && !self.dead.contains(*id))
            .map(|(_, rec)| rec.key.clone())
            .collect()
    }

    /// Every key carrying any of `tags` (or roles), each once, expired ones
    /// included (deleting those is harmless: Redis expires them on access),
    /// dead ones not (they are already gone for every reader).
    pub fn keys_with_any(&self, space: Space, tags: &[&[u8]]) -> Vec<Key> {
        let mut ids = RoaringBitmap::new();
        for tag in tags {
            if let Some(set) = self.space(space).get(*tag) {
                set.add_to(&mut ids);
            }
        }
        ids.iter()
            .filter(|id| !self.dead.contains(*id))
            .filter_map(|id| self.ids.get(id).map(|rec| rec.key.clone()))
            .collect()
    }

    /// Upper bound of the entries an invalidation of `names` would kill.
    pub fn label_size(&self, space: Space, names: &[&[u8]]) -> usize {
        let map = self.space(space);
        names
            .iter()
            .filter_map(|n| map.get(*n))
            .map(|set| set.len() as usize)
            .sum()
    }

    /// Ids of the live entries whose key starts with `prefix`, in key order.
    pub fn prefix_ids(&self, prefix: &[u8]) -> Vec<Id> {
        self.keys
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.bytes().starts_with(prefix))
            .map(|(_, id)| *id)
            .filter(|id| !self.dead.contains(*id))
            .collect()
    }

    /// Every indexed key starting with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Key> {
        self.keys
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.bytes().starts_with(prefix))
            .filter(|(_, id)| !self.dead.contains(**id))
            .map(|(k, _)| k.bytes().into())
            .collect()
    }

    /// Live entries carrying `tag`.
    pub fn tag_card(&self, tag: &[u8], now_ms: i64) -> usize {
        let Some(set) = self.tags.get(tag) else {
            return 0;
        };
        set.iter()
            .filter(|id| self.live_key(*id, now_ms).is_some())
            .count()
    }

    /// Up to `count` live keys of `tag` with id >= `cursor`; the next cursor is 0
    /// when the tag has no more ids (a next id is never 0: it follows one
    /// already visited).
    pub fn tag_scan(&self, tag: &[u8], cursor: u64, count: usize, now_ms: i64) -> (u64, Vec<Key>) {
        let (Some(set), Ok(cursor)) = (self.tags.get(tag), Id::try_from(cursor)) else {
            return (0, Vec::new());
        };
        let mut out = Vec::new();
        // Visit at most 10x count ids per call so that a tag full of expired
        // keys still answers in bounded time, like SCAN.
        let budget = count.saturating_mul(10).max(count);
        let mut visited = 0usize;
        let mut range = set.iter_from(cursor);
        for id in range.by_ref() {
            visited += 1;
            if let Some(k) = self.live_key(id, now_ms) {
                out.push(k.into());
            }
            if out.len() >= count || visited >= budget {
                let next = range.next().map_or(0, u64::from);
                return (next, out);
            }
        }
        (0, out)
    }

    fn live_key(&self, id: Id, now_ms: i64) -> Option<&[u8]> {
        if self.dead.contains(id) {
            return None;
        }
        let rec = self.ids.get(id)?;
        is_live(rec.expire_at_ms(), now_ms).then_some(&rec.key[..])
    }
}
