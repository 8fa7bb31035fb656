//! The per-database index of tcache entries: tag -> keys, and the ordered set of
//! entry keys (for prefix invalidation and verification).
//!
//! Every key gets a small dense id from a slab when it enters the index, and a
//! tag holds the ids of its keys in a compressed bitmap, in id order, so a tag
//! scan cursor is simply the next id to visit: keys that stay for the whole scan
//! are returned exactly once. Ids of deleted keys are reused. Expiry times are
//! mirrored so that reads never count an entry that is logically expired but
//! not yet deleted.
//!
//! A key's bytes are stored once, in its slab record; the ordered key map
//! borrows them (`KeyRef`).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::ptr::NonNull;

use roaring::RoaringBitmap;

use crate::core::dead::Dead;
pub use crate::core::slab::Id;
use crate::core::slab::Slab;
pub use crate::core::space::Space;
use crate::core::tagset::TagSet;

/// A key name handed out by the index (a copy).
pub type Key = Box<[u8]>;

/// Where `insert` / `upsert` put an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indexed {
    pub id: Id,
    /// Killed by a pending invalidation (and queued for the reclaimer).
    pub dead: bool,
}

/// The entry an overwrite replaces: its space, tags and remembered index id.
pub struct Old<'a, I: Iterator<Item = &'a [u8]>> {
    pub space: Space,
    pub tags: I,
    pub id: Id,
}

/// No expiry, as `PTTL` says -1.
pub const NO_EXPIRE: i64 = -1;

/// What the index knows of one entry, by id: its key, and its expiry and
/// space packed in one word.
struct KeyRec {
    key: Box<[u8]>,
    meta: u64,
}

const ROLES_BIT: u64 = 1 << 63;

impl KeyRec {
    fn new(key: Box<[u8]>, space: Space, expire_at_ms: i64) -> KeyRec {
        let mut rec = KeyRec { key, meta: 0 };
        rec.set(space, expire_at_ms);
        rec
    }

    /// Stores `expire_at_ms + 1` (so NO_EXPIRE is 0) below the space bit.
    fn set(&mut self, space: Space, expire_at_ms: i64) {
        let expire = expire_at_ms
            .saturating_add(1)
            .clamp(0, (ROLES_BIT - 1) as i64) as u64;
        self.meta = expire | if space == Space::Roles { ROLES_BIT } else { 0 };
    }

    fn space(&self) -> Space {
        if self.meta & ROLES_BIT != 0 {
            Space::Roles
        } else {
            Space::Tags
        }
    }

    fn expire_at_ms(&self) -> i64 {
        (self.meta & !ROLES_BIT) as i64 - 1
    }
}

/// The bytes of a key as the ordered key map holds them: a pointer to the
/// `key` of the slab record that owns them, so that each key is stored once.
/// `DbIndex` keeps every `KeyRef` in `keys` pointing at a live record's key:
/// a record is taken out of `keys` before it leaves the slab, and its box
/// never moves (the slab moves the box, not the bytes).
struct KeyRef(NonNull<[u8]>);

// SAFETY: a KeyRef is only read through the DbIndex that owns the bytes it
// points to, and moves between threads with it (under the per-db lock).
unsafe impl Send for KeyRef {}

impl KeyRef {
    fn of(key: &[u8]) -> KeyRef {
        KeyRef(NonNull::from(key))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: by DbIndex's invariant above, the record that owns these
        // bytes is alive for as long as this KeyRef is in `keys`, and nothing
        // mutates a record's key.
        unsafe { self.0.as_ref() }
    }
}

impl Borrow<[u8]> for KeyRef {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &KeyRef) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for KeyRef {}

impl PartialOrd for KeyRef {
    fn partial_cmp(&self, other: &KeyRef) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyRef {
    fn cmp(&self, other: &KeyRef) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

fn is_live(expire_at_ms: i64, now_ms: i64) -> bool {
    // Redis treats a key as expired once now > expire time.
    expire_at_ms == NO_EXPIRE || now_ms <= expire_at_ms
}

type Labels = HashMap<Box<[u8]>, TagSet>;

#[derive(Default)]
pub struct DbIndex {
    /// key -> id, ordered for prefix invalidation.
    keys: BTreeMap<KeyRef, Id>,
    ids: Slab<KeyRec>,
    tags: Labels,
    roles: Labels,
    /// Sum of key and tag name bytes held, for the index_bytes statistic.
    name_bytes: usize,
    memberships: usize,
    /// Invalidated entries not yet deleted, and the tombstones that kill them.
    dead: Dead,
}

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
        let old_tags = old.tags;
        let mut gone = old_tags.peekable();
        let mut came = tags.clone().peekable();
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
        Some(Indexed { id, dead })
    }

