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
//!
//! This file holds the type and its invariants; the rest, one concern a file:
//! `record` (what is kept per entry), `key_ref` (the key map's borrowed keys),
//! `update` (insert, overwrite, remove), `query` (reads, TAGSCAN),
//! `invalidate` (tombstones and the reclaim queue), `snapshot` (what VERIFY
//! compares), `heap` (the memory estimate).

mod heap;
mod invalidate;
mod key_ref;
mod query;
mod record;
mod snapshot;
mod update;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use crate::core::dead::Dead;
pub use crate::core::slab::Id;
use crate::core::slab::Slab;
pub use crate::core::space::Space;
use crate::core::tagset::TagSet;
use key_ref::KeyRef;
use record::KeyRec;
pub use snapshot::{label_name, Corruption};

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

type Labels = HashMap<Box<[u8]>, TagSet>;

/// The index of one database. Between two calls:
/// - every key of `keys` maps to the id of the record in `ids` that holds
///   that key, and every record is in `keys` (so both count the same);
/// - every member of a set in `tags` (`roles`) is the id of a record of the
///   tags (roles) space, and no set is empty;
/// - `memberships` is the sum of the sets' sizes, `name_bytes` the bytes of
///   every key and label name;
/// - every id queued in `dead` is a record.
///
/// Debug builds check the entry a change touched, and the whole index after
/// each change while it holds at most `WHOLE_CHECK_MAX` entries.
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

/// Above this many entries a debug build stops walking the whole index after
/// each change. The walk is linear (about 50 µs at 64 entries unoptimized);
/// at 256 it slowed debug servers enough that Valkey's replica acks of a slot
/// move timed out in the resharding test.
const WHOLE_CHECK_MAX: usize = 64;

impl DbIndex {
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

    /// `key` is in the key map under `id`, and record `id` holds `key`.
    fn holds(&self, key: &[u8], id: Id) -> bool {
        self.keys.get(key) == Some(&id) && self.ids.get(id).is_some_and(|rec| *rec.key == *key)
    }

    /// In debug builds, after a change: the counts agree and, while the index
    /// is small, `check` passes.
    fn debug_check(&self) {
        debug_assert_eq!(self.keys.len(), self.ids.len(), "key map and slab");
        debug_assert!(
            self.keys.len() > WHOLE_CHECK_MAX || self.check().is_ok(),
            "index invariant broken: {:?}",
            self.check()
        );
    }

    /// Walks the whole index and names the first invariant (see `DbIndex`)
    /// that does not hold.
    fn check(&self) -> Result<(), String> {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut names = 0;
        for (key, id) in &self.keys {
            if self.ids.get(*id).is_none_or(|rec| *rec.key != *key.bytes()) {
                return Err(format!(
                    "key '{}' -> id {id}, not its record",
                    show(key.bytes())
                ));
            }
            names += key.bytes().len();
        }
        if self.keys.len() != self.ids.len() {
            return Err(format!(
                "{} keys but {} records",
                self.keys.len(),
                self.ids.len()
            ));
        }
        let mut members = 0;
        for space in [Space::Tags, Space::Roles] {
            for (name, set) in self.space(space) {
                if set.is_empty() {
                    return Err(format!("empty label '{}'", show(name)));
                }
                if let Some(id) = set
                    .iter()
                    .find(|id| self.ids.get(*id).map(KeyRec::space) != Some(space))
                {
                    return Err(format!(
                        "'{}' holds id {id}, no record of its space",
                        show(name)
                    ));
                }
                names += name.len();
                members += set.len() as usize;
            }
        }
        if (members, names) != (self.memberships, self.name_bytes) {
            return Err(format!(
                "{members} members and {names} name bytes counted as {} and {}",
                self.memberships, self.name_bytes
            ));
        }
        let queued = self
            .ids
            .iter()
            .filter(|(id, _)| self.dead.contains(*id))
            .count();
        if queued != self.dead.pending() {
            return Err(format!(
                "{} dead entries queued, {queued} of them records",
                self.dead.pending()
            ));
        }
        Ok(())
    }
}
