//! The bytes of a key as the ordered key map holds them: a pointer to the
//! `key` of the slab record that owns them, so that each key is stored once.
//!
//! `DbIndex` keeps every `KeyRef` in `keys` pointing at a live record's key:
//! a record is taken out of `keys` before it leaves the slab, and its box
//! never moves (the slab moves the box, not the bytes).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ptr::NonNull;

pub(super) struct KeyRef(NonNull<[u8]>);

// SAFETY: a KeyRef is only read through the DbIndex that owns the bytes it
// points to, and moves between threads with it (under the per-db lock).
unsafe impl Send for KeyRef {}

impl KeyRef {
    pub(super) fn of(key: &[u8]) -> KeyRef {
        KeyRef(NonNull::from(key))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: by the invariant in this module's doc, the record owning these
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
    fn partial_cmp(&self, other: &KeyRef) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyRef {
    fn cmp(&self, other: &KeyRef) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}
