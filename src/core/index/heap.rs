//! The index's memory, as the `index_bytes` statistic reports it.

use super::DbIndex;
use crate::core::tagset::TagSet;

impl DbIndex {
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
