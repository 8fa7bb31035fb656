//! The per-database index of tcache entries: tag -> keys, and the ordered set of
//! entry keys (for prefix invalidation and verification).
//!
//! Every key gets an id when it enters the index; a tag holds the ids of its
//! keys in order, so a tag scan cursor is simply the next id to visit: keys that
//! stay for the whole scan are returned exactly once, and a key added later gets
//! a larger id. Expiry times are mirrored so that reads never count an entry
//! that is logically expired but not yet deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

pub type Key = Arc<[u8]>;

/// No expiry, as `PTTL` says -1.
pub const NO_EXPIRE: i64 = -1;

/// The two label namespaces: tags of cache entries, roles of permission
/// entries. Tag `admin` and role `admin` are unrelated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Tags,
    Roles,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyRec {
    id: u64,
    expire_at_ms: i64,
    space: Space,
}

fn is_live(expire_at_ms: i64, now_ms: i64) -> bool {
    // Redis treats a key as expired once now > expire time.
    expire_at_ms == NO_EXPIRE || now_ms <= expire_at_ms
}

#[derive(Default)]
pub struct DbIndex {
    keys: BTreeMap<Key, KeyRec>,
    ids: HashMap<u64, Key>,
    tags: HashMap<Box<[u8]>, BTreeSet<u64>>,
    roles: HashMap<Box<[u8]>, BTreeSet<u64>>,
    next_id: u64,
    /// Sum of key and tag name bytes held, for the index_bytes statistic.
    name_bytes: usize,
    memberships: usize,
}