    fn link_tag(&mut self, space: Space, tag: &[u8], id: Id) {
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

    fn space(&self, space: Space) -> &Labels {
        match space {
            Space::Tags => &self.tags,
            Space::Roles => &self.roles,
        }
    }

    fn space_mut(&mut self, space: Space) -> &mut Labels {
        match space {
            Space::Tags => &mut self.tags,
            Space::Roles => &mut self.roles,
        }
    }

    /// Takes `key` out of the key map and its record out of the slab (in that
    /// order: see `KeyRef`).
    fn take(&mut self, key: &[u8]) -> Option<(Id, KeyRec)> {
        let id = self.keys.remove(key)?;
        self.name_bytes -= key.len();
        let rec = self.ids.remove(id)?;
        self.dead.forget(id);
        Some((id, rec))
    }

    /// Removes `key`, which carried `tags`. Returns whether it was indexed.
    pub fn remove<'a>(&mut self, key: &[u8], tags: impl Iterator<Item = &'a [u8]>) -> bool {
        let Some((id, rec)) = self.take(key) else {
            return false;
        };
        for tag in tags {
            self.unlink_tag(rec.space(), tag, id);
        }
        true
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
        self.dead.queue(all)
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

    /// Invalidates every entry under `prefix` at `seq`; `ids` are theirs
    /// (from `prefix_ids`). Returns the entries killed.
    pub fn invalidate_prefix(&mut self, prefix: &[u8], ids: Vec<Id>, seq: u64) -> usize {
        self.dead.bury(None, prefix, seq);
        self.dead.queue(ids.into_iter().collect())
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
        out
    }

    /// Queues entry `id` for the reclaimer: it was killed before it arrived
    /// (its `killed` mark). Returns whether it was indexed.
    pub fn mark_dead(&mut self, id: Id) -> bool {
        let known = self.ids.get(id).is_some();
        if known {
            self.dead.queue_one(id);
        }
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

    /// Live entries carrying `tag`.
    pub fn tag_card(&self, tag: &[u8], now_ms: i64) -> usize {
        let Some(set) = self.tags.get(tag) else {
            return 0;
        };
        set.iter()
            .filter(|id| self.live_key(*id, now_ms).is_some())
            .count()
    }

    fn live_key(&self, id: Id, now_ms: i64) -> Option<&[u8]> {
        if self.dead.contains(id) {
            return None;
        }
        let rec = self.ids.get(id)?;
        is_live(rec.expire_at_ms(), now_ms).then_some(&rec.key[..])
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

    /// Every indexed key starting with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Key> {
        self.keys
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.bytes().starts_with(prefix))
            .filter(|(_, id)| !self.dead.contains(**id))
            .map(|(k, _)| k.bytes().into())
            .collect()
    }

    /// key -> its labels as the index sees them (`label_name` distinguishes
    /// roles from tags).
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
        let mut out: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = self
            .keys
            .iter()
            .filter(|(_, id)| !self.dead.contains(**id))
            .map(|(k, _)| (k.bytes().to_vec(), Vec::new()))
            .collect();
        let mut dangling = 0usize;
        for space in [Space::Tags, Space::Roles] {
            for (tag, set) in self.space(space) {
                for id in set.iter().filter(|id| !self.dead.contains(*id)) {
                    match self.ids.get(id).and_then(|rec| out.get_mut(&rec.key[..])) {
                        Some(tags) => tags.push(label_name(space, tag)),
                        None => dangling += 1,
                    }
                }
            }
        }
        if self.ids.len() != self.keys.len() {
            dangling += self.ids.len().abs_diff(self.keys.len());
        }
        if dangling > 0 {
            // Surface ids no key owns as a pseudo-entry so verification reports them.
            out.insert(
                b"<dangling tag ids>".to_vec(),
                vec![dangling.to_string().into_bytes()],
            );
        }
        for tags in out.values_mut() {
            tags.sort();
        }
        out
    }

    /// Approximate heap bytes the index holds: names, the key map's nodes
    /// (about 24 bytes a key), the slab, label maps, and their bitmaps at 2
    /// bytes a member plus a container each (an estimate: exact figures would
    /// visit every bitmap on every STATS).
    pub fn heap_bytes(&self) -> usize {
        let label_slot = std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<TagSet>();
        self.name_bytes
            + self.keys.len() * 24
            + self.ids.heap_bytes()
            + (self.tags.len() + self.roles.len()) * (label_slot + 1 + 32)
            + self.memberships * 2
            + self.dead.heap_bytes()
    }
}

