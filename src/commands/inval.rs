//! TCACHE.INVALTAG, TCACHE.INVALPREFIX (and PERM.INVALROLE through
//! `invalidate`): every entry a tag, role or key prefix names disappears in one
//! step, atomic for every client.
//!
//! A small invalidation (at most `tcache.inval-sync-max` entries) deletes its
//! entries inside the command. A larger one is logical: a tombstone kills the
//! entries for every reader at once, in constant time, and the reclaimer
//! deletes them in short slices afterwards. Replicas and the AOF get
//! `TCACHE.APPLYINVAL` for the logical step, then the deletions. The whole
//! lifecycle is in `glue::invalidation`.

use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use super::cache::delete_indexed;
use super::{bytes, key_names};
use crate::core::index::{Key, Space};
use crate::errors::{Error, NoPerm, Reply};
use crate::glue::api;
pub use crate::glue::invalidation::Target;
use crate::glue::invalidation::{self, Invalidated};
use crate::state::config;
use crate::state::leases;
use crate::state::seq;
use crate::state::stats;

/// TCACHE.INVALTAG tag [tag ...]
pub fn invaltag(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    let tags = bytes(&args[1..]);
    let db = api::selected_db(ctx);
    let reply = invalidate(ctx, Target::Labels(Space::Tags, tags.clone()))?;
    leases::note_tags(db, &tags, seq::next());
    publish(ctx, b"tag:", &tags);
    Ok(reply)
}

/// TCACHE.INVALPREFIX prefix
pub fn invalprefix(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    let db = api::selected_db(ctx);
    let reply = invalidate(ctx, Target::Prefix(args[1].as_slice()))?;
    leases::note_prefix(db, args[1].as_slice(), seq::next());
    publish(ctx, b"prefix:", &[args[1].as_slice()]);
    Ok(reply)
}

/// Kills every live entry `target` names in the selected database; replies
/// with how many.
pub fn invalidate(ctx: &Context, target: Target) -> Reply {
    match invalidation::invalidate(ctx, &target)? {
        Invalidated::Small(keys) => delete_all(ctx, &keys),
        Invalidated::Killed(n) => Ok(RedisValue::Integer(n as i64)),
    }
}

/// TCACHE.APPLYINVAL seq TAG|ROLE|PREFIX name [name ...] — how a logical
/// invalidation reaches replicas and the AOF. The deletions follow as DELs.
pub fn applyinval(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 4 {
        return Err(Error::WrongArity);
    }
    let flags = ctx.get_flags();
    if !flags.intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Err(Error::ApplyReserved);
    }
    let seq = std::str::from_utf8(args[1].as_slice())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&n| n <= seq::MAX_SEQ)
        .ok_or(Error::BadInvalSeq)?;
    let names = bytes(&args[3..]);
    let target = match args[2].as_slice() {
        b"TAG" => Target::Labels(Space::Tags, names),
        b"ROLE" => Target::Labels(Space::Roles, names),
        b"PREFIX" if names.len() == 1 => Target::Prefix(names[0]),
        _ => return Err(Error::Syntax),
    };
    invalidation::apply(ctx, seq, &target)?;
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// With `tcache.invalidation-channel` set, publishes one message per
/// invalidated name on it: `tag:<tag>`, `role:<role>` or `prefix:<prefix>`.
///
/// In cluster mode only the coordinator publishes (PUBLISH reaches every
/// node's subscribers there), not every node that applies the invalidation.
pub fn publish(ctx: &Context, kind: &[u8], names: &[&[u8]]) {
    if crate::glue::cluster::applying_remote() {
        return;
    }
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
pub fn delete_all(ctx: &Context, keys: &[Key]) -> Reply {
    // The index lock is released here: deletes re-enter it through unlink.
    let names = key_names(ctx, keys);
    if !api::may_delete_all(ctx, &names) {
        return Err(Error::NoPerm(NoPerm::Delete));
    }
    let mut deleted = Vec::with_capacity(names.len());
    for name in names {
        if delete_indexed(ctx, &name) {
            deleted.push(name);
        }
    }
    api::replicate_del(ctx, &deleted);
    stats::INVALIDATIONS.incr();
    stats::INVALIDATED_ENTRIES.add(deleted.len() as u64);
    Ok(RedisValue::Integer(deleted.len() as i64))
}
