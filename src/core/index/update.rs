//! Entries coming, changing and going: insert, overwrite, remove, expiry.

use super::key_ref::KeyRef;
use super::record::KeyRec;
use super::{DbIndex, Id, Indexed, Old, Space};
use crate::core::tagset::TagSet;

impl DbIndex {
    /// Adds `key`, an entry written at `seq`, with its tags. A key already
    /// present is replaced; callers remove it first when they know its old
    /// tags, so this only guards against a double insert. An entry a pending
    /// invalidation kills (one that arrives by RENAME, RESTORE, loading...) is
    /// queued for deletion; returns whether it was. `None`: the index is full
    /// (2^32 entries in one database).
    pub fn insert<'a>(
        &mut self,
        key: &[u8],
        space: Space,
        tags: impl Iterator<Item = &'a [u8]> + Clone,
        expire_at_ms: i64,
        seq: u64,
    ) -> Option<Indexed> {
        let dead = self.dead.kills(key, space, tags.clone(), seq);
        if self.keys.contains_key(key) {
            self.forget_key(key);
        }
        let id = self
            .ids
            .insert(KeyRec::new(key.into(), space, expire_at_ms))?;
        let stored = self.ids.get(id).map(|rec| KeyRef::of(&rec.key))?;
        self.keys.insert(stored, id);
        self.name_bytes += key.len();
        for tag in tags {
            self.link_tag(space, tag, id);
        }
        if dead {
            self.dead.queue_one(id);
        }
        debug_assert!(self.holds(key, id), "key map and record of {id} disagree");
        self.debug_check();
        Some(Indexed { id, dead })
    }

    /// Indexes `key` as rewritten with `tags` at `seq`, where `old` describes
    /// the entry it replaces (if any). An overwrite in the same space by an
    /// entry that is not dead keeps its id and touches only the tags that
    /// changed (tag lists are sorted), which is most of TCACHE.SET's index work.
    pub fn upsert<'a>(
        &mut self,
        key: &[u8],
        old: Option<Old<'a, impl Iterator<Item = &'a [u8]>>>,
        space: Space,
        tags: impl Iterator<Item = &'a [u8]> + Clone,
        expire_at_ms: i64,
        seq: u64,
    ) -> Option<Indexed> {
        let Some(old) = old else {
            return self.insert(key, space, tags, expire_at_ms, seq);
        };
        // The old entry's id (as it remembers it) is trusted only if the index
        // agrees: this finds the record without a key-ordered lookup.
        let alive = !self.dead.contains(old.id);
        let id = match self.ids.get_mut(old.id) {
            Some(rec)
                if &rec.key[..] == key && rec.space() == space && old.space == space && alive =>
            {
                rec.set(space, expire_at_ms);
                old.id
            }
            _ => {
                self.remove(key, old.tags);
                return self.insert(key, space, tags, expire_at_ms, seq);
            }
        };
        let mut gone = sorted(old.tags).peekable();
        let mut came = sorted(tags.clone()).peekable();
        loop {
            match (gone.peek(), came.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    gone.next();
                    came.next();
                }
                (Some(a), Some(b)) if a < b => {
                    self.unlink_tag(space, a, id);
                    gone.next();
                }
                (Some(a), None) => {
                    self.unlink_tag(space, a, id);
                    gone.next();
                }
                (_, Some(b)) => {
                    self.link_tag(space, b, id);
                    came.next();
                }
            }
        }
        let dead = self.dead.kills(key, space, tags, seq);
        if dead {
            self.dead.queue_one(id);
        }
        debug_assert!(self.holds(key, id), "key map and record of {id} disagree");
        self.debug_check();
        Some(Indexed { id, dead })
    }

    /// Removes `key`, which carried `tags`. Returns whether it was indexed.
    pub fn remove<'a>(&mut self, key: &[u8], tags: impl Iterator<Item = &'a [u8]>) -> bool {
        let Some((id, rec)) = self.take(key) else {
            return false;
        };
        for tag in tags {
            self.unlink_tag(rec.space(), tag, id);
        }
        self.debug_check();
        true
    }

    /// Removes `key` whose tags are unknown (slow: visits every tag).
    pub fn forget_key(&mut self, key: &[u8]) {
        let Some((id, rec)) = self.take(key) else {
            return;
        };
        let space = rec.space();
        let holding: Vec<Box<[u8]>> = self
            .space(space)
            .iter()
            .filter(|(_, set)| set.contains(id))
            .map(|(t, _)| t.clone())
            .collect();
        for tag in holding {
            self.unlink_tag(space, &tag, id);
        }
        self.debug_check();
    }

    pub fn set_expire(&mut self, key: &[u8], expire_at_ms: i64) -> bool {
        let Some(&id) = self.keys.get(key) else {
            return false;
        };
        match self.ids.get_mut(id) {
            Some(rec) => {
                rec.set(rec.space(), expire_at_ms);
                true
            }
            None => false,
        }
    }

    /// Takes `key` out of the key map and its record out of the slab (in that
    /// order: see `KeyRef`).
    fn take(&mut self, key: &[u8]) -> Option<(Id, KeyRec)> {
        let id = self.keys.remove(key)?;
        self.name_bytes -= key.len();
        let rec = self.ids.remove(id)?;
        debug_assert!(rec.key[..] == *key, "key map and record of {id} disagree");
        self.dead.forget(id);
        Some((id, rec))
    }

    fn link_tag(&mut self, space: Space, tag: &[u8], id: Id) {
        debug_assert!(
            self.ids.get(id).is_some_and(|rec| rec.space() == space),
            "linking id {id}, which is no record of this space"
        );
        let map = self.space_mut(space);
        match map.get_mut(tag) {
            Some(set) => {
                if !set.insert(id) {
                    return;
                }
            }
            None => {
                map.insert(tag.into(), TagSet::One(id));
                self.name_bytes += tag.len();
            }
        }
        self.memberships += 1;
    }

    fn unlink_tag(&mut self, space: Space, tag: &[u8], id: Id) {
        let map = self.space_mut(space);
        let Some(set) = map.get_mut(tag) else {
            return;
        };
        let removed = set.remove(id);
        let emptied = set.is_empty();
        if emptied {
            map.remove(tag);
        }
        if removed {
            self.memberships -= 1;
        }
        if emptied {
            self.name_bytes -= tag.len();
        }
    }
}

/// Passes `tags` through; debug builds assert that they come sorted and
/// unique, which the merge in `upsert` relies on.
fn sorted<'a>(tags: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    let mut last: Option<&[u8]> = None;
    tags.inspect(move |tag| {
        debug_assert!(
            last.is_none_or(|l| l < *tag),
            "tag list not sorted and unique"
        );
        last = Some(tag);
    })
}
