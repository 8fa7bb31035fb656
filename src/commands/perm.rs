//! The permission cache: PERM.SET / GET / CHECK / INVALUSER / INVALROLE / INVALALL.
//! A permission entry is a tcache entry whose roles are indexed apart from tags.

use redis_module::key::RedisKey;
use redis_module::{Context, RedisString, RedisValue};

use super::cache::{delete_entry, reply_value, write_entry};
use super::inval::{delete_all, invalidate, publish, Target};
use super::{read, Slot};
use crate::core::entry::{Entry, Kind};
use crate::core::index::Space;
use crate::core::options::{check_limits, parse_in_range, Condition, TTL_MAX, TTL_MIN};
use crate::core::perm;
use crate::errors::{Error, Reply};
use crate::glue::api;
use crate::state::config;
use crate::state::indexes;
use crate::state::seq;
use crate::state::stats;

/// The permission entry of `key`: `None` when missing, WRONGTYPE when the key
/// holds anything else (another type, or a plain cache entry).
fn perm_entry<'a>(
    ctx: &Context,
    name: &RedisString,
    key: &'a RedisKey,
) -> Result<Option<&'a Entry>, Error> {
    match read(ctx, name.as_slice(), key) {
        Slot::Entry(e) if e.kind == Kind::Perm => Ok(Some(e)),
        Slot::Missing => Ok(None),
        _ => Err(Error::WrongType),
    }
}

/// PERM.SET key json [ttl]
pub fn set(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 3 && args.len() != 4 {
        return Err(Error::WrongArity);
    }
    let ttl_s = match args.get(3) {
        Some(t) => parse_in_range(t.as_slice(), TTL_MIN, TTL_MAX)?,
        None => config::perm_ttl(),
    };
    let json = args[2].as_slice();
    let shape = perm::parse(json).map_err(|r| {
        stats::GATE_REJECTIONS.incr();
        Error::Perm(r)
    })?;
    let roles: Vec<&[u8]> = shape.roles.iter().collect();
    check_limits(&config::limits(), json.len(), &roles, shape.role_count)?;
    let entry = Entry::new_perm(json, &shape.roles, &shape.perms, seq::next())
        .ok_or(Error::EntryTooLarge)?;
    write_entry(ctx, &args[1], entry, ttl_s * 1000, Condition::Always)
}

/// PERM.GET key
pub fn get(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    let key = ctx.open_key(&args[1]);
    match perm_entry(ctx, &args[1], &key)? {
        Some(e) => {
            stats::PERM_HITS.incr();
            reply_value(ctx, e);
            Ok(RedisValue::NoReply)
        }
        None => {
            stats::PERM_MISSES.incr();
            Ok(RedisValue::Null)
        }
    }
}

/// PERM.INVALUSER key [key ...]
pub fn invaluser(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    for name in &args[1..] {
        perm_entry(ctx, name, &ctx.open_key(name))?;
    }
    let mut deleted = Vec::new();
    for name in &args[1..] {
        if delete_entry(ctx, name) {
            deleted.push(name.safe_clone(ctx));
        }
    }
    api::replicate_del(ctx, &deleted);
    Ok(RedisValue::Integer(deleted.len() as i64))
}

/// PERM.INVALROLE role [role ...]
pub fn invalrole(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    let roles = super::bytes(&args[1..]);
    let reply = invalidate(ctx, Target::Labels(Space::Roles, roles.clone()))?;
    publish(ctx, b"role:", &roles);
    Ok(reply)
}

/// PERM.INVALALL
pub fn invalall(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 1 {
        return Err(Error::WrongArity);
    }
    let db = api::selected_db(ctx);
    let keys = indexes::with_db(db, |ix| ix.keys_in_space(Space::Roles)).ok_or(Error::IndexBusy)?;
    delete_all(ctx, &keys)
}
