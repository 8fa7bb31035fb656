//! What a key holds as a tcache command sees it: missing, one of our entries
//! (dead ones read as missing), or another type.

use redis_module::key::{RedisKey, RedisKeyWritable};
use redis_module::Context;

use crate::core::entry::Entry;
use crate::errors::Error;
use crate::glue::store::ENTRY_TYPE;

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
        || (crate::state::indexes::any_tombs()
            && crate::state::indexes::is_dead(crate::glue::api::selected_db(ctx), name, e))
}

/// The live entry of `key`, `None` when missing (or dead), WRONGTYPE for another type.
pub fn entry_or_wrongtype<'a>(
    ctx: &Context,
    name: &[u8],
    key: &'a RedisKey,
) -> Result<Option<&'a Entry>, Error> {
    match read(ctx, name, key) {
        Slot::Entry(e) => Ok(Some(e)),
        Slot::Missing => Ok(None),
        Slot::Other => Err(Error::WrongType),
    }
}