/// How a label shows in a snapshot: tags as they are, roles as `role:<name>`.
pub fn label_name(space: Space, name: &[u8]) -> Vec<u8> {
    match space {
        Space::Tags => name.to_vec(),
        Space::Roles => [&b"role:"[..], name].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(s: &'a [&'static str]) -> impl Iterator<Item = &'static [u8]> + Clone + 'a {
        s.iter().map(|x| x.as_bytes())
    }

    fn names(v: Vec<Key>) -> Vec<String> {
        let mut v: Vec<String> = v
            .iter()
            .map(|k| String::from_utf8_lossy(k).into())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn insert_and_remove_keep_tags_exact() {
        let mut ix = DbIndex::default();
        ix.insert(b"k1", Space::Tags, t(&["a", "b"]), NO_EXPIRE, 1);
        ix.insert(b"k2", Space::Tags, t(&["b"]), NO_EXPIRE, 1);
        assert_eq!(ix.tag_card(b"a", 0), 1);
        assert_eq!(ix.tag_card(b"b", 0), 2);
        assert!(ix.remove(b"k1", t(&["a", "b"])));
        assert_eq!(ix.tag_count(), 1, "an emptied tag is dropped");
        assert!(!ix.remove(b"k1", t(&["a", "b"])));
        assert!(ix.remove(b"k2", t(&["b"])));
        assert!(ix.is_empty());
        assert_eq!(ix.tag_count(), 0);
        assert_eq!(ix.heap_bytes(), 0);
    }

    #[test]
    fn an_overwrite_keeps_the_id_and_moves_only_changed_tags() {
        let mut ix = DbIndex::default();
        let mut id = ix
            .insert(b"k", Space::Tags, t(&["a", "b", "c"]), NO_EXPIRE, 1)
            .map_or(Id::MAX, |a| a.id);
        let old = |space, tags: &'static [&'static str], id| {
            Some(Old {
                space,
                tags: tags.iter().map(|x| x.as_bytes()),
                id,
            })
        };
        ix.insert(b"other", Space::Tags, t(&["b"]), NO_EXPIRE, 2);
        let (_, before) = ix.tag_scan(b"b", 0, 10, 0);
        id = ix
            .upsert(
                b"k",
                old(Space::Tags, &["a", "b", "c"], id),
                Space::Tags,
                t(&["b", "d"]),
                7,
                3,
            )
            .map_or(Id::MAX, |a| a.id);
        let (_, after) = ix.tag_scan(b"b", 0, 10, 0);
        assert_eq!(names(before), names(after), "same ids, same order");
        assert_eq!(ix.tag_card(b"a", 0), 0);
        assert_eq!(ix.tag_card(b"d", 0), 1);
        assert_eq!(ix.tag_count(), 2);
        let snap = ix.snapshot();
        assert_eq!(
            snap.get(&b"k"[..]),
            Some(&vec![b"b".to_vec(), b"d".to_vec()])
        );
        // Into another space: a full re-insert.
        id = ix
            .upsert(
                b"k",
                old(Space::Tags, &["b", "d"], id),
                Space::Roles,
                t(&["r"]),
                NO_EXPIRE,
                4,
            )
            .map_or(Id::MAX, |a| a.id);
        assert_eq!(ix.keys_with_any(Space::Roles, &[b"r"]).len(), 1);
        assert_eq!(ix.tag_card(b"d", 0), 0);
        // A dead entry overwritten comes back alive, in every tag.
        id = ix
            .upsert(
                b"k",
                old(Space::Roles, &["r"], id),
                Space::Tags,
                t(&["big"]),
                NO_EXPIRE,
                5,
            )
            .map_or(Id::MAX, |a| a.id);
        assert_eq!(ix.invalidate(Space::Tags, &[b"big"], 10), 1);
        ix.upsert(
            b"k",
            old(Space::Tags, &["big"], id),
            Space::Tags,
            t(&["big"]),
            NO_EXPIRE,
            11,
        );
        assert_eq!(ix.tag_card(b"big", 0), 1);
        assert_eq!(ix.dead().pending(), 0);
        assert_eq!(ix.live_len(), 2);
    }

    #[test]
    fn double_insert_does_not_leave_dangling_ids() {
        let mut ix = DbIndex::default();
        ix.insert(b"k", Space::Tags, t(&["a"]), NO_EXPIRE, 1);
        ix.insert(b"k", Space::Tags, t(&["b"]), NO_EXPIRE, 1);
        assert_eq!(ix.tag_card(b"a", 0), 0);
        assert_eq!(ix.tag_count(), 1);
        let snap = ix.snapshot();
        assert_eq!(snap.get(&b"k"[..]), Some(&vec![b"b".to_vec()]));
    }

    #[test]
    fn roles_and_tags_are_separate_namespaces() {
        let mut ix = DbIndex::default();
        ix.insert(b"perm:1", Space::Roles, t(&["admin"]), NO_EXPIRE, 1);
        ix.insert(b"page", Space::Tags, t(&["admin"]), NO_EXPIRE, 1);
        assert_eq!(
            names(ix.keys_with_any(Space::Roles, &[b"admin"])),
            vec!["perm:1"]
        );
        assert_eq!(
            names(ix.keys_with_any(Space::Tags, &[b"admin"])),
            vec!["page"]
        );
        assert_eq!(names(ix.keys_in_space(Space::Roles)), vec!["perm:1"]);
        assert!(ix.remove(b"perm:1", t(&["admin"])));
        assert!(ix.keys_with_any(Space::Roles, &[b"admin"]).is_empty());
        assert_eq!(ix.tag_card(b"admin", 0), 1);
        assert!(ix.heap_bytes() > 0);
        assert!(ix.remove(b"page", t(&["admin"])));
        assert_eq!(ix.heap_bytes(), 0);
    }

    #[test]
    fn union_of_tags_counts_each_key_once() {
        let mut ix = DbIndex::default();
        ix.insert(b"k1", Space::Tags, t(&["a", "b"]), NO_EXPIRE, 1);
        ix.insert(b"k2", Space::Tags, t(&["b"]), NO_EXPIRE, 1);
        ix.insert(b"k3", Space::Tags, t(&["c"]), NO_EXPIRE, 1);
        assert_eq!(
            names(ix.keys_with_any(Space::Tags, &[b"a", b"b"])),
            vec!["k1", "k2"]
        );
        assert!(ix.keys_with_any(Space::Tags, &[b"zz"]).is_empty());
    }

    #[test]
    fn expired_entries_are_not_counted_or_scanned() {
        let mut ix = DbIndex::default();
        ix.insert(b"old", Space::Tags, t(&["a"]), 1000, 1);
        ix.insert(b"new", Space::Tags, t(&["a"]), 5000, 1);
        assert_eq!(ix.tag_card(b"a", 1000), 2);
        assert_eq!(ix.tag_card(b"a", 1001), 1);
        let (_, keys) = ix.tag_scan(b"a", 0, 10, 2000);
        assert_eq!(names(keys), vec!["new"]);
        ix.set_expire(b"old", NO_EXPIRE);
        assert_eq!(ix.tag_card(b"a", 9999), 1);
    }

    #[test]
    fn tag_scan_returns_every_stable_key_once() {
        let mut ix = DbIndex::default();
        for i in 0..100 {
            ix.insert(
                format!("k{i}").as_bytes(),
                Space::Tags,
                t(&["a"]),
                NO_EXPIRE,
                1,
            );
        }
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            let (next, keys) = ix.tag_scan(b"a", cursor, 7, 0);
            seen.extend(keys);
            // Churn during the scan: remove one and add one.
            round += 1;
            let victim = format!("k{}", 99 - round);
            ix.remove(victim.as_bytes(), t(&["a"]));
            ix.insert(
                format!("n{round}").as_bytes(),
                Space::Tags,
                t(&["a"]),
                NO_EXPIRE,
                1,
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let seen = names(seen);
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(seen, dedup, "no key twice");
        for i in 0..(99 - round) {
            assert!(seen.contains(&format!("k{i}")), "k{i} missed");
        }
    }

    #[test]
    fn an_invalidated_tag_leaves_the_index_at_once_and_is_reclaimed() {
        let mut ix = DbIndex::default();
        for i in 0..10u64 {
            let tags: &[&str] = if i % 2 == 0 {
                &["big", "even"]
            } else {
                &["big"]
            };
            ix.insert(
                format!("k{i}").as_bytes(),
                Space::Tags,
                t(tags),
                NO_EXPIRE,
                i + 1,
            );
        }
        assert_eq!(ix.label_size(Space::Tags, &[b"big", b"even"]), 15);
        assert_eq!(ix.invalidate(Space::Tags, &[b"big", b"even"], 100), 10);
        assert_eq!(ix.live_len(), 0);
        assert_eq!(
            ix.tag_card(b"even", 0),
            0,
            "dead members of other tags hide"
        );
        assert!(ix.keys_with_any(Space::Tags, &[b"even"]).is_empty());
        assert!(ix.snapshot().is_empty());
        assert_eq!(ix.dead_keys().len(), 10);
        // Written after the invalidation: alive.
        assert!(!ix
            .insert(b"new", Space::Tags, t(&["big"]), NO_EXPIRE, 101)
            .is_some_and(|a| a.dead));
        // Arriving with an older write (RESTORE of a dump): dead, queued.
        assert!(ix
            .insert(b"old", Space::Tags, t(&["big"]), NO_EXPIRE, 50)
            .is_some_and(|a| a.dead));
        assert_eq!(ix.dead().pending(), 11);
        let mut reclaimed = 0;
        loop {
            let keys = ix.pop_dead(4);
            if keys.is_empty() {
                break;
            }
            for k in keys {
                let tags: &[&str] = &["big", "even"];
                assert!(ix.remove(&k, t(tags)));
                reclaimed += 1;
            }
        }
        assert_eq!(reclaimed, 11);
        ix.settle_tombs();
        assert!(ix.dead().is_clear());
        assert_eq!(ix.live_len(), 1);
        assert_eq!(ix.tag_card(b"big", 0), 1);
        assert_eq!(ix.tag_count(), 1);
    }

    #[test]
    fn a_prefix_invalidation_kills_only_older_entries_under_it() {
        let mut ix = DbIndex::default();
        for k in [&b"p:1"[..], b"p:2", b"q:1"] {
            ix.insert(k, Space::Tags, t(&["a"]), NO_EXPIRE, 1);
        }
        let ids = ix.prefix_ids(b"p:");
        assert_eq!(ix.invalidate_prefix(b"p:", ids, 10), 2);
        assert!(ix.dead().kills(b"p:3", Space::Tags, t(&[]), 9));
        assert!(!ix.dead().kills(b"p:3", Space::Tags, t(&[]), 11));
        assert_eq!(ix.tag_card(b"a", 0), 1);
        assert!(ix.prefix_ids(b"p:").is_empty(), "already dead");
        // A dead entry deleted by someone else no longer waits.
        assert!(ix.remove(b"p:1", t(&["a"])));
        assert_eq!(ix.dead().pending(), 1);
    }

    #[test]
    fn prefix_lookup_is_ordered_and_exact() {
        let mut ix = DbIndex::default();
        for k in [&b"p:1"[..], b"p:2", b"p", b"q:1", b"p:\xff", b"p\xff"] {
            ix.insert(k, Space::Tags, t(&[]), NO_EXPIRE, 1);
        }
        let got: Vec<Vec<u8>> = ix
            .keys_with_prefix(b"p:")
            .iter()
            .map(|k| k.to_vec())
            .collect();
        assert_eq!(
            got,
            vec![b"p:1".to_vec(), b"p:2".to_vec(), b"p:\xff".to_vec()]
        );
        assert_eq!(ix.keys_with_prefix(b"").len(), 6);
        assert!(ix.keys_with_prefix(b"z").is_empty());
    }

    #[test]
    fn reused_ids_never_mix_up_keys() {
        let mut ix = DbIndex::default();
        let key = |i: u32| format!("k{i:05}").into_bytes();
        for i in 0..10_000 {
            ix.insert(&key(i), Space::Tags, t(&["all"]), NO_EXPIRE, 1);
        }
        // Free every other id, then fill the holes with new keys.
        for i in (0..10_000).step_by(2) {
            assert!(ix.remove(&key(i), t(&["all"])));
        }
        for i in 10_000..15_000 {
            ix.insert(&key(i), Space::Tags, t(&["new"]), NO_EXPIRE, 2);
        }
        let snap = ix.snapshot();
        assert_eq!(snap.len(), 10_000);
        assert!(!snap.contains_key(&b"<dangling tag ids>"[..]));
        for i in 0..15_000 {
            let want: Option<Vec<Vec<u8>>> = match i {
                _ if i >= 10_000 => Some(vec![b"new".to_vec()]),
                _ if i % 2 == 1 => Some(vec![b"all".to_vec()]),
                _ => None,
            };
            assert_eq!(snap.get(&key(i)), want.as_ref(), "key {i}");
        }
        assert_eq!(ix.tag_card(b"new", 0), 5_000);
        assert_eq!(ix.keys_with_prefix(b"k1").len(), 5_000);
        assert_eq!(ix.keys_with_prefix(b"k0").len(), 5_000);
        // Everything out: nothing held.
        for i in 0..15_000 {
            ix.remove(&key(i), t(&["all", "new"]));
        }
        assert!(ix.is_empty());
        assert_eq!(ix.heap_bytes(), 0);
    }
}
