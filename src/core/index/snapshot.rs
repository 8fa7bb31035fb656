//! The index as `TCACHE.VERIFY` compares it with the stored entries: every
//! entry with its labels, and what is broken inside the index, reported apart.

use std::collections::BTreeMap;

use super::{DbIndex, Space};

/// The live index, to compare with one rebuilt from the stored entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every entry not dead -> its labels (`label_name`), sorted.
    pub entries: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// What the walk found broken; clear in a sound index.
    pub corruption: Corruption,
}

/// Breakage inside the index that a snapshot finds (no entry shows it: the
/// keys of `Snapshot::entries` are only real keys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Corruption {
    /// Members of a tag or role, not dead, that lead to no indexed key.
    pub dangling_ids: usize,
    /// How far the number of slab records and of keys in the key map differ.
    pub unpaired_records: usize,
}

impl Corruption {
    /// Nothing broken.
    pub fn is_clear(&self) -> bool {
        *self == Corruption::default()
    }
}

impl DbIndex {
    /// Every entry not dead with its labels (`label_name` distinguishes roles
    /// from tags), and the tag ids no key owns.
    pub fn snapshot(&self) -> Snapshot {
        let mut entries: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = self
            .keys
            .iter()
            .filter(|(_, id)| !self.dead.contains(**id))
            .map(|(k, _)| (k.bytes().to_vec(), Vec::new()))
            .collect();
        let mut dangling_ids = 0usize;
        for space in [Space::Tags, Space::Roles] {
            for (tag, set) in self.space(space) {
                for id in set.iter().filter(|id| !self.dead.contains(*id)) {
                    match self
                        .ids
                        .get(id)
                        .and_then(|rec| entries.get_mut(&rec.key[..]))
                    {
                        Some(tags) => tags.push(label_name(space, tag)),
                        None => dangling_ids += 1,
                    }
                }
            }
        }
        for tags in entries.values_mut() {
            tags.sort();
        }
        Snapshot {
            entries,
            corruption: Corruption {
                dangling_ids,
                unpaired_records: self.ids.len().abs_diff(self.keys.len()),
            },
        }
    }
}

/// How a label shows in a snapshot: tags as they are, roles as `role:<name>`.
pub fn label_name(space: Space, name: &[u8]) -> Vec<u8> {
    match space {
        Space::Tags => name.to_vec(),
        Space::Roles => [&b"role:"[..], name].concat(),
    }
}
