//! Command handlers: parse, check, call the core, reply, replicate, notify.

pub mod admin;
pub mod cache;
pub mod cluster;
pub mod fast;
pub mod fetch;
pub mod gate;
pub mod inval;
pub mod perm;
pub mod query;

use redis_module::{Context, RedisString};

use crate::errors::Error;
pub use crate::glue::slot::{entry_or_wrongtype, is_dead, read, slot, slot_mut, Slot};

pub fn bytes(args: &[RedisString]) -> Vec<&[u8]> {
    args.iter().map(|a| a.as_slice()).collect()
}

/// The keys carrying any of `names` in `space` of the selected database.
pub fn keys_with_any(
    ctx: &Context,
    space: crate::core::index::Space,
    names: &[&[u8]],
) -> Result<Vec<crate::core::index::Key>, Error> {
    let db = crate::glue::api::selected_db(ctx);
    crate::state::indexes::with_db(db, |ix| ix.keys_with_any(space, names)).ok_or(Error::IndexBusy)
}

/// Redis strings for keys named by the index.
pub fn key_names(ctx: &Context, keys: &[crate::core::index::Key]) -> Vec<RedisString> {
    keys.iter()
        .map(|k| crate::glue::api::string(ctx, k))
        .collect()
}
