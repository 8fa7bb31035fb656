//! What the index keeps of one entry, by id: its key, and its expiry and
//! space packed in one word.

use super::NO_EXPIRE;
use crate::core::space::Space;

pub(super) struct KeyRec {
    /// The key's only copy in the index (the ordered key map borrows it).
    pub(super) key: Box<[u8]>,
    meta: u64,
}

const ROLES_BIT: u64 = 1 << 63;

impl KeyRec {
    pub(super) fn new(key: Box<[u8]>, space: Space, expire_at_ms: i64) -> KeyRec {
        let mut rec = KeyRec { key, meta: 0 };
        rec.set(space, expire_at_ms);
        rec
    }

    /// Stores `expire_at_ms + 1` (so NO_EXPIRE is 0) below the space bit.
    pub(super) fn set(&mut self, space: Space, expire_at_ms: i64) {
        let expire = expire_at_ms
            .saturating_add(1)
            .clamp(0, (ROLES_BIT - 1) as i64) as u64;
        self.meta = expire | if space == Space::Roles { ROLES_BIT } else { 0 };
    }

    pub(super) fn space(&self) -> Space {
        if self.meta & ROLES_BIT != 0 {
            Space::Roles
        } else {
            Space::Tags
        }
    }

    pub(super) fn expire_at_ms(&self) -> i64 {
        (self.meta & !ROLES_BIT) as i64 - 1
    }
}

/// Whether an entry expiring at `expire_at_ms` is still alive at `now_ms`.
pub(super) fn is_live(expire_at_ms: i64, now_ms: i64) -> bool {
    // Redis treats a key as expired once now > expire time.
    expire_at_ms == NO_EXPIRE || now_ms <= expire_at_ms
}