impl DbIndex {
    /// Adds `key` with its tags. A key already present is replaced; callers
    /// remove it first when they know its old tags, so this only guards
    /// against a double insert.
    pub fn insert<'a>(
        &mut self,
        key: &[u8],
        space: Space,
        tags: impl Iterator<Item = &'a [u8]>,
        expire_at_ms: i64,
    ) {
        if let Some(old) = self.keys.get(key).copied() {
            self.drop_id(old.space, old.id);
            self.keys.remove(key);
            self.name_bytes -= key.len();
        }
        self.next_id += 1;
        let id = self.next_id;
        let k: Key = Arc::from(key);
        self.name_bytes += key.len();
        self.keys.insert(
            k.clone(),
            KeyRec {
                id,
                expire_at_ms,
                space,
            },
        );
        self.ids.insert(id, k);
        for tag in tags {
            let map = self.space_mut(space);
            match map.get_mut(tag) {
                Some(set) => {
                    set.insert(id);
                }
                None => {
                    map.insert(tag.into(), BTreeSet::from([id]));
                    self.name_bytes += tag.len();
                }
            }
            self.memberships += 1;
        }
    }

    fn space(&self, space: Space) -> &HashMap<Box<[u8]>, BTreeSet<u64>> {
        match space {
            Space::Tags => &self.tags,
            Space::Roles => &self.roles,
        }
    }

    fn space_mut(&mut self, space: Space) -> &mut HashMap<Box<[u8]>, BTreeSet<u64>> {
        match space {
            Space::Tags => &mut self.tags,
            Space::Roles => &mut self.roles,
        }
    }

    /// Removes `key`, which carried `tags`. Returns whether it was indexed.
    pub fn remove<'a>(&mut self, key: &[u8], tags: impl Iterator<Item = &'a [u8]>) -> bool {
        let Some(rec) = self.keys.remove(key) else {
            return false;
        };
        self.name_bytes -= key.len();
        self.ids.remove(&rec.id);
        for tag in tags {
            self.unlink_tag(rec.space, tag, rec.id);
        }
        true
    }

    fn unlink_tag(&mut self, space: Space, tag: &[u8], id: u64) {
        let map = self.space_mut(space);
        let Some(set) = map.get_mut(tag) else {
            return;
        };
        let removed = set.remove(&id);
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

    /// Forgets an id whose tags are unknown: the slow path of a double insert.
    fn drop_id(&mut self, space: Space, id: u64) {
        self.ids.remove(&id);
        let holding: Vec<Box<[u8]>> = self
            .space(space)
            .iter()
            .filter(|(_, set)| set.contains(&id))
            .map(|(t, _)| t.clone())
            .collect();
        for tag in holding {
            self.unlink_tag(space, &tag, id);
        }
    }

    pub fn set_expire(&mut self, key: &[u8], expire_at_ms: i64) -> bool {
        match self.keys.get_mut(key) {
            Some(rec) => {
                rec.expire_at_ms = expire_at_ms;
                true
            }
            None => false,
        }
    }

    /// Entries indexed, including ones expired but not yet deleted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }

    /// Every key of permission entries.
    pub fn keys_in_space(&self, space: Space) -> Vec<Key> {
        self.keys
            .iter()
            .filter(|(_, rec)| rec.space == space)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every key carrying any of `tags` (or roles), each once, expired ones
    /// included (deleting those is harmless: Redis expires them on access).
    pub fn keys_with_any(&self, space: Space, tags: &[&[u8]]) -> Vec<Key> {
        let mut ids: Vec<u64> = Vec::new();
        for tag in tags {
            if let Some(set) = self.space(space).get(*tag) {
                ids.extend(set.iter().copied());
            }
        }
        if tags.len() > 1 {
            ids.sort_unstable();
            ids.dedup();
        }
        ids.iter()
            .filter_map(|id| self.ids.get(id).cloned())
            .collect()
    }

    /// Live entries carrying `tag`.
    pub fn tag_card(&self, tag: &[u8], now_ms: i64) -> usize {
        let Some(set) = self.tags.get(tag) else {
            return 0;
        };
        set.iter()
            .filter(|id| self.live_key(**id, now_ms).is_some())
            .count()
    }

    fn live_key(&self, id: u64, now_ms: i64) -> Option<&Key> {
        let key = self.ids.get(&id)?;
        let rec = self.keys.get(key)?;
        is_live(rec.expire_at_ms, now_ms).then_some(key)
    }

    /// Up to `count` live keys of `tag` with id >= `cursor`; the next cursor is 0
    /// when the tag has no more ids.
    pub fn tag_scan(&self, tag: &[u8], cursor: u64, count: usize, now_ms: i64) -> (u64, Vec<Key>) {
        let Some(set) = self.tags.get(tag) else {
            return (0, Vec::new());
        };
        let mut out = Vec::new();
        // Visit at most 10x count ids per call so that a tag full of expired
        // keys still answers in bounded time, like SCAN.
        let budget = count.saturating_mul(10).max(count);
        let mut visited = 0usize;
        let mut range = set.range((Bound::Included(cursor), Bound::Unbounded));
        for id in range.by_ref() {
            visited += 1;
            if let Some(k) = self.live_key(*id, now_ms) {
                out.push(k.clone());
            }
            if out.len() >= count || visited >= budget {
                let next = range.next().copied().unwrap_or(0);
                return (next, out);
            }
        }
        (0, out)
    }

    /// Every indexed key starting with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Key> {
        self.keys
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// key -> its labels as the index sees them (`label_name` distinguishes
    /// roles from tags).
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
        let mut out: BTreeMap<Vec<u8>, Vec<Vec<u8>>> =
            self.keys.keys().map(|k| (k.to_vec(), Vec::new())).collect();
        let mut dangling = 0usize;
        for space in [Space::Tags, Space::Roles] {
            for (tag, set) in self.space(space) {
                for id in set {
                    match self.ids.get(id).and_then(|k| out.get_mut(&k[..])) {
                        Some(tags) => tags.push(label_name(space, tag)),
                        None => dangling += 1,
                    }
                }
            }
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

    /// Approximate heap bytes the index holds (names, map slots, tag members).
    pub fn heap_bytes(&self) -> usize {
        let key_slot = std::mem::size_of::<Key>() + std::mem::size_of::<KeyRec>();
        let id_slot = 8 + std::mem::size_of::<Key>();
        let tag_slot = std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<BTreeSet<u64>>();
        self.name_bytes
            + self.keys.len() * (key_slot + 16 + id_slot + 1)
            + (self.tags.len() + self.roles.len()) * (tag_slot + 1)
            + self.memberships * 9
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

    fn t<'a>(s: &'a [&'static str]) -> impl Iterator<Item = &'static [u8]> + 'a {
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
        ix.insert(b"k1", Space::Tags, t(&["a", "b"]), NO_EXPIRE);
        ix.insert(b"k2", Space::Tags, t(&["b"]), NO_EXPIRE);
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
    fn double_insert_does_not_leave_dangling_ids() {
        let mut ix = DbIndex::default();
        ix.insert(b"k", Space::Tags, t(&["a"]), NO_EXPIRE);
        ix.insert(b"k", Space::Tags, t(&["b"]), NO_EXPIRE);
        assert_eq!(ix.tag_card(b"a", 0), 0);
        assert_eq!(ix.tag_count(), 1);
        let snap = ix.snapshot();
        assert_eq!(snap.get(&b"k"[..]), Some(&vec![b"b".to_vec()]));
    }

    #[test]
    fn roles_and_tags_are_separate_namespaces() {
        let mut ix = DbIndex::default();
        ix.insert(b"perm:1", Space::Roles, t(&["admin"]), NO_EXPIRE);
        ix.insert(b"page", Space::Tags, t(&["admin"]), NO_EXPIRE);
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
        ix.insert(b"k1", Space::Tags, t(&["a", "b"]), NO_EXPIRE);
        ix.insert(b"k2", Space::Tags, t(&["b"]), NO_EXPIRE);
        ix.insert(b"k3", Space::Tags, t(&["c"]), NO_EXPIRE);
        assert_eq!(
            names(ix.keys_with_any(Space::Tags, &[b"a", b"b"])),
            vec!["k1", "k2"]
        );
        assert!(ix.keys_with_any(Space::Tags, &[b"zz"]).is_empty());
    }

    #[test]
    fn expired_entries_are_not_counted_or_scanned() {
        let mut ix = DbIndex::default();
        ix.insert(b"old", Space::Tags, t(&["a"]), 1000);
        ix.insert(b"new", Space::Tags, t(&["a"]), 5000);
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
    fn prefix_lookup_is_ordered_and_exact() {
        let mut ix = DbIndex::default();
        for k in [&b"p:1"[..], b"p:2", b"p", b"q:1", b"p:\xff", b"p\xff"] {
            ix.insert(k, Space::Tags, t(&[]), NO_EXPIRE);
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
}
