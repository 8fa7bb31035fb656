//! Command handlers: parse, check, call the core, reply, replicate, notify.

pub mod admin;
pub mod cache;
pub mod fast;
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

/// How a reader sees `key` (named `name`): an entry an invalidation killed,
/// not yet deleted by the reclaimer, reads as missing.
pub fn read<'a>(ctx: &Context, name: &[u8], key: &'a RedisKey) -> Slot<'a> {
    match slot(key) {
        Slot::Entry(e) if is_dead(ctx, name, e) => Slot::Missing,
        other => other,
    }
}

/// Whether `e`, stored under `name` in the selected database, is dead.
pub fn is_dead(ctx: &Context, name: &[u8], e: &Entry) -> bool {
    e.killed.get()
        || (crate::indexes::any_tombs()
            && crate::indexes::is_dead(crate::api::selected_db(ctx), name, e))
}

/// The live entry of `key`, `None` when missing (or dead), WRONGTYPE for another type.
pub fn entry_or_wrongtype<'a>(
    ctx: &Context,
    name: &[u8],
    key: &'a RedisKey,
) -> Result<Option<&'a Entry>, RedisError> {
    match read(ctx, name, key) {
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
