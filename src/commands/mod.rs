//! Command handlers: parse, check, call the core, reply, replicate, notify.

pub mod admin;
pub mod cache;
pub mod fetch;
pub mod gate;
pub mod inval;
pub mod perm;
pub mod query;

use redis_module::key::{RedisKey, RedisKeyWritable};
use redis_module::{Context, RedisError, RedisString};

use crate::core::entry::Entry;
use crate::errors;
use crate::store::ENTRY_TYPE;

/// What a key holds, from a tcache point of view.
pub enum Slot<'a> {
    Missing,
    Entry(&'a Entry),
    /// A plain string, a hash, another module's type...
    Other,
}

pub fn slot(key: &RedisKey) -> Slot<'_> {
    match key.get_value::<Entry>(&ENTRY_TYPE) {
        Ok(Some(e)) => Slot::Entry(e),
        Ok(None) => Slot::Missing,
        Err(_) => Slot::Other,
    }
}

/// Like `slot` for a key opened for writing.
pub fn slot_mut(key: &RedisKeyWritable) -> Slot<'_> {
    match key.get_value::<Entry>(&ENTRY_TYPE) {
        Ok(Some(e)) => Slot::Entry(e),
        Ok(None) => Slot::Missing,
        Err(_) => Slot::Other,
    }
}

/// The entry of `key`, `None` when missing, WRONGTYPE for another type.
pub fn entry_or_wrongtype(key: &RedisKey) -> Result<Option<&Entry>, RedisError> {
    match slot(key) {
        Slot::Entry(e) => Ok(Some(e)),
        Slot::Missing => Ok(None),
        Slot::Other => Err(errors::wrongtype()),
    }
}

pub fn bytes(args: &[RedisString]) -> Vec<&[u8]> {
    args.iter().map(|a| a.as_slice()).collect()
}

/// The keys carrying any of `names` in `space` of the selected database.
pub fn keys_with_any(
    ctx: &Context,
    space: crate::core::index::Space,
    names: &[&[u8]],
) -> Result<Vec<crate::core::index::Key>, RedisError> {
    let db = crate::api::selected_db(ctx);
    crate::indexes::with_db(db, |ix| ix.keys_with_any(space, names))
        .ok_or(RedisError::Str(errors::INDEX_BUSY))
}

/// Redis strings for keys named by the index.
pub fn key_names(ctx: &Context, keys: &[crate::core::index::Key]) -> Vec<RedisString> {
    keys.iter().map(|k| crate::api::string(ctx, k)).collect()
}
