//! TCACHE.INVALTAG and TCACHE.INVALPREFIX: delete every entry an index names,
//! in one command (atomic for every client), after checking the caller may
//! delete each of them.

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::cache::delete_indexed;
use super::{bytes, key_names, keys_with_any};
use crate::api::{self, Caller};
use crate::config;
use crate::core::index::{Key, Space};
use crate::errors;
use crate::indexes;
use crate::leases;
use crate::seq;
use crate::stats;

/// TCACHE.INVALTAG tag [tag ...]
pub fn invaltag(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let tags = bytes(&args[1..]);
    let db = api::selected_db(ctx);
    let keys = keys_with_any(ctx, Space::Tags, &tags)?;
    let reply = delete_all(ctx, &keys)?;
    leases::note_tags(db, &tags, seq::next());
    publish(ctx, b"tag:", &tags);
    Ok(reply)
}

/// TCACHE.INVALPREFIX prefix
pub fn invalprefix(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let db = api::selected_db(ctx);
    let keys = indexes::with_db(db, |ix| ix.keys_with_prefix(args[1].as_slice()))
        .ok_or(RedisError::Str(errors::INDEX_BUSY))?;
    let reply = delete_all(ctx, &keys)?;
    leases::note_prefix(db, args[1].as_slice(), seq::next());
    publish(ctx, b"prefix:", &[args[1].as_slice()]);
    Ok(reply)
}

/// With `tcache.invalidation-channel` set, publishes one message per
/// invalidated name on it: `tag:<tag>`, `role:<role>` or `prefix:<prefix>`.
pub fn publish(ctx: &Context, kind: &[u8], names: &[&[u8]]) {
    let Some(channel) = config::invalidation_channel() else {
        return;
    };
    let channel = api::string(ctx, &channel);
    for name in names {
        let msg = api::string(ctx, &[kind, name].concat());
        api::publish(ctx, &channel, &msg);
    }
}

/// Checks every key first (NOPERM and nothing deleted if one is refused), then
/// deletes, replicates the deletions and counts them.
pub fn delete_all(ctx: &Context, keys: &[Key]) -> RedisResult {
    // The index lock is released here: deletes re-enter it through unlink.
    let names = key_names(ctx, keys);
    if let Some(caller) = Caller::current(ctx) {
        if !names.iter().all(|n| caller.may_delete(n)) {
            return Err(RedisError::Str(errors::NOPERM_DELETE));
        }
    }
    let mut deleted = Vec::with_capacity(names.len());
    for name in names {
        if delete_indexed(ctx, &name)? {
            deleted.push(name);
        }
    }
    api::replicate_del(ctx, &deleted);
    stats::INVALIDATIONS.incr();
    stats::INVALIDATED_ENTRIES.add(deleted.len() as u64);
    Ok(RedisValue::Integer(deleted.len() as i64))
}
